"""Lineage rules with no Dagster import: which inputs of a materialization changed, how they are
named in a run tag, and which dataset version a draft was trained on. `assets/_lineage.py` reads
the Dagster instance and maps these onto records and run tags."""

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
