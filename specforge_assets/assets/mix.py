"""Layer: mix — `mix/training_mix` (one asset over all source partitions) + its checks."""

import json

import dagster as dg

from ..checks import mix as mix_checks
from ..fileio import staged_dir, write_manifest
from .. import charts
from ..mix.chart import bar_chart_png
from ..mix.mix import build_mix, discover_sources, mix_config
from ..partitions import SOURCES_PARTITION_NAME
from ..preview import truncate
from ._checks import InAssetCheck, check_results, check_specs
from ._failures import expected_failures
from ._metadata import markdown_table, pictures, png, table
from ._lineage import lineage_metadata, link_run_to_trigger, upstream_versions
from ..resources import SpecforgeStore
from ..versioned import prune_versions, publish_version

from ..keys import MIX as MIX_KEY

CODE_VERSION = "mix-v1"
VERSIONS_KEEP = 10  # immutable mix versions kept under <root>/versions/mix (the current one always)


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
        lambda mix_dir, root, report, **_: mix_checks.counts_reconcile(root, mix_dir, report),
    ),
]


@dg.asset(
    key=MIX_KEY,
    group_name="mix",
    deps=[dg.AssetDep(dg.AssetKey(["regenerated", "conversations"]), partition_mapping=dg.AllPartitionMapping())],
    kinds={"python", "jsonl"},
    code_version=CODE_VERSION,
    description=None,
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
    raw = dict(store.config("mix"))
    if not raw.get("weights"):  # per-source `weight:` in configs/sources.yaml, unless mix.yaml sets weights
        src = store.config("sources").get("sources") or {}
        present = set(discover_sources(root))
        if isinstance(raw.get("sources"), (list, dict)):
            present &= set(raw["sources"])
        w = {
            k: v["weight"]
            for k, v in src.items()
            if isinstance(v, dict) and v.get("weight") is not None and k in present
        }
        if w:
            raw["weights"] = w
    with expected_failures():
        result, report = _build(context, store, root, raw)
    yield result
    yield from check_results(MIX_KEY, CHECKS, mix_dir=store.layer_dir("mix"), root=root, report=report)


def _build(context, store: SpecforgeStore, root, raw: dict) -> tuple[dg.MaterializeResult, dict]:
    cfg = mix_config(raw)
    on_disk = discover_sources(root)
    try:
        in_instance = context.instance.get_dynamic_partitions(SOURCES_PARTITION_NAME)
    except Exception:  # noqa: BLE001 - the partitions def may not exist in a bare instance
        in_instance = []
    keys = [k for k in on_disk if not in_instance or k in in_instance] or on_disk
    if in_instance:
        absent = [k for k in in_instance if k not in on_disk]
        if absent:
            context.log.warning(f"source partitions without data on disk (skipped): {absent}")
    if not keys:
        raise dg.Failure(
            f"no source data under {root}/sources or {root}/regenerated: materialize sources/conversations first"
        )
    out = store.layer_dir("mix")
    inputs = upstream_versions(context)
    link_run_to_trigger(context, inputs)  # an automation run names the run(s) and versions that started it
    with staged_dir(out) as tmp:
        report = build_mix(root, cfg, keys, out_dir=tmp)
        version = report["content_version"]
        bar_chart_png(report, tmp / "mix.png")
        write_manifest(tmp, asset="mix/training_mix", data_version=version, report=report, inputs=inputs)
        vdir = publish_version(tmp, root, "mix", version)  # first the immutable version, then "current"
    chart = out / "mix.png"
    pruned = prune_versions(root, "mix", VERSIONS_KEEP, protect={version})
    preview = []  # bounded whatever the rows' size (one 50 MB row must not become 50 MB of metadata)
    with open(vdir / "train.jsonl", encoding="utf-8") as f:
        for _, line in zip(range(3), f):
            preview.append(truncate(json.loads(line)))
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


assets: list = [training_mix]
asset_checks: list = []  # in-asset (check_specs above): they run in the mix's own step
resources: dict = {}
