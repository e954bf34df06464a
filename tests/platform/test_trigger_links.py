"""Runs started by automation link back to what triggered them: a retraining run carries the
job, trigger, backfill and sensor of the run that produced the tokenized version it trains on;
the file-drop sensor's runs go through `sources_and_regenerated` (both layers per partition)."""

from __future__ import annotations

import dagster as dg
from test_retrain import _build_upstream, _latest_version, _tick
from toy_graph import ASSETS, CHECKS

from specforge_assets.keys import MIX, REGENERATED, SOURCES, VOCAB
from specforge_assets.keys import TOKENIZED as TOK
from specforge_assets.tags import BACKFILL_TAG, TRIGGER_TAG


def test_retrain_request_links_back_to_the_backfill_that_produced_the_data(toy, dagster_instance):
    defs, _, _ = toy
    inst = dagster_instance
    _build_upstream(defs, inst)
    tags = {BACKFILL_TAG: "bf-123", TRIGGER_TAG: "automation"}
    assert dg.materialize(
        ASSETS + CHECKS, selection=[MIX, TOK, VOCAB], instance=inst, resources=defs.resources, tags=tags
    ).success
    version, run_id = _latest_version(inst, TOK)
    req = _tick(defs, inst).run_requests[0]
    assert req.tags["specforge/trigger_run_id"] == run_id
    assert req.tags["specforge/trigger_data_version"] == version
    assert req.tags["specforge/trigger_backfill"] == "bf-123"
    assert req.tags["specforge/trigger_origin"] == "automation"
    assert req.tags["specforge/trigger_job"]


def test_backfill_job_carries_sources_and_regenerated_and_the_sensor_runs_it():
    from specforge_assets.definitions import defs

    job = defs.resolve_job_def("sources_and_regenerated")
    assert job.partitions_def is not None
    assert {SOURCES, REGENERATED} <= set(job.asset_layer.selected_asset_keys)
    assert defs.get_sensor_def("incoming_files_sensor").job_name == "sources_and_regenerated"


def test_retrain_request_carries_the_common_triggered_by_run_tag(toy, dagster_instance):
    defs, _, _ = toy
    _build_upstream(defs, dagster_instance)
    assert dg.materialize(
        ASSETS + CHECKS, selection=[MIX, TOK, VOCAB], instance=dagster_instance, resources=defs.resources
    ).success
    _, run_id = _latest_version(dagster_instance, TOK)
    assert _tick(defs, dagster_instance).run_requests[0].tags["specforge/triggered_by_run"] == run_id
