"""The data root on object storage (no Dagster import; fsspec is imported only for a URL root).

`SPECFORGE_DATA_ROOT` (or the `store` resource's `data_root`) is a local path, and everything
works on it directly as before, or an fsspec URL (``s3://bucket/prefix``, ``gs://...``,
``file:///...``). For a URL, every step computes on a local working copy of the root, the
*mirror* (``$SPECFORGE_DATA_CACHE/<name>-<hash>``, default ``~/.cache/specforge/data/...``), and
the remote I/O is all in this module:

* `local_root(url)` returns the mirror after pulling every folder published on the remote that
  the mirror lacks or holds in an older generation (`sync`): the whole tree the first time,
  then only what changed (one listing of the root per call).
* `published(dst)` is called by the helpers that publish a folder (`fileio.replace_dir`,
  `versioned.publish_version`, the regenerated partitions): when `dst` lies in a mirror it is
  uploaded. Anything else written in the mirror (tokenizer caches, regeneration journals,
  training work folders, locks) is local scratch and never leaves the machine.

Remote layout of a published folder ``<rel>`` (e.g. ``sources/gsm8k``, ``versions/mix/<v>``)::

    <url>/<rel>/_g-<generation>/<files...>   uploaded first, a fresh prefix per publish
    <url>/<rel>/_published.json              written LAST: the commit point
        {"format": 1, "generation": "<generation>", "published_at": <unix s>,
         "files": {"<relative name>": {"size": <bytes>, "sha256": "<hex>"}}}

An object store has no rename, so the folder is never half visible: readers trust only folders
whose ``_published.json`` exists and download exactly the files it names from its generation,
checking size and sha256 (`StorageError` on a mismatch). Generations older than the committed
one are removed after the commit; of two publishes of one folder racing, the later generation
wins and the earlier withdraws. Hidden names (``.x``) are never published.

Credentials come only from the environment, the way the fsspec backend reads them (for s3:
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_PROFILE``, endpoint
``AWS_ENDPOINT_URL``); a URL with user-info is refused, and nothing here logs or records them.
``SPECFORGE_FSSPEC_OPTIONS`` (JSON object) adds non-secret backend options.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

from .errors import UserError

CACHE_ENV = "SPECFORGE_DATA_CACHE"
OPTIONS_ENV = "SPECFORGE_FSSPEC_OPTIONS"
MARKER = "_published.json"
GEN_PREFIX = "_g-"
STATE_FILE = ".specforge-remote.json"  # at the mirror's top: the URL and what was pulled/pushed
LOCK_FILE = ".specforge-remote.lock"

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class StorageError(UserError):
    """The object-store data root cannot be read or written (names the URL and the object)."""


def is_url(value: str | os.PathLike | None) -> bool:
    """Whether a data root setting is an fsspec URL (``scheme://...``) rather than a path."""
    return isinstance(value, str) and bool(_URL.match(value))


def _check_url(url: str) -> str:
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/]*@", url):
        raise StorageError(
            "the data root URL carries credentials (user-info): give them through the environment "
            "(e.g. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) instead"
        )
    return url.rstrip("/")


def mirror_dir(url: str) -> Path:
    """Where the local working copy of `url` lives (not created)."""
    url = _check_url(url)
    base = os.environ.get(CACHE_ENV)
    cache = Path(base).expanduser() if base else Path.home() / ".cache" / "specforge" / "data"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", url.split("://", 1)[1])[-48:].strip("_.") or "root"
    return (cache / f"{slug}-{hashlib.sha256(url.encode()).hexdigest()[:12]}").resolve()


def _options() -> dict:
    raw = os.environ.get(OPTIONS_ENV)
    if not raw:
        return {}
    try:
        opts = json.loads(raw)
    except ValueError as e:
        raise StorageError(f"${OPTIONS_ENV} is not valid JSON: {e}") from None
    if not isinstance(opts, dict):
        raise StorageError(f"${OPTIONS_ENV} must be a JSON object, got {type(opts).__name__}")
    return opts


def _filesystem(url: str):
    """(fsspec filesystem, root path in it) for `url`."""
    try:
        import fsspec
    except ImportError:  # pragma: no cover - fsspec ships with datasets
        raise StorageError("an object-store data root needs fsspec: pip install fsspec") from None
    try:
        opts = _options()
        if url.split("://", 1)[0] in ("file", "local"):
            opts.setdefault("auto_mkdir", True)  # an object store needs no folders; a disk does
        elif url.startswith(("s3://", "s3a://")) and os.environ.get("AWS_ENDPOINT_URL"):
            # explicit, so fsspec's instance cache tells two endpoints apart (botocore reads it too)
            opts.setdefault("endpoint_url", os.environ["AWS_ENDPOINT_URL"])
        fs, path = fsspec.core.url_to_fs(url, **opts)
    except (ImportError, ValueError) as e:
        raise StorageError(f"data root {url}: {e} (for s3:// install s3fs)") from None
    return fs, path.rstrip("/")


@contextlib.contextmanager
def _locked(mirror: Path) -> Iterator[None]:
    mirror.mkdir(parents=True, exist_ok=True)
    with open(mirror / LOCK_FILE, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _read_state(mirror: Path) -> dict:
    try:
        return json.loads((mirror / STATE_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}


def _write_state(mirror: Path, state: dict) -> None:
    # (this module imports nothing of the package but errors: fileio and paths call into it)
    fd, tmp = tempfile.mkstemp(prefix=f"{STATE_FILE}.", suffix=".tmp", dir=mirror)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(state, f, indent=1, sort_keys=True)
        os.replace(tmp, mirror / STATE_FILE)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _mirror_of(path: Path) -> tuple[Path, str] | None:
    """(mirror, URL) when `path` lies in the local working copy of a URL root, else None."""
    path = Path(path).absolute()
    for p in (path, *path.parents):
        marker = p / STATE_FILE
        if marker.is_file():
            with contextlib.suppress(OSError, ValueError):
                return p, json.loads(marker.read_text(encoding="utf-8"))["url"]
    return None


def _identity(info: dict) -> str:
    """What changes whenever an object is rewritten (ETag on S3, else size + mtime)."""
    for k in ("ETag", "etag", "md5Hash", "generation"):
        if info.get(k):
            return str(info[k])
    return f"{info.get('size')}-{info.get('mtime') or info.get('LastModified') or info.get('updated') or info.get('created')}"


def _sha256(path: Path) -> str:
    """The sha256 (64 hex chars) of the file's bytes: `hashlib.file_digest`, as
    `fileio.sha256_file` (same result). Not imported from `fileio`: fileio publishes through this
    module (fileio → paths → storage), so importing it here would close a cycle."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _put_in_place(tmp: Path, dst: Path) -> None:
    """A pulled folder replaces the mirror's copy: the old one is renamed aside, the new one
    renamed in, the old one removed (never a half-written folder at `dst`)."""
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
        os.replace(tmp, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, dst)


def _files(local: Path) -> dict[str, Path]:
    """The publishable files of a folder: regular files, no hidden names at any depth."""
    out = {}
    for p in sorted(local.rglob("*")):
        rel = p.relative_to(local)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts):
            out[rel.as_posix()] = p
    return out


def _generation() -> str:
    return f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"


def _gen_time(gen: str) -> int:
    with contextlib.suppress(ValueError):
        return int(gen.split("-", 1)[0])
    return 0


# (root URL, sha256) -> the object this process last uploaded with that content (`Remote._upload`)
_UPLOADED: dict[tuple[str, str], str] = {}


class Remote:
    """One URL root: publish / read / remove folders by their path relative to it."""

    def __init__(self, url: str):
        self.url = _check_url(url)
        self.fs, self.base = _filesystem(self.url)
        self.fs.invalidate_cache()  # fsspec reuses instances: never answer from an old listing

    def _p(self, rel: str, *parts: str) -> str:
        return "/".join(x for x in (self.base, rel, *parts) if x)

    def _err(self, what: str, e: BaseException) -> StorageError:
        from .errors import redact

        return StorageError(redact(f"data root {self.url}: {what}: {type(e).__name__}: {e}"))

    def marker(self, rel: str) -> dict | None:
        """The committed `_published.json` of folder `rel`, or None when it is not published."""
        try:
            return json.loads(self.fs.cat_file(self._p(rel, MARKER)))
        except FileNotFoundError:
            return None
        except ValueError as e:
            raise self._err(f"{rel}/{MARKER} is not valid JSON", e) from None
        except Exception as e:
            raise self._err(f"cannot read {rel}/{MARKER}", e) from None

    def marker_identity(self, rel: str) -> str | None:
        self.fs.invalidate_cache(self._p(rel))
        try:
            return _identity(self.fs.info(self._p(rel, MARKER)))
        except FileNotFoundError:
            return None

    def published_folders(self) -> dict[str, str]:
        """{rel: identity of its marker} of every published folder under the root."""
        self.fs.invalidate_cache()
        try:
            listing = self.fs.find(self.base, detail=True)
        except FileNotFoundError:
            bucket = self.base.split("/", 1)[0]
            if "file" not in self.fs.protocol and "local" not in self.fs.protocol and not self.fs.exists(bucket):
                raise StorageError(
                    f"data root {self.url}: bucket {bucket!r} does not exist (create it first)"
                ) from None
            return {}
        except Exception as e:  # no credentials, endpoint down, access denied
            raise self._err("cannot list", e) from None
        out = {}
        for path, info in listing.items():
            path = path.rstrip("/")
            if path.endswith("/" + MARKER) and path.startswith(self.base + "/"):
                rel = path[len(self.base) + 1 : -len(MARKER) - 1]
                if rel and not any(part.startswith(GEN_PREFIX) for part in rel.split("/")):
                    out[rel] = _identity(info)
        return out

    def publish(self, local: Path, rel: str, names: list[str] | None = None) -> dict | None:
        """Upload `local`'s files (or only `names`) as folder `rel`: a new generation, then the
        marker. Returns the marker written, or None when a newer publish of `rel` won."""
        files = _files(local)
        if names is not None:
            files = {n: files[n] for n in names if n in files}
        gen = _generation()
        entries = {n: {"size": p.stat().st_size, "sha256": _sha256(p)} for n, p in files.items()}
        try:
            self._upload(files, entries, rel, gen)
            current = self.marker(rel)
            if current and _gen_time(current.get("generation", "")) > _gen_time(gen):
                self._remove_generations(rel, keep=current["generation"], only={gen})
                return None  # a later publish of the same folder committed first: it stands
            marker = {"format": 1, "generation": gen, "published_at": time.time(), "files": entries}
            tmp = self._p(rel, f".{MARKER}.{gen}.tmp")
            self.fs.pipe_file(tmp, json.dumps(marker, indent=1, sort_keys=True).encode())
            self.fs.mv(tmp, self._p(rel, MARKER))  # the commit (one object PUT / one rename)
            self._remove_generations(rel, keep=gen, older_than=gen)
        except Exception as e:  # s3fs: OSError subclasses; botocore: its own (no credentials, endpoint down)
            raise self._err(f"cannot publish {rel}", e) from None
        return marker

    def _upload(self, files: dict[str, Path], entries: dict[str, dict], rel: str, gen: str) -> None:
        """Put the files under the generation's prefix. A file whose content this process has
        just uploaded elsewhere in the root (the current folder and its immutable version are
        the same bytes) is copied inside the store instead (S3: CopyObject, no transfer)."""
        dst = {n: self._p(rel, GEN_PREFIX + gen, n) for n in files}
        copies = {
            n: _UPLOADED[(self.url, e["sha256"])] for n, e in entries.items() if (self.url, e["sha256"]) in _UPLOADED
        }
        if copies:
            try:
                self.fs.copy(list(copies.values()), [dst[n] for n in copies])
            except FileNotFoundError:  # that generation was removed since: upload after all
                copies = {}
        put = [n for n in files if n not in copies]
        if put:
            self.fs.put([str(files[n]) for n in put], [dst[n] for n in put])
        for n, e in entries.items():
            _UPLOADED[(self.url, e["sha256"])] = dst[n]

    def _remove_generations(self, rel: str, keep: str, older_than: str | None = None, only: set | None = None) -> None:
        try:
            entries = self.fs.ls(self._p(rel), detail=False)
        except FileNotFoundError:
            return
        for e in entries:
            name = e.rstrip("/").rsplit("/", 1)[-1]
            if not name.startswith(GEN_PREFIX) or name == GEN_PREFIX + keep:
                continue
            g = name[len(GEN_PREFIX) :]
            if only is not None and g not in only:
                continue
            if older_than is not None and _gen_time(g) >= _gen_time(older_than):
                continue
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(e, recursive=True)

    def remove(self, rel: str) -> None:
        """Unpublish folder `rel`: the marker first (readers stop trusting it), then its files."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._p(rel, MARKER))
        self._remove_generations(rel, keep="")

    def download(self, rel: str, marker: dict, dest: Path) -> None:
        """Fetch the files `marker` names into the (empty) folder `dest`, checking each size and
        sha256."""
        gen = marker["generation"]
        files = marker.get("files") or {}
        for n in files:
            (dest / n).parent.mkdir(parents=True, exist_ok=True)
        if files:
            try:
                self.fs.get([self._p(rel, GEN_PREFIX + gen, n) for n in files], [str(dest / n) for n in files])
            except FileNotFoundError as e:
                raise self._err(f"{rel} changed while it was read (generation {gen} gone)", e) from None
            except Exception as e:
                raise self._err(f"cannot download {rel}", e) from None
        for n, meta in files.items():
            p = dest / n
            if not p.is_file() or p.stat().st_size != meta["size"] or _sha256(p) != meta["sha256"]:
                raise StorageError(f"data root {self.url}: {rel}/{n} does not match its {MARKER} (size/sha256)")

    def object_url(self, rel: str, name: str) -> str:
        """The URL of file `name` of published folder `rel` as committed now (for readers that
        open objects directly, e.g. DuckDB through `duckdb_connect`)."""
        m = self.marker(rel)
        if not m or name not in (m.get("files") or {}):
            raise StorageError(f"data root {self.url}: {rel}/{name} is not published")
        return self.fs.unstrip_protocol(self._p(rel, GEN_PREFIX + m["generation"], name))


def sync(url: str, mirror: Path | None = None) -> dict[str, list[str]]:
    """Bring the mirror of `url` up to the remote: pull each published folder it lacks or holds in
    another generation, drop folders it pulled that were unpublished since.
    Returns {"pulled": [...], "removed": [...]}."""
    remote = Remote(url)
    mirror = mirror or mirror_dir(url)
    done: dict[str, list[str]] = {"pulled": [], "removed": []}
    with _locked(mirror):
        state = _read_state(mirror)
        if state.get("url") not in (None, remote.url):
            raise StorageError(f"{mirror} is the working copy of {state.get('url')}, not {remote.url}")
        folders = state.setdefault("folders", {})
        state["url"] = remote.url
        listed = remote.published_folders()
        for rel, ident in sorted(listed.items()):
            have = folders.get(rel) or {}
            dst = mirror / rel
            if have.get("marker") == ident and dst.is_dir():
                continue
            for attempt in range(3):  # a publish racing with us removes the generation we read
                marker = remote.marker(rel)
                if marker is None:
                    break
                if have.get("generation") == marker["generation"] and dst.is_dir():
                    break
                dst.parent.mkdir(parents=True, exist_ok=True)
                tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.stage-{os.getpid()}-", dir=dst.parent))
                os.chmod(tmp, 0o755)
                try:
                    remote.download(rel, marker, tmp)
                    _put_in_place(tmp, dst)
                    break
                except StorageError:
                    if attempt == 2:
                        raise
                finally:
                    if tmp.exists():
                        shutil.rmtree(tmp, ignore_errors=True)
            if marker is None:
                continue
            folders[rel] = {"generation": marker["generation"], "marker": ident}
            done["pulled"].append(rel)
        for rel in sorted(set(folders) - set(listed)):
            shutil.rmtree(mirror / rel, ignore_errors=True)
            del folders[rel]
            done["removed"].append(rel)
        _write_state(mirror, state)
    return done


def local_root(url: str, pull: bool = True) -> Path:
    """The local working copy of the URL root `url`, brought up to date (`sync`). `pull=False`:
    as it is, nothing fetched (for callers that only touch local folders, e.g. the sensors'
    drop folder and ops logs); what is published from it is still uploaded."""
    mirror = mirror_dir(url)
    if pull:
        sync(url, mirror)
        return mirror
    url = _check_url(url)
    with _locked(mirror):
        state = _read_state(mirror)
        if state.get("url") not in (None, url):
            raise StorageError(f"{mirror} is the working copy of {state.get('url')}, not {url}")
        if not state:
            _write_state(mirror, {"url": url, "folders": {}})
    return mirror


def _rel_in_mirror(dst: Path) -> tuple[Path, str, str] | None:
    found = _mirror_of(dst)
    if found is None:
        return None
    mirror, url = found
    rel = Path(dst).absolute().relative_to(mirror)
    if not rel.parts or any(part.startswith(".") for part in rel.parts):
        return None  # the mirror itself, or a staging / scratch folder
    return mirror, url, rel.as_posix()


def published(dst: Path | str, names: list[str] | None = None, *, if_new: bool = False) -> dict | None:
    """`dst` was just published locally: when it lies in the working copy of a URL root, upload
    it (`Remote.publish`; only `names` when given) and record it. `if_new`: skip when the
    folder is already recorded as published (a reused immutable version). No-op (None) for a
    folder outside any working copy, i.e. for every local data root."""
    found = _rel_in_mirror(Path(dst))
    if found is None:
        return None
    mirror, url, rel = found
    if if_new and rel in (_read_state(mirror).get("folders") or {}):
        return None
    remote = Remote(url)
    marker = remote.publish(Path(dst), rel, names)
    if marker is None:
        return None
    ident = remote.marker_identity(rel)
    with _locked(mirror):
        state = _read_state(mirror)
        state.setdefault("url", remote.url)
        state.setdefault("folders", {})[rel] = {"generation": marker["generation"], "marker": ident}
        _write_state(mirror, state)
    return marker


def removed(dst: Path | str) -> None:
    """`dst` was removed locally (a pruned version): unpublish it on the remote too."""
    found = _rel_in_mirror(Path(dst))
    if found is None:
        return
    mirror, url, rel = found
    Remote(url).remove(rel)
    with _locked(mirror):
        state = _read_state(mirror)
        (state.get("folders") or {}).pop(rel, None)
        _write_state(mirror, state)


def remote_of(local: Path | str) -> tuple[Remote, str] | None:
    """(Remote, rel) for a path in a working copy, else None."""
    found = _rel_in_mirror(Path(local))
    return None if found is None else (Remote(found[1]), found[2])


def duckdb_connect(url: str, con: Any = None):
    """A DuckDB connection (or `con`) that reads the URL root's objects through fsspec
    (`register_filesystem`), so a check can query ``Remote(url).object_url(rel, name)``."""
    import duckdb

    con = con or duckdb.connect()
    con.register_filesystem(Remote(url).fs)
    return con
