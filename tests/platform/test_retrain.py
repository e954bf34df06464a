"""The retraining sensor: a new tokenized data version whose blocking checks passed starts the
draft training + evaluation job, tagged with what triggered it; a failed check never does."""

from __future__ import annotations

import json

import dagster as dg
from dagster._core.instance.types import CachingDynamicPartitionsLoader
from toy_graph import ASSETS, CHECKS, build_toy_defs

from specforge_assets.resources import SpecforgeStore

from specforge_assets.partitions import SOURCES_PARTITION_NAME

from specforge_assets.keys import SOURCES as SRC
from specforge_assets.keys import REGENERATED as REGEN
from specforge_assets.keys import MIX
from specforge_assets.keys import TOKENIZED as TOK
from specforge_assets.keys import VOCAB
from specforge_assets.keys import TARGET
from specforge_assets.keys import DRAFT
from specforge_assets.keys import EVALUATION as EVAL
from specforge_assets.tags import DATA_VERSION_TAG


def _tick(defs, instance):
    ctx = dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources)
    ctx.__dict__["caching_dynamic_partitions_loader"] = CachingDynamicPartitionsLoader(instance)
    return defs.get_sensor_def("retrain_on_new_dataset").evaluate_tick(ctx)


def _mat(defs, instance, keys, partition=None):
    return dg.materialize(
        ASSETS + CHECKS,
        selection=list(keys),
        partition_key=partition,
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
    )


def _latest_version(instance, key):
    rec = instance.fetch_materializations(key, limit=1).records[0]
    return rec.asset_materialization.tags[DATA_VERSION_TAG], rec.run_id


def _build_upstream(defs, inst):
    inst.add_dynamic_partitions(SOURCES_PARTITION_NAME, ["alpha", "beta"])
    assert _mat(defs, inst, [TARGET]).success
    for k in ["alpha", "beta"]:
        assert _mat(defs, inst, [SRC, REGEN], k).success


def _retrain(defs, inst, request):
    return defs.get_job_def("retrain_draft_job").execute_in_process(instance=inst, tags=request.tags)


def test_retrain_on_new_version_then_idle(toy, dagster_instance):
    defs, root, _ = toy
    inst = dagster_instance
    assert "never been materialized" in _tick(defs, inst).skip_message
    _build_upstream(defs, inst)
    assert _mat(defs, inst, [MIX, TOK, VOCAB]).success
    version, run_id = _latest_version(inst, TOK)

    data = _tick(defs, inst)
    assert len(data.run_requests) == 1
    req = data.run_requests[0]
    assert req.run_key == f"retrain:{version}"
    assert req.tags["specforge/trigger_data_version"] == version
    assert req.tags["specforge/trigger_run_id"] == run_id
    assert req.tags["specforge/trigger_asset"] == "tokenized/dataset"
    assert req.tags["specforge/previous_data_version"] == "none"
    assert req.tags["dagster/max_retries"] == "1" and req.tags["dagster/retry_strategy"] == "FROM_FAILURE"

    result = _retrain(defs, inst, req)
    assert result.success
    assert {e.asset_key for e in result.get_asset_materialization_events()} == {DRAFT, EVAL}
    assert (root / "models" / "draft_model" / "trained_on.txt").read_text() == version
    assert "already trained" in _tick(defs, inst).skip_message

    # the same content again: same data version → no retraining
    assert _mat(defs, inst, [MIX, TOK, VOCAB]).success
    assert _latest_version(inst, TOK)[0] == version
    assert "already trained" in _tick(defs, inst).skip_message


def test_failed_blocking_check_does_not_retrain(toy, dagster_instance):
    defs, root, _ = toy
    inst = dagster_instance
    _build_upstream(defs, inst)
    assert _mat(defs, inst, [MIX, TOK, VOCAB]).success
    req = _tick(defs, inst).run_requests[0]
    assert _retrain(defs, inst, req).success
    trained_version = _latest_version(inst, TOK)[0]

    # new data arrives; the tokenized dataset's blocking check fails on it
    (root / "incoming").mkdir(exist_ok=True)
    (root / "incoming" / "alpha.jsonl").write_text(json.dumps({"id": "n", "text": "new data"}) + "\n")
    assert _mat(defs, inst, [SRC, REGEN], "alpha").success
    (root / "FAIL_CHECK").write_text("")
    run = _mat(defs, inst, [MIX, TOK, VOCAB])
    assert not run.success  # the blocking check failed the run (vocab skipped)
    new_version = _latest_version(inst, TOK)[0]
    assert new_version != trained_version
    data = _tick(defs, inst)
    assert not data.run_requests
    assert "blocking check tokenized_rows_ok failed" in data.skip_message

    # the check passes once the data is fixed: the next materialization of that version retrains
    (root / "FAIL_CHECK").unlink()
    assert _mat(defs, inst, [TOK, VOCAB]).success
    data = _tick(defs, inst)
    assert [r.tags["specforge/trigger_data_version"] for r in data.run_requests] == [new_version]
    assert data.run_requests[0].tags["specforge/previous_data_version"] == trained_version


def test_waits_for_vocab_mapping_of_the_new_dataset(toy, dagster_instance):
    defs, root, _ = toy
    inst = dagster_instance
    _build_upstream(defs, inst)
    assert _mat(defs, inst, [MIX, TOK]).success
    data = _tick(defs, inst)
    assert not data.run_requests and "vocab_mapping" in data.skip_message
    assert _mat(defs, inst, [VOCAB]).success
    assert len(_tick(defs, inst).run_requests) == 1


def test_failed_non_blocking_error_check_does_not_retrain(toy, dagster_instance):
    """A non-blocking check that fails with ERROR severity stops training too (WARN does not)."""
    defs, root, config_dir = toy

    @dg.asset_check(asset=TOK, name="soft_gate")
    def soft_gate(store: SpecforgeStore) -> dg.AssetCheckResult:
        severity = dg.AssetCheckSeverity.WARN if (store.root() / "WARN_ONLY").exists() else dg.AssetCheckSeverity.ERROR
        return dg.AssetCheckResult(passed=not (store.root() / "FAIL_SOFT").exists(), severity=severity)

    defs = build_toy_defs(root, config_dir, extra_checks=[soft_gate])
    inst = dagster_instance
    _build_upstream(defs, inst)
    (root / "FAIL_SOFT").write_text("")
    r = dg.materialize(
        ASSETS + CHECKS + [soft_gate],
        selection=[MIX, TOK, VOCAB],
        instance=inst,
        resources=defs.resources,
        raise_on_error=False,
    )
    assert r.success  # non-blocking: the run goes on
    data = _tick(defs, inst)
    assert not data.run_requests and "check soft_gate failed" in data.skip_message
    (root / "WARN_ONLY").write_text("")
    r = dg.materialize(
        ASSETS + CHECKS + [soft_gate],
        selection=[TOK, VOCAB],
        instance=inst,
        resources=defs.resources,
        raise_on_error=False,
    )
    assert len(_tick(defs, inst).run_requests) == 1


def test_check_not_run_on_this_materialization_does_not_retrain(toy, dagster_instance):
    """Materializing tokenized/dataset without its check (e.g. a UI subset) never trains on it."""
    defs, root, _ = toy
    inst = dagster_instance
    _build_upstream(defs, inst)
    r = dg.materialize(ASSETS, selection=[MIX, TOK, VOCAB], instance=inst, resources=defs.resources)
    assert r.success
    data = _tick(defs, inst)
    assert not data.run_requests and "no result yet" in data.skip_message


def test_shipped_instance_config_enables_run_retries_only_on_request(tmp_path):
    """dagster_home/dagster.yaml: the daemon retries runs that carry dagster/max_retries (the
    retraining sensor's), and no others."""
    import shutil
    from pathlib import Path

    from dagster import DagsterInstance

    repo = Path(__file__).resolve().parents[2]
    shutil.copyfile(repo / "dagster_home" / "dagster.yaml", tmp_path / "dagster.yaml")
    with DagsterInstance.from_config(str(tmp_path)) as inst:
        assert inst.run_retries_enabled is True
        assert inst.run_retries_max_retries == 0
