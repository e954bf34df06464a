"""Step overhead: the mix + tokenized + vocab run, with its asset checks, as a user launches it
(`dagster asset materialize` → a real run against a real instance), wall time vs the time spent
inside the steps. Compared in the same session on the same data:
- `now`: this checkout (checks inside their asset's step, in-process executor);
- `baseline`: the code at --baseline-rev (default d0596a7, before that change: a process per
  step and per separate check step), from a `git worktree` of that revision.

Setup: a data root with the demo's sources, regenerated partitions and target (made by
`specforge-assets demo` in a temp folder, or --data DIR to reuse one), copied afresh for every
measured run so each one recomputes (no cache hit).

    .venv/bin/python bench/bench_steps.py [--data DIR] [--repeats 2]

Writes bench/results/steps.json; the `## Step overhead` section of bench/RESULTS.md is written
from it by hand.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SELECTION = "mix/training_mix,tokenized/dataset,tokenized/vocab_mapping"


def make_data(tmp: Path) -> Path:
    root, home = tmp / "seed-data", tmp / "seed-home"
    home.mkdir(parents=True)
    env = {**os.environ, "SPECFORGE_DATA_ROOT": str(root), "DAGSTER_HOME": str(home), "DAGSTER_DISABLE_TELEMETRY": "1"}
    subprocess.run([sys.executable, "-m", "specforge_assets.cli", "demo"], cwd=REPO, env=env, check=True,
                   capture_output=True)
    return root


def step_seconds(home: Path) -> tuple[float, int, str]:
    """(seconds inside steps, number of steps, run status) of the one run in `home`."""
    code = (
        "import dagster as dg, json\n"
        "i = dg.DagsterInstance.get()\n"
        "r = i.get_runs(limit=1)[0]\n"
        "st = i.get_run_step_stats(r.run_id)\n"
        "print(json.dumps([sum((s.end_time or 0) - (s.start_time or 0) for s in st), len(st), r.status.value]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "DAGSTER_HOME": str(home)},
                         capture_output=True, text=True, check=True)
    secs, n, status = json.loads(out.stdout.strip().splitlines()[-1])
    return secs, n, status


def measure(seed: Path, tmp: Path, label: str, module: str, i: int, code: Path) -> dict:
    root, home = tmp / f"{label}-{i}-data", tmp / f"{label}-{i}-home"
    shutil.copytree(seed, root, symlinks=True,
                    ignore=shutil.ignore_patterns("mix", "tokenized", "models"))
    shutil.copytree(seed / "models" / "target_model", root / "models" / "target_model")
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "SPECFORGE_DATA_ROOT": str(root), "DAGSTER_HOME": str(home), "DAGSTER_DISABLE_TELEMETRY": "1",
           "PYTHONPATH": str(code)}
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "dagster", "asset", "materialize", "-m", module, "--select", SELECTION],
                       cwd=code, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    if p.returncode != 0:
        raise SystemExit(f"{label}: run failed\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    work, steps, status = step_seconds(home)
    return {"code": label, "wall_s": round(wall, 1), "in_steps_s": round(work, 1), "steps": steps,
            "ratio": round(wall / work, 2), "status": status}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=None, help="a data root made by the demo (else one is made)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--baseline-rev", default="d0596a7")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-steps-") as td:
        tmp = Path(td)
        base = tmp / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(base), args.baseline_rev], cwd=REPO, check=True,
                       capture_output=True)
        try:
            seed = args.data or make_data(tmp)
            rows = []
            for i in range(args.repeats):  # interleaved, so load changes hit both alike
                rows.append(measure(seed, tmp, "now", "specforge_assets.definitions", i, REPO))
                rows.append(measure(seed, tmp, "baseline", "specforge_assets.definitions", i, base))
                print(json.dumps(rows[-2]), json.dumps(rows[-1]), flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=REPO, capture_output=True)
    out = {"machine": f"{platform.node()} {os.cpu_count()} CPUs", "load": os.getloadavg(), "selection": SELECTION,
           "baseline_rev": args.baseline_rev, "runs": rows}
    (REPO / "bench" / "results").mkdir(exist_ok=True)
    (REPO / "bench" / "results" / "steps.json").write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
