"""DuckDB for the checks: one in-memory connection, and the name DuckDB reads each file by.

On a local data root that name is the file's path. On an object-store root (`storage`: the steps
work on a local working copy and publish each folder to the store, committed by its
`_published.json`), it is the committed object's URL, read through the store's fsspec filesystem
registered with DuckDB. So a check queries what every other machine will read, not the local
copy that was just uploaded. A file of the working copy that is not published (scratch) is read
locally.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable


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

    def ref(self, path: Path | str) -> str:
        """The name DuckDB reads `path` by: its committed object's URL when it is a published
        file of an object-store root's working copy, else the local path. Raises
        storage.StorageError when the store cannot be reached."""
        from .. import storage

        path = Path(path)
        found = storage.remote_of(path.parent)
        if found is None:
            return str(path)
        remote, rel = found
        try:
            url = remote.object_url(rel, path.name)  # reads the folder's commit marker once
        except storage.StorageError:  # not published (scratch of the working copy): read locally
            return str(path)
        if remote.url not in self._registered:
            storage.duckdb_connect(remote.url, self.con)
            self._registered.add(remote.url)
        self.store_objects += 1
        return url

    def sql_list(self, paths: Iterable[Path | str]) -> str:
        """A SQL list literal of :meth:`ref` of each path."""
        return "[" + ", ".join(literal(self.ref(p)) for p in paths) + "]"
