"""`sources/conversations` materialized for real: instance_for_test, dynamic partitions, checks."""

from __future__ import annotations

import json

import dagster as dg
import pytest
import yaml

from specforge_assets.assets import sources as layer
from specforge_assets.assets.sources import CHECKS
from specforge_assets.partitions import SOURCES_PARTITION_NAME, configured_source_keys
from specforge_assets.resources import SpecforgeStore

SAMPLE_KEYS = [
    "sample-ultrachat",
    "sample-sharegpt",
    "sample-perfectblend",
    "sample-gsm8k",
    "sample-opc",
    "sample-custom",
    "sample-preformatted",
]
NODE = "sources__conversations"


def _run(instance, key, force=False):
    return dg.materialize(
        [layer.conversations],
        partition_key=key,
        instance=instance,
        raise_on_error=False,
        resources={"store": SpecforgeStore(), "sources_settings": layer.SourcesSettings()},
        run_config={"ops": {NODE: {"config": {"force": force}}}},
    )


def _mat(result):
    (m,) = result.asset_materializations_for_node(NODE)
    return m


def test_layer_exports():
    defs = layer.definitions(SpecforgeStore())
    (a,) = defs.assets
    assert a.key == dg.AssetKey(["sources", "conversations"])
    assert a.partitions_def is not None and a.group_names_by_key[a.key] == "sources"
    assert {k.name for k in a.check_keys} == {c.name for c in CHECKS}
    assert a.code_versions_by_key[a.key]
    assert set(defs.resources) == {"sources_settings"}


def test_every_sample_partition_materializes_green(data_root, dagster_instance):
    assert configured_source_keys()[:7] == SAMPLE_KEYS
    dagster_instance.add_dynamic_partitions(SOURCES_PARTITION_NAME, SAMPLE_KEYS)
    total = 0
    for key in SAMPLE_KEYS:
        result = _run(dagster_instance, key)
        assert result.success, key
        m = _mat(result)
        assert m.partition == key
        md = m.metadata
        rows = md["dagster/row_count"].value
        assert rows > 0 and md["rows_in"].value == rows + md["quarantined"].value
        for name in ("turns_histogram", "preview", "path", "chars_per_row_p95", "quarantine_rate", "cache"):
            assert name in md
        evals = result.get_asset_check_evaluations()
        assert {e.check_name for e in evals} == {c.name for c in CHECKS}
        assert all(e.passed for e in evals), [(e.check_name, e.metadata) for e in evals if not e.passed]
        assert all(e.partition == key for e in evals)
        out = data_root / "sources" / key
        assert (
            (out / "train.jsonl").exists() and (out / "quarantine.jsonl").exists() and (out / "manifest.json").exists()
        )
        total += md["rows_in"].value
    assert 300 <= total <= 600
    custom = json.loads((data_root / "sources" / "sample-custom" / "manifest.json").read_text())
    assert custom["quarantined"] >= 5  # the awkward rows, each with a reason
    assert (data_root / "sources" / "sample-perfectblend" / "test.jsonl").exists()
    assert dagster_instance.get_materialized_partitions(dg.AssetKey(["sources", "conversations"])) == set(SAMPLE_KEYS)


def test_rematerializing_unchanged_input_is_cached_with_same_data_version(data_root, dagster_instance):
    dagster_instance.add_dynamic_partitions(SOURCES_PARTITION_NAME, ["sample-gsm8k"])
    first = _mat(_run(dagster_instance, "sample-gsm8k"))
    out = data_root / "sources" / "sample-gsm8k"
    mtime = (out / "train.jsonl").stat().st_mtime_ns
    second = _mat(_run(dagster_instance, "sample-gsm8k"))
    assert first.metadata["cache"].value.startswith("miss") and second.metadata["cache"].value.startswith("hit")
    assert first.tags["dagster/data_version"] == second.tags["dagster/data_version"]
    assert (out / "train.jsonl").stat().st_mtime_ns == mtime  # nothing rewritten
    forced = _mat(_run(dagster_instance, "sample-gsm8k", force=True))
    assert forced.metadata["cache"].value.startswith("miss")
    assert forced.tags["dagster/data_version"] == first.tags["dagster/data_version"]  # same content, same version
    # a tampered output is noticed and rebuilt
    (out / "train.jsonl").write_text("{}\n")
    again = _mat(_run(dagster_instance, "sample-gsm8k"))
    assert (
        again.metadata["cache"].value.startswith("miss")
        and again.tags["dagster/data_version"] == first.tags["dagster/data_version"]
    )


@pytest.fixture
def config_dir(tmp_path, monkeypatch):
    d = tmp_path / "configs"
    d.mkdir()
    monkeypatch.setenv("SPECFORGE_CONFIG_DIR", str(d))
    return d


def test_blocking_check_fails_the_run_on_a_bad_source(tmp_path, data_root, dagster_instance, config_dir):
    raw = tmp_path / "raw.jsonl"
    ok = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    raw.write_text(
        "".join(
            json.dumps(r) + "\n"
            for r in [
                {"id": "a", "conversations": ok},
                {"id": "b", "conversations": [{"role": "tool", "content": "x"}]},
            ]
        )
    )
    (config_dir / "sources.yaml").write_text(
        yaml.safe_dump(
            {
                "sources": {
                    "strict": {
                        "format": "conversations",
                        "data_path": str(raw),
                        "quarantine_threshold": 0.0,
                        "quarantine_min_rows": 0,
                    }
                }
            }
        )
    )
    dagster_instance.add_dynamic_partitions(SOURCES_PARTITION_NAME, ["strict"])
    result = _run(dagster_instance, "strict")
    assert not result.success  # the blocking check gates anything downstream in the run
    evals = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert evals["quarantine_rate"].passed is False and evals["quarantine_rate"].partition == "strict"
    assert evals["schema_valid"].passed


@pytest.mark.parametrize("bad, good, blocked", [(1, 2, False), (12, 20, True)])
def test_a_few_bad_rows_are_quarantined_not_a_failed_partition(
    tmp_path, data_root, dagster_instance, config_dir, bad, good, blocked
):
    """One bad row in a 3-row file is quarantined and reported; the rate gate blocks only from
    quarantine_min_rows (default 10) quarantined rows on."""
    ok = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    lines = [json.dumps({"id": f"g{i}", "conversations": ok}) for i in range(good)]
    lines += [
        '{"id": "lone%d", "conversations": [{"role": "user", "content": "x \\ud83d"}, {"role": "assistant", "content": "a"}]}'
        % i
        for i in range(bad)
    ]
    raw = tmp_path / "raw.jsonl"
    raw.write_text("\n".join(lines) + "\n")
    (config_dir / "sources.yaml").write_text(
        yaml.safe_dump({"sources": {"few": {"format": "auto", "data_path": str(raw)}}})
    )
    dagster_instance.add_dynamic_partitions(SOURCES_PARTITION_NAME, ["few"])
    result = _run(dagster_instance, "few")
    assert result.success is not blocked
    evals = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert evals["quarantine_rate"].passed is not blocked
    assert evals["quarantine_rate"].metadata["quarantined"].value == bad
    assert len((data_root / "sources" / "few" / "train.jsonl").read_text().splitlines()) == good


def test_incoming_file_becomes_a_partition(tmp_path, data_root, dagster_instance, config_dir):
    (config_dir / "sources.yaml").write_text("sources: {}\n")
    inc = data_root / "incoming"
    inc.mkdir()
    (inc / "dropped.jsonl").write_text(
        json.dumps({"conversations": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})
        + "\n"
    )
    from specforge_assets.sources import list_incoming

    keys = list(list_incoming())
    assert keys == ["dropped"]
    dagster_instance.add_dynamic_partitions(SOURCES_PARTITION_NAME, keys)
    result = _run(dagster_instance, "dropped")
    assert result.success and _mat(result).metadata["dagster/row_count"].value == 1


def test_unknown_partition_fails_with_clear_error(data_root, dagster_instance, config_dir):
    (config_dir / "sources.yaml").write_text("sources: {}\n")
    dagster_instance.add_dynamic_partitions(SOURCES_PARTITION_NAME, ["ghost"])
    result = _run(dagster_instance, "ghost")
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "unknown source 'ghost'" in failure.event_specific_data.error.to_string()
