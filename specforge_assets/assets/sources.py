"""Layer: sources — `sources/conversations`, one partition per source, with DuckDB quality gates.

A thin wrapper: the work is `specforge_assets.sources.normalize.build_source` (plain Python)
and `specforge_assets.checks.sources.run_source_checks` (in-memory DuckDB over the partition's
files). The checks are declared on the asset (`check_specs`, partitioned like it), so every
partition materialization runs them and the UI shows them per partition.
"""

from pathlib import Path

import dagster as dg

from ..charts import source_preview_rows, turns_histogram_rows
from ..checks.sources import run_source_checks
from ._checks import InAssetCheck, check_results, check_specs
from ._failures import expected_failures
from ._metadata import markdown_table
from ..partitions import source_partitions
from ..resources import SpecforgeStore
from ..sources.config import resolve_source
from ..sources.normalize import CODE_VERSION, build_source
from ..sources.prepare import datasets_cache_dir, hub_offline_setting

from ..keys import SOURCES as ASSET_KEY


class SourcesSettings(dg.ConfigurableResource):
    """Knobs of the sources layer that depend on where it runs (not on the data).

    hf_cache_dir: the `datasets` cache ("" → a hidden folder in the data root). (Reading the hub
    offline: sources.yaml `hub: {offline: true}`, or HF_HUB_OFFLINE=1 where the runs execute.)
    """

    hf_cache_dir: str = ""


class SourceRunConfig(dg.Config):
    force: bool = False  # rebuild even when the input content, spec and code are unchanged


def _scan(name: str, blocking: bool, description: str) -> InAssetCheck:
    """A check whose outcome comes from the partition's one DuckDB scan (`outcomes`, run once by
    `checks.sources.run_source_checks` before the checks); a non-blocking one warns."""
    return InAssetCheck(
        name,
        blocking,
        description,
        lambda outcomes, **_: outcomes[name],
        severity="ERROR" if blocking else "WARN",
        partitions_def=source_partitions,
    )


CHECKS = [
    _scan(
        "schema_valid",
        True,
        "every row is {id: non-empty string, conversations: [{role: string, content: string}]} or "
        "{id, text: string}, one kind per source",
    ),
    _scan(
        "no_empty_content",
        True,
        "no message (or pre-formatted text) is empty or whitespace-only, no empty conversation",
    ),
    _scan(
        "valid_role_order",
        True,
        "system only first, then user/assistant strictly alternating from user (SpecForge's validator)",
    ),
    _scan("unique_ids", True, "ids are unique across train and test"),
    _scan(
        "no_duplicate_conversations",
        False,
        "share of rows whose content (conversations or text) duplicates another row is within max_duplicate_rate",
    ),
    _scan(
        "quarantine_rate",
        True,
        "quarantined / rows_in is at most the source's quarantine_threshold (gates from quarantine_min_rows "
        "quarantined rows on)",
    ),
    _scan("rows_reconcile", True, "rows_in = train + test + quarantined, counted from the files"),
]


def _metadata(result, spec) -> dict:
    m = result.manifest
    stats = m.get("stats") or {}
    chars = stats.get("chars") or {}
    out_dir: Path = result.out_dir
    rows = m["rows_train"] + m["rows_test"]
    md = {
        "dagster/row_count": rows,
        "rows_in": m["rows_in"],
        "rows_train": m["rows_train"],
        "rows_test": m["rows_test"],
        "quarantined": m["quarantined"],
        "quarantine_rate": round(m["quarantined"] / m["rows_in"], 6) if m["rows_in"] else 0.0,
        "skipped_messages": m.get("skipped_messages", 0),
        # rows with user turns only: the regenerated layer fills their answers (the mix refuses them otherwise)
        "prompt_only_rows": m.get("prompt_only_rows", 0),
        "row_system_prepended": m.get("row_system_prepended", 0),
        # fields of the raw rows the conversation rows do not carry (tools, tool_calls, names, ...)
        "dropped_fields": dg.MetadataValue.json(m.get("dropped_fields") or {}),
        "turns_histogram": markdown_table(*turns_histogram_rows(stats.get("turns_histogram") or {})),
        "chars_per_row_min": chars.get("min", 0),
        "chars_per_row_mean": float(chars.get("mean", 0)),
        "chars_per_row_p50": chars.get("p50", 0),
        "chars_per_row_p95": chars.get("p95", 0),
        "chars_per_row_max": chars.get("max", 0),
        "path": dg.MetadataValue.path(str(out_dir / "train.jsonl")),
        "quarantine_path": dg.MetadataValue.path(str(out_dir / "quarantine.jsonl")),
        "preview": markdown_table(*source_preview_rows(m.get("preview") or [])),
        "format": m.get("format", "conversations"),
        "source": dg.MetadataValue.json({k: v for k, v in spec.identity().items() if v is not None}),
        "inputs": dg.MetadataValue.json(m.get("inputs") or []),
        "cache": "hit (input unchanged, outputs reused)" if result.cached else "miss (rebuilt)",
        "cache_key": m["cache_key"],
        "data_version": m["data_version"],
    }
    if stats.get("quarantine_reasons"):
        md["quarantine_reasons"] = dg.MetadataValue.json(stats["quarantine_reasons"])
    if m["rows_test"]:
        md["test_path"] = dg.MetadataValue.path(str(out_dir / "test.jsonl"))
    return md


@dg.asset(
    key=ASSET_KEY,
    group_name="sources",
    partitions_def=source_partitions,
    kinds={"python", "duckdb", "json"},
    code_version=CODE_VERSION,
    check_specs=check_specs(ASSET_KEY, CHECKS),
)
def conversations(
    context: dg.AssetExecutionContext, config: SourceRunConfig, store: SpecforgeStore, sources_settings: SourcesSettings
):
    """Conversations of one source in SpecForge's format, validated, with a quarantine file.

    Reads the source declared in `configs/sources.yaml` (a SpecForge preset from the hub or a
    local path, a custom JSON/JSONL/Parquet file or hub dataset, or a file dropped into the
    incoming folder), converts it exactly like SpecForge's `prepare_data.py`, quarantines every
    row SpecForge's validator would reject (with file, row, field and reason) and writes
    `<data_root>/sources/<source>/{train,test,quarantine}.jsonl` + `manifest.json` atomically.
    Unchanged input (content hash + spec + code version) is not recomputed and keeps its data
    version. DuckDB checks gate the output: schema, empty content, role order, unique ids,
    quarantine rate, row reconciliation (blocking) and duplicate conversations (warning).
    """
    key = context.partition_key
    root = store.root()
    with expected_failures():
        cfg = store.config("sources")
        spec = resolve_source(key, cfg, root)
        result = build_source(
            spec,
            root,
            config=cfg,
            offline=hub_offline_setting(None, cfg),
            cache_dir=datasets_cache_dir(sources_settings.hf_cache_dir, root),
            force=config.force,
            log=context.log.info,
        )
    outcomes = run_source_checks(
        result.out_dir,
        quarantine_threshold=spec.quarantine_threshold,
        quarantine_min_rows=spec.quarantine_min_rows,
        max_duplicate_rate=spec.max_duplicate_rate,
    )
    yield dg.MaterializeResult(metadata=_metadata(result, spec), data_version=dg.DataVersion(result.data_version))
    yield from check_results(ASSET_KEY, CHECKS, outcomes=outcomes)


def definitions(store: SpecforgeStore) -> dg.Definitions:
    """The layer's asset (its checks are in-asset: they run with every partition) and the
    `sources_settings` resource (`definitions.build_definitions` merges every layer's)."""
    return dg.Definitions(assets=[conversations], resources={"sources_settings": SourcesSettings()})
