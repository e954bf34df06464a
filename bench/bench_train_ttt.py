"""EAGLE3 on the CPU toy: untrained vs TTT-1 vs TTT-k drafts, acceptance by speculative decoding.

Same target (tests/fixtures/train/toy_target), data, steps and lr for every draft; only the
unrolling differs. Acceptance measured with greedy chain speculative decoding (k=4) on held-out
prompts; `lossless` must be true for every row.

  python bench/bench_train_ttt.py [--epochs 6] [--out bench/results/train_ttt_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from specforge_assets.train.eagle3 import load_draft_checkpoint, load_vocab_mapping_file  # noqa: E402
from specforge_assets.train.evaluate import evaluate_acceptance  # noqa: E402
from specforge_assets.train.loop import train_draft  # noqa: E402
from specforge_assets.train.settings import TrainConfig  # noqa: E402
from tests.helpers.toy import cached_toy_target, toy_rows, write_toy_dataset, write_vocab_mapping  # noqa: E402

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "train" / "toy_target"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--ttt", type=int, default=4)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=12)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    from transformers import AutoModelForCausalLM

    tdir = FIXTURE if (FIXTURE / "model.safetensors").exists() else cached_toy_target()
    target = AutoModelForCausalLM.from_pretrained(str(tdir)).eval()
    prompts = [r["input_ids"][:7] for r in toy_rows(a.prompts, seed=999)]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        write_toy_dataset(d / "ds", n=128, seed=0)
        vm = write_vocab_mapping(d / "vm.pt", toy_rows(128, seed=0), draft_vocab_size=58)
        mapping = load_vocab_mapping_file(vm)
        t = time.perf_counter()
        r = evaluate_acceptance(target, None, None, prompts, k=a.k, max_new_tokens=20, vocab_mapping=mapping)
        rows.append(
            {
                "draft": "untrained",
                "train_s": 0.0,
                **{k: r[k] for k in ("acceptance_length", "per_position_acceptance", "lossless")},
            }
        )
        for ttt in (1, a.ttt):
            cfg = TrainConfig(
                ttt_length=ttt, lr=3e-3, warmup_ratio=0.05, epochs=a.epochs, batch_size=8, max_length=64, log_every=0
            )
            t = time.perf_counter()
            m = train_draft(
                cfg,
                target_path=tdir,
                dataset_path=d / "ds",
                vocab_mapping_path=vm,
                out_dir=d / f"ttt{ttt}",
                log=lambda *_: None,
            )
            train_s = time.perf_counter() - t
            draft = load_draft_checkpoint(d / f"ttt{ttt}", target)
            r = evaluate_acceptance(target, None, draft, prompts, k=a.k, max_new_tokens=20)
            rows.append(
                {
                    "draft": f"ttt{ttt}",
                    "train_s": train_s,
                    "steps": m["step"],
                    "first_loss": m["first_loss"],
                    "final_loss": m["loss"],
                    "train_acc": m["acc"],
                    **{k: r[k] for k in ("acceptance_length", "per_position_acceptance", "lossless")},
                }
            )
    for r in rows:
        print(json.dumps(r))
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
