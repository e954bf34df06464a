"""Mix memory and time: `build_mix` on generated sources, against an earlier revision of the code.

    .venv/bin/python bench/bench_mix.py --rows 150000 --baseline-rev 2d8c1f0

Generates two sources of `--rows` conversations each (~1 KB per row), then runs `build_mix` in a
fresh subprocess for this checkout and, with `--baseline-rev`, for that git revision's
`specforge_assets` (taken with `git archive`), and reports wall time, peak RSS and whether the
outputs are byte-identical. Raw numbers: bench/results/mix.json.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _trees import source_tree

REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from specforge_assets.mix.mix import build_mix
t = time.perf_counter()
r = build_mix(sys.argv[2], None, ["big0", "big1"])
print(json.dumps({"rows_out": r["train_rows"] + r["test_rows"], "wall_s": round(time.perf_counter() - t, 2),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}))
"""


def make_sources(root: Path, rows: int) -> int:
    rnd = random.Random(1)
    size = 0
    for s in range(2):
        d = root / "sources" / f"big{s}"
        d.mkdir(parents=True, exist_ok=True)
        with open(d / "train.jsonl", "w") as f:
            for i in range(rows):
                conv = [
                    {"role": "user", "content": f"q{s}-{i} " + "lorem ipsum dolor sit amet " * rnd.randint(5, 30)},
                    {"role": "assistant", "content": "answer " * rnd.randint(20, 120)},
                ]
                f.write(json.dumps({"id": f"r{i}", "conversations": conv}) + "\n")
        size += (d / "train.jsonl").stat().st_size
    return size


def run(code_root: Path, data_root: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(code_root), str(data_root)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=150000, help="rows per source (two sources)")
    ap.add_argument(
        "--baseline-rev",
        default=None,
        help="git revision (or a directory holding that tree) whose build_mix is the baseline",
    )
    args = ap.parse_args()
    res: dict = {"rows_per_source": args.rows}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        res["input_mb"] = round(make_sources(d / "data", args.rows) / 1e6, 1)
        if args.baseline_rev:
            base = source_tree(args.baseline_rev, d / "baseline")
            res["baseline"] = {"rev": args.baseline_rev, **run(base, d / "data")}
            shutil.copytree(d / "data" / "mix", d / "baseline_mix")
            print("baseline", res["baseline"], flush=True)
        res["current"] = run(REPO, d / "data")
        print("current", res["current"], flush=True)
        if args.baseline_rev:
            res["identical_outputs"] = all(
                filecmp.cmp(d / "data" / "mix" / n, d / "baseline_mix" / n, shallow=False)
                for n in ("train.jsonl", "test.jsonl", "quarantine.jsonl")
            )
            res["peak_rss_ratio"] = round(res["baseline"]["peak_rss_mib"] / res["current"]["peak_rss_mib"], 2)
            res["wall_ratio"] = round(res["baseline"]["wall_s"] / res["current"]["wall_s"], 2)
    print(json.dumps(res, indent=1))
    out = REPO / "bench" / "results" / "mix.json"
    out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
