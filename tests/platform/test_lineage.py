"""The lineage helper: each materialization names the data versions it read."""

import dagster as dg

from specforge_assets.assets._lineage import lineage_metadata, upstream_versions
from specforge_assets.lineage import input_rows, inputs_by_asset
from specforge_assets.partitions import source_partitions


@dg.asset(key=["sources", "conversations"], partitions_def=source_partitions)
def src(context: dg.AssetExecutionContext):
    return dg.MaterializeResult(data_version=dg.DataVersion(f"v-{context.partition_key}"))


@dg.asset(key=["regenerated", "conversations"], partitions_def=source_partitions, deps=[src])
def regen(context: dg.AssetExecutionContext):
    rows = upstream_versions(context)
    return dg.MaterializeResult(
        metadata=lineage_metadata(rows), data_version=dg.DataVersion("r-" + context.partition_key)
    )


@dg.asset(key=["mix", "training_mix"], deps=[dg.AssetDep(regen, partition_mapping=dg.AllPartitionMapping())])
def mix(context: dg.AssetExecutionContext):
    return dg.MaterializeResult(metadata=lineage_metadata(upstream_versions(context)), data_version=dg.DataVersion("m"))


def _meta(instance, key):
    return instance.fetch_materializations(key, limit=1).records[0].asset_materialization.metadata


def test_inputs_versions_in_metadata(dagster_instance):
    inst = dagster_instance
    inst.add_dynamic_partitions("sources", ["a", "b"])
    for p in ["a", "b"]:
        assert dg.materialize([src, regen], partition_key=p, instance=inst).success
    assert dg.materialize([src, regen, mix], selection=[mix], instance=inst).success

    regen_rows = _meta(inst, regen.key)["lineage/input_versions"].value
    assert [(r["asset"], r["partition"], r["data_version"]) for r in regen_rows] == [
        ("sources/conversations", "b", "v-b")
    ]
    mix_meta = _meta(inst, mix.key)
    rows = mix_meta["lineage/input_versions"].value
    assert [(r["partition"], r["data_version"]) for r in rows] == [("a", "r-a"), ("b", "r-b")]
    assert all(r["run_id"] for r in rows)
    assert "| regenerated/conversations | a | `r-a` |" in mix_meta["lineage/inputs"].value


def test_pinned_inputs_of_a_run_use_the_same_metadata():
    """A training/evaluation run's pinned inputs (`input_rows`) give the same two entries: the
    table names every input with its version and run link (— when none), the JSON keeps the folder."""
    inputs = {
        "tokenized/dataset": {
            "data_version": "ds0123456789abcdef",
            "path": "/d/versions/tokenized_dataset/ds0",
            "run_id": "abcdef0123456789",
        },
        "models/target_model": {"data_version": "t1", "path": "/d/versions/target_model/t1"},
    }
    md = lineage_metadata(input_rows(inputs))
    table = md["lineage/inputs"].value
    assert "| tokenized/dataset | — | `ds0123456789abcd` | [abcdef01](/runs/abcdef0123456789) |" in table
    assert "| models/target_model | — | `t1` | — |" in table
    assert "/d/versions" not in table
    assert inputs_by_asset(md["lineage/input_versions"].value) == inputs
