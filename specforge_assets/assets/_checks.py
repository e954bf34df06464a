"""Checks that run inside their asset's step (Dagster `check_specs`; results yielded right after
the materialization), declared once as data.

A check is a name, whether it blocks what is downstream in the same run, a description, and a
function returning ``(passed, description, details)`` or ``(passed, description, details,
"WARN"|"ERROR")``. `check_specs()` gives the asset its `AssetCheckSpec`s; `check_results()`
runs the functions after the asset has written its outputs. No separate step per check: on a
2-core box each separate check step cost seconds of process start-up (bench/RESULTS.md, "Step
overhead").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

import dagster as dg


@dataclass(frozen=True)
class InAssetCheck:
    name: str
    blocking: bool
    description: str
    run: Callable[..., tuple]


def check_specs(key: dg.AssetKey, checks: list[InAssetCheck]) -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec(c.name, asset=key, blocking=c.blocking, description=c.description) for c in checks]


def check_results(key: dg.AssetKey, checks: list[InAssetCheck], **inputs: Any) -> Iterator[dg.AssetCheckResult]:
    """Run every check with `inputs` (keyword arguments each check function takes what it needs
    from) and yield its result."""
    for c in checks:
        out = c.run(**inputs)
        ok, desc, details = out[:3]
        severity = dg.AssetCheckSeverity.WARN if len(out) > 3 and out[3] == "WARN" else dg.AssetCheckSeverity.ERROR
        yield dg.AssetCheckResult(
            asset_key=key,
            check_name=c.name,
            passed=bool(ok),
            description=desc,
            severity=severity,
            metadata={"details": dg.MetadataValue.json(details)},
        )
