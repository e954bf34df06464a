"""Runs of the automation sensor link back to what triggered them: the first step (mix, else
tokenized) adds `specforge/triggered_by_run` and the changed inputs' partitions and data
versions to its own run (the sensor's RunRequests only carry static tags)."""

import dagster as dg
import yaml
from test_retrain import _mat
from toy_graph import regenerated_conversations, source_conversations

from specforge_assets.assets import _lineage
from specforge_assets.assets._lineage import lineage_metadata, upstream_versions
from specforge_assets.keys import MIX, REGENERATED
from specforge_assets.keys import SOURCES as SRC
from specforge_assets.partitions import SOURCES_PARTITION_NAME
from specforge_assets.tags import (
    BACKFILL_TAG,
    DATA_VERSION_TAG,
    TRIGGER_AUTOMATION,
    TRIGGER_INCOMING_FILE,
    TRIGGER_INPUTS_TAG,
    TRIGGER_TAG,
    TRIGGERED_BY_RUN_TAG,
)


@dg.asset(key=MIX, deps=[dg.AssetDep(regenerated_conversations, partition_mapping=dg.AllPartitionMapping())])
def linked_mix(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    inputs = upstream_versions(context)
    _lineage.link_run_to_trigger(context, inputs)
    return dg.MaterializeResult(metadata=lineage_metadata(inputs))


def _mix_run_tags(defs, inst, tags: dict) -> dict:
    res = dg.materialize(
        [source_conversations, regenerated_conversations, linked_mix],
        selection=[MIX],
        instance=inst,
        resources=defs.resources,
        tags=tags,
    )
    assert res.success
    return inst.get_run_by_id(res.run_id).tags


def _version(inst, partition: str) -> str:
    rec = inst.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=REGENERATED, asset_partitions=[partition]), limit=1
    ).records[0]
    return rec.asset_materialization.tags[DATA_VERSION_TAG]


def test_automation_mix_run_names_the_runs_partitions_and_versions_that_triggered_it(toy, dagster_instance):
    defs, _, config_dir = toy
    inst = dagster_instance
    inst.add_dynamic_partitions(SOURCES_PARTITION_NAME, ["alpha", "beta"])
    assert _mat(defs, inst, [SRC, REGENERATED], "alpha").success
    beta = dg.materialize(
        defs.assets,
        selection=[SRC, REGENERATED],
        partition_key="beta",
        instance=inst,
        resources=defs.resources,
        tags={BACKFILL_TAG: "bf-1", TRIGGER_TAG: TRIGGER_INCOMING_FILE},
    )
    auto = {TRIGGER_TAG: TRIGGER_AUTOMATION}

    # first mix: every input is new; the newest (beta) run is the trigger
    tags = _mix_run_tags(defs, inst, auto)
    assert tags[TRIGGERED_BY_RUN_TAG] == beta.run_id
    assert tags["specforge/trigger_backfill"] == "bf-1"
    assert tags["specforge/trigger_origin"] == "incoming-file"
    assert tags["specforge/trigger_partition"] == "beta"
    assert tags[TRIGGER_INPUTS_TAG] == (
        f"regenerated/conversations[alpha]@{_version(inst, 'alpha')[:12]}, "
        f"regenerated/conversations[beta]@{_version(inst, 'beta')[:12]}"
    )

    # alpha changes: the next automation mix run names only alpha's run and version
    cfg = yaml.safe_load((config_dir / "sources.yaml").read_text())
    cfg["sources"]["alpha"]["rows"].append({"id": "a2", "text": "alpha two"})
    (config_dir / "sources.yaml").write_text(yaml.safe_dump(cfg))
    alpha = dg.materialize(
        defs.assets, selection=[SRC, REGENERATED], partition_key="alpha", instance=inst, resources=defs.resources
    )
    tags = _mix_run_tags(defs, inst, auto)
    assert tags[TRIGGERED_BY_RUN_TAG] == alpha.run_id
    assert tags[TRIGGER_INPUTS_TAG] == f"regenerated/conversations[alpha]@{_version(inst, 'alpha')[:12]}"
    assert tags["specforge/trigger_partition"] == "alpha"
    assert "specforge/trigger_backfill" not in tags

    # a manual run is not tagged as triggered; nor is an automation run whose inputs did not change
    assert TRIGGERED_BY_RUN_TAG not in _mix_run_tags(defs, inst, {})
    assert TRIGGERED_BY_RUN_TAG not in _mix_run_tags(defs, inst, auto)


def test_trigger_inputs_tag_stays_short():
    rows = [
        {
            "asset": "regenerated/conversations",
            "partition": f"source-{i:03d}",
            "data_version": f"{i:064x}",
            "run_id": None,
            "materialized_at": i,
        }
        for i in range(50)
    ]
    tags = _lineage.trigger_link_tags(None, rows, None)
    assert len(tags[TRIGGER_INPUTS_TAG]) <= 240
    assert tags[TRIGGER_INPUTS_TAG].endswith("(50 in all)")
    assert TRIGGERED_BY_RUN_TAG not in tags
