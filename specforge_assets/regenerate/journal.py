"""Exactly-once journal: finished rows in a sqlite3 database, keyed by the row's stable id.

Files beside the output `<dir>/<stem>.jsonl`:
- `.<stem>.regen-journal.sqlite` — one record per finished row (table ``rows``: key, status, id,
  row JSON) plus the settings fingerprint it was made under (table ``meta``). WAL mode; sqlite
  keeps `-wal` / `-shm` files beside it while it is open or after a kill.
- `.<stem>.regen-state.json` — the run's fingerprint (settings + input hash), "running" /
  "complete", and the last complete run's stats.

Row keys (`row_keys`), one per non-blank input line, never its position:
- ``id:<id as JSON>`` for a row whose ``id`` is a non-empty string or an integer;
- ``sha256:<hex>`` of the row's canonical JSON (`sources.formats.content_hash_id`, the sources
  layer's content id) when it has none; of the line's bytes when the line is not JSON;
- rows that share an id are told apart by content: ``id:<id>|sha256:<hex>``;
- identical rows (same key) by occurrence: ``#2``, ``#3``... (they are interchangeable).
So rows appended to the input, or the input reordered, keep every finished row: only new and
unfinished rows are requested, none twice. The outputs are still written in input order; rows
removed from the input are left out of them (their records stay unused until the journal goes).
Limits of keying by id: a row edited in place under the same id keeps its finished result
(restart to redo it); a row appended with the id of a finished row changes that row's key (it
now shares its id), so that one row is redone once; `num_samples` counts rows by position, so
after a reorder a finished row keeps its result even where the limit now falls elsewhere.

Rows are committed in batches (`batch` rows or `flush_s` seconds, one transaction each).
``synchronous=NORMAL`` (see bench/RESULTS.md, "Journal"): a committed batch survives SIGKILL of the
process; a power loss may lose the last batches but never corrupts the database. A row that
is lost is redone, never duplicated — the outputs are written only from the journal.

A journal made under other settings is refused unless the caller asks for a restart. Error
rows are never final: a run that ends with error rows keeps its journal (state "complete"),
and the next run with the same settings reuses every success / skipped / passthrough record
and redoes only the error rows (and any row it has no record of).
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import time
from pathlib import Path
from typing import Callable, Iterator

from ..errors import UserError
from ..fileio import atomic_write
from ..jsonrows import RowDecodeError, loads_row
from ..sources.formats import content_hash_id
from .settings import RegenSettings
from .text import dumps_clean

# statuses a later run redoes instead of reusing
RETRY_STATUSES = ("error",)
SCHEMA_VERSION = 1
# sqlite result codes: database or disk is full; not a database; malformed
_SQLITE_FULL, _SQLITE_NOTADB, _SQLITE_CORRUPT = 13, 26, 11


class ConfigChanged(RuntimeError, UserError):
    """A partial run exists under other settings."""


class JournalWriteError(RuntimeError, UserError):
    """The journal or state file cannot be written (disk full, permissions)."""


class JournalUnreadable(RuntimeError, UserError):
    """The journal file exists but is not a readable journal database."""


def journal_paths(output_path: Path) -> tuple[Path, Path]:
    """(journal, state) paths beside the output: `.<stem>.regen-journal.sqlite`, `.<stem>.regen-state.json`."""
    output_path = Path(output_path)
    stem = output_path.name[:-6] if output_path.name.endswith(".jsonl") else output_path.name
    return (output_path.with_name(f".{stem}.regen-journal.sqlite"), output_path.with_name(f".{stem}.regen-state.json"))


def _legacy_path(output_path: Path) -> Path:
    """The journal of versions before the sqlite store (one JSON line per row, keyed by position)."""
    return journal_paths(output_path)[0].with_suffix(".jsonl")


# -- row keys -------------------------------------------------------------------------------
# `"id": <string or integer>` as the row's first key (how the sources layer writes rows): the
# id is read without parsing the row. Anything else is parsed.
_ID_FIRST = re.compile(rb'^(?:\xef\xbb\xbf)?\s*\{\s*"id"\s*:\s*("(?:[^"\\]|\\.){0,1000}"|-?(?:0|[1-9]\d{0,30}))\s*[,}]')


def _id_key(rid) -> str | None:
    if isinstance(rid, bool) or not isinstance(rid, (str, int)) or rid == "":
        return None
    return "id:" + json.dumps(rid)


def _content_key(line: bytes, row=None) -> str:
    """``sha256:`` + the row's content id; for a line that is not JSON, of its bytes."""
    if row is None:
        try:
            row = loads_row(line)
        except RowDecodeError:
            return "sha256:" + hashlib.sha256(line.strip()).hexdigest()[:32]
    return "sha256:" + content_hash_id(row)


def _base_key(line: bytes) -> str:
    """The key of one input line before duplicates are told apart."""
    m = _ID_FIRST.match(line)
    if m:
        text = m.group(1)
        if text.isascii() and b"\\" not in text and text.decode().isprintable():
            # already what json.dumps writes: "abc" or 123 (no escapes, no leading zeros)
            if text != b'""':
                return "id:" + text.decode()
        try:
            key = _id_key(json.loads(m.group(1)))
        except ValueError:
            key = None
        if key is not None:
            return key
    try:
        row = loads_row(line)
    except RowDecodeError:
        return _content_key(line)
    key = _id_key(row.get("id")) if isinstance(row, dict) else None
    return key or _content_key(line, row)


def row_keys(input_path: Path, log: Callable[[str], None] | None = None) -> list[str]:
    """The key of every non-blank line of `input_path`, in input order (index = row position as
    the runner counts it). Rows sharing an id get their content hash appended (one log line
    names the first such id and its lines); identical keys get ``#2``, ``#3``... by occurrence."""
    keys: list[str] = []
    first_line: dict[str, int] = {}
    shared: dict[str, int] = {}  # id key -> first line, for ids on more than one row
    example = None
    with open(input_path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            k = _base_key(line)
            keys.append(k)
            first = first_line.setdefault(k, lineno)
            if first != lineno and k.startswith("id:") and k not in shared:
                shared[k] = first
                if example is None:
                    example = (k[3:], first, lineno)
    if shared:
        with open(input_path, "rb") as f:
            i = 0
            for line in f:
                if not line.strip():
                    continue
                if keys[i] in shared:
                    keys[i] = keys[i] + "|" + _content_key(line)
                i += 1
        if log is not None:
            more = f" (and {len(shared) - 1} more shared ids)" if len(shared) > 1 else ""
            log(
                f"regenerate: id {example[0]} is on lines {example[1]} and {example[2]} of {input_path}{more}; "
                "rows that share an id are told apart by their content"
            )
    seen: dict[str, int] = {}
    for i, k in enumerate(keys):
        n = seen.get(k, 0) + 1
        seen[k] = n
        if n > 1:
            keys[i] = f"{k}#{n}"
    return keys


# -- fingerprints ---------------------------------------------------------------------------
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
    return sorted(
        k.split(".", 1)[-1] if k.startswith("settings.") else k for k in set(a) | set(b) if a.get(k) != b.get(k)
    )


def resume_fingerprint(fingerprint: dict) -> dict:
    """What a journal must match to be continued: the run fingerprint without its input hash
    (rows are matched by key, so an edited input keeps its finished rows)."""
    return {k: v for k, v in fingerprint.items() if k != "input_sha256"}


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rows (key TEXT PRIMARY KEY, status TEXT NOT NULL, id TEXT, row TEXT NOT NULL);
"""


class Journal:
    """The journal of one output. Use: `prepare` (once), `append` per finished row, `close`;
    then `load` / `iter_records` to write the outputs, and `discard` when nothing is left to retry.

    `batch` rows or `flush_s` seconds per transaction (defaults: `RegenSettings.journal_batch` /
    `journal_flush_s`, what a run passes); `synchronous` is sqlite's PRAGMA
    (NORMAL or FULL). Write failures raise `JournalWriteError` (rows committed before are kept)."""

    def __init__(
        self,
        output_path: Path,
        batch: int = RegenSettings.model_fields["journal_batch"].default,
        flush_s: float = RegenSettings.model_fields["journal_flush_s"].default,
        synchronous: str = "NORMAL",
    ):
        self.path, self.state_path = journal_paths(output_path)
        self.legacy_path = _legacy_path(output_path)
        self.batch = max(1, int(batch))
        self.flush_s = flush_s
        self.synchronous = synchronous
        self._db: sqlite3.Connection | None = None
        self._keys: list[str] | None = None
        self._pending: list[tuple[str, str, str, str]] = []
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

    # -- database --------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        """Open (create) the database: WAL, `synchronous`, autocommit (explicit transactions)."""
        db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.synchronous}")
            db.execute("PRAGMA temp_store=MEMORY")  # the output order table of `iter_records`
            db.executescript(_SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            try:
                self._db = self._connect()
            except sqlite3.Error as e:
                raise self._error("open", e) from e
        return self._db

    def _error(self, what: str, e: sqlite3.Error) -> UserError:
        code = getattr(e, "sqlite_errorcode", None)
        text = f"No space left on device ({e})" if code == _SQLITE_FULL else str(e)
        if code in (_SQLITE_NOTADB, _SQLITE_CORRUPT):
            return JournalUnreadable(
                f"regeneration journal {self.path} is not a journal database ({text}); "
                "restart to discard it (CLI: run without --resume; asset: config restart: true)"
            )
        return JournalWriteError(
            f"cannot {what} regeneration journal {self.path}: {text} "
            "(rows written before this point are safe; free space / fix permissions and resume)"
        )

    def _meta_fingerprint(self) -> dict | None:
        row = self._conn().execute("SELECT v FROM meta WHERE k = 'fingerprint'").fetchone()
        return None if row is None else json.loads(row[0])

    def _reset(self, fingerprint: dict) -> None:
        """Empty the journal and record `fingerprint` (one transaction)."""
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        db.execute("DELETE FROM rows")
        db.execute(
            "INSERT OR REPLACE INTO meta VALUES ('schema', ?), ('fingerprint', ?)",
            (str(SCHEMA_VERSION), dumps_clean(fingerprint, sort_keys=True)),
        )
        db.execute("COMMIT")

    def _remove_files(self) -> None:
        for p in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm"), self.legacy_path):
            p.unlink(missing_ok=True)

    def prepare(
        self,
        fingerprint: dict,
        resume: bool,
        restart: bool,
        input_path: Path | None = None,
        log: Callable[[str], None] | None = None,
    ) -> dict[int, str]:
        """Open the journal for a run over `input_path`. Returns the rows already done
        (input position -> status), error rows left out (`RETRY_STATUSES`): the caller redoes them.

        `fingerprint`: the run's fingerprint (written to the state file); the journal is continued
        when `resume_fingerprint(fingerprint)` (the settings) matches the one it was made under.
        resume=False: start over (like SpecForge without --resume). resume=True: continue a journal
        made under the same settings, whatever rows were appended, removed or reordered since;
        a partial run under other settings is refused (`ConfigChanged`) unless restart=True; a
        journal kept by a complete run under other settings is simply started over.
        `log` gets one line when rows of the input share an id (`row_keys`).
        """
        if input_path is None:
            raise TypeError("Journal.prepare needs the input_path (rows are keyed by their id)")
        state = self.read_state()
        keys = row_keys(Path(input_path), log)
        fp = resume_fingerprint(fingerprint)
        keep = resume and not restart
        if not keep:
            self._remove_files()
        try:
            old = self._meta_fingerprint()
            has_rows = old is not None and self._conn().execute("SELECT 1 FROM rows LIMIT 1").fetchone() is not None
            partial = state is not None and state.get("state") == "running" and has_rows
            if keep and old is not None and old != fp and partial:
                changed = _diff_keys(old, fp)
                raise ConfigChanged(
                    f"{self.path.parent}: existing partial regeneration was made with different settings "
                    f"({', '.join(changed)} changed); finish it with the old settings, or restart "
                    "(CLI: run without --resume; asset: config restart: true) to discard it"
                )
            if not keep or old != fp:
                self._reset(fp)
                if keep and state is not None and state.get("fingerprint") == fingerprint:
                    self._import_legacy(keys)
            self.legacy_path.unlink(missing_ok=True)
            finished = dict(self._conn().execute("SELECT key, status FROM rows"))
        except sqlite3.Error as e:
            self.close()
            raise self._error("open", e) from e
        except BaseException:
            self.close()
            raise
        self._keys = keys
        done = {i: s for i, k in enumerate(keys) if (s := finished.get(k)) is not None and s not in RETRY_STATUSES}
        self.write_state(fingerprint=fingerprint, state="running")
        self._last_flush = time.monotonic()
        return done

    def _import_legacy(self, keys: list[str]) -> None:
        """Carry a partial run of the JSON-lines journal (keyed by position; the same input, as its
        fingerprint says) into the database, then remove it. A torn last line is left out."""
        if not self.legacy_path.exists():
            return
        recs = []
        with open(self.legacy_path, "rb") as f:
            for raw in f:
                if not raw.endswith(b"\n"):
                    break
                try:
                    rec = json.loads(raw)
                    i = int(rec["i"])
                    recs.append((keys[i], str(rec["s"]), dumps_clean(rec.get("id")), dumps_clean(rec["row"])))
                except (ValueError, KeyError, TypeError, IndexError):
                    break
        self._write(recs)

    # -- reading ---------------------------------------------------------------------------
    def load(self) -> dict[int, str]:
        """Input position -> status of every row with a record (error rows included)."""
        if self._keys is None:
            raise RuntimeError("Journal.load before prepare")
        try:
            finished = dict(self._conn().execute("SELECT key, status FROM rows"))
        except sqlite3.Error as e:
            raise self._error("read", e) from e
        return {i: s for i, k in enumerate(self._keys) if (s := finished.get(k)) is not None}

    def iter_records(self, done: dict[int, str], order) -> Iterator[tuple[int, str, str]]:
        """Yield (position, status, row JSON text) for `order` (input positions, each in `done`).
        The row text is what `append` stored (`text.dumps_clean(row)`), copied out as it is."""
        db = self._conn()
        keys = self._keys
        try:
            # the wanted keys in a temporary table, joined in one query (no query per row)
            db.execute("CREATE TEMP TABLE IF NOT EXISTS wanted (n INTEGER PRIMARY KEY, i INTEGER, key TEXT)")
            db.execute("DELETE FROM wanted")
            db.executemany("INSERT INTO wanted VALUES (?, ?, ?)", ((n, i, keys[i]) for n, i in enumerate(order)))
            cur = db.execute("SELECT w.i, r.status, r.row FROM wanted w LEFT JOIN rows r ON r.key = w.key ORDER BY w.n")
        except sqlite3.Error as e:
            raise self._error("read", e) from e
        for i, status, row in cur:
            if status is None:
                raise RuntimeError(f"journal {self.path} has no record of row {i} ({keys[i]})")
            yield i, status, row

    # -- append ----------------------------------------------------------------------------
    def append(self, index: int, row_id, status: str, row: dict) -> None:
        """Record the result of input row `index` (a later record of the same row replaces it).
        Durable once its batch is committed (`batch` rows or `flush_s` seconds, or `flush`)."""
        self._pending.append((self._keys[index], status, dumps_clean(row_id), dumps_clean(row)))
        if len(self._pending) >= self.batch or time.monotonic() - self._last_flush >= self.flush_s:
            self.flush()

    def _write(self, recs: list) -> None:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT OR REPLACE INTO rows (key, status, id, row) VALUES (?, ?, ?, ?)", recs)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def flush(self, wait: bool = True) -> None:
        """Commit the pending rows in one transaction. `wait` is accepted for compatibility
        (commits are synchronous)."""
        self._last_flush = time.monotonic()
        if not self._pending:
            return
        recs, self._pending = self._pending, []
        try:
            self._write(recs)
        except sqlite3.Error as e:
            raise self._error("append to", e) from e

    def close(self) -> None:
        """Commit what is pending and close the database (idempotent). Raises `JournalWriteError`
        when the last commit fails (the database is closed either way)."""
        try:
            if self._db is not None:
                self.flush()
        finally:
            self._pending = []
            if self._db is not None:
                db, self._db = self._db, None
                db.close()

    def discard(self) -> None:
        """Close and remove the journal (the database and its -wal / -shm files)."""
        try:
            self.close()
        finally:
            self._remove_files()


def finished_rows(output_path: Path) -> dict[str, str]:
    """Key -> status of the rows in the journal of `output_path` ({} when there is none), read
    without writing: safe while a run (or a killed run's files) holds it."""
    path = journal_paths(output_path)[0]
    if not path.exists():
        return {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return dict(db.execute("SELECT key, status FROM rows"))
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return {}
        raise
    finally:
        db.close()
