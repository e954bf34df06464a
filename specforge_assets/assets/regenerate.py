"""Layer: regenerated/conversations — every assistant turn rewritten by the target model.

A thin wrapper: `specforge_assets.regenerate.partition.regenerate_partition` does the work (the
CLI `specforge-assets regenerate` runs the same runner); this module maps partition key, run
config, the server resource, metadata and checks onto it.
"""

import os

import dagster as dg

from ..charts import regenerated_preview_rows
from ..checks import regenerate as regen_checks
from ._checks import InAssetCheck, check_results, check_specs
from ._config import overrides, overrides_config
from ._failures import expected_failures
from ._metadata import markdown_table
from ..partitions import source_partitions
from ..regenerate import config as regen_config
from ._lineage import lineage_metadata, upstream_versions
from ..resources import SpecforgeStore

from ..keys import REGENERATED as KEY
from ..keys import SOURCES as SOURCES_KEY
from ..keys import TARGET as TARGET_KEY

CODE_VERSION = "regenerate-v1"  # Dagster code version: bump when what regeneration computes changes


class RegenerationServers(
    overrides_config(  # type: ignore[misc]  # a base made at import from the one declaration
        regen_config.SourceRegeneration,
        "RegenerationServerFields",
        include=("server_addresses", "model"),
        base=dg.ConfigurableResource,
    )
):
    """Where regeneration requests go (deployment-level; overrides configs/regenerate.yaml).

    `server_addresses` / `model`: configs/regenerate.yaml's settings of the same names (unset:
    the file's, by default a local server launched for the target model). `api_key`: the
    servers' API key, a secret: set it only as `dg.EnvVar("NAME")` (`regen_servers()` does with
    $SPECFORGE_REGEN_API_KEY when that is set), so that the run config and the UI show the
    variable's name, never the key; it is never logged or written to metadata. Sent to the
    servers of every source whose configs/regenerate.yaml `api_key_env` is null; unset: no key.
    """

    api_key: str | None = None


def regen_servers() -> RegenerationServers:
    """The `regen_servers` resource with the deployment's API key as a Dagster secret:
    `api_key=dg.EnvVar("SPECFORGE_REGEN_API_KEY")`, read in the run's process, so that the run
    config, the Launchpad and the UI hold the variable's name and never the key. Only when that
    variable is set here: the key is optional, and an `EnvVar` whose variable is unset fails every
    run at launch (Dagster 1.13: "You have attempted to fetch the environment variable ... which
    is not set"), regenerations that need no key included."""
    key = dg.EnvVar(regen_config.API_KEY_ENV) if os.environ.get(regen_config.API_KEY_ENV) else None
    return RegenerationServers(api_key=key)


# Per-run overrides (Launchpad), derived from the one declaration of the settings: every setting
# of configs/regenerate.yaml except the nested/secret ones, unset = the file's value. (A class
# made at run time: mypy sees a variable, hence the `type: ignore` where it annotates `config`.)
RegenerateConfig = overrides_config(
    regen_config.SourceRegeneration,
    "RegenerateConfig",
    exclude=("launch", "extra_body", "api_key_env"),
    doc="Per-run overrides (Launchpad). Unset fields keep configs/regenerate.yaml's values.",
)


def _deps(store: SpecforgeStore) -> list:
    """Sources (same partition), plus the demo target when regeneration launches a server for it
    (`regenerate.config.needs_demo_target`, read through `store` when the definitions are built,
    never at import)."""
    deps: list = [dg.AssetDep(SOURCES_KEY, partition_mapping=dg.IdentityPartitionMapping())]
    if regen_config.needs_demo_target(store.config):
        deps.append(dg.AssetDep(TARGET_KEY))
    return deps


# `reconcile` and `quality`: the domain's two DuckDB scans (regen_checks), run once before the checks
CHECKS = [
    InAssetCheck(
        "rows_reconcile",
        True,
        "success + error + skipped (+ passthrough) = input rows, every input id "
        "exactly once across train/errors/skipped (DuckDB)",
        lambda reconcile, **_: reconcile,
    ),
    InAssetCheck(
        "truncation_rate",
        False,
        "share of regenerated turns with finish_reason == length under the threshold",
        lambda quality, **_: quality["truncation_rate"],
        severity="WARN",
    ),
    InAssetCheck(
        "no_empty_answers",
        False,
        "no regenerated assistant answer is empty",
        lambda quality, **_: quality["no_empty_answers"],
        severity="WARN",
    ),
    InAssetCheck(
        "no_think_markers",
        False,
        "no <think>/</think> left in answers unless reasoning mode is `save`",
        lambda quality, **_: quality["no_think_markers"],
        severity="WARN",
    ),
]


def regenerated_conversations(
    context: dg.AssetExecutionContext,
    config: RegenerateConfig,  # type: ignore[valid-type]
    store: SpecforgeStore,
    regen_servers: RegenerationServers,
):
    """Regenerate (or pass through) one source partition with the target model.

    Reads sources/<key>/train.jsonl (+ test.jsonl); writes regenerated/<key>/train.jsonl,
    errors.jsonl, skipped.jsonl (+ test.jsonl) and manifest.json. Exactly-once: a crashed run
    resumes from its journal on the next materialization; changed settings with a partial run are
    refused unless `restart: true`.
    """
    key = context.partition_key
    root = store.root()
    # Imported here, not at module level: its HTTP clients (aiohttp, httpx) cost about 0.4 s, and
    # every code-location load (each run, the code server) would pay it for runs that regenerate nothing.
    from ..regenerate.partition import regenerate_partition
    from ..target import target_model_path

    with expected_failures():  # a busy partition, refused settings, no server: one line, no traceback
        cfg = regen_config.source_config(
            key,
            store.config("regenerate"),
            overrides(config),
            deployment={"server_addresses": regen_servers.server_addresses, "model": regen_servers.model},
        )
        summary = regenerate_partition(
            key,
            cfg,
            root=root,
            log=context.log.info,
            run_id=context.run.run_id,
            target_path=lambda: target_model_path(root, store.config("target")),
            api_key=regen_servers.api_key,
        )
    out_dir = store.layer_dir("regenerated", key)
    train = out_dir / "train.jsonl"
    counts = summary["counts"]
    meta = {
        "dagster/row_count": counts["success"] + counts["passthrough"],
        "regenerated": summary["regenerated"],
        "input_rows": summary["input_rows"],
        "success": counts["success"],
        "error": counts["error"],
        "skipped": counts["skipped"],
        "passthrough": counts["passthrough"],
        "path": dg.MetadataValue.path(str(train)),
        "test_split": str(summary.get("test_split")),
        "preview": markdown_table(*regenerated_preview_rows(train)),
        # hit: same input content + same content settings + outputs intact -> nothing was run
        "cache": summary.get("cache", "miss"),
        "cache_reason": str(summary.get("cache_reason", "")),
        "settings_fingerprint": str((summary.get("cache_key") or {}).get("settings_fingerprint", ""))[:16],
        **lineage_metadata(upstream_versions(context)),
    }
    if summary["regenerated"]:
        meta.update(
            {
                "model": str(summary.get("settings", {}).get("model")),
                "server_models": dg.MetadataValue.json(summary.get("server_models", {})),
                "settings": dg.MetadataValue.json(summary.get("settings", {})),
                "rows_per_s": summary.get("rows_per_s") or 0.0,
                "completion_tokens_per_s": summary.get("completion_tokens_per_s") or 0.0,
                "elapsed_s": summary.get("elapsed_s") or 0.0,
                "resumed_rows": summary.get("resumed_rows", 0),
                "servers": dg.MetadataValue.json(summary.get("servers", {})),
                "retries": summary.get("retries", 0),
                "error_breakdown": dg.MetadataValue.json(summary.get("breakdown", {})),
                "request_error_kinds": dg.MetadataValue.json(summary.get("request_error_kinds", {})),
                "finish_reasons": dg.MetadataValue.json(summary.get("finish_reasons", {})),
                "usage": dg.MetadataValue.json(summary.get("usage", {})),
                "launched_server": dg.MetadataValue.json(summary.get("launched_server") or {}),
            }
        )
    # the version is the rows' content (provenance left out), never a file hash of rows that carry
    # endpoints and timings: an unchanged regeneration keeps its version
    yield dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(summary["data_version"][:32]))

    src_train = store.layer_dir("sources", key) / "train.jsonl"
    yield from check_results(
        KEY,
        CHECKS,
        reconcile=regen_checks.reconcile(src_train, out_dir),
        quality=regen_checks.quality(out_dir, float(cfg["truncation_threshold"]), cfg["reasoning"]),
    )


def build_assets(store: SpecforgeStore) -> list[dg.AssetsDefinition]:
    """The layer's asset, its deps decided by the configuration `store` reads (called by
    `definitions.build_definitions`, never at import)."""
    asset = dg.asset(
        key=KEY,
        partitions_def=source_partitions,
        deps=_deps(store),
        group_name="regenerated",
        kinds={"python", "duckdb"},
        code_version=CODE_VERSION,
        check_specs=check_specs(KEY, CHECKS),
    )
    return [asset(regenerated_conversations)]


def definitions(store: SpecforgeStore) -> dg.Definitions:
    """The layer's asset (its deps decided by the configuration `store` reads) and the
    `regen_servers` resource (`definitions.build_definitions` merges every layer's)."""
    return dg.Definitions(assets=build_assets(store), resources={"regen_servers": regen_servers()})
