"""Lineage rules with no Dagster import: which inputs of a materialization changed, how they are
named in a run tag, which dataset version a draft was trained on, and the one shape of recorded
inputs (rows `{asset, partition, data_version, run_id[, materialized_at][, path]}`, metadata
``lineage/input_versions``) turned to and from `{asset: input}`. `assets/_lineage.py` reads the
Dagster instance and maps these onto records, metadata and run tags."""

from __future__ import annotations

from typing import Any

MAX_TAG_CHARS = 240  # keep tag values readable in the UI's tag list


def changed_inputs(inputs: list[dict], previous: list[dict] | None) -> list[dict]:
    """The rows of `inputs` (`upstream_versions` rows: asset, partition, data_version, run_id,
    materialized_at) whose data version differs from `previous` (the same rows recorded by the
    asset's previous materialization; None = never materialized: every input counts), oldest first.
    Rows without a data version (never materialized) are left out."""
    before = {(r.get("asset"), r.get("partition")): r.get("data_version") for r in previous or []}
    out = [
        r for r in inputs if r.get("data_version") and before.get((r["asset"], r.get("partition"))) != r["data_version"]
    ]
    return sorted(out, key=lambda r: r.get("materialized_at") or 0)


def trigger_inputs_text(changed: list[dict]) -> str:
    """The value of the `specforge/trigger_inputs` run tag: ``asset[partition]@version`` (the
    version's first 12 characters; ``asset@version`` for an unpartitioned one) of each row of
    `changed` (`changed_inputs` rows), joined by ``", "``. Longer than `MAX_TAG_CHARS`: cut at
    a whole entry and ended with ``, … (N in all)``."""
    described = [
        f"{r['asset']}[{r['partition']}]@{r['data_version'][:12]}"
        if r.get("partition")
        else f"{r['asset']}@{r['data_version'][:12]}"
        for r in changed
    ]
    text = ", ".join(described)
    if len(text) > MAX_TAG_CHARS:
        text = text[: MAX_TAG_CHARS - 12].rsplit(", ", 1)[0] + f", … ({len(described)} in all)"
    return text


def trained_on_version(recorded: Any, input_version_tag: str | None) -> str | None:
    """The tokenized/dataset version a draft was trained on: `recorded` (the draft's
    ``trained_on_dataset_version`` metadata value, as a string) when it is set, else
    `input_version_tag` (Dagster's ``dagster/input_data_version/tokenized/dataset`` tag of the
    materialization, an older record's only trace), else None. The draft's own record wins: it
    names the pinned version the run read, which Dagster's tag may not."""
    if recorded:
        return str(recorded)
    return input_version_tag


def input_rows(inputs: dict[str, dict]) -> list[dict]:
    """Lineage rows (the shape of `assets._lineage.lineage_metadata`'s ``lineage/input_versions``)
    from pinned inputs `{asset: {data_version, path[, run_id]}}` (a training or evaluation run's
    inputs): one row `{asset, partition: None, data_version, run_id, path}` per asset, in the
    order of `inputs` (`run_id`/`path` None when the input names none). Inverse: `inputs_by_asset`."""
    return [
        {
            "asset": asset,
            "partition": None,
            "data_version": v.get("data_version"),
            "run_id": v.get("run_id"),
            "path": v.get("path"),
        }
        for asset, v in inputs.items()
    ]


def inputs_by_asset(rows: list[dict] | None) -> dict[str, dict]:
    """`{asset: {data_version, path[, run_id]}}` from lineage rows (``lineage/input_versions``;
    None or [] → {}): what a run read, by asset, as training/evaluation manifests record it
    (`run_id` only when the row has one; a row without `path` gets None). Inverse of `input_rows`."""
    out: dict[str, dict] = {}
    for r in rows or []:
        entry = {"data_version": r.get("data_version"), "path": r.get("path")}
        if r.get("run_id") is not None:
            entry["run_id"] = r["run_id"]
        out[r["asset"]] = entry
    return out
