"""The operations logs under `<root>/ops/`: one JSON object per line, secrets redacted.

`incoming.jsonl` (what the file-drop sensor saw) and `failures.jsonl` (every failed run with its
errors) are written here; the sensors only extract plain data from Dagster and call these.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path

# environment variables whose *values* never reach a log: names holding one of these words
_SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.I)
_SECRET_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"\b(sk|hf|ghp|gho|xox[bp])[-_][A-Za-z0-9_-]{10,}"),
    re.compile(r"(?i)((?:api[_-]?key|token|password|secret)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]{4,}"),
]
ERROR_LIMIT = 4000  # characters kept of each error text


def ops_path(setting: str | None, root: Path, default_name: str) -> Path:
    """Where an ops log lives: `setting` (configs/automation.yaml `ops.*`; `~` expanded, relative
    to `root`), else `<root>/ops/<default_name>`."""
    path = Path(setting).expanduser() if setting else root / "ops" / default_name
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


def redact(text: str, env: Mapping[str, str] | None = None) -> str:
    """`text` without secrets, before it is written anywhere: the value (6+ characters) of every
    variable of `env` (None: `os.environ`) whose name looks secret becomes `<redacted:NAME>`;
    bearer tokens, `api_key=...` / `token: ...` values and `sk-`/`hf_`/`ghp_`/`xoxb-`... keys
    become `<redacted>`."""
    env = os.environ if env is None else env
    for name, value in env.items():
        if value and len(value) >= 6 and _SECRET_ENV.search(name):
            text = text.replace(value, f"<redacted:{name}>")
    for pat in _SECRET_PATTERNS:
        text = pat.sub(lambda m: (m.group(1) if m.lastindex and not m.group(1).isalnum() else "") + "<redacted>", text)
    return text


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
