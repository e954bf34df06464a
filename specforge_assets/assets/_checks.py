"""The one way to declare an asset check: an `InAssetCheck` (plain data + a function), turned
into Dagster objects here.

A check is a name, whether it blocks what is downstream in the same run, a description, and a
function `run(**inputs)` returning a `checks.outcome.Outcome` (the one result type of every
check body; its severity, when set, overrides the declared one). The function calls the domain
(`specforge_assets.checks.*`, `train.*`, ...); the outcome's `metadata` becomes the result's
metadata, one entry per key (lists/dicts as JSON, a `checks.outcome.Table` as a native table,
`MetadataValue`s as they are, other values as Dagster normalizes them): one shape for every
check, each number plotted on its own.

An asset emits its check results by yielding them after its `MaterializeResult` (never in
``MaterializeResult(check_results=...)``): one way for every asset, and the one a direct
invocation of the asset function also accepts.

- In-asset checks (the usual way): `check_specs()` gives the asset its `AssetCheckSpec`s;
  `check_results()` runs the functions after the asset has written its outputs. No separate
  step per check: on a 2-core box each separate check step cost seconds of process start-up
  (bench/RESULTS.md, "Step overhead").
- A check that reads the instance rather than an asset's outputs (it is evaluated on its own,
  e.g. from the UI): `asset_check()` builds a standalone `@dg.asset_check` from the same
  declaration; its function receives ``instance=``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import dagster as dg

from ..checks.outcome import Outcome, Severity
from ._metadata import entries


@dataclass(frozen=True)
class InAssetCheck:
    """One check. `severity`: the severity of its results (Dagster shows a failed WARN check
    as a warning); `partitions_def`: the asset's, for a partitioned asset (a result per
    partition in the UI)."""

    name: str
    blocking: bool
    description: str
    run: Callable[..., Outcome]
    severity: Severity = "ERROR"
    partitions_def: dg.PartitionsDefinition | None = None


def _spec(key: dg.AssetKey, c: InAssetCheck) -> dg.AssetCheckSpec:
    if c.partitions_def is None:
        return dg.AssetCheckSpec(c.name, asset=key, blocking=c.blocking, description=c.description)
    with warnings.catch_warnings():
        # Partitioned check specs are "preview" in Dagster 1.13; they are what makes the UI show
        # a result per partition instead of one latest-wins status.
        warnings.simplefilter("ignore", category=getattr(dg, "PreviewWarning", Warning))
        return dg.AssetCheckSpec(
            c.name, asset=key, blocking=c.blocking, description=c.description, partitions_def=c.partitions_def
        )


def check_specs(key: dg.AssetKey, checks: list[InAssetCheck]) -> list[dg.AssetCheckSpec]:
    """The `AssetCheckSpec`s for `@dg.asset(check_specs=...)`, in declaration order."""
    return [_spec(key, c) for c in checks]


def _outcome(c: InAssetCheck, inputs: dict[str, Any]) -> dict[str, Any]:
    out = c.run(**inputs)
    if not isinstance(out, Outcome):
        raise TypeError(f"check {c.name!r} returned {type(out).__name__}, not a checks.outcome.Outcome")
    severity = out.severity or c.severity
    return {
        "check_name": c.name,
        "passed": bool(out.passed),
        "description": out.description if out.description is not None else c.description,
        "severity": dg.AssetCheckSeverity.WARN if severity == "WARN" else dg.AssetCheckSeverity.ERROR,
        "metadata": entries(out.metadata),
    }


def result(key: dg.AssetKey, c: InAssetCheck, **inputs: Any) -> dg.AssetCheckResult:
    """Run `c` with `inputs` (keyword arguments; each function takes what it needs, ``**_``
    the rest) → its `AssetCheckResult`. Errors of the function propagate."""
    return dg.AssetCheckResult(asset_key=key, **_outcome(c, inputs))


def evaluation(
    key: dg.AssetKey, c: InAssetCheck, *, extra: dict | None = None, **inputs: Any
) -> dg.AssetCheckEvaluation:
    """Run `c` as `result` does, as an `AssetCheckEvaluation` a sensor can record (asset
    events of a `SensorResult`): the same outcome and text as the check itself; `extra` adds
    metadata."""
    out = _outcome(c, inputs)
    out["metadata"] = {**out["metadata"], **(extra or {})}
    return dg.AssetCheckEvaluation(asset_key=key, **out)


def check_results(key: dg.AssetKey, checks: list[InAssetCheck], **inputs: Any) -> Iterator[dg.AssetCheckResult]:
    """Run every check with `inputs` and yield its result, in declaration order."""
    for c in checks:
        yield result(key, c, **inputs)


def asset_check(key: dg.AssetKey, c: InAssetCheck) -> dg.AssetChecksDefinition:
    """A standalone `@dg.asset_check` on `key` from the declaration `c` (same name, blocking
    flag, description and partitions as its in-asset spec would have); `c.run` is called with
    ``instance=`` (the `DagsterInstance`)."""

    @dg.asset_check(
        asset=key, name=c.name, description=c.description, blocking=c.blocking, partitions_def=c.partitions_def
    )
    def _check(context) -> dg.AssetCheckResult:  # unannotated: Dagster rejects a string annotation
        return result(key, c, instance=context.instance)

    return _check
