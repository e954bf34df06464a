"""Layer: mix — `mix/training_mix` (one asset over all source partitions) + its checks."""

import dagster as dg

from ..checks import mix as mix_checks
from .. import charts
from ..mix.publish import mix_sources, publish_mix
from ..partitions import SOURCES_PARTITION_NAME
from ._checks import InAssetCheck, check_results, check_specs
from ._failures import expected_failures
from ._metadata import markdown_table, pictures, png, table
from ._lineage import lineage_metadata, link_run_to_trigger, upstream_versions
from ..resources import SpecforgeStore

from ..keys import MIX as MIX_KEY
from ..keys import REGENERATED as REGENERATED_KEY

CODE_VERSION = "mix-v1"  # Dagster code version: bump when what the mix computes changes


CHECKS = [
    InAssetCheck(
        "mix_weights_honoured",
        False,
        "Realized source shares match configs/mix.yaml weights within tolerance.",
        lambda mix_dir, report, **_: mix_checks.weights_honoured(
            mix_dir, report, float(report["config"]["weight_tolerance"])
        ),
    ),
    InAssetCheck(
        "mix_no_duplicate_content",
        True,
        "No two rows of train+test share normalized content or id.",
        lambda mix_dir, **_: mix_checks.no_duplicate_content(mix_dir),
    ),
    InAssetCheck(
        "mix_counts_reconcile",
        True,
        "Input rows = train + test + quarantined.",
        lambda mix_dir, report, **_: mix_checks.counts_reconcile(mix_dir, report),
    ),
]


@dg.asset(
    key=MIX_KEY,
    group_name="mix",
    deps=[dg.AssetDep(REGENERATED_KEY, partition_mapping=dg.AllPartitionMapping())],
    kinds={"python", "jsonl"},
    code_version=CODE_VERSION,
    check_specs=check_specs(MIX_KEY, CHECKS),
)
def training_mix(context: dg.AssetExecutionContext, store: SpecforgeStore):
    """The training mix: every source partition's regenerated (else original) conversations,
    filtered by configs/mix.yaml (sources, weights/caps), deduplicated by normalized content
    hash (optionally prefix near-dups), shuffled and split with a seed. Writes
    <root>/mix/train.jsonl and test.jsonl (SpecForge rows + "source") and quarantine.jsonl
    (dropped rows with reasons).

    Published as one unit: built in a staging folder, kept as the immutable
    `<root>/versions/mix/<data version>/` (what a draft and its evaluation read), then swapped
    in as `<root>/mix/` in one step. The data version is the hash of what tokenize and the
    evaluation consume (ids, sources, conversations/text, tools of the train and test rows, in
    order), never of provenance (regeneration fields, paths, times): an unchanged mix is the
    same version."""
    root = store.root()
    with expected_failures():
        result, report = _build(context, store, root)
    yield result
    yield from check_results(MIX_KEY, CHECKS, mix_dir=store.layer_dir("mix"), report=report)


def _build(context, store: SpecforgeStore, root) -> tuple[dg.MaterializeResult, dict]:
    raw = store.config("mix")
    # (an instance where no partition was ever added answers [])
    keys, absent = mix_sources(root, context.instance.get_dynamic_partitions(SOURCES_PARTITION_NAME))
    if absent:
        context.log.warning(f"source partitions without data on disk (skipped): {absent}")
    out = store.layer_dir("mix")
    inputs = upstream_versions(context)
    link_run_to_trigger(context, inputs)  # an automation run names the run(s) and versions that started it
    published = publish_mix(root, raw, keys, out, inputs)
    report, version, vdir, cfg = (
        published["report"],
        published["version"],
        published["version_dir"],
        published["config"],
    )
    pruned, preview = published["pruned"], published["preview"]
    chart = out / "mix.png"
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            "dagster/row_count": report["train_rows"],
            "test_rows": report["test_rows"],
            "rows_in": report["rows_in"],
            "quarantined_rows": report["quarantined_rows"],
            "duplicates_removed": report["duplicates_removed"],
            "duplicates_by_source_pair": dg.MetadataValue.json(report["duplicates_by_pair"]),
            "realized_mix": markdown_table(*charts.mix_sources_rows(report)),
            "shares": dg.MetadataValue.json(report["shares"]),
            "mix_chart": png(chart, "rows and characters per source"),
            "realized_mix_table": table(charts.mix_table(report)),
            **pictures(mix_chart_inline=charts.mix_inline_md(report)),
            "train_path": dg.MetadataValue.path(str(out / "train.jsonl")),
            "test_path": dg.MetadataValue.path(str(out / "test.jsonl")),
            "version_path": dg.MetadataValue.path(str(vdir)),
            "versions_pruned": dg.MetadataValue.json(pruned),
            "quarantine_path": dg.MetadataValue.path(str(out / "quarantine.jsonl")),
            "preview": dg.MetadataValue.json(preview),
            "config": dg.MetadataValue.json(cfg),
            **lineage_metadata(inputs),
        },
    ), report


def definitions(store: SpecforgeStore) -> dg.Definitions:
    """The layer's asset (its checks are in-asset: they run in the mix's own step;
    `definitions.build_definitions` merges every layer's)."""
    return dg.Definitions(assets=[training_mix])
