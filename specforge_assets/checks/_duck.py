"""How the checks read files: one in-memory DuckDB connection and the name DuckDB reads each
file by (`Reader.ref`), or the file's bytes for the checks that go row by row in Python
(`Reader.open`, `Reader.rows`, `Reader.count_rows`, `Reader.manifest`). Every data check reads
file contents through a `Reader`, never with a raw `open()`, `json.load`, `torch.load` of a path
or `duckdb.connect()` of its own (the model checks, `checks.models`, load model folders with
safetensors / transformers). Which files exist (``Path.exists()``, ``stat().st_size``, a
``glob`` of shards) is asked of the local working copy: it holds every published file, so the
listing is the same, and only the contents must come from the committed objects.

On a local data root a file is read at its path. On an object-store root (`storage`: the steps
work on a local working copy and publish each folder to the store, committed by its
`_published.json`), it is the committed object, read through the store's fsspec filesystem
(registered with DuckDB for SQL). So a check reads what every other machine will read, not the
local copy that was just uploaded. A file of the working copy that is not published (scratch) is
read locally.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator

from ..fileio import read_jsonl

_READ_BUFFER = 1 << 20  # bytes per read of a stored object (fsspec files read a block per line otherwise)


def literal(value: str) -> str:
    """A SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


class Reader:
    """`con`: a fresh in-memory DuckDB connection; :meth:`ref` / :meth:`sql_list` name files for
    its SQL. `store_objects` counts the files read from an object store (0 on a local root)."""

    def __init__(self, threads: int | None = None):
        import duckdb  # here, not at module level: loading the code location need not load DuckDB

        # Any: the checks index fetchone() of aggregate queries, which always return a row
        self.con: Any = duckdb.connect(":memory:")
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")
        self._registered: set[str] = set()
        self.store_objects = 0

    def _stored(self, path: Path) -> tuple[Any, str] | None:
        """(the store's `Remote`, the committed object's URL) when `path` is a published file of
        an object-store root's working copy (counted in `store_objects`), else None."""
        from .. import storage

        found = storage.remote_of(path.parent)
        if found is None:
            return None
        remote, rel = found
        try:
            url = remote.object_url(rel, path.name)  # reads the folder's commit marker once
        except storage.StorageError:  # not published (scratch of the working copy): read locally
            return None
        self.store_objects += 1
        return remote, url

    def ref(self, path: Path | str) -> str:
        """The name DuckDB reads `path` by: its committed object's URL when it is a published
        file of an object-store root's working copy, else the local path. Raises
        storage.StorageError when the store cannot be reached."""
        from .. import storage

        stored = self._stored(Path(path))
        if stored is None:
            return str(path)
        remote, url = stored
        if remote.url not in self._registered:
            storage.duckdb_connect(remote.url, self.con)
            self._registered.add(remote.url)
        return url

    def open(self, path: Path | str) -> BinaryIO:
        """The bytes of `path`, as a buffered binary file (use it in a ``with``): the committed
        object, through the store's fsspec filesystem, when `path` is a published file of an
        object-store root's working copy, else the local file. Raises FileNotFoundError when the
        local file does not exist, storage.StorageError when the store cannot be reached."""
        stored = self._stored(Path(path))
        if stored is None:
            return open(path, "rb")
        remote, url = stored
        return io.BufferedReader(remote.fs.open(url, "rb"), _READ_BUFFER)

    def rows(self, path: Path | str, errors: list | None = None) -> Iterator[dict]:
        """The JSON-object rows of the JSONL file `path` (read as :meth:`open` does), under the
        one row rule (`fileio.read_jsonl`): a row that breaks it raises `fileio.JsonlRowError`
        naming file and line, or, with `errors` (a list), is appended there as ``(line,
        RowDecodeError)`` and skipped, for the check to count. Raises as :meth:`open`."""
        with self.open(path) as f:
            yield from read_jsonl(f, path, errors)

    def manifest(self, folder: Path | str) -> dict | None:
        """`<folder>/manifest.json` parsed (read as :meth:`open` does); None when the local file
        does not exist. Raises ValueError when it is not JSON, as :meth:`open` otherwise."""
        path = Path(folder) / "manifest.json"
        if not path.exists():
            return None
        with self.open(path) as f:
            return json.loads(f.read().decode("utf-8"))

    def count_rows(self, path: Path | str) -> int:
        """The rows of the JSONL file `path` (read as :meth:`open` does): its lines holding
        anything but ASCII whitespace, counted over bytes, so a row that is not valid UTF-8 or
        not valid JSON is still one row. Raises as :meth:`open`."""
        with self.open(path) as f:
            return sum(1 for line in f if line.strip())

    def sql_list(self, paths: Iterable[Path | str]) -> str:
        """A SQL list literal of :meth:`ref` of each path."""
        return "[" + ", ".join(literal(self.ref(p)) for p in paths) + "]"
