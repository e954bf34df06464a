"""The one result type of every check body (no Dagster import): what `assets/_checks.py` turns
into an `AssetCheckResult` / `AssetCheckEvaluation`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["ERROR", "WARN"]


@dataclass(frozen=True)
class Outcome:
    """The outcome of one check.

    passed: the verdict. description: the result's description shown in the UI (None: the check's
    declared description). metadata: the result's details, plain
    values (str/int/float/bool, lists and dicts: JSON, a `Table`) or Dagster `MetadataValue`s, one
    metadata entry per key (`assets/_checks.py`).
    severity: "ERROR" or "WARN" when the outcome decides it (e.g. a mismatch that is an error
    for one setting and a warning for another); None (default): the check's declared severity.
    """

    passed: bool
    description: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    severity: Severity | None = None


@dataclass(frozen=True)
class Table:
    """A table for an outcome's metadata (shown as a native table in the UI): `rows`, one dict
    per row; `columns`, ``(name, type, description)`` per column (the shape `charts.*_table`
    returns)."""

    rows: list[dict]
    columns: list[tuple[str, str, str]]
