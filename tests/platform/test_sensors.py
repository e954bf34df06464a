"""File-drop, source-registration and run-failure sensors, evaluated against a real temp instance."""

from __future__ import annotations

import json
import os

import dagster as dg
import pytest

from dagster._core.instance.types import CachingDynamicPartitionsLoader

from toy_graph import build_toy_defs

from specforge_assets.automation import automation_settings
from specforge_assets.errors import redact
from specforge_assets.partitions import SOURCES_PARTITION_NAME
from specforge_assets.tags import PARTITION_TAG


def _tick(defs, instance, sensor_name, cursor=None):
    sensor = defs.get_sensor_def(sensor_name)
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs, resources=defs.resources)
    # The daemon's context resolves partition keys against the instance *plus* this tick's
    # dynamic-partition requests; build_sensor_context has no instance ref, so give it the same
    # loader the daemon uses (cached_property slot).
    ctx.__dict__["caching_dynamic_partitions_loader"] = CachingDynamicPartitionsLoader(instance)
    data = sensor.evaluate_tick(ctx)
    # the daemon applies dynamic partition requests; evaluation alone does not
    for req in data.dynamic_partitions_requests or []:
        if isinstance(req, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    return data


def _run(defs, instance, request: dg.RunRequest):
    job = defs.resolve_job_def("sources_and_regenerated")
    return job.execute_in_process(instance=instance, partition_key=request.partition_key, tags=request.tags)


def _write(path, rows, mtime=None):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    if mtime is not None:
        os.utime(path, ns=(mtime, mtime))


def test_new_changed_deleted_file(toy, dagster_instance):
    defs, root, _ = toy
    f = root / "incoming" / "dropped.jsonl"
    _write(f, [{"id": "d1", "text": "hello"}], mtime=1_700_000_000_000_000_000)

    data = _tick(defs, dagster_instance, "incoming_files_sensor")
    assert [r.partition_key for r in data.run_requests] == ["dropped"]
    req = data.run_requests[0]
    assert req.tags["specforge/incoming_event"] == "new"
    assert "dropped" in dagster_instance.get_dynamic_partitions(SOURCES_PARTITION_NAME)
    result = _run(defs, dagster_instance, req)
    assert result.success
    mats = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert mats == {"sources/conversations", "regenerated/conversations"}
    assert (root / "regenerated" / "dropped" / "train.jsonl").read_text() == f.read_text()

    # unchanged file: nothing to do
    again = _tick(defs, dagster_instance, "incoming_files_sensor", data.cursor)
    assert not again.run_requests and "none new or changed" in again.skip_message

    # changed content → a new run with a different run key
    _write(f, [{"id": "d1", "text": "hello"}, {"id": "d2", "text": "more"}], mtime=1_700_000_100_000_000_000)
    changed = _tick(defs, dagster_instance, "incoming_files_sensor", again.cursor)
    assert [r.partition_key for r in changed.run_requests] == ["dropped"]
    assert changed.run_requests[0].run_key != req.run_key
    assert changed.run_requests[0].tags["specforge/incoming_event"] == "changed"
    assert not changed.dynamic_partitions_requests  # partition exists already

    # content back to the first version (new mtime): still a new run key, so it re-materializes
    _write(f, [{"id": "d1", "text": "hello"}], mtime=1_700_000_200_000_000_000)
    back = _tick(defs, dagster_instance, "incoming_files_sensor", changed.cursor)
    assert back.run_requests and back.run_requests[0].run_key not in {req.run_key, changed.run_requests[0].run_key}

    # deleted: logged, partition and data kept, no run
    f.unlink()
    gone = _tick(defs, dagster_instance, "incoming_files_sensor", back.cursor)
    assert not gone.run_requests and "deleted (data kept): ['dropped']" in gone.skip_message
    assert "dropped" in dagster_instance.get_dynamic_partitions(SOURCES_PARTITION_NAME)
    assert (root / "sources" / "dropped" / "train.jsonl").exists()
    events = [json.loads(line) for line in (root / "ops" / "incoming.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["new", "changed", "changed", "deleted"]
    assert events[-1]["data_kept"] is True and events[-1]["partition"] == "dropped"
    # the deletion is recorded once, not on every tick
    later = _tick(defs, dagster_instance, "incoming_files_sensor", gone.cursor)
    assert "deleted" not in later.skip_message
    assert len((root / "ops" / "incoming.jsonl").read_text().splitlines()) == 4


def test_file_still_being_written_waits(toy, dagster_instance):
    _, root, config_dir = toy
    settle = automation_settings({"sensors": {"incoming_files": {"settle_seconds": 3600}}})
    defs = build_toy_defs(root, config_dir, settings=settle)
    _write(root / "incoming" / "fresh.jsonl", [{"id": "x", "text": "y"}])
    data = _tick(defs, dagster_instance, "incoming_files_sensor")
    assert not data.run_requests and "waiting for ['fresh']" in data.skip_message
    assert "fresh" not in dagster_instance.get_dynamic_partitions(SOURCES_PARTITION_NAME)


def test_lost_cursor_does_not_rerun_same_file(toy, dagster_instance):
    """With the cursor lost, the same file state yields the same run key (the daemon dedupes it)."""
    defs, root, _ = toy
    _write(root / "incoming" / "one.jsonl", [{"id": "1", "text": "t"}], mtime=1_700_000_000_000_000_000)
    first = _tick(defs, dagster_instance, "incoming_files_sensor")
    second = _tick(defs, dagster_instance, "incoming_files_sensor", cursor=None)
    assert first.run_requests[0].run_key == second.run_requests[0].run_key


def test_configured_key_is_not_shadowed_by_a_dropped_file(toy, dagster_instance):
    defs, root, _ = toy
    _write(root / "incoming" / "alpha.jsonl", [{"id": "1", "text": "t"}], mtime=1_700_000_000_000_000_000)
    data = _tick(defs, dagster_instance, "incoming_files_sensor")
    assert not data.run_requests


def test_register_sources_sensor(toy, dagster_instance):
    defs, _, _ = toy
    data = _tick(defs, dagster_instance, "register_sources_sensor")
    assert dagster_instance.get_dynamic_partitions(SOURCES_PARTITION_NAME) == ["alpha", "beta"]
    assert not data.run_requests
    again = _tick(defs, dagster_instance, "register_sources_sensor")
    assert "all 2 configured sources" in again.skip_message


def test_sensors_are_on_by_default_with_configured_intervals():
    from specforge_assets.definitions import defs

    for name in [
        "incoming_files_sensor",
        "register_sources_sensor",
        "retrain_on_new_dataset",
        "record_run_failures",
        "specforge_automation",
    ]:
        s = defs.get_sensor_def(name)
        assert s.default_status == dg.DefaultSensorStatus.RUNNING, name
        assert s.minimum_interval_seconds >= 1


def test_automation_yaml_is_validated():
    from specforge_assets.automation import automation_settings

    with pytest.raises(ValueError, match="unknown key 'sensors.nope'"):
        automation_settings({"sensors": {"nope": {}}})
    with pytest.raises(ValueError, match="minimum_interval_seconds"):
        automation_settings({"automation": {"minimum_interval_seconds": 0}})
    s = automation_settings({"sensors": {"retrain": {"default_status": "stopped"}}})
    assert s["sensors"]["retrain"]["default_status"] == dg.DefaultSensorStatus.STOPPED


def test_run_failure_sensor_records_error_without_secrets(toy, dagster_instance, monkeypatch):
    defs, root, _ = toy
    monkeypatch.setenv("SPECFORGE_API_KEY", "supersecretvalue123")

    @dg.op
    def explode():
        raise RuntimeError("server said no (key supersecretvalue123, Authorization: Bearer abcdefghijkl)")

    @dg.job
    def failing_job():
        explode()

    result = failing_job.execute_in_process(
        instance=dagster_instance, raise_on_error=False, tags={PARTITION_TAG: "alpha"}
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
    ctx = dg.build_run_status_sensor_context(
        sensor_name="record_run_failures",
        dagster_instance=dagster_instance,
        dagster_run=result.dagster_run,
        dagster_event=failure,
        resources={"store": defs.resources["store"]},
    ).for_run_failure()
    defs.get_sensor_def("record_run_failures")(ctx)
    lines = (root / "ops" / "failures.jsonl").read_text().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec["run_id"] == result.run_id and rec["job"] == "failing_job" and rec["partition"] == "alpha"
    assert rec["steps"][0]["step"] == "explode" and "server said no" in rec["steps"][0]["error"]
    assert "RuntimeError" in rec["steps"][0]["error_class"]
    assert "supersecretvalue123" not in lines[0] and "abcdefghijkl" not in lines[0]


def test_redact():
    env = {"HF_TOKEN": "hf_abcdefghijklmnop", "HOME": "/root"}
    out = redact("token hf_abcdefghijklmnop at /root, api_key=xyz12345 sk-abcdefghijklmnopq", env)
    assert "hf_abcdefghijklmnop" not in out and "xyz12345" not in out and "sk-abcdefghijklmnopq" not in out
    assert "/root" in out
