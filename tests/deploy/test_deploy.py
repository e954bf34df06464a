"""The team deployment for real: `scripts/deploy.sh up` starts a throwaway PostgreSQL cluster (an
unprivileged user, 127.0.0.1 only) and a gRPC code server, the daemon and the webserver as three
processes (dagster_home/deploy/dagster.yaml, workspace.deploy.yaml). Runs of the demo graph's
`sources_and_regenerated` job are launched over the webserver's GraphQL API, queued and started by
the daemon, executed by processes of their own; their records and events are read back from
PostgreSQL with SQL. `scripts/deploy.sh down` stops everything it started."""

from __future__ import annotations

import glob
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "deploy.sh"
sys.path.insert(0, str(REPO / "tests"))

from models.corpus import conversations  # noqa: E402

pytestmark = pytest.mark.slow

KEYS = ["alpha", "beta"]
JOB = "sources_and_regenerated"
RUN_TIMEOUT = 600


def _pg_available() -> str | None:
    """Why the deployment cannot start here, or None."""
    if not (os.environ.get("PG_BIN") or glob.glob("/usr/lib/postgresql/*/bin/initdb")):
        return "PostgreSQL server binaries absent (/usr/lib/postgresql/*/bin; apt-get install -y postgresql)"
    try:
        import dagster_postgres  # noqa: F401
        import psycopg2  # noqa: F401
    except ImportError:
        return "dagster-postgres is not installed (pip install -e '.[deploy]')"
    if os.getuid() == 0 and not shutil.which("setpriv"):
        return "running as root without setpriv (util-linux): PostgreSQL must run as an unprivileged user"
    return None


def _read_env(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            k, _, v = line[len("export ") :].partition("=")
            env[k] = shlex.split(v)[0] if v else ""
    return env


def _write_configs(dest: Path, files: Path) -> None:
    """The repo's configs with two file sources, pass-through regeneration, and every sensor and the
    declarative automation stopped (only the runs this test launches run)."""
    dest.mkdir(parents=True)
    for f in (REPO / "configs").glob("*.yaml"):
        shutil.copyfile(f, dest / f.name)
    src = yaml.safe_load((dest / "sources.yaml").read_text())
    src["sources"] = {k: {"format": "conversations", "data_path": str(files / f"{k}.jsonl")} for k in KEYS}
    (dest / "sources.yaml").write_text(yaml.safe_dump(src, sort_keys=False))
    regen = yaml.safe_load((dest / "regenerate.yaml").read_text()) or {}
    regen["sources"] = {}
    (dest / "regenerate.yaml").write_text(yaml.safe_dump(regen, sort_keys=False))
    auto = yaml.safe_load((dest / "automation.yaml").read_text()) or {}
    for sensor in auto.get("sensors", {}).values():
        sensor["default_status"] = "stopped"
    auto.setdefault("automation", {})["default_status"] = "stopped"
    (dest / "automation.yaml").write_text(yaml.safe_dump(auto, sort_keys=False))


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    why = _pg_available()
    if why:
        pytest.skip(why)
    base = tmp_path_factory.mktemp("deploy")
    files, data_root, config_dir = base / "files", base / "data", base / "configs"
    files.mkdir()
    data_root.mkdir()
    rows = conversations(40)
    for i, k in enumerate(KEYS):
        (files / f"{k}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[i * 20 : (i + 1) * 20]))
    _write_configs(config_dir, files)
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "SPECFORGE_DATA_ROOT": str(data_root),
        "SPECFORGE_CONFIG_DIR": str(config_dir),
        "HF_HUB_OFFLINE": "1",
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "PYTHONPATH": os.pathsep.join(p for p in [str(REPO), os.environ.get("PYTHONPATH", "")] if p),
    }
    env.pop("DAGSTER_HOME", None)
    up = subprocess.run(["bash", str(SCRIPT), "up"], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    state = Path(up.stdout.strip().splitlines()[-1]) if up.stdout.strip() else None
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        yield {"state": state, "env": _read_env(state / "env"), "data_root": data_root, "proc_env": env}
    finally:
        if state is not None and (state / "env").exists():
            subprocess.run(["bash", str(SCRIPT), "down", str(state)], env=env, timeout=300, check=False)


def _pids(state: Path) -> dict[str, int]:
    return {p.stem: int(p.read_text()) for p in (state / "pids").glob("*.pid")}


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _pg(env: dict):
    import psycopg2

    return psycopg2.connect(
        host=env["DAGSTER_PG_HOST"],
        port=int(env["DAGSTER_PG_PORT"]),
        user=env["DAGSTER_PG_USERNAME"],
        password=env["DAGSTER_PG_PASSWORD"],
        dbname=env["DAGSTER_PG_DB"],
    )


def _graphql(url: str, query: str, variables: dict) -> dict:
    import httpx

    r = httpx.post(f"{url}/graphql", json={"query": query, "variables": variables}, timeout=60)
    r.raise_for_status()
    body = r.json()
    assert not body.get("errors"), body["errors"]
    return body["data"]


ADD_PARTITION = """
mutation($repo: RepositorySelector!, $name: String!, $key: String!) {
  addDynamicPartition(repositorySelector: $repo, partitionsDefName: $name, partitionKey: $key) {
    __typename
    ... on PythonError { message }
  }
}"""


def _add_partitions(url: str) -> None:
    repo = {"repositoryLocationName": "specforge", "repositoryName": "__repository__"}
    for k in KEYS:
        out = _graphql(url, ADD_PARTITION, {"repo": repo, "name": "sources", "key": k})
        assert out["addDynamicPartition"]["__typename"] in (
            "AddDynamicPartitionSuccess",
            "DuplicateDynamicPartitionError",
        ), out


def test_three_processes_and_postgres_listen_locally(deployment):
    state, env = deployment["state"], deployment["env"]
    pids = _pids(state)
    assert set(pids) == {"code-server", "daemon", "webserver"}
    assert len(set(pids.values())) == 3 and all(_alive(p) for p in pids.values())
    # no sqlite storage under DAGSTER_HOME: the instance is PostgreSQL
    home = Path(env["DAGSTER_HOME"])
    assert not list(home.rglob("*.db"))
    conf = (state / "pg" / "data" / "postgresql.conf").read_text()
    assert "listen_addresses = '127.0.0.1'" in conf
    with _pg(env) as conn, conn.cursor() as cur:
        cur.execute("select current_user, inet_server_addr()::text")
        user, addr = cur.fetchone()
        assert user == "specforge" and addr.startswith("127.0.0.1")
        # the pools exist in the instance, one slot each
        cur.execute("select concurrency_key, count(*) from concurrency_slots group by concurrency_key")
        assert {"gpu": 1, "duckdb": 1}.items() <= dict(cur.fetchall()).items()
    # the cluster runs as an unprivileged user
    pg_pid = int((state / "pg" / "data" / "postmaster.pid").read_text().split()[0])
    assert Path(f"/proc/{pg_pid}").stat().st_uid != 0


def test_runs_through_graphql_land_in_postgres_in_their_own_processes(deployment):
    import dagster as dg
    from dagster import DagsterEventType as E
    from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

    state, env = deployment["state"], deployment["env"]
    url = env["SPECFORGE_DEPLOY_URL"]
    _add_partitions(url)

    host, port = url.removeprefix("http://").split(":")
    client = DagsterGraphQLClient(host, port_number=int(port))
    run_ids = [
        client.submit_job_execution(JOB, repository_location_name="specforge", tags={"dagster/partition": k})
        for k in KEYS
    ]
    deadline = time.time() + RUN_TIMEOUT
    status = {}
    while time.time() < deadline:
        try:
            status = {r: client.get_run_status(r).value for r in run_ids}
        except DagsterGraphQLClientError:
            status = {}
        if status and all(s in ("SUCCESS", "FAILURE", "CANCELED") for s in status.values()):
            break
        time.sleep(3)
    logs = "\n".join((state / "logs" / f"{n}.log").read_text()[-1500:] for n in ("daemon", "code-server"))
    assert status == {r: "SUCCESS" for r in run_ids}, logs

    services = set(_pids(state).values())
    with _pg(env) as conn, conn.cursor() as cur:
        cur.execute("select run_id, status from runs where run_id = any(%s)", (run_ids,))
        assert dict(cur.fetchall()) == {r: "SUCCESS" for r in run_ids}
        worker_pids = {}
        for r in run_ids:
            cur.execute("select dagster_event_type, event from event_logs where run_id = %s order by id", (r,))
            events = cur.fetchall()
            types = [t for t, _ in events]
            # queued by the webserver, launched by the daemon, executed, materialized: all in PostgreSQL
            for t in (E.RUN_ENQUEUED, E.RUN_STARTING, E.RUN_START, E.ASSET_MATERIALIZATION, E.RUN_SUCCESS):
                assert t.value in types, (t, sorted(set(types)))
            entries = [dg.deserialize_value(e, dg.EventLogEntry) for t, e in events if t == E.ENGINE_EVENT.value]
            started = [
                x.dagster_event for x in entries if x.dagster_event.message.startswith("Started process for run")
            ]
            assert len(started) == 1, [x.dagster_event.message for x in entries]
            worker_pids[r] = int(started[0].event_specific_data.metadata["pid"].value)
        cur.execute("select count(*) from asset_keys where asset_key like %s", ('%"sources"%',))
        assert cur.fetchone()[0] >= 1
    # each run had a process of its own: not the webserver, the daemon or the code server
    assert len(set(worker_pids.values())) == len(run_ids)
    assert not set(worker_pids.values()) & services
    # and its work is on the data root
    written = [str(p.relative_to(deployment["data_root"])) for p in deployment["data_root"].rglob("*")]
    for k in KEYS:
        assert any(k in p for p in written), (k, written[:20])


LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}"""
BACKFILL_STATUS = """
query($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename ... on PartitionBackfill { status } } }"""


def test_backfill_survives_a_killed_daemon(deployment):
    """SIGKILL the daemon the moment a backfill of both partitions starts launching runs, start it
    again: the backfill's runs finish from what PostgreSQL holds. A run the dead daemon left
    half-launched (STARTING, no process) is failed by run monitoring and retried (the backfill's
    runs ask for one retry); every partition ends with exactly one successful run, and no
    partition's step ran twice."""
    import signal

    state, env = deployment["state"], deployment["env"]
    url = env["SPECFORGE_DEPLOY_URL"]
    repo = {"repositoryLocationName": "specforge", "repositoryName": "__repository__"}
    out = _graphql(
        url,
        LAUNCH_BACKFILL,
        {
            "params": {
                "selector": {"partitionSetName": f"{JOB}_partition_set", "repositorySelector": repo},
                "partitionNames": KEYS,
                "tags": [{"key": "dagster/max_retries", "value": "1"}],
            }
        },
    )["launchPartitionBackfill"]
    assert out["__typename"] == "LaunchBackfillSuccess", out
    backfill = out["backfillId"]

    def backfill_runs():
        """(run id, status, partition, steps started) of the backfill's runs and their retries."""
        with _pg(env) as conn, conn.cursor() as cur:
            cur.execute("select run_id from run_tags where key = 'dagster/backfill' and value = %s", (backfill,))
            ids = [r for (r,) in cur.fetchall()]
            cur.execute("select run_id from run_tags where key = 'dagster/root_run_id' and value = any(%s)", (ids,))
            ids = sorted(set(ids) | {r for (r,) in cur.fetchall()})
            cur.execute(
                "select r.run_id, r.status, p.value, "
                "(select count(*) from event_logs e where e.run_id = r.run_id and e.dagster_event_type = 'STEP_START') "
                "from runs r join run_tags p on p.run_id = r.run_id and p.key = 'dagster/partition' "
                "where r.run_id = any(%s)",
                (ids,),
            )
            return cur.fetchall()

    deadline = time.time() + RUN_TIMEOUT
    while not backfill_runs() and time.time() < deadline:  # the daemon has started on it
        time.sleep(0.5)
    assert backfill_runs(), "the daemon never started the backfill"
    daemon = _pids(state)["daemon"]
    os.killpg(daemon, signal.SIGKILL)
    while _alive(daemon):
        time.sleep(0.2)
    killed_at = time.time()
    r = subprocess.run(
        ["bash", str(SCRIPT), "start-daemon", str(state)],
        env=deployment["proc_env"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.split()[-1]) != daemon

    def settled(runs):
        done = {p for _, st, p, _ in runs if st == "SUCCESS"}
        return done == set(KEYS) and all(st in ("SUCCESS", "FAILURE", "CANCELED") for _, st, _, _ in runs)

    runs = backfill_runs()
    while time.time() < deadline and not settled(runs):
        time.sleep(3)
        runs = backfill_runs()
    print(
        f"backfill {backfill}: runs {[(st, p, steps) for _, st, p, steps in runs]}, "
        f"settled {time.time() - killed_at:.0f}s after the daemon was killed"
    )
    assert settled(runs), runs
    for k in KEYS:
        mine = [(st, steps) for _, st, p, steps in runs if p == k]
        assert [st for st, _ in mine].count("SUCCESS") == 1, (k, mine)
        # an attempt that failed never ran a step: nothing ran twice
        assert all(steps == 0 for st, steps in mine if st != "SUCCESS"), (k, mine)


def test_killed_run_worker_is_failed_and_retried_without_duplicates(deployment):
    """SIGKILL a run's worker process in the middle of its first step: the code server that
    started it reports the run failed, the daemon retries it from the failure (the run asked for
    one retry), the retry succeeds, and every asset of the partition ends materialized with one
    data version (at most once per run: no step that succeeded is run again)."""
    import signal

    import dagster as dg
    from dagster import DagsterEventType as E
    from dagster_graphql import DagsterGraphQLClient

    env = deployment["env"]
    url = env["SPECFORGE_DEPLOY_URL"]
    _add_partitions(url)
    host, port = url.removeprefix("http://").split(":")
    client = DagsterGraphQLClient(host, port_number=int(port))
    run_id = client.submit_job_execution(
        JOB, repository_location_name="specforge", tags={"dagster/partition": KEYS[0], "dagster/max_retries": "1"}
    )

    def events(run_ids, types):
        with _pg(env) as conn, conn.cursor() as cur:
            cur.execute(
                "select run_id, event from event_logs where run_id = any(%s) and dagster_event_type = any(%s) "
                "order by id",
                (list(run_ids), [t.value for t in types]),
            )
            return [(r, dg.deserialize_value(e, dg.EventLogEntry)) for r, e in cur.fetchall()]

    deadline = time.time() + RUN_TIMEOUT
    worker = None
    while time.time() < deadline:
        got = events([run_id], [E.STEP_START, E.ENGINE_EVENT])
        starts = [x for _, x in got if x.dagster_event.event_type == E.STEP_START]
        procs = [x for _, x in got if x.dagster_event.message.startswith("Started process for run")]
        if starts and procs:
            worker = int(procs[0].dagster_event.event_specific_data.metadata["pid"].value)
            break
        time.sleep(0.3)
    assert worker is not None, "the run never started a step"
    os.kill(worker, signal.SIGKILL)
    killed_at = time.time()

    retry, status = None, {}
    while time.time() < deadline:
        with _pg(env) as conn, conn.cursor() as cur:
            cur.execute("select run_id from run_tags where key = 'dagster/parent_run_id' and value = %s", (run_id,))
            row = cur.fetchone()
            retry = row[0] if row else None
            cur.execute(
                "select run_id, status from runs where run_id = any(%s)", ([run_id] + ([retry] if retry else []),)
            )
            status = dict(cur.fetchall())
        if retry and status.get(retry) in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(2)
    print(
        f"killed run worker {worker}: run {status.get(run_id)}, retry {retry} {status.get(retry)} "
        f"{time.time() - killed_at:.0f}s after the kill"
    )
    assert status.get(run_id) == "FAILURE" and retry is not None and status.get(retry) == "SUCCESS", status
    mats = events([run_id, retry], [E.ASSET_MATERIALIZATION])
    per_run: dict[str, dict[str, int]] = {}
    versions: dict[str, set] = {}
    for rid, x in mats:
        key = x.dagster_event.asset_key.to_user_string()
        per_run.setdefault(rid, {})[key] = per_run.get(rid, {}).get(key, 0) + 1
        tags = x.dagster_event.event_specific_data.materialization.tags or {}
        versions.setdefault(key, set()).add(tags.get("dagster/data_version"))
    # Every asset of the partition is materialized, by one run or the other, at most once per run.
    # The kill can land after a step's materialization event and before the step ends (its in-step
    # checks run after the event): the retry then re-runs that step, and it must publish the same
    # data version again, never a second, different copy.
    assert set(versions) == {"sources/conversations", "regenerated/conversations"}, per_run
    assert all(n == 1 for counts in per_run.values() for n in counts.values()), per_run
    assert all(len(v) == 1 and None not in v for v in versions.values()), versions


def test_down_stops_everything(deployment, tmp_path):
    """Last: `down` stops the three processes and PostgreSQL and removes the state folder."""
    state = deployment["state"]
    pids = list(_pids(state).values())
    pg_pid = int((state / "pg" / "data" / "postmaster.pid").read_text().split()[0])
    env = {**os.environ, "PYTHON": sys.executable}
    r = subprocess.run(["bash", str(SCRIPT), "down", str(state)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    deadline = time.time() + 30
    while time.time() < deadline and any(_alive(p) for p in [*pids, pg_pid]):
        time.sleep(0.5)
    assert not [p for p in [*pids, pg_pid] if _alive(p)]
    assert not state.exists()


def test_up_refuses_a_ui_port_already_taken(tmp_path):
    """`make ui` also listens on 3000: with the port taken, `up` says so and starts nothing,
    instead of reporting "up" while its webserver died and the URL answers with the other UI."""
    import socket

    why = _pg_available()
    if why:
        pytest.skip(why)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "PYTHON": sys.executable, "WEB_PORT": str(port)}
        env.pop("DAGSTER_HOME", None)
        r = subprocess.run(
            ["bash", str(SCRIPT), "up", str(tmp_path / "state")], cwd=REPO, env=env, capture_output=True, text=True
        )
    assert r.returncode != 0
    first = r.stderr.strip().splitlines()[0]
    assert first.startswith(f"deploy: port {port} on 127.0.0.1 is in use") and "DEPLOY_PORT" in first, r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "state" / "env").exists() and not (tmp_path / "state" / "pg" / "data").exists()
