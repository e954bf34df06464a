"""What the file-drop sensor does on a tick, decided from plain data.

`config.scan_incoming` lists the incoming folder (partitions and skipped entries); `decide` takes
that scan, the state the previous tick left (the sensor's cursor), the configured source keys,
the partitions that exist and the time, and says what each entry is — new, changed,
re-registered, unchanged, waiting to settle, deleted — with the runs to request, the partitions
to add, the messages to log, the ops-log records and the next state. The sensor turns that into
Dagster requests; nothing here imports Dagster.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..fileio import sha256_file, sha256_files
from ..oplog import now_iso
from .config import IncomingScan


def fingerprint(path: Path, previous: Mapping | None) -> dict:
    """`{path, size, mtime_ns, sha256}` of a file, or of a folder (sizes summed, newest mtime,
    hash of all its files). The content hash is reused from `previous` (the last fingerprint of
    the same entry) while size and mtime are unchanged: hashing a large file on every tick would
    make the tick slow. Raises `FileNotFoundError` when the entry vanished meanwhile."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    stats = [p.stat() for p in files]
    size = sum(s.st_size for s in stats)
    mtime_ns = max((s.st_mtime_ns for s in stats), default=0)
    if previous and previous.get("size") == size and previous.get("mtime_ns") == mtime_ns and previous.get("sha256"):
        sha = previous["sha256"]
    elif path.is_dir():
        sha = sha256_files(files)
    else:
        sha = sha256_file(path)
    return {"path": str(path), "size": size, "mtime_ns": mtime_ns, "sha256": sha}


@dataclass
class IncomingRun:
    """One partition to materialize: `event` is `new`, `changed` or `re-registered`; `run_key`
    is the same for the same file state (a lost cursor never runs a file twice) and differs for
    every change, even back to earlier content (the mtime is part of it)."""

    partition: str
    file_name: str
    event: str
    sha256: str
    run_key: str


@dataclass
class IncomingDecision:
    """The outcome of one tick. `messages`: `(level, text)` in order, level `info` / `warning`;
    `records`: ops-log lines (`incoming.jsonl`); `state`: the next cursor (`cursor()` as JSON);
    `skip_message`: why nothing runs (None when a run or a new partition is requested)."""

    runs: list[IncomingRun] = field(default_factory=list)
    new_partitions: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    messages: list[tuple[str, str]] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    state: dict = field(default_factory=dict)
    skip_message: str | None = None

    def cursor(self) -> str:
        """`state` as the sensor cursor (JSON, keys sorted)."""
        return json.dumps(self.state, sort_keys=True)


def decide(
    scan: IncomingScan,
    state: Mapping | None,
    configured: Collection[str],
    existing: Collection[str],
    now_ns: int,
    settle_seconds: float,
    fingerprint: Callable[[Path, Mapping | None], dict] = fingerprint,
) -> IncomingDecision:
    """What to do about the incoming folder on one tick.

    `scan`: `config.scan_incoming`; `state`: the previous decision's `state` (None/{}: first tick
    or lost cursor); `configured`: the valid keys of configs/sources.yaml (they win: a dropped file
    with such a key is ignored with a warning); `existing`: the source partitions that exist;
    `now_ns`: nanoseconds since the epoch; `settle_seconds`: an entry modified more recently than
    this waits for the next tick (still being copied). `fingerprint(path, previous)` reads the
    entry (the module's `fingerprint`).

    Per entry: unchanged (same hash, partition exists) → nothing; new / changed (other hash) /
    re-registered (same hash, partition gone) → a run (and a new partition when missing), one
    info message and one ops record; a skipped entry → one warning and one record the first time
    its reason is seen; an entry gone since the previous tick → deleted: one warning and one
    record, its partition and data are kept. An entry removed between the scan and its reading
    keeps its previous state (the next tick sees it gone)."""
    state = state or {}
    seen: dict[str, dict] = dict(state.get("files", {}))
    old_skipped: Mapping[str, str] = state.get("skipped", {})
    out = IncomingDecision()
    time = now_iso(now_ns)

    # Entries that are not partitions: one warning (and one ops-log line) per entry and reason,
    # never a silent drop; links leaving the drop folder are refused and never read.
    for name, reason in sorted(scan.skipped.items()):
        if old_skipped.get(name) != reason:
            out.messages.append(("warning", f"incoming {name}: skipped, not a partition: {reason}"))
            out.records.append({"time": time, "event": "skipped", "entry": name, "reason": reason})

    files = {k: Path(p) for k, p in scan.found.items()}
    new_state: dict[str, dict] = {}
    for key, path in sorted(files.items()):
        if key in configured:
            # sources.yaml wins: never let a dropped file shadow a configured source.
            out.messages.append(
                ("warning", f"incoming {path.name}: key {key!r} is a configured source; file ignored (rename it)")
            )
            continue
        try:
            fp = fingerprint(path, seen.get(key))
        except FileNotFoundError:  # removed between listing and hashing: next tick sees it gone
            if key in seen:
                new_state[key] = seen[key]
            continue
        if (now_ns - fp["mtime_ns"]) / 1e9 < settle_seconds:
            out.waiting.append(key)  # still being copied: look again next tick, keep the old state
            if key in seen:
                new_state[key] = seen[key]
            continue
        new_state[key] = fp
        old = seen.get(key)
        if old and old.get("sha256") == fp["sha256"] and key in existing:
            continue
        event = "new" if not old else ("changed" if old.get("sha256") != fp["sha256"] else "re-registered")
        if key not in existing:
            out.new_partitions.append(key)
        # content hash + mtime: a changed file always runs again, even when it changes back to
        # earlier content; an unchanged file is never run twice for one state.
        run_key = f"incoming:{key}:{fp['sha256'][:16]}:{fp['mtime_ns']}"
        out.runs.append(IncomingRun(key, path.name, event, fp["sha256"][:16], run_key))
        out.messages.append(
            ("info", f"incoming {path.name}: {event} file → partition {key!r} (sha256 {fp['sha256'][:12]})")
        )
        out.records.append({"time": time, "event": event, "partition": key, **fp})

    out.deleted = sorted(set(seen) - set(files))
    for key in out.deleted:
        # Deleting the file never deletes data: the partition and its materializations stay.
        # Re-materializing that partition fails with the sources layer's missing-file error
        # until the file comes back (or the partition is deleted on purpose in the UI).
        out.messages.append(
            (
                "warning",
                f"incoming file for partition {key!r} ({seen[key].get('path')}) was deleted; "
                "partition and data are kept (delete the partition in the UI to drop it)",
            )
        )
        out.records.append({"time": time, "event": "deleted", "partition": key, "data_kept": True, **seen[key]})

    out.state = {"files": new_state, "skipped": dict(scan.skipped)}
    if not out.runs and not out.new_partitions:
        msg = f"{len(new_state)} incoming file(s), none new or changed"
        if scan.skipped:
            msg += f"; skipped (see the warnings): {sorted(scan.skipped)}"
        if out.waiting:
            msg += f"; waiting for {out.waiting} to settle"
        if out.deleted:
            msg += f"; deleted (data kept): {out.deleted}"
        out.skip_message = msg
    return out
