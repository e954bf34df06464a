"""Cache hits before any server, content-only data versions, one run per partition, progress.

Dagster tests run the project's real `sources_and_regenerated` job (real definitions and
resources, a temp instance) against a real stub server; lock tests use two real processes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from specforge_assets.checks.regenerate import reconcile
from specforge_assets.keys import REGENERATED, SOURCES
from specforge_assets.regenerate import partition as partition_mod
from specforge_assets.regenerate.cache import content_version
from specforge_assets.regenerate.config import source_config
from specforge_assets.regenerate.journal import journal_paths
from specforge_assets.regenerate.locks import partition_lock_path, read_holder
from specforge_assets.regenerate.partition import regenerate_partition
from specforge_assets.tags import DATA_VERSION_TAG

from .conftest import dead_address, make_rows, read_jsonl, write_rows

KEY = "s1"


def _requests(stub) -> int:
    with urllib.request.urlopen(f"http://{stub.address}/stats", timeout=5) as r:
        return json.loads(r.read())["chat_requests"]


@pytest.fixture
def project(tmp_path, monkeypatch):
    """(root, config_dir, write_regen_yaml): a data root and config dir the real definitions
    read through SPECFORGE_DATA_ROOT / SPECFORGE_CONFIG_DIR; source `s1` is a local JSONL."""
    root, cfg = tmp_path / "data", tmp_path / "configs"
    root.mkdir()
    cfg.mkdir()
    write_rows(tmp_path / "in" / "s1.jsonl", make_rows(12))
    (cfg / "sources.yaml").write_text(
        yaml.safe_dump({"sources": {KEY: {"format": "conversations", "data_path": str(tmp_path / "in" / "s1.jsonl")}}})
    )
    monkeypatch.setenv("SPECFORGE_DATA_ROOT", str(root))
    monkeypatch.setenv("SPECFORGE_CONFIG_DIR", str(cfg))

    def regen_yaml(**source):
        (cfg / "regenerate.yaml").write_text(
            yaml.safe_dump({"sources": {KEY: {"enabled": True, "model": "stub-model", "concurrency": 4, **source}}})
        )

    return root, cfg, regen_yaml


@pytest.fixture
def no_launch(monkeypatch):
    """Any attempt to launch a local server fails the test (and is counted)."""
    calls = []

    class NoLaunch:
        def __init__(self, *a, **k):
            calls.append((a, k))
            raise AssertionError("a local server was launched")

    monkeypatch.setattr(partition_mod, "LocalServer", NoLaunch)
    return calls


def _run_job(instance, run_config=None):
    from specforge_assets.definitions import defs

    job = defs.resolve_job_def("sources_and_regenerated")
    return job.execute_in_process(
        instance=instance, partition_key=KEY, run_config=run_config or {}, raise_on_error=False
    )


def _latest(instance, key):
    rec = instance.fetch_materializations(key, limit=1).records[0]
    m = rec.asset_materialization
    return m.tags.get(DATA_VERSION_TAG), {k: v.value for k, v in m.metadata.items()}, rec.run_id


def test_unchanged_inputs_and_settings_are_a_cache_hit_with_no_server(
    project, stub_server, no_launch, dagster_instance
):
    root, _, regen_yaml = project
    stub = stub_server()
    regen_yaml(server_addresses=[stub.address])
    dagster_instance.add_dynamic_partitions("sources", [KEY])

    # (e) one run of the job materializes both layers of the partition
    res = _run_job(dagster_instance)
    assert res.success
    assert {(e.asset_key, e.partition) for e in res.get_asset_materialization_events()} == {
        (SOURCES, KEY),
        (REGENERATED, KEY),
    }
    v1, meta1, run1 = _latest(dagster_instance, REGENERATED)
    assert meta1["cache"] == "miss" and meta1["success"] == 12
    sent = _requests(stub)
    assert sent >= 12

    # (a) nothing changed → same version, cache hit, not one request
    assert _run_job(dagster_instance).success
    v2, meta2, run2 = _latest(dagster_instance, REGENERATED)
    assert run2 != run1 and v2 == v1 and meta2["cache"] == "hit"
    assert _requests(stub) == sent

    # (b) only the port changes (a dead one: it must not even be probed) → still a hit
    regen_yaml(server_addresses=[dead_address()], concurrency=1, request_timeout_s=5)
    assert _run_job(dagster_instance).success
    v3, meta3, _ = _latest(dagster_instance, REGENERATED)
    assert v3 == v1 and meta3["cache"] == "hit"
    assert not no_launch

    # (c) max_tokens changes → regenerated (the run config overrides the yaml)
    regen_yaml(server_addresses=[stub.address])
    res = _run_job(dagster_instance, {"ops": {"regenerated__conversations": {"config": {"max_tokens": 33}}}})
    assert res.success
    v4, meta4, _ = _latest(dagster_instance, REGENERATED)
    assert meta4["cache"] == "miss" and meta4["success"] == 12 and _requests(stub) >= sent + 12
    rows = read_jsonl(root / "regenerated" / KEY / "train.jsonl")
    assert all(r["regeneration"]["sampling"]["max_tokens"] == 33 for r in rows)  # provenance kept in rows
    # the stub's answers do not depend on max_tokens: same content → same data version
    assert v4 == v1
    assert not no_launch


def test_cache_hit_skips_the_launch_and_error_rows_are_retried(project, stub_server, monkeypatch):
    """A launched server (server_addresses empty): the first run launches one, the second does not.
    A partition with error rows left is not a hit."""
    root, _, regen_yaml = project
    stub = stub_server()
    launched = []

    class FakeLaunch:  # a "launched" server that is the stub: counts launches
        def __init__(self, model_path, **kw):
            launched.append(str(model_path))
            self.address, self.served_model_name, self.dialect, self.backend = stub.address, "stub-model", "openai", "x"

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    monkeypatch.setattr(partition_mod, "LocalServer", FakeLaunch)
    model_dir = root.parent / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    write_rows(root / "sources" / KEY / "train.jsonl", make_rows(6))
    cfg = source_config(
        KEY, {"sources": {KEY: {"enabled": True, "launch": {"model_path": str(model_dir)}, "concurrency": 2}}}
    )
    logs: list[str] = []
    s1 = regenerate_partition(KEY, cfg, root=root, log=logs.append)
    assert s1["cache"] == "miss" and len(launched) == 1
    s2 = regenerate_partition(KEY, cfg, root=root, log=logs.append)
    assert s2["cache"] == "hit" and len(launched) == 1 and s2["data_version"] == s1["data_version"]
    assert any("cache hit" in m and "no server launched" in m for m in logs)

    # the model's content is part of its identity: a changed weight file re-runs
    (model_dir / "config.json").write_text('{"changed": 1}')
    assert regenerate_partition(KEY, cfg, root=root, log=logs.append)["cache"] == "miss" and len(launched) == 2

    # error rows left → no hit, the next run retries only those
    out = root / "regenerated" / KEY
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["counts"]["error"] = 1
    (out / "manifest.json").write_text(json.dumps(manifest))
    s4 = regenerate_partition(KEY, cfg, root=root, log=logs.append)
    assert s4["cache"] == "miss" and "error rows" in s4["cache_reason"]

    # outputs changed on disk → no hit
    with open(out / "train.jsonl", "a") as f:
        f.write("{}\n")
    assert regenerate_partition(KEY, cfg, root=root, log=logs.append)["cache"] == "miss"


def test_data_version_ignores_provenance_and_passthrough_is_content_only(tmp_path):
    a = write_rows(
        tmp_path / "a" / "train.jsonl",
        [
            {
                "id": "x",
                "conversations": [{"role": "user", "content": "q"}],
                "status": "success",
                "regeneration": {"servers": ["127.0.0.1:1"], "usage": {"completion_tokens": 3}},
            }
        ],
    )
    b = write_rows(
        tmp_path / "b" / "train.jsonl",
        [
            {
                "regeneration": {"servers": ["10.0.0.9:8000"], "usage": {"completion_tokens": 9}},
                "status": "success",
                "conversations": [{"role": "user", "content": "q"}],
                "id": "x",
            }
        ],
    )
    c = write_rows(
        tmp_path / "c" / "train.jsonl",
        [{"id": "x", "conversations": [{"role": "user", "content": "other"}], "status": "success"}],
    )
    assert content_version([a]) == content_version([b]) != content_version([c])

    # passthrough: the version is the content of the rows, the same wherever the data root is
    versions = []
    for where in ("r1", "r2"):
        root = tmp_path / where
        write_rows(root / "sources" / KEY / "train.jsonl", make_rows(3))
        versions.append(regenerate_partition(KEY, source_config(KEY, {}), root=root, log=lambda m: None))
    assert versions[0]["data_version"] == versions[1]["data_version"]
    assert versions[0]["cache"] == "miss"
    again = regenerate_partition(KEY, source_config(KEY, {}), root=tmp_path / "r1", log=lambda m: None)
    assert again["cache"] == "hit" and again["data_version"] == versions[0]["data_version"]


def test_progress_counts_only_rows_needing_a_request(tmp_path, stub_server):
    root = tmp_path / "data"
    rows = make_rows(10) + ["not json", {"id": "bad", "conversations": []}]
    write_rows(root / "sources" / KEY / "train.jsonl", rows)
    stub = stub_server()
    cfg = source_config(
        KEY,
        {
            "sources": {
                KEY: {
                    "enabled": True,
                    "server_addresses": [stub.address],
                    "model": "stub-model",
                    "num_samples": 6,
                    "beyond_limit": "passthrough",
                }
            }
        },
    )
    logs: list[str] = []
    regenerate_partition(KEY, cfg, root=root, log=logs.append)
    assert any(m.startswith("regenerate: 6 rows need a request (12 input rows, 0 already done)") for m in logs)
    final = [m for m in logs if "rows needing a request" in m][-1]
    assert final.startswith("regenerate: 6/6 rows needing a request (100.0%)")
    assert "rows/s" in final and "tokens/s" in final and "ETA" in final
    assert "6 rows without a request" in final  # 4 passed through + 2 skipped, not in the rate


# -- one run per partition --------------------------------------------------------------------

_WORKER = """
import json, sys
from specforge_assets.regenerate.config import source_config
from specforge_assets.regenerate.partition import regenerate_partition
root, yaml_cfg, run_id = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
s = regenerate_partition("s1", source_config("s1", yaml_cfg), root=__import__("pathlib").Path(root),
                         log=lambda m: print(m, file=sys.stderr, flush=True), run_id=run_id)
print(json.dumps({"cache": s["cache"], "counts": s["counts"]}))
"""


def _spawn(root: Path, yaml_cfg: dict, run_id: str) -> subprocess.Popen:
    from specforge_assets.errors import UserError  # noqa: F401 - the worker imports the same package

    return subprocess.Popen(
        [sys.executable, "-c", _WORKER, str(root), json.dumps(yaml_cfg), run_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_waiter(proc: subprocess.Popen) -> str:
    """Read `proc`'s log until it says it is waiting for the lock (then it surely waits)."""
    for line in proc.stderr:
        if "waiting up to" in line:
            return line
    raise AssertionError(f"never waited for the lock: {proc.communicate()}")


def _wait_for_holder(lock: Path, proc: subprocess.Popen) -> dict:
    for _ in range(600):
        holder = read_holder(lock)
        if holder:
            return holder
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("the first run never took the partition lock")


def test_second_run_of_a_partition_is_refused_then_a_waiting_one_gets_a_cache_hit(tmp_path, stub_server):
    root = tmp_path / "data"
    write_rows(root / "sources" / KEY / "train.jsonl", make_rows(20))
    # the first run holds the lock until the test lets the server answer: the outcome is decided
    # here, not by how fast a loaded machine starts the other processes
    hold = tmp_path / "hold"
    hold.touch()
    stub = stub_server(hold_file=hold)
    base = {"enabled": True, "server_addresses": [stub.address], "model": "stub-model", "concurrency": 1}
    first = _spawn(root, {"sources": {KEY: base}}, "run-A")
    holder = _wait_for_holder(partition_lock_path(root, KEY), first)
    assert holder["pid"] == first.pid and holder["run_id"] == "run-A"

    # (d) refused at once (lock_wait_s 0): one clear line naming the partition and the holder
    second = _spawn(root, {"sources": {KEY: base}}, "run-B")
    _, err = second.communicate(timeout=120)
    assert second.returncode != 0
    assert "RegenerationBusy" in err
    assert "regenerated/conversations[s1] is being regenerated by another run" in err
    assert f"pid {first.pid}" in err and "Dagster run run-A" in err

    # a third one waits for the first, then finds nothing to do
    third = _spawn(root, {"sources": {KEY: {**base, "lock_wait_s": 300}}}, "run-C")
    _wait_for_waiter(third)
    hold.unlink()
    out1, err1 = first.communicate(timeout=300)
    assert first.returncode == 0, err1
    out3, err3 = third.communicate(timeout=300)
    assert third.returncode == 0, err3
    assert json.loads(out1)["cache"] == "miss" and json.loads(out3)["cache"] == "hit"

    out = root / "regenerated" / KEY
    rec = reconcile(root / "sources" / KEY / "train.jsonl", out)
    meta = rec.metadata
    assert rec.passed and meta["train.jsonl_rows"] == 20 and meta["id_mismatches"] == 0  # every row exactly once
    assert not journal_paths(out / "train.jsonl")[0].exists()  # complete journal removed, not corrupted
    turns = sum(1 for r in make_rows(20) for m in r["conversations"] if m["role"] == "user")
    assert _requests(stub) == turns + 1  # every turn once + the first run's start probe; none from B or C
    assert read_holder(partition_lock_path(root, KEY)) is None


def test_cli_second_run_on_the_same_output_is_refused(tmp_path, stub_server):
    inp = write_rows(tmp_path / "in.jsonl", make_rows(15))
    out = tmp_path / "out" / "regen.jsonl"
    hold = tmp_path / "hold"  # the first run keeps the output locked until the second is refused
    hold.touch()
    stub = stub_server(hold_file=hold)
    cmd = [
        sys.executable,
        "-m",
        "specforge_assets.cli",
        "regenerate",
        "--model",
        "stub-model",
        "--input-file-path",
        str(inp),
        "--output-file-path",
        str(out),
        "--server-address",
        stub.address,
        "--concurrency",
        "1",
        "--resume",
    ]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = out.with_name(".regen.regen.lock")
    _wait_for_holder(lock, first)
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert second.returncode == 1 and "Traceback" not in second.stderr
    lines = [l for l in second.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: regeneration output ")
    assert f"pid {first.pid}" in lines[0] and "refused" in lines[0]
    hold.unlink()
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert sorted(r["id"] for r in read_jsonl(out)) == sorted(f"r{i}" for i in range(15))
