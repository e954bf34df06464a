"""End-to-end harness: a real `dagster dev` (webserver + daemon + code server) on 127.0.0.1 with
a temp DAGSTER_HOME, data root and tiny configs, driven by Playwright through Debian's chromium;
final states asserted over GraphQL. Screenshots of failing tests go to tests/_artifacts/.
"""

from __future__ import annotations

import copy
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "_artifacts"
CHROMIUM = os.environ.get("SPECFORGE_CHROMIUM", "/usr/bin/chromium")
LOCATION = "specforge"

# Tiny settings over the repo's configs, so the whole graph runs in a couple of minutes on 2 cores.
SOURCES = {
    "sample-ultrachat": {"preset": "ultrachat", "data_path": "sample:ultrachat", "sample_size": 40},
    "sample-sharegpt": {"preset": "sharegpt", "data_path": "sample:sharegpt/sharegpt_sample.json", "sample_size": 40},
    "sample-custom": {"format": "auto", "data_path": "sample:custom/conversations.jsonl", "quarantine_threshold": 0.5},
    # its file does not exist until the backfill test writes it: the partition fails first,
    # then "Re-execute from failure" runs it (and only it) again
    "sample-late": {"format": "auto", "data_path": "late/conversations.jsonl"},
}
OVERRIDES = {
    "regenerate": {"sources": {}},
    "train": {
        "training": {"max_steps": 4, "batch_size": 2, "max_length": 64, "save_every": 2},
        "evaluation": {"num_prompts": 2, "max_new_tokens": 6, "evaluate_previous": False},
        "demo_target": {"pretrain_steps": 4, "hidden_size": 32, "vocab_size": 512},
    },
    "tokenize": {"max_length": 128},
    "mix": {"eval": {"min_rows": 4, "fraction": 0.1}},
    "automation": {
        "sensors": {
            "incoming_files": {"minimum_interval_seconds": 3, "settle_seconds": 1},
            "register_sources": {"minimum_interval_seconds": 3},
            "retrain": {"minimum_interval_seconds": 3},
            "run_failures": {"minimum_interval_seconds": 3},
        },
        "automation": {"minimum_interval_seconds": 5},
    },
}


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and v else v
    return out


def write_configs(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for f in (REPO / "configs").glob("*.yaml"):
        shutil.copyfile(f, dest / f.name)
    src = yaml.safe_load((dest / "sources.yaml").read_text()) if (dest / "sources.yaml").exists() else {}
    src["sources"] = SOURCES
    (dest / "sources.yaml").write_text(yaml.safe_dump(src, sort_keys=False))
    for name, over in OVERRIDES.items():
        path = dest / f"{name}.yaml"
        cfg = yaml.safe_load(path.read_text()) if path.exists() else {}
        (path).write_text(yaml.safe_dump(_deep_merge(cfg or {}, over), sort_keys=False))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Dagster:
    """A running `dagster dev` and a GraphQL client for it."""

    def __init__(self, url: str, home: Path, data_root: Path, config_dir: Path, proc: subprocess.Popen, log: Path):
        self.url, self.home, self.data_root, self.config_dir, self.proc, self.log = (
            url,
            home,
            data_root,
            config_dir,
            proc,
            log,
        )
        self.client = httpx.Client(base_url=url, timeout=60)

    def gql(self, query: str, **variables):
        r = self.client.post("/graphql", json={"query": query, "variables": variables})
        r.raise_for_status()
        body = r.json()
        if body.get("errors"):
            raise AssertionError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def wait(self, fn, timeout: float, what: str, interval: float = 2.0):
        """Poll `fn()` until it returns a truthy value; fail with `what` (and the log tail)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"Dagster exited ({self.proc.returncode}) while waiting for {what}\n{self.log_tail()}"
                )
            last = fn()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    # -- queries used by several tests -----------------------------------------------------
    def runs(self, tags: dict | None = None, limit: int = 50) -> list[dict]:
        flt = {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}
        q = """query($f: RunsFilter, $n: Int) { runsOrError(filter: $f, limit: $n) { __typename
                 ... on Runs { results { runId status jobName creationTime
                   tags { key value } assetSelection { path } } } } }"""
        return self.gql(q, f=flt, n=limit)["runsOrError"]["results"]

    def materialized_partitions(self, path: list[str]) -> list[str]:
        q = """query($k: AssetKeyInput!) { assetNodeOrError(assetKey: $k) { __typename
                 ... on AssetNode { assetPartitionStatuses { __typename
                   ... on DefaultPartitionStatuses { materializedPartitions failedPartitions } } } } }"""
        node = self.gql(q, k={"path": path})["assetNodeOrError"]
        return sorted(node["assetPartitionStatuses"]["materializedPartitions"])

    def materializations(self, path: list[str], limit: int = 20) -> list[dict]:
        q = """query($k: AssetKeyInput!, $n: Int) { assetOrError(assetKey: $k) { __typename
                 ... on Asset { assetMaterializations(limit: $n) { runId partition timestamp
                   tags { key value } } } } }"""
        a = self.gql(q, k={"path": path}, n=limit)["assetOrError"]
        return a.get("assetMaterializations", []) if a["__typename"] == "Asset" else []

    def partitions(self) -> list[str]:
        q = """query { partitionSetsOrError(repositorySelector: {repositoryName: "__repository__",
                 repositoryLocationName: "specforge"}, pipelineName: "sources_and_regenerated") {
                 ... on PartitionSets { results { partitionsOrError { ... on Partitions { results { name } } } } } } }"""
        res = self.gql(q)["partitionSetsOrError"]["results"]
        return sorted(p["name"] for p in res[0]["partitionsOrError"]["results"]) if res else []


def _wait_loaded(d: Dagster, timeout: float) -> None:
    q = """{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
             locationOrLoadError { __typename ... on PythonError { message } } } } } }"""

    def loaded():
        try:
            d.client.get("/server_info").raise_for_status()
            entries = d.gql(q)["workspaceOrError"]["locationEntries"]
        except (httpx.HTTPError, AssertionError, KeyError):
            return False
        for e in entries:
            err = e.get("locationOrLoadError") or {}
            if err.get("__typename") == "PythonError":
                raise AssertionError(f"code location {e['name']} failed to load:\n{err['message']}")
            if e["loadStatus"] == "LOADED" and err.get("__typename") == "RepositoryLocation":
                return True
        return False

    d.wait(loaded, timeout, "the code location to load")


@pytest.fixture(scope="module", params=["dev", pytest.param("deploy", marks=pytest.mark.slow)])
def dagster(request):
    """The instance the UI tests drive: `dev` = one `dagster dev`; `deploy` = the team deployment of
    `scripts/deploy.sh` (PostgreSQL storage, gRPC code server, daemon and webserver as three
    processes, queued runs each in a process of its own), with the same data root and configs."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium); browser tests need it")
    if request.param == "deploy":
        yield from _deployment()
        return
    # short temp dir: the code server listens on a unix socket (108-byte path limit)
    base = Path(tempfile.mkdtemp(prefix="sfe2e-", dir="/tmp"))
    home, data_root, config_dir = base / "home", base / "data", base / "configs"
    home.mkdir()
    data_root.mkdir()
    shutil.copyfile(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    write_configs(config_dir)
    port = _free_port()
    workspace = REPO / "workspace.yaml"
    if os.environ.get("SPECFORGE_E2E_TOY"):
        # harness self-test against tests/platform/toy_graph.py (same keys, seconds per run)
        (base / "toy_defs.py").write_text(
            "import os, sys\n"
            f"sys.path.insert(0, {str(REPO / 'tests' / 'platform')!r})\n"
            "from pathlib import Path\nfrom toy_graph import build_toy_defs\n"
            "defs = build_toy_defs(Path(os.environ['SPECFORGE_DATA_ROOT']), Path(os.environ['SPECFORGE_CONFIG_DIR']))\n"
        )
        workspace = base / "workspace.yaml"
        workspace.write_text(
            yaml.safe_dump(
                {
                    "load_from": [
                        {
                            "python_file": {
                                "relative_path": str(base / "toy_defs.py"),
                                "location_name": LOCATION,
                                "working_directory": str(REPO),
                            }
                        }
                    ]
                }
            )
        )
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "SPECFORGE_DATA_ROOT": str(data_root),
        "SPECFORGE_CONFIG_DIR": str(config_dir),
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "HF_HUB_OFFLINE": "1",
        "TMPDIR": str(base),
    }
    log = base / "dagster-dev.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-w", str(workspace), "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO,
            env=env,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    d = Dagster(f"http://127.0.0.1:{port}", home, data_root, config_dir, proc, log)
    try:
        _wait_loaded(d, timeout=240)
        yield d
    finally:
        d.client.close()
        _stop_group(proc)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log, ARTIFACTS / "dagster-dev.log")
        shutil.rmtree(base, ignore_errors=True)


class _DeployProcesses:
    """`Popen`-like view of the deployment's three processes for :meth:`Dagster.wait`: `poll()` is
    None while the webserver, the daemon and the code server all run."""

    def __init__(self, state: Path):
        self.pids = {p.stem: int(p.read_text()) for p in (state / "pids").glob("*.pid")}
        self.returncode: str | None = None

    def poll(self):
        for name, pid in self.pids.items():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                stat = ") Z"
            if stat.rsplit(")", 1)[1].split()[0] == "Z":
                self.returncode = f"{name} (pid {pid}) died"
                return self.returncode
        return None


def _deployment():
    """`scripts/deploy.sh up` with the e2e data root and configs; `down` afterwards (its logs are
    copied to tests/_artifacts/deploy-*.log first)."""
    sys.path.insert(0, str(REPO / "tests" / "deploy"))
    from test_deploy import SCRIPT, _pg_available, _read_env

    why = _pg_available()
    if why:
        pytest.skip(why)
    base = Path(tempfile.mkdtemp(prefix="sfdep-", dir="/tmp"))
    base.chmod(0o711)  # PostgreSQL runs as an unprivileged user and must reach state/pg
    data_root, config_dir = base / "data", base / "configs"
    data_root.mkdir()
    write_configs(config_dir)
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "SPECFORGE_DATA_ROOT": str(data_root),
        "SPECFORGE_CONFIG_DIR": str(config_dir),
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "HF_HUB_OFFLINE": "1",
        "TMPDIR": str(base),
        "PYTHONPATH": os.pathsep.join(p for p in [str(REPO), os.environ.get("PYTHONPATH", "")] if p),
    }
    env.pop("DAGSTER_HOME", None)
    up = subprocess.run(
        ["bash", str(SCRIPT), "up", str(base / "state")], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )
    state = base / "state"
    try:
        assert up.returncode == 0, f"scripts/deploy.sh up failed:\n{up.stderr[-3000:]}"
        denv = _read_env(state / "env")
        d = Dagster(
            denv["SPECFORGE_DEPLOY_URL"],
            Path(denv["DAGSTER_HOME"]),
            data_root,
            config_dir,
            _DeployProcesses(state),
            state / "logs" / "daemon.log",
        )
        try:
            _wait_loaded(d, timeout=240)
            yield d
        finally:
            d.client.close()
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for log in (state / "logs").glob("*.log"):
            shutil.copyfile(log, ARTIFACTS / f"deploy-{log.name}")
        if (state / "env").exists():
            subprocess.run(["bash", str(SCRIPT), "down", str(state)], env=env, timeout=300, check=False)
        shutil.rmtree(base, ignore_errors=True)


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGINT to our own process group (dagster dev forwards shutdown), then SIGKILL."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def browser(dagster):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield b
        b.close()


@pytest.fixture
def page(browser, dagster, request):
    ctx = browser.new_context(viewport={"width": 1600, "height": 1000}, base_url=dagster.url)
    ctx.set_default_timeout(30_000)
    pg = ctx.new_page()
    console: list[str] = []
    pg.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type == "error" else None)
    yield pg
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        name = request.node.name
        try:
            pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        except Exception as e:  # noqa: BLE001 - a broken page must not hide the test failure
            print(f"screenshot failed: {e}")
        (ARTIFACTS / f"{name}.console.txt").write_text("\n".join(console))
        (ARTIFACTS / f"{name}.dagster.txt").write_text(dagster.log_tail(400))
    ctx.close()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)
