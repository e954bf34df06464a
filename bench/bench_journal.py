"""Regeneration journal benchmark: the sqlite3 journal vs the JSON-lines journal it replaced.

    .venv/bin/python bench/bench_journal.py                        # 100k rows, 3 repeats
    .venv/bin/python bench/bench_journal.py --rows 20000 --repeats 1 --out bench/results/journal.json

What is timed, per variant, on `--rows` small rows (~0.5 kB of JSON each), in a temp folder on the
disk the outputs would use (`--dir`, default: the system temp dir):
- write: `append` for every row as the runner calls it (one row at a time, on the calling thread),
  then `close` (everything durable at the end). rows/s = rows / (appends + close).
  Also the longest single `append` call (what the run's event loop would stall on; includes the
  commits made inside `append`) and its 99th percentile.
- resume: `prepare` of a journal holding every row (what a resumed run pays before its first
  request: for sqlite, reading the input for the row keys too) and the read that writes the outputs
  (`load` + `iter_records` over every row, as `runner.finalize`).
Wall seconds and this process's CPU seconds are both reported: on a shared box the CPU figures
move less with the other work.

Variants: the JSON-lines journal of commit 5f4e77f (batch 64 / 0.25 s, fsync per batch on a
background thread), loaded from git (`--baseline-commit`); sqlite with synchronous=NORMAL and
FULL at batch 64 (the default `journal_batch`), and at batch 1 (a commit per row; FULL at batch 1
runs on `--rows-fsync-each` rows only: one fsync per row).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from specforge_assets.regenerate import journal as new_journal  # noqa: E402

FP = {"settings": {"model": "stub-model", "temperature": 0.7, "max_tokens": 512}, "input_sha256": "0" * 64}


def old_journal_module(commit: str) -> types.ModuleType:
    """The journal module as it was at `commit` (imported inside the package, for its relative imports)."""
    src = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{commit}:specforge_assets/regenerate/journal.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    mod = types.ModuleType("specforge_assets.regenerate._journal_baseline")
    mod.__package__ = "specforge_assets.regenerate"
    sys.modules[mod.__name__] = mod
    exec(compile(src, f"{commit}:journal.py", "exec"), mod.__dict__)
    return mod


def make_rows(n: int) -> tuple[list[dict], list[dict]]:
    """(input rows, output rows): small conversations, the output with a short provenance record."""
    inputs, outputs = [], []
    for i in range(n):
        row = {
            "id": f"row-{i:07d}",
            "conversations": [
                {"role": "user", "content": f"Question {i}: what is the capital of country number {i % 197}?"},
                {"role": "assistant", "content": "old answer"},
            ],
        }
        inputs.append(row)
        outputs.append(
            {
                "id": row["id"],
                "conversations": [
                    row["conversations"][0],
                    {"role": "assistant", "content": f"The capital of country {i % 197} is City-{i % 197}. " * 2},
                ],
                "status": "success",
                "regeneration": {
                    "model": "stub-model",
                    "servers": ["127.0.0.1:30000"],
                    "turns": [
                        {
                            "finish_reason": "stop",
                            "server": "127.0.0.1:30000",
                            "seed": None,
                            "prompt_tokens": 31,
                            "completion_tokens": 24,
                        }
                    ],
                    "usage": {"prompt_tokens": 31, "completion_tokens": 24},
                },
            }
        )
    return inputs, outputs


def run_variant(
    kind: str, mod, folder: Path, inp: Path, outputs: list[dict], batch: int, synchronous: str | None
) -> dict:
    out = folder / "out.jsonl"
    n = len(outputs)
    kw = {"batch": batch, "flush_s": 0.25}
    if synchronous:
        kw["synchronous"] = synchronous
    j = mod.Journal(out, **kw)
    if kind == "sqlite":
        j.prepare(FP, resume=False, restart=False, input_path=inp)
    else:
        j.prepare(FP, resume=False, restart=False)
    lat = []
    c0, t0 = time.process_time(), time.perf_counter()
    for i, row in enumerate(outputs):
        a = time.perf_counter()
        j.append(i, row["id"], "success", row)
        lat.append(time.perf_counter() - a)
    j.close()
    write_s, write_cpu = time.perf_counter() - t0, time.process_time() - c0
    lat.sort()
    res = {
        "rows": n,
        "write_s": round(write_s, 3),
        "rows_per_s": round(n / write_s),
        "write_cpu_us_per_row": round(write_cpu / n * 1e6, 1),
        "append_p99_ms": round(lat[int(0.99 * (n - 1))] * 1e3, 3),
        "append_max_ms": round(lat[-1] * 1e3, 2),
    }
    # resume: what a resumed run pays before its first request, then the output read
    j = mod.Journal(out, **kw)
    c0, t0 = time.process_time(), time.perf_counter()
    if kind == "sqlite":
        done = j.prepare(FP, resume=True, restart=False, input_path=inp)
    else:
        j.write_state(fingerprint=FP, state="running")
        done = j.prepare(FP, resume=True, restart=False)
    res["resume_prepare_s"] = round(time.perf_counter() - t0, 3)
    res["resume_prepare_cpu_s"] = round(time.process_time() - c0, 3)
    assert len(done) == n, (kind, len(done))
    j.close()
    c0, t0 = time.process_time(), time.perf_counter()
    done = j.load()
    nbytes = 0
    for _, _, rec in j.iter_records(done, range(n)):
        nbytes += len(rec)
    res["finalize_read_s"] = round(time.perf_counter() - t0, 3)
    res["finalize_read_cpu_s"] = round(time.process_time() - c0, 3)
    res["journal_bytes"] = sum(p.stat().st_size for p in folder.iterdir() if p.name.startswith(".out.regen-journal"))
    j.discard()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument(
        "--rows-fsync-each", type=int, default=3_000, help="rows for sqlite FULL at batch 1 (one fsync per row)"
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", default=None, help="folder for the journals (default: system temp dir)")
    ap.add_argument("--baseline-commit", default="5f4e77f")
    ap.add_argument("--out", default=None, help="write the raw results as JSON here")
    args = ap.parse_args()

    old = old_journal_module(args.baseline_commit)
    variants = [
        ("jsonl (5f4e77f), batch 64, fsync thread", "jsonl", old, 64, None, args.rows),
        ("sqlite NORMAL, batch 64", "sqlite", new_journal, 64, "NORMAL", args.rows),
        ("sqlite FULL, batch 64", "sqlite", new_journal, 64, "FULL", args.rows),
        ("sqlite NORMAL, batch 1", "sqlite", new_journal, 1, "NORMAL", args.rows),
        ("sqlite FULL, batch 1", "sqlite", new_journal, 1, "FULL", min(args.rows, args.rows_fsync_each)),
    ]
    base = Path(tempfile.mkdtemp(prefix="bench-journal-", dir=args.dir))
    results: dict[str, list[dict]] = {name: [] for name, *_ in variants}
    try:
        inputs, outputs = make_rows(args.rows)
        inp_paths = {}
        for n in {v[5] for v in variants}:
            p = base / f"in-{n}.jsonl"
            with open(p, "w") as f:
                for r in inputs[:n]:
                    f.write(json.dumps(r) + "\n")
            inp_paths[n] = p
        for rep in range(args.repeats):  # interleaved: load on the box hits every variant alike
            for name, kind, mod, batch, sync, n in variants:
                folder = base / f"{rep}-{len(results[name])}-{kind}-{batch}-{sync}"
                folder.mkdir()
                r = run_variant(kind, mod, folder, inp_paths[n], outputs[:n], batch, sync)
                results[name].append(r)
                shutil.rmtree(folder)
                print(f"[{rep + 1}/{args.repeats}] {name}: {r}", flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    def med(name, key):
        return statistics.median(r[key] for r in results[name])

    base_rate = med(variants[0][0], "rows_per_s")
    print(
        f"\n{args.rows} rows x {args.repeats} repeats (medians); {platform.node()}, {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.1f}, journals in {args.dir or tempfile.gettempdir()}"
    )
    print(
        "| variant | rows | write rows/s (wall) | vs jsonl | CPU µs/row | append p99 ms | append max ms | "
        "resume prepare s (CPU) | output read s (CPU) | journal MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, *_rest in variants:
        n = results[name][0]["rows"]
        rate = med(name, "rows_per_s")
        print(
            f"| {name} | {n} | {rate:,.0f} | {rate / base_rate:.2f}x | {med(name, 'write_cpu_us_per_row')} | "
            f"{med(name, 'append_p99_ms')} | {med(name, 'append_max_ms')} | "
            f"{med(name, 'resume_prepare_s')} ({med(name, 'resume_prepare_cpu_s')}) | "
            f"{med(name, 'finalize_read_s')} ({med(name, 'finalize_read_cpu_s')}) | "
            f"{med(name, 'journal_bytes') / 1e6:.1f} |"
        )
    if args.out:
        Path(args.out).write_text(
            json.dumps(
                {
                    "rows": args.rows,
                    "repeats": args.repeats,
                    "node": platform.node(),
                    "cpus": os.cpu_count(),
                    "results": results,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
