"""Lineage, in one place: which version, record and run produced what.

- Tag names: `specforge_assets.tags` (Dagster's and ours, each defined once).
- Record lookups: `latest_record`, `find_record`, `record_version`, `record_metadata`,
  `latest_version`, `latest_versions`, `recorded`, `pinned_input`, `trained_on_version`,
  `retraining_runs`.
- Run links: `run_link_tags` (where the run that produced a version came from),
  `trigger_link_tags` / `link_run_to_trigger` (an automation run names the run(s) and versions
  that started it; which inputs changed and how they are named: `specforge_assets.lineage`).
- Input versions of a materialization, for asset metadata and manifest.json: every asset that
  records its inputs emits them through `lineage_metadata` (``lineage/inputs`` +
  ``lineage/input_versions``). Call from an asset body:

    inputs = upstream_versions(context)              # all of this asset's deps
    write_manifest(out_dir, inputs=inputs, ...)      # plain dicts, JSON-safe
    return dg.MaterializeResult(metadata={**lineage_metadata(inputs), ...}, ...)

  or, for a run that read pinned versions (the models), `lineage_metadata(input_rows(inputs))`
  (`specforge_assets.lineage.input_rows`; `inputs_by_asset` reads them back).

Identity-partitioned deps give the same partition's latest version; an unpartitioned asset that
reads a partitioned dep (the mix) lists every materialized partition; each row links to the
run that produced it. Dagster also records `dagster/input_data_version/<key>` tags on the
event, but only one version per dep (the latest when the step ran, not the pinned version a
retraining read), without the run or folder, and not readable at a glance.
"""

from __future__ import annotations

import dagster as dg

from .. import lineage
from ..keys import TOKENIZED
from ..lineage import changed_inputs, trigger_inputs_text
from ..tags import (
    BACKFILL_TAG,
    DATA_VERSION_TAG,
    INPUT_DATA_VERSION_TAG_PREFIX,
    PARTITION_TAG,
    SENSOR_NAME_TAG,
    TRAINED_ON_TAG,
    TRIGGER_AUTOMATION,
    TRIGGER_BACKFILL_TAG,
    TRIGGER_INPUTS_TAG,
    TRIGGER_JOB_TAG,
    TRIGGER_ORIGIN_TAG,
    TRIGGER_PARTITION_TAG,
    TRIGGER_SENSOR_TAG,
    TRIGGER_TAG,
    TRIGGERED_BY_RUN_TAG,
)
from ..train.inputs import Recorded
from ._metadata import markdown_table

RETRAIN_JOB_NAME = "retrain_draft_job"


def _record_row(key: dg.AssetKey, partition: str | None, record) -> dict:
    tags = (record.asset_materialization.tags or {}) if record and record.asset_materialization else {}
    return {
        "asset": key.to_user_string(),
        "partition": partition,
        "data_version": tags.get(DATA_VERSION_TAG),
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
    """The metadata every asset that records its inputs emits: ``lineage/inputs`` (a markdown
    table: input, partition, data version (first 16 characters), link to the run that produced
    it) and ``lineage/input_versions`` (`rows` as JSON, read back by `link_run_to_trigger` and,
    through `lineage.inputs_by_asset`, by the draft evaluation). `rows`: `upstream_versions` rows,
    or `lineage.input_rows` of a run's pinned inputs (those also carry `path`, the folder read:
    kept in the JSON, left out of the table to keep it narrow); `partition`, `run_id` and
    `data_version` may be None or absent."""
    cells = [
        [
            r["asset"],
            r.get("partition") or "—",
            f"`{(r.get('data_version') or 'never materialized')[:16]}`",
            f"[{r['run_id'][:8]}](/runs/{r['run_id']})" if r.get("run_id") else "—",
        ]
        for r in rows
    ]
    return {
        "lineage/inputs": markdown_table(["input", "partition", "data version", "run"], cells),
        "lineage/input_versions": dg.MetadataValue.json(rows),
    }


def latest_record(instance: dg.DagsterInstance, key: dg.AssetKey):
    """The latest materialization record of `key` (None if never materialized)."""
    recs = instance.fetch_materializations(key, limit=1).records
    return recs[0] if recs else None


def find_record(instance: dg.DagsterInstance, key: dg.AssetKey, pred, limit: int = 200):
    """The newest of the latest `limit` materialization records of `key` for which
    `pred(record)` is true, or None."""
    for rec in instance.fetch_materializations(key, limit=limit).records:
        if pred(rec):
            return rec
    return None


def record_version(record) -> str | None:
    """The data version a materialization record carries (None: no record / no version)."""
    mat = record.asset_materialization if record is not None else None
    return (mat.tags or {}).get(DATA_VERSION_TAG) if mat is not None else None


def latest_version(instance: dg.DagsterInstance, key: dg.AssetKey) -> str | None:
    """The data version of the latest materialization of `key` (None if never materialized)."""
    return record_version(latest_record(instance, key))


def latest_versions(instance: dg.DagsterInstance, *keys: dg.AssetKey) -> dict[str, str | None]:
    """`{asset key as a string: its latest data version}` (None: never materialized)."""
    return {key.to_user_string(): latest_version(instance, key) for key in keys}


def recorded(record) -> Recorded | None:
    """A materialization record as plain values for the domain (`train.inputs.Recorded`: data
    version, run id, metadata values); None stays None."""
    if record is None:
        return None
    md = record.asset_materialization.metadata if record.asset_materialization else {}
    return Recorded(record_version(record), record.run_id, {k: v.value for k, v in (md or {}).items()})


def record_metadata(record, name: str, default=None):
    """Metadata value `name` of a materialization record (`default` when absent)."""
    mat = record.asset_materialization if record is not None else None
    if mat is None or name not in (mat.metadata or {}):
        return default
    return mat.metadata[name].value


def pinned_input(instance: dg.DagsterInstance, key: dg.AssetKey, artifact: str, root) -> dict:
    """The latest data version of an upstream and its immutable folder
    (`<root>/versions/<artifact>/<version>`, when that layer keeps one): what a run reads."""
    from ..versioned import existing_version_dir

    rec = latest_record(instance, key)
    version = record_version(rec)
    d = existing_version_dir(root, artifact, version)
    path = str(d) if d is not None else None
    return {"asset": key.to_user_string(), "data_version": version, "path": path, "run_id": rec.run_id if rec else None}


def trained_on_version(draft_record) -> str | None:
    """The tokenized/dataset version a draft materialization record was trained on
    (`lineage.trained_on_version` of its recorded metadata and Dagster's input-version tag)."""
    if draft_record is None or draft_record.asset_materialization is None:
        return None
    mat = draft_record.asset_materialization
    return lineage.trained_on_version(
        record_metadata(draft_record, "trained_on_dataset_version"),
        (mat.tags or {}).get(INPUT_DATA_VERSION_TAG_PREFIX + TOKENIZED.to_user_string()),
    )


def retraining_runs(instance: dg.DagsterInstance, version: str) -> list:
    """Runs of the retraining job requested for tokenized/dataset `version`, newest first."""
    return list(instance.get_runs(filters=dg.RunsFilter(job_name=RETRAIN_JOB_NAME, tags={TRAINED_ON_TAG: version})))


# --------------------------------------------------------------------------------------------
# Runs link back to what triggered them.
#
# The automation sensor's runs are created by Dagster's daemon from the conditions; their
# RunRequests carry only the static `run_tags` (specforge/trigger=automation). So the first step
# of such a run (the mix, else tokenized) works out which inputs changed since the asset last
# ran, and adds the link tags to its own run: the run page's tags then say which run(s), which
# partitions and which data versions started it. The retraining sensor puts the same links on
# its requests (`run_link_tags`).


def run_link_tags(run) -> dict[str, str]:
    """Where `run` (a `DagsterRun`, or None) came from, as tags for a run it triggers:
    `TRIGGER_JOB_TAG` (its job) and, when `run` has them, its `TRIGGER_TAG` as
    `TRIGGER_ORIGIN_TAG` and its backfill, sensor and partition tags as `TRIGGER_BACKFILL_TAG`,
    `TRIGGER_SENSOR_TAG`, `TRIGGER_PARTITION_TAG` (`specforge_assets.tags`). {} for None."""
    if run is None:
        return {}
    tags = run.tags or {}
    out = {TRIGGER_JOB_TAG: run.job_name}
    for src, dst in (
        (TRIGGER_TAG, TRIGGER_ORIGIN_TAG),
        (BACKFILL_TAG, TRIGGER_BACKFILL_TAG),
        (SENSOR_NAME_TAG, TRIGGER_SENSOR_TAG),
        (PARTITION_TAG, TRIGGER_PARTITION_TAG),
    ):
        if tags.get(src):
            out[dst] = tags[src]
    return out


def trigger_link_tags(instance: dg.DagsterInstance, inputs: list[dict], previous: list[dict] | None) -> dict[str, str]:
    """Run tags naming what triggered a run: `specforge/triggered_by_run` (the run that produced
    the newest changed input), `specforge/trigger_inputs` (`asset[partition]@version` of every
    changed input, `lineage.trigger_inputs_text`), and `run_link_tags` of the triggering run.
    {} when nothing changed (`lineage.changed_inputs`)."""
    changed = changed_inputs(inputs, previous)
    if not changed:
        return {}
    newest = changed[-1]
    tags = {TRIGGER_INPUTS_TAG: trigger_inputs_text(changed)}
    if newest.get("run_id"):
        tags[TRIGGERED_BY_RUN_TAG] = newest["run_id"]
        tags.update(run_link_tags(instance.get_run_by_id(newest["run_id"])))
    return tags


def link_run_to_trigger(context, inputs: list[dict]) -> dict[str, str]:
    """Called by an asset step before it materializes: when its run was started by the automation
    sensor and carries no link yet (an earlier step of the same run adds it first), add
    `trigger_link_tags` to the run. Returns the tags added ({} otherwise)."""
    instance = context.instance
    run = instance.get_run_by_id(context.run.run_id) or context.run
    tags = run.tags or {}
    if tags.get(TRIGGER_TAG) != TRIGGER_AUTOMATION or TRIGGERED_BY_RUN_TAG in tags:
        return {}
    previous = record_metadata(latest_record(instance, context.asset_key), "lineage/input_versions")
    new = trigger_link_tags(instance, inputs, previous)
    if new:
        instance.add_run_tags(run.run_id, new)
        context.log.info(f"triggered by run {new.get(TRIGGERED_BY_RUN_TAG, '?')[:8]}: {new[TRIGGER_INPUTS_TAG]}")
    return new
