"""Writing JSONL test inputs (the package reads JSONL; only tests and benchmarks write it raw)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from specforge_assets.fileio import atomic_write


def write_jsonl(path: Path | str, rows: Iterable[Any], ensure_ascii: bool = True) -> int:
    """Write `rows` (JSON-serialisable values) to `path`, one `json.dumps` line each, atomically
    (a temporary sibling renamed into place); returns the number of rows written."""
    n = 0
    with atomic_write(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=ensure_ascii))
            f.write("\n")
            n += 1
    return n
