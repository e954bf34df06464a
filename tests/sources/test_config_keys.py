"""One bad key in configs/sources.yaml never stops the other sources: registration, resolution,
the file-drop sensor and loading the definitions keep working; the bad one is reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml


from specforge_assets import sensors
from specforge_assets.automation import automation_settings
from specforge_assets.partitions import (
    SOURCES_PARTITION_NAME,
    configured_source_keys,
    invalid_source_keys,
    sync_source_partitions,
)
from specforge_assets.paths import UnsafeKeyError
from specforge_assets.resources import SpecforgeStore
from specforge_assets.sources.config import resolve_source, source_keys

REPO = Path(__file__).resolve().parents[2]
OLD = 1_700_000_000_000_000_000

CFG = {
    "sources": {
        "good-one": {"format": "auto", "data_path": "one.jsonl"},
        "bad key!": {"format": "auto", "data_path": "x.jsonl"},
        "../x": {"format": "auto", "data_path": "x.jsonl"},
        "good_two": {"format": "auto", "data_path": "two.jsonl"},
        "dönner": {"format": "auto", "data_path": "x.jsonl"},
    }
}


def _defs(root: Path, config_dir: Path) -> dg.Definitions:
    from specforge_assets.assets import sources as sources_assets

    built = sensors.build_sensors(automation_settings({"sensors": {"incoming_files": {"settle_seconds": 0}}}))
    return dg.Definitions(
        assets=[sources_assets.conversations],
        sensors=[built["incoming_files_sensor"], built["register_sources_sensor"]],
        jobs=[sensors.sources_and_regenerated],
        resources={
            "store": SpecforgeStore(data_root=str(root), config_dir=str(config_dir)),
            "sources_settings": sources_assets.SourcesSettings(),
        },
    )


@pytest.fixture
def bad_config(tmp_path, data_root, monkeypatch):
    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    (config_dir / "sources.yaml").write_text(yaml.safe_dump(CFG, allow_unicode=True))
    monkeypatch.setenv("SPECFORGE_CONFIG_DIR", str(config_dir))
    for name, rid in [("one.jsonl", "o1"), ("two.jsonl", "t1")]:
        (data_root / name).write_text(json.dumps({"id": rid, "text": "hello"}) + "\n")
    (data_root / "incoming").mkdir()
    return data_root, config_dir


def test_bad_keys_are_reported_good_ones_kept(bad_config):
    good, bad = source_keys(CFG)
    assert good == ["good-one", "good_two"]
    assert set(bad) == {"bad key!", "../x", "dönner"}
    assert "'bad key!'" in bad["bad key!"] and "spaces" in bad["bad key!"] and "ignored" in bad["bad key!"]
    assert "start with a letter or digit" in bad["../x"]
    assert "non-ASCII" in bad["dönner"]
    assert configured_source_keys(CFG) == good and invalid_source_keys(CFG) == bad
    assert configured_source_keys() == good  # from the config file too
    assert source_keys({"sources": ["a", "b"]})[0] == []  # a list instead of a mapping: reported, not a crash


def test_good_sources_resolve_and_build_next_to_bad_ones(bad_config):
    root, _ = bad_config
    from specforge_assets.sources.normalize import build_source

    res = build_source(resolve_source("good_two", CFG, root), root, config=CFG)
    assert [json.loads(line)["id"] for line in (res.out_dir / "train.jsonl").read_text().splitlines()] == ["t1"]
    with pytest.raises(UnsafeKeyError, match="invalid source key 'bad key!'"):
        resolve_source("bad key!", CFG, root)


def test_sync_and_register_sensor_register_the_good_keys(bad_config, dagster_instance, sensor_tick):
    root, config_dir = bad_config
    defs = _defs(root, config_dir)
    data, log = sensor_tick(defs, dagster_instance, "register_sources_sensor")
    assert dagster_instance.get_dynamic_partitions(SOURCES_PARTITION_NAME) == ["good-one", "good_two"]
    assert len(log.warnings) == 3 and any("'bad key!'" in w and "spaces" in w for w in log.warnings)
    again, _ = sensor_tick(defs, dagster_instance, "register_sources_sensor")
    assert "all 2 configured sources are partitions" in again.skip_message
    assert "invalid source keys ignored: ['../x', 'bad key!', 'dönner']" in again.skip_message
    with dg.instance_for_test() as fresh:
        assert sync_source_partitions(fresh) == ["good-one", "good_two"]


def test_file_drop_sensor_works_with_a_bad_key_in_the_config(bad_config, dagster_instance, sensor_tick):
    root, config_dir = bad_config
    f = root / "incoming" / "dropped.jsonl"
    f.write_text(json.dumps({"id": "d1", "text": "t"}) + "\n")
    os.utime(f, ns=(OLD, OLD))
    data, _ = sensor_tick(_defs(root, config_dir), dagster_instance, "incoming_files_sensor")
    assert [r.partition_key for r in data.run_requests] == ["dropped"]
    assert "dropped" in dagster_instance.get_dynamic_partitions(SOURCES_PARTITION_NAME)


def test_definitions_load_with_a_bad_key(bad_config):
    root, config_dir = bad_config
    env = {
        **os.environ,
        "SPECFORGE_DATA_ROOT": str(root),
        "SPECFORGE_CONFIG_DIR": str(config_dir),
        "DAGSTER_DISABLE_TELEMETRY": "1",
    }
    code = (
        "from specforge_assets.definitions import defs; "
        "r = defs.get_repository_def(); print('sensors', len(r.sensor_defs))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "sensors" in out.stdout
