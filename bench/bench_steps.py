"""Step overhead: the mix + tokenized + vocab run, with its asset checks, as a user launches it
(`dagster asset materialize` → a real run against a real instance), wall time vs the time spent
inside the steps, and where the rest goes (`phases_s`: start → first event, planning, steps,
run end, exit). Compared in the same session on the same data:
- `now`: this checkout;
- `baseline`: the code at --baseline-rev (default 5f4e77f; d0596a7 is the per-step-process
  version of the first measurement), from a `git worktree` of that revision;
each against a `fresh` instance (the run creates its storage) and an `existing` one (created
before the timer, as on a user's machine), and `inprocess`: the demo's own path
(`demo.materialize_selection` in a process that has already loaded the code location, as `make
demo` and the real-target stages run it), timed from the call to its return.

Besides the wall time, every run reports `run_s`: the run as Dagster records it, from its first
event (the planned events) to RUN_SUCCESS; this is what the UI shows for a launched run, without
the process start before it and the interpreter's exit after it.

Setup: a data root with the demo's sources, regenerated partitions and target (materialized in a
temp folder by make_data(), or --data DIR to reuse one), copied afresh for every measured run so
each one recomputes (no cache hit).

    .venv/bin/python bench/bench_steps.py [--data DIR] [--repeats 2] [--instances fresh,existing,inprocess]

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

from _trees import FULL_TREE, source_tree

REPO = Path(__file__).resolve().parent.parent
SELECTION = "mix/training_mix,tokenized/dataset,tokenized/vocab_mapping"


SEED_CODE = """
import dagster as dg
from specforge_assets.definitions import defs
from specforge_assets.keys import SOURCES, REGENERATED, TARGET
from specforge_assets.partitions import configured_source_keys, sync_source_partitions
instance = dg.DagsterInstance.get()
keys = configured_source_keys()
sync_source_partitions(instance, keys)
everything = list(defs.assets) + list(defs.asset_checks or [])
for selection, partitions in (([TARGET], [None]), ([SOURCES, REGENERATED], keys)):
    for p in partitions:
        assert dg.materialize(everything, selection=selection, partition_key=p, instance=instance,
                              resources=defs.resources).success
"""


def make_data(tmp: Path) -> Path:
    """The demo's inputs only (target, sources, regenerated): what the measured run reads. The
    demo target is built with `pretrain_steps: 0` — these steps use only its tokenizer (the same
    for any number of steps), so its weights need not be trained."""
    import yaml

    root, home, cfg = tmp / "seed-data", tmp / "seed-home", tmp / "seed-configs"
    home.mkdir(parents=True)
    shutil.copytree(REPO / "configs", cfg)
    train = yaml.safe_load((cfg / "train.yaml").read_text())
    train.setdefault("demo_target", {})["pretrain_steps"] = 0
    (cfg / "train.yaml").write_text(yaml.safe_dump(train, sort_keys=False))
    env = {
        **os.environ,
        "SPECFORGE_DATA_ROOT": str(root),
        "DAGSTER_HOME": str(home),
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "PYTHONPATH": os.pathsep.join(p for p in [str(REPO), os.environ.get("PYTHONPATH", "")] if p),
        "SPECFORGE_CONFIG_DIR": str(cfg),
    }
    subprocess.run([sys.executable, "-c", SEED_CODE], cwd=REPO, env=env, check=True, capture_output=True)
    return root


# The demo's path: code location loaded before the timer (the demo process has it loaded), then one
# in-process run of the selection; prints the seconds from the call to its return.
INPROCESS_CODE = """
import json, time
import dagster as dg
from specforge_assets.demo import materialize_selection
from specforge_assets.keys import MIX, TOKENIZED, VOCAB
instance = dg.DagsterInstance.get()
t0 = time.time()
ok = materialize_selection(instance, [MIX, TOKENIZED, VOCAB], trigger="bench")
t1 = time.time()
print(json.dumps({"t0": t0, "t1": t1, "ok": ok}))
"""


PHASES_CODE = """
import dagster as dg, json
i = dg.DagsterInstance.get()
r = i.get_runs(limit=1)[0]
st = i.get_run_step_stats(r.run_id)
evs = [e for e in i.all_logs(r.run_id) if e.dagster_event is not None]
kind = lambda e: e.dagster_event.event_type_value
step_start = [e.timestamp for e in evs if kind(e) == "STEP_START"]
step_end = [e.timestamp for e in evs if kind(e) in ("STEP_SUCCESS", "STEP_FAILURE")]
run_end = [e.timestamp for e in evs if kind(e) in ("PIPELINE_SUCCESS", "PIPELINE_FAILURE")]
print(json.dumps({"in_steps": sum((s.end_time or 0) - (s.start_time or 0) for s in st), "steps": len(st),
                  "status": r.status.value, "events": len(evs), "first_event": evs[0].timestamp,
                  "first_step_start": min(step_start), "last_step_end": max(step_end), "run_end": run_end[-1]}))
"""


def run_phases(home: Path) -> dict:
    """Step stats and phase timestamps (epoch seconds) of the one run in `home`."""
    out = subprocess.run(
        [sys.executable, "-c", PHASES_CODE],
        env={**os.environ, "DAGSTER_HOME": str(home)},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(seed: Path, tmp: Path, label: str, module: str, i: int, code: Path, instance: str) -> dict:
    """One timed `dagster asset materialize` of SELECTION on a fresh copy of the seed data.
    instance="fresh": a new DAGSTER_HOME whose storage the run itself creates; "existing": the
    instance's storage is created (and migrated) before the timer starts, as on a user's box;
    "inprocess": an existing instance and the demo's in-process path (INPROCESS_CODE), timed from
    the call to its return (no CLI, no interpreter start or exit)."""
    root, home = tmp / f"{label}-{instance}-{i}-data", tmp / f"{label}-{instance}-{i}-home"
    shutil.copytree(seed, root, symlinks=True, ignore=shutil.ignore_patterns("mix", "tokenized", "models", "versions"))
    shutil.copytree(seed / "models" / "target_model", root / "models" / "target_model")
    if (seed / "versions" / "target_model").is_dir():
        shutil.copytree(seed / "versions" / "target_model", root / "versions" / "target_model")
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        "SPECFORGE_DATA_ROOT": str(root),
        "DAGSTER_HOME": str(home),
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "PYTHONPATH": os.pathsep.join(p for p in [str(code), os.environ.get("PYTHONPATH", "")] if p),
    }
    if instance in ("existing", "inprocess"):
        subprocess.run(
            [sys.executable, "-c", "import dagster as dg; dg.DagsterInstance.get().get_runs(limit=1)"],
            env=env,
            check=True,
            capture_output=True,
        )
    if instance == "inprocess":
        p = subprocess.run([sys.executable, "-c", INPROCESS_CODE], cwd=code, env=env, capture_output=True, text=True)
        if p.returncode == 0:
            times = json.loads(p.stdout.strip().splitlines()[-1])
            if not times["ok"]:
                raise SystemExit(f"{label}: run failed\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
            t0, t_end = times["t0"], times["t1"]
    else:
        t0 = time.time()
        p = subprocess.run(
            [sys.executable, "-m", "dagster", "asset", "materialize", "-m", module, "--select", SELECTION],
            cwd=code,
            env=env,
            capture_output=True,
            text=True,
        )
        t_end = time.time()
    wall = t_end - t0
    if p.returncode != 0:
        raise SystemExit(f"{label}: run failed\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    ph = run_phases(home)
    work = ph["in_steps"]
    return {
        "code": label,
        "instance": instance,
        "wall_s": round(wall, 1),
        "in_steps_s": round(work, 1),
        "steps": ph["steps"],
        "events": ph["events"],
        "ratio": round(wall / work, 2),
        "overhead_s": round(wall - work, 1),  # wall time outside the steps
        "run_s": round(ph["run_end"] - ph["first_event"], 1),  # the run as Dagster records it
        "run_ratio": round((ph["run_end"] - ph["first_event"]) / work, 2),
        "status": ph["status"],
        "phases_s": {  # where the wall time went
            "start_to_first_event": round(ph["first_event"] - t0, 2),  # python + imports + instance + code load + run
            "planning": round(ph["first_step_start"] - ph["first_event"], 2),  # planned events, run start, resources
            "steps_span": round(ph["last_step_end"] - ph["first_step_start"], 2),  # steps incl. events between them
            "run_end": round(ph["run_end"] - ph["last_step_end"], 2),
            "exit": round(t_end - ph["run_end"], 2),  # CLI return + interpreter teardown (torch, transformers)
        },
        "load": [round(x, 2) for x in os.getloadavg()],  # 1/5/15-min load average after this run
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=None, help="a data root made by the demo (else one is made)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument(
        "--baseline-rev",
        default="5f4e77f",
        help="the code to compare with (a git revision, or a directory holding that tree)",
    )
    ap.add_argument(
        "--instances", default="fresh,existing,inprocess", help="fresh, existing and/or inprocess (see measure())"
    )
    args = ap.parse_args()
    instances = [x for x in args.instances.split(",") if x]
    with tempfile.TemporaryDirectory(prefix="bench-steps-") as td:
        tmp = Path(td)
        base = source_tree(args.baseline_rev, tmp / "baseline", FULL_TREE)
        try:
            seed = args.data or make_data(tmp)
            rows = []
            for i in range(args.repeats):  # interleaved, so load changes hit all variants alike
                for inst in instances:
                    pair = (("now", REPO), ("baseline", base))
                    for label, code in pair if i % 2 == 0 else pair[::-1]:  # neither always goes first
                        rows.append(measure(seed, tmp, label, "specforge_assets.definitions", i, code, inst))
                        print(json.dumps(rows[-1]), flush=True)
        finally:
            pass
    out = {
        "machine": f"{platform.node()} {os.cpu_count()} CPUs",
        "load": os.getloadavg(),
        "selection": SELECTION,
        "baseline_rev": args.baseline_rev,
        "runs": rows,
    }
    (REPO / "bench" / "results").mkdir(exist_ok=True)
    (REPO / "bench" / "results" / "steps.json").write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
