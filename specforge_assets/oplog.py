"""The operations logs under `<root>/ops/`: one JSON object per line, secrets redacted.

`incoming.jsonl` (what the file-drop sensor saw) and `failures.jsonl` (every failed run with its
errors) are written here; the sensors only extract plain data from Dagster and call these.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path

from .errors import redact

ERROR_LIMIT = 4000  # characters kept of each error text


def ops_path(setting: str, root: Path) -> Path:
    """Where an ops log lives: `setting` (configs/automation.yaml `ops.*`, validated by
    `automation.OpsSection`, which declares the defaults `ops/failures.jsonl` and
    `ops/incoming.jsonl`) with `~` expanded; a relative path is under `root`."""
    path = Path(setting).expanduser()
    return path if path.is_absolute() else root / path


def append_jsonl(path: Path, record: Mapping) -> None:
    """Append `record` as one JSON line (keys sorted; non-JSON values as `str`), creating the
    folder. One short `write` on an O_APPEND file, so concurrent writers (sensor threads, run
    processes) never interleave inside a line. Raises `OSError` when the file cannot be written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=True, default=str) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)


def now_iso(now_ns: int | None = None) -> str:
    """UTC time as ISO 8601 to the second (`2026-11-30T21:58:27+00:00`); `now_ns`: nanoseconds
    since the epoch (None: now)."""
    when = datetime.now(timezone.utc) if now_ns is None else datetime.fromtimestamp(now_ns / 1e9, timezone.utc)
    return when.isoformat(timespec="seconds")


def failure_record(
    *,
    run_id: str,
    job: str,
    partition: str | None,
    backfill: str | None,
    trigger: str | None,
    assets: Iterable[str],
    message: str,
    steps: Iterable[tuple[str | None, str | None, str]],
    limit: int = ERROR_LIMIT,
    env: Mapping[str, str] | None = None,
    now_ns: int | None = None,
) -> dict:
    """The failures.jsonl record of a failed run, from plain data: its partition, backfill id
    and trigger (what started it; None when unknown), `assets` its selected asset keys (`a/b` strings), `message` the run-failure message, `steps`
    `(step key, error class or None, error text)` per failed step. Error texts and the message are
    redacted (`redact`, with `env`) and cut to `limit` characters. Keys: time, run_id, job,
    partition, backfill, trigger, assets (sorted), message, steps (`{step, error_class, error}`)."""
    return {
        "time": now_iso(now_ns),
        "run_id": run_id,
        "job": job,
        "partition": partition,
        "backfill": backfill,
        "trigger": trigger,
        "assets": sorted(assets),
        "message": redact(message or "", env)[:limit],
        "steps": [
            {"step": step, "error_class": error_class, "error": redact(error or "", env)[:limit]}
            for step, error_class, error in steps
        ],
    }
