"""Backfill of N source partitions (default 20) on the team deployment (PostgreSQL storage; code
server, daemon and webserver as three processes: `scripts/deploy.sh up`) vs the sqlite default
(`dagster dev` with dagster_home/dagster.yaml), on the same machine, data and settings.

Both instances have the same run queue (at most 4 runs, 3 per backfill, one process per run).
For each instance the benchmark:
1. writes N small file sources (`--rows` conversations each), pass-through regeneration, every
   sensor and the declarative automation stopped (only the backfill's runs run);
2. registers the N partitions over GraphQL and launches one backfill of the
   `sources_and_regenerated` job over all of them (what "Materialize all" of a backfill does);
3. waits until every partition has a successful run.

It reports the wall time from the launch to the last run's end, the daemon's CPU time
(utime + stime from /proc over the same span) and the CPU time of everything the instance runs
(all its processes and their reaped children: run workers, PostgreSQL).

    .venv/bin/python bench/bench_backfill.py [--partitions 20] [--rows 200] [--modes sqlite,postgres]

Needs the `deploy` extra and Debian's `postgresql` for the postgres mode (skipped with a reason
otherwise). Writes bench/results/backfill.json; the section in bench/RESULTS.md is written from
it by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "deploy.sh"
JOB = "sources_and_regenerated"
REPO_SEL = {"repositoryLocationName": "specforge", "repositoryName": "__repository__"}
TICK = os.sysconf("SC_CLK_TCK")

ADD_PARTITION = """mutation($repo: RepositorySelector!, $name: String!, $key: String!) {
  addDynamicPartition(repositorySelector: $repo, partitionsDefName: $name, partitionKey: $key) {
    __typename ... on PythonError { message } } }"""
LAUNCH_BACKFILL = """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
    __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""
RUNS = """query($f: RunsFilter) { runsOrError(filter: $f, limit: 500) { ... on Runs { results {
    runId status startTime endTime tags { key value } } } } }"""
LOADED = """{ workspaceOrError { ... on Workspace { locationEntries { loadStatus
    locationOrLoadError { __typename } } } } }"""


def gql(url: str, query: str, **variables) -> dict:
    r = httpx.post(f"{url}/graphql", json={"query": query, "variables": variables}, timeout=120)
    r.raise_for_status()
    body = r.json()
    if body.get("errors"):
        raise SystemExit(f"GraphQL errors: {body['errors']}")
    return body["data"]


def conversation(i: int) -> dict:
    a, b = i % 9 + 1, (i * 7) % 9 + 1
    return {
        "id": f"row-{i}",
        "conversations": [
            {"role": "user", "content": f"Item {i}: I have {a} apples and get {b} more. How many?"},
            {"role": "assistant", "content": f"{a} plus {b} is {a + b}, so {a + b} apples."},
        ],
    }


def write_inputs(base: Path, partitions: int, rows: int) -> tuple[Path, Path, list[str]]:
    files, config_dir, data_root = base / "files", base / "configs", base / "data"
    files.mkdir()
    data_root.mkdir()
    config_dir.mkdir()
    keys = [f"part-{i:02d}" for i in range(partitions)]
    for n, k in enumerate(keys):
        with open(files / f"{k}.jsonl", "w") as f:
            for i in range(rows):
                f.write(json.dumps(conversation(n * rows + i)) + "\n")
    for f in (REPO / "configs").glob("*.yaml"):
        shutil.copyfile(f, config_dir / f.name)
    src = yaml.safe_load((config_dir / "sources.yaml").read_text())
    src["sources"] = {k: {"format": "conversations", "data_path": str(files / f"{k}.jsonl")} for k in keys}
    (config_dir / "sources.yaml").write_text(yaml.safe_dump(src, sort_keys=False))
    regen = yaml.safe_load((config_dir / "regenerate.yaml").read_text()) or {}
    regen["sources"] = {}
    (config_dir / "regenerate.yaml").write_text(yaml.safe_dump(regen, sort_keys=False))
    auto = yaml.safe_load((config_dir / "automation.yaml").read_text()) or {}
    for sensor in auto.get("sensors", {}).values():
        sensor["default_status"] = "stopped"
    auto.setdefault("automation", {})["default_status"] = "stopped"
    (config_dir / "automation.yaml").write_text(yaml.safe_dump(auto, sort_keys=False))
    return data_root, config_dir, keys


def cpu_s(pid: int, children: bool = False) -> float:
    """utime + stime (+ cutime + cstime: reaped children) of one process, in seconds; 0 if gone."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(f[11]) + int(f[12]) + ((int(f[13]) + int(f[14])) if children else 0)
    return ticks / TICK


def descendants(root: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            kids.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def wait_loaded(url: str, timeout: float = 300) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            entries = gql(url, LOADED)["workspaceOrError"]["locationEntries"]
            if entries and all(
                e["loadStatus"] == "LOADED"
                and (e["locationOrLoadError"] or {}).get("__typename") == "RepositoryLocation"
                for e in entries
            ):
                return
        except (httpx.HTTPError, KeyError, TypeError):
            pass
        time.sleep(1)
    raise SystemExit(f"{url}: the code location did not load within {timeout:.0f}s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sqlite(base: Path, env: dict) -> dict:
    home = base / "home"
    home.mkdir()
    shutil.copyfile(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    log = open(base / "dagster-dev.log", "wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dagster",
            "dev",
            "-w",
            str(REPO / "workspace.yaml"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=REPO,
        env={**env, "DAGSTER_HOME": str(home)},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    wait_loaded(url)
    daemon = [p for p in descendants(proc.pid) if "dagster-daemon" in cmdline(p) or "_daemon" in cmdline(p)]
    if not daemon:
        raise SystemExit("dagster dev: no daemon process found")

    def stop() -> None:
        try:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=60)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    return {"url": url, "daemon": daemon[0], "roots": [proc.pid], "stop": stop}


def start_postgres(base: Path, env: dict) -> dict:
    state = base / "state"
    base.chmod(0o711)  # PostgreSQL runs as an unprivileged user and must reach state/pg
    e = {**env, "PYTHON": sys.executable}
    e.pop("DAGSTER_HOME", None)
    up = subprocess.run(["bash", str(SCRIPT), "up", str(state)], cwd=REPO, env=e, capture_output=True, text=True)
    if up.returncode != 0:
        raise SystemExit(f"scripts/deploy.sh up failed:\n{up.stderr[-2000:]}")
    denv = {}
    for line in (state / "env").read_text().splitlines():
        if line.startswith("export "):
            k, _, v = line[len("export ") :].partition("=")
            denv[k] = v.strip("'\"")
    url = denv["SPECFORGE_DEPLOY_URL"]
    wait_loaded(url)
    pids = {p.stem: int(p.read_text()) for p in (state / "pids").glob("*.pid")}
    pg = int((state / "pg" / "data" / "postmaster.pid").read_text().split()[0])

    def stop() -> None:
        subprocess.run(["bash", str(SCRIPT), "down", str(state)], env=e, capture_output=True, check=False)

    return {"url": url, "daemon": pids["daemon"], "roots": [*pids.values(), pg], "stop": stop}


def measure(mode: str, partitions: int, rows: int) -> dict:
    base = Path(tempfile.mkdtemp(prefix=f"bfill-{mode[:2]}-", dir="/tmp"))
    data_root, config_dir, keys = write_inputs(base, partitions, rows)
    env = {
        **os.environ,
        "SPECFORGE_DATA_ROOT": str(data_root),
        "SPECFORGE_CONFIG_DIR": str(config_dir),
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "HF_HUB_OFFLINE": "1",
        "TMPDIR": str(base),
        "PYTHONPATH": os.pathsep.join(p for p in [str(REPO), os.environ.get("PYTHONPATH", "")] if p),
    }
    inst = (start_sqlite if mode == "sqlite" else start_postgres)(base, env)
    try:
        url = inst["url"]
        for k in keys:
            out = gql(url, ADD_PARTITION, repo=REPO_SEL, name="sources", key=k)["addDynamicPartition"]
            assert out["__typename"] in ("AddDynamicPartitionSuccess", "DuplicateDynamicPartitionError"), out
        time.sleep(2)
        procs = {p for r in inst["roots"] for p in descendants(r)}
        cpu0 = {p: cpu_s(p, children=True) for p in procs}
        daemon0 = cpu_s(inst["daemon"])
        load0 = os.getloadavg()[0]
        t0 = time.time()
        out = gql(
            url,
            LAUNCH_BACKFILL,
            params={
                "selector": {"partitionSetName": f"{JOB}_partition_set", "repositorySelector": REPO_SEL},
                "partitionNames": keys,
            },
        )["launchPartitionBackfill"]
        assert out["__typename"] == "LaunchBackfillSuccess", out
        backfill = out["backfillId"]
        while True:
            runs = gql(url, RUNS, f={"tags": [{"key": "dagster/backfill", "value": backfill}]})["runsOrError"][
                "results"
            ]
            ok = {
                t["value"]
                for r in runs
                if r["status"] == "SUCCESS"
                for t in r["tags"]
                if t["key"] == "dagster/partition"
            }
            failed = [r["runId"] for r in runs if r["status"] in ("FAILURE", "CANCELED")]
            if failed:
                raise SystemExit(f"{mode}: backfill runs failed: {failed}")
            if ok == set(keys):
                break
            if time.time() - t0 > 1800:
                raise SystemExit(f"{mode}: backfill not done after 30 min ({len(ok)}/{len(keys)})")
            time.sleep(1)
        end = max(r["endTime"] for r in runs)
        wall = end - t0
        daemon_cpu = cpu_s(inst["daemon"]) - daemon0
        # every process alive now: its own CPU plus its reaped children's (run workers that ended,
        # PostgreSQL backends that closed); those alive at the start count from their start value
        alive = {p for r in inst["roots"] for p in descendants(r)}
        total_cpu = sum(cpu_s(p, children=True) - cpu0.get(p, 0.0) for p in alive)
        run_s = sorted(r["endTime"] - r["startTime"] for r in runs)
        res = {
            "mode": mode,
            "partitions": partitions,
            "rows_per_partition": rows,
            "runs": len(runs),
            "wall_s": round(wall, 1),
            "daemon_cpu_s": round(daemon_cpu, 2),
            "instance_cpu_s": round(total_cpu, 1),
            "run_s_median": round(run_s[len(run_s) // 2], 1),
            "load_1min_start": round(load0, 2),
            "load_1min_end": round(os.getloadavg()[0], 2),
        }
        print(json.dumps(res), flush=True)
        return res
    finally:
        inst["stop"]()
        shutil.rmtree(base, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--partitions", type=int, default=20)
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--modes", default="sqlite,postgres")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "backfill.json"))
    a = ap.parse_args()
    results = [measure(m, a.partitions, a.rows) for m in a.modes.split(",")]
    by = {r["mode"]: r for r in results}
    summary = {}
    if "sqlite" in by and "postgres" in by:
        summary = {
            "wall_postgres_over_sqlite": round(by["postgres"]["wall_s"] / by["sqlite"]["wall_s"], 2),
            "daemon_cpu_postgres_over_sqlite": round(
                by["postgres"]["daemon_cpu_s"] / max(by["sqlite"]["daemon_cpu_s"], 1e-9), 2
            ),
        }
        print(json.dumps(summary))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(
        json.dumps(
            {"machine": f"{platform.node()} {os.cpu_count()} cores", "results": results, "summary": summary}, indent=2
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
