"""Demo benchmark: the whole asset graph (`specforge-assets demo`: sources → regenerate → mix →
tokenize → vocab → target → train → evaluate) on the shipped sample data, in a fresh data root
and a fresh Dagster instance, timed end to end and per asset; then the trained draft (TTT k)
against a draft trained identically but without TTT unrolling (TTT 1), on the same held-out
prompts, in the same process.

Writes bench/results/demo.json and the `## demo` section of bench/RESULTS.md.

    .venv/bin/python bench/bench_demo.py [--no-ttt1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def loadavg() -> str:
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


def run_demo(root: Path, home: Path) -> tuple[float, str, int]:
    env = {**os.environ, "SPECFORGE_DATA_ROOT": str(root), "DAGSTER_HOME": str(home), "DAGSTER_DISABLE_TELEMETRY": "1"}
    t0 = time.time()
    p = subprocess.run(
        [sys.executable, "-m", "specforge_assets.cli", "demo"], cwd=REPO, env=env, capture_output=True, text=True
    )
    return time.time() - t0, p.stdout + p.stderr, p.returncode


def step_times(home: Path) -> dict[str, float]:
    """Seconds per asset step, from the instance the demo wrote."""
    os.environ["DAGSTER_HOME"] = str(home)
    import dagster as dg

    out: dict[str, float] = {}
    with dg.DagsterInstance.get() as inst:
        for rec in inst.get_run_records():
            for st in inst.get_run_step_stats(rec.dagster_run.run_id):
                if st.end_time and st.start_time:
                    key = st.step_key
                    out[key] = out.get(key, 0.0) + (st.end_time - st.start_time)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def ttt1_comparison(root: Path, report: dict) -> dict:
    """Train a TTT-1 draft with the demo's settings; evaluate both drafts on the same prompts."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from specforge_assets.target import target_model_path
    from specforge_assets.train.eagle3 import load_draft_checkpoint
    from specforge_assets.train.settings import make_train_config
    from specforge_assets.train.settings import train_settings
    from specforge_assets.train.eval_report import heldout_prompts
    from specforge_assets.train.evaluate import evaluate_acceptance
    from specforge_assets.train.loop import train_draft

    os.environ["SPECFORGE_DATA_ROOT"] = str(root)
    s = train_settings()
    ev = s["evaluation"]
    target = target_model_path(root)
    out = root / "bench_ttt1_draft"
    cfg = make_train_config({**s["training"], "ttt_length": 1})
    t0 = time.time()
    res = train_draft(
        cfg,
        device="cpu",
        target_path=target,
        dataset_path=root / "tokenized" / "dataset",
        vocab_mapping_path=root / "tokenized" / "vocab_mapping",
        out_dir=out,
        log=lambda m: None,
        resume=False,
    )
    train_s = time.time() - t0
    tok = AutoTokenizer.from_pretrained(str(target))
    tgt = AutoModelForCausalLM.from_pretrained(str(target), dtype=torch.float32).eval()
    prompts, _ = heldout_prompts(
        root / "mix" / "test.jsonl",
        tok,
        num_prompts=int(ev["num_prompts"]),
        max_prompt_tokens=int(ev["max_prompt_tokens"]),
    )
    ids = [p["input_ids"] for p in prompts]
    kw = dict(k=int(ev["k"]), max_new_tokens=int(ev["max_new_tokens"]), check_lossless=False)
    r1 = evaluate_acceptance(tgt, tok, load_draft_checkpoint(out, tgt), ids, **kw)
    rk = evaluate_acceptance(tgt, tok, load_draft_checkpoint(root / "models" / "draft_model", tgt), ids, **kw)
    return {
        "ttt_length": s["training"].get("ttt_length"),
        "ttt_k_acceptance_length": round(rk["acceptance_length"], 4),
        "ttt_k_per_position": [round(a, 4) for a in rk["per_position_acceptance"]],
        "ttt1_acceptance_length": round(r1["acceptance_length"], 4),
        "ttt1_per_position": [round(a, 4) for a in r1["per_position_acceptance"]],
        "ttt1_train_seconds": round(train_s, 1),
        "ttt1_final_loss": res.get("loss"),
        "num_prompts": len(ids),
    }


def write_section(results: dict) -> None:
    r = results
    rep = r["report"]
    lines = [
        "## demo",
        "",
        "`bench/bench_demo.py` (raw numbers: `bench/results/demo.json`): `specforge-assets demo` (what",
        "`make demo` runs) in a fresh data root and a fresh Dagster instance — sources → regenerate →",
        "mix → tokenize → vocab mapping → demo target → EAGLE3 draft (torchrun via Pipes) → evaluation.",
        f"Machine: {r['machine']}; load average before/after: {r['load_before']} → {r['load_after']}",
        "(wall times on a shared, busy box are an upper bound).",
        "",
        f"**Whole graph: {r['demo_seconds']:.0f} s** (budget ≤ 300 s on 2 cores), exit code {r['demo_rc']}.",
        "",
        "| asset step | seconds |",
        "|---|---|",
    ]
    for k, v in list(r["step_seconds"].items())[:14]:
        lines.append(f"| {k} | {v:.1f} |")
    lines += [
        "",
        f"**Acceptance length (k={rep['k']}, {rep['num_prompts']} held-out prompts, greedy chain speculative "
        f"decoding, bonus token included): trained {rep['acceptance_length']:.2f} vs untrained "
        f"{rep['untrained_acceptance_length']:.2f}** (ratio {rep['acceptance_length'] / rep['untrained_acceptance_length']:.2f}×), "
        f"lossless = {rep['lossless']}.",
        "",
        "| draft position | " + " | ".join(str(i + 1) for i in range(rep["k"])) + " |",
        "|---|" + "---|" * rep["k"],
        "| trained | " + " | ".join(f"{a:.2f}" for a in rep["per_position_acceptance"]) + " |",
        "| untrained | " + " | ".join(f"{a:.2f}" for a in rep["untrained_per_position_acceptance"]) + " |",
    ]
    t = r.get("ttt1")
    if t:
        lines += [
            "| TTT 1 (same data/steps) | " + " | ".join(f"{a:.2f}" for a in t["ttt1_per_position"]) + " |",
            "",
            f"TTT unrolling: the TTT-{t['ttt_length']} draft reaches {t['ttt_k_acceptance_length']:.2f} vs "
            f"{t['ttt1_acceptance_length']:.2f} for a draft trained without unrolling (TTT 1), same prompts "
            f"(per position, TTT-{t['ttt_length']}: " + ", ".join(f"{a:.2f}" for a in t["ttt_k_per_position"]) + ").",
        ]
    lines += ["", f"Command: `{r['command']}` ({r['date']}).", ""]
    smoke = REPO / "bench" / "results" / "models_gpu_smoke.json"
    if smoke.exists():
        g = json.loads(smoke.read_text())
        lines += [
            f"GPU launch path (`{g['command']}`, {g['date']}): {g['machine']}; `torchrun --nproc_per_node "
            f"{g['world_size']}` → backend {g['backend']}, {g['devices']}, {g['steps']} steps, exit code {g['rc']}, "
            "rank 1 logging to stdout, rank 0 publishing the checkpoint. (Smoke test of the launch path with a toy "
            "target; training throughput/MFU on H100 is in the train section.)",
            "",
        ]
    section = "\n".join(lines)
    path = REPO / "bench" / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n\nEach layer owns its `## <layer>` section.\n"
    pat = re.compile(r"^## demo\n.*?(?=^## |\Z)", re.S | re.M)
    if pat.search(text):
        text = pat.sub(lambda m: section + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-ttt1", action="store_true", help="skip the TTT-1 comparison")
    ap.add_argument("--keep", help="keep the data root and instance here (default: a temp dir, removed)")
    args = ap.parse_args()
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-demo-"))
    if args.keep and base.exists():
        shutil.rmtree(base)
    root, home = base / "data", base / "dagster_home"
    home.mkdir(parents=True)
    results: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_before": loadavg(),
        "command": "python bench/bench_demo.py",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    try:
        secs, log, rc = run_demo(root, home)
        results.update(demo_seconds=round(secs, 1), demo_rc=rc, load_after=loadavg())
        print(log[-3000:])
        results["step_seconds"] = {k: round(v, 1) for k, v in step_times(home).items()}
        report_path = root / "models" / "draft_evaluation" / "report.json"
        if not report_path.exists():
            print(f"demo produced no report (rc={rc})", file=sys.stderr)
            return 1
        results["report"] = json.loads(report_path.read_text())
        if not args.no_ttt1:
            results["ttt1"] = ttt1_comparison(root, results["report"])
        out = REPO / "bench" / "results"
        out.mkdir(exist_ok=True)
        (out / "demo.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
        write_section(results)
        print(
            json.dumps(
                {k: results[k] for k in ("demo_seconds", "demo_rc")}
                | {
                    "acceptance_length": results["report"]["acceptance_length"],
                    "untrained_acceptance_length": results["report"]["untrained_acceptance_length"],
                    "ttt1": results.get("ttt1"),
                },
                indent=2,
            )
        )
        return 0 if rc == 0 else 1
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
