"""Exactly-once journal: one JSON line per finished input row, keyed by input position + id.

Appended and fsync'ed every `batch` rows or `flush_s` seconds, so a SIGKILL loses at most the
rows of the last unsynced batch — and those are simply redone, never duplicated: on load, the
last record per key wins and a torn last line (the kill hit mid-write) is cut off.
A state file beside it records the run's fingerprint (settings + input hash); a journal made
under another fingerprint is refused unless the caller asks for a restart.

Error rows are never final: a run that ends with error rows keeps its journal (state
"complete"), and the next run with the same fingerprint reuses every success / skipped /
passthrough record and redoes only the error rows (`Journal.prepare`).
"""
from __future__ import annotations

import json
import os
import queue
import threading
import time
from pathlib import Path
from typing import Iterator

from ..errors import UserError
from ..fileio import atomic_write
from .text import dumps_clean

# statuses a later run redoes instead of reusing
RETRY_STATUSES = ("error",)


class ConfigChanged(RuntimeError, UserError):
    """A partial run exists under other settings or another input."""


def record(index: int, row_id, status: str, row: dict) -> str:
    """One journal line: json.dumps({"i", "s", "id", "row"}) in that key order, so that the index
    and status can be read without parsing the row, and the row's JSON copied out as it is.
    A lone surrogate anywhere in the row becomes visible text (`text.dumps_clean`): the outputs
    are copied from these lines, and must stay readable by every strict JSON reader."""
    return f'{{"i": {int(index)}, "s": "{status}", "id": {dumps_clean(row_id)}, "row": {dumps_clean(row)}}}\n'


def _head(raw: bytes) -> tuple[int, str] | None:
    """(index, status) of a record line, or None when it is not in `record`'s layout."""
    if not raw.startswith(b'{"i": ') or not raw.endswith(b"}\n"):
        return None
    j = raw.find(b', "s": "', 6)
    if j < 0:
        return None
    try:
        i = int(raw[6:j])
    except ValueError:
        return None
    k = raw.find(b'"', j + 8)
    return None if k < 0 else (i, raw[j + 8:k].decode())


_DECODER = json.JSONDecoder()


def row_json(raw: bytes) -> str:
    """The row of a record line as JSON text, byte for byte what json.dumps(row) gave."""
    line = raw.decode("utf-8")
    p = line.find('"id": ')
    if p > 0 and line.startswith('{"i": ') and line.endswith("}\n"):
        try:
            _, end = _DECODER.raw_decode(line, p + 6)
        except ValueError:
            end = -1
        if end > 0 and line.startswith(', "row": ', end):
            return line[end + 9:-2]
    return json.dumps(json.loads(line)["row"])  # another key layout: parse and re-serialize


class JournalWriteError(RuntimeError, UserError):
    """The journal or state file cannot be written (disk full, permissions)."""


def journal_paths(output_path: Path) -> tuple[Path, Path]:
    """(journal, state) paths beside the output: `<out stem>.journal.jsonl`, `<out stem>.state.json`."""
    output_path = Path(output_path)
    stem = output_path.name[:-6] if output_path.name.endswith(".jsonl") else output_path.name
    return (output_path.with_name(f".{stem}.regen-journal.jsonl"),
            output_path.with_name(f".{stem}.regen-state.json"))


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and k != "extra_body":
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _diff_keys(old: dict, new: dict) -> list[str]:
    a, b = _flatten(old), _flatten(new)
    return sorted(k.split(".", 1)[-1] if k.startswith("settings.") else k
                  for k in set(a) | set(b) if a.get(k) != b.get(k))


class Journal:
    def __init__(self, output_path: Path, batch: int = 64, flush_s: float = 0.25):
        self.path, self.state_path = journal_paths(output_path)
        self.batch = max(1, int(batch))
        self.flush_s = flush_s
        self._f = None
        self._pending: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._error: OSError | None = None
        self._last_flush = time.monotonic()

    # -- state -----------------------------------------------------------------------------
    def read_state(self) -> dict | None:
        if not self.state_path.exists():
            return None
        with open(self.state_path, encoding="utf-8") as f:
            return json.load(f)

    def write_state(self, **state) -> None:
        try:
            with atomic_write(self.state_path) as f:
                f.write(dumps_clean(state, indent=2, sort_keys=True))
        except OSError as e:
            raise JournalWriteError(f"cannot write regeneration state file {self.state_path}: {e}") from e

    def prepare(self, fingerprint: dict, resume: bool, restart: bool) -> dict[int, tuple[int, str]]:
        """Open the journal for this run. Returns the rows already done (index -> record).

        resume=False: start over (like SpecForge without --resume).
        resume=True: continue a journal made under the same fingerprint; refuse another one
        unless restart=True. A journal kept by a complete run with error rows (same fingerprint)
        is continued too; under another fingerprint it is simply started over.
        Rows whose last record is an error (`RETRY_STATUSES`) are left out of the result, so
        the caller redoes them.
        """
        state = self.read_state()
        done: dict[int, tuple[int, str]] = {}
        partial = state is not None and state.get("state") == "running" and self.path.exists()
        kept = (state is not None and state.get("state") == "complete" and self.path.exists()
                and state.get("fingerprint") == fingerprint)
        if resume and not restart and kept:
            done = self.load()
        elif resume and not restart and partial:
            if state.get("fingerprint") != fingerprint:
                changed = _diff_keys(state.get("fingerprint") or {}, fingerprint)
                raise ConfigChanged(
                    f"{self.path.parent}: existing partial regeneration was made with different settings "
                    f"({', '.join(changed)} changed); finish it with the old settings, or restart "
                    "(CLI: run without --resume; asset: config restart: true) to discard it")
            done = self.load()
        elif self.path.exists():
            self.path.unlink()
        done = {i: rec for i, rec in done.items() if rec[1] not in RETRY_STATUSES}
        self.write_state(fingerprint=fingerprint, state="running")
        try:
            self._f = open(self.path, "a", encoding="utf-8")
        except OSError as e:
            raise JournalWriteError(f"cannot open regeneration journal {self.path}: {e}") from e
        return done

    def load(self) -> dict[int, tuple[int, str]]:
        """index -> (byte offset of its record, status). Cuts a torn last line off."""
        done: dict[int, tuple[int, str]] = {}
        if not self.path.exists():
            return done
        offset = 0
        with open(self.path, "rb") as f:
            for raw in f:
                if not raw.endswith(b"\n"):
                    break  # torn tail: the process died mid-write
                head = _head(raw)
                if head is None:
                    try:
                        rec = json.loads(raw)
                        head = (int(rec["i"]), rec["s"])
                    except (ValueError, KeyError, TypeError):
                        break
                done[head[0]] = (offset, head[1])
                offset += len(raw)
        if offset != self.path.stat().st_size:
            with open(self.path, "r+b") as f:
                f.truncate(offset)
        return done

    def iter_records(self, done: dict[int, tuple[int, str]], order) -> "Iterator[tuple[int, str, bytes]]":
        """Yield (index, status, record line) for `order` (input indices), reading records by offset."""
        with open(self.path, "rb") as f:
            for i in order:
                off, status = done[i]
                f.seek(off)
                yield i, status, f.readline()

    # -- append ----------------------------------------------------------------------------
    # Batches are written and fsync'ed by one background thread so the event loop never blocks
    # on the disk; a write error is raised on the next append/flush/close (the run then stops
    # and everything fsync'ed before is kept). A row is durable once its batch is fsync'ed.
    def append(self, index: int, row_id, status: str, row: dict) -> None:
        self._pending.append(record(index, row_id, status, row))
        if len(self._pending) >= self.batch or time.monotonic() - self._last_flush >= self.flush_s:
            self.flush(wait=False)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            e = self._error
            raise JournalWriteError(
                f"cannot append to regeneration journal {self.path}: {e} "
                "(rows written before this point are safe; free space / fix permissions and resume)") from e

    def _writer(self) -> None:
        while True:
            data = self._queue.get()
            try:
                if data is None:
                    return
                if self._error is None:
                    self._f.write(data)
                    self._f.flush()
                    os.fsync(self._f.fileno())
            except OSError as e:
                self._error = e
            finally:
                self._queue.task_done()

    def flush(self, wait: bool = True) -> None:
        self._raise_if_failed()
        if self._f is None:
            return
        if self._pending:
            if self._thread is None:
                self._thread = threading.Thread(target=self._writer, name="regen-journal", daemon=True)
                self._thread.start()
            self._queue.put("".join(self._pending))
            self._pending = []
            self._last_flush = time.monotonic()
        if wait and self._thread is not None:
            self._queue.join()
            self._raise_if_failed()

    def close(self) -> None:
        if self._f is not None:
            try:
                self.flush(wait=True)
            finally:
                if self._thread is not None:
                    self._queue.put(None)
                    self._thread.join()
                    self._thread = None
                self._f.close()
                self._f = None

    def discard(self) -> None:
        self.close()
        if self.path.exists():
            self.path.unlink()
