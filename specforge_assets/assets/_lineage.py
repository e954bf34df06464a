"""Which input data versions a materialization read — for asset metadata and manifest.json.

Call from an asset body:

    inputs = upstream_versions(context)              # all of this asset's deps
    write_manifest(out_dir, inputs=inputs, ...)      # plain dicts, JSON-safe
    return dg.MaterializeResult(metadata={**lineage_metadata(inputs), ...}, ...)

Identity-partitioned deps give the same partition's latest version; an unpartitioned asset that
reads a partitioned dep (the mix) lists every materialized partition; each row links to the
run that produced it. Dagster also records `dagster/input_data_version/<key>` tags on the
event, but only one version per dep and not readable at a glance.
"""

from __future__ import annotations

import dagster as dg


def _record_row(key: dg.AssetKey, partition: str | None, record) -> dict:
    tags = (record.asset_materialization.tags or {}) if record and record.asset_materialization else {}
    return {
        "asset": key.to_user_string(),
        "partition": partition,
        "data_version": tags.get("dagster/data_version"),
        "run_id": record.run_id if record else None,
        "materialized_at": record.timestamp if record else None,
    }


def upstream_versions(context: dg.AssetExecutionContext, keys: list[dg.AssetKey] | None = None) -> list[dict]:
    """One row per (upstream asset, partition) this materialization depends on."""
    instance = context.instance
    me = context.asset_key
    deps = list(keys) if keys is not None else sorted(context.assets_def.asset_deps.get(me, set()), key=str)
    my_partition = context.partition_key if context.has_partition_key else None
    rows: list[dict] = []
    for key in deps:
        materialized = instance.get_materialized_partitions(key)
        if not materialized:
            partitions: list[str | None] = [None]  # unpartitioned (or never materialized)
        elif my_partition is not None:
            partitions = [my_partition]  # identity mapping (the layers share the source partitions)
        else:
            partitions = sorted(materialized)
        for p in partitions:
            flt = dg.AssetRecordsFilter(asset_key=key, asset_partitions=[p] if p is not None else None)
            recs = instance.fetch_materializations(flt, limit=1).records
            rows.append(_record_row(key, p, recs[0] if recs else None))
    return rows


def lineage_metadata(rows: list[dict]) -> dict[str, dg.MetadataValue]:
    """A readable table of the inputs' data versions (markdown, with run links) + the raw rows."""
    lines = ["| input | partition | data version | run |", "|---|---|---|---|"]
    for r in rows:
        run = f"[{r['run_id'][:8]}](/runs/{r['run_id']})" if r["run_id"] else "—"
        lines.append(
            f"| {r['asset']} | {r['partition'] or '—'} | `{(r['data_version'] or 'never materialized')[:16]}` | {run} |"
        )
    return {
        "lineage/inputs": dg.MetadataValue.md("\n".join(lines)),
        "lineage/input_versions": dg.MetadataValue.json(rows),
    }


def latest_record(instance: dg.DagsterInstance, key: dg.AssetKey):
    """The latest materialization record of `key` (None if never materialized)."""
    recs = instance.fetch_materializations(key, limit=1).records
    return recs[0] if recs else None


def record_version(record) -> str | None:
    mat = record.asset_materialization if record is not None else None
    return (mat.tags or {}).get("dagster/data_version") if mat is not None else None


def record_metadata(record, name: str, default=None):
    mat = record.asset_materialization if record is not None else None
    if mat is None or name not in (mat.metadata or {}):
        return default
    return mat.metadata[name].value


def pinned_input(instance: dg.DagsterInstance, key: dg.AssetKey, artifact: str, root) -> dict:
    """The latest data version of an upstream and its immutable folder
    (`<root>/versions/<artifact>/<version>`, when that layer keeps one): what a run reads."""
    from ..versioned import version_dir

    rec = latest_record(instance, key)
    version = record_version(rec)
    path = None
    if version:
        d = version_dir(root, artifact, version)
        path = str(d) if d.is_dir() else None
    return {"asset": key.to_user_string(), "data_version": version, "path": path, "run_id": rec.run_id if rec else None}
