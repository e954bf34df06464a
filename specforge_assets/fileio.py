"""Atomic writes, JSONL streaming, content hashes and manifests (no Dagster import)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Iterable, Iterator

from .paths import REPO_ROOT


_UMASK: int | None = None


def _umask() -> int:
    global _UMASK
    if _UMASK is None:
        try:  # read it without changing it (Linux)
            with open("/proc/self/status") as f:
                _UMASK = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
        except (OSError, StopIteration, ValueError):
            _UMASK = os.umask(0o022)
            os.umask(_UMASK)
    return _UMASK


def make_staging_dir(parent: Path | str, prefix: str) -> Path:
    """A fresh folder in `parent` to build an output in before it is renamed into place, with the
    mode a plain mkdir would give (mkdtemp's is 0700, which the published folder would keep)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


@contextlib.contextmanager
def staged_dir(dst: Path | str):
    """Build a folder aside and publish it as `dst` (`replace_dir`: one atomic swap) when the
    block succeeds; on any error the half-built folder is removed and `dst` is left as it was.
    Staging left beside `dst` by a crashed run (its process gone) is removed first."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(dst)
    tmp = make_staging_dir(dst.parent, f".{dst.name}.stage-{os.getpid()}-")
    try:
        yield tmp
        replace_dir(tmp, dst)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_write(path: Path | str, mode: str = "w", encoding: str | None = "utf-8"):
    """Write to a temp file in the same folder, fsync, then rename over `path`.

    A crash leaves either the old file or the new one, never a half-written file that looks
    complete. The temp file is removed on error.
    """
    path = Path(path)
    if path.exists() and not path.is_file():  # never rename a file over a device, FIFO or folder
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", str(path))
        raise OSError(errno.EINVAL, "not a regular file (a device or FIFO?); refusing to replace it", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); give it the mode a plain open() would (0666 & ~umask)
        os.fchmod(fd, 0o666 & ~_umask())
        kwargs = {} if "b" in mode else {"encoding": encoding, "newline": "\n"}
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and not e.filename and e.errno is not None:
            # a write() that failed (ENOSPC, EDQUOT, EIO) names no file: name the one being written
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise


from .errors import UserError  # noqa: E402 - iter_jsonl's error is an expected failure


class JsonlRowError(ValueError, UserError):
    """A JSONL row cannot be read (file:line: field: reason). An expected failure (the CLI prints
    it as one line)."""


def iter_jsonl(path: Path | str, errors: list | None = None) -> Iterator[dict]:
    """The JSON-object rows of a JSONL file, read under the one row rule (`jsonrows.loads_object`:
    UTF-8, JSON, depth, lone surrogates). A row that breaks it raises `JsonlRowError` naming file,
    line and field; with `errors` (a list) it is appended there as ``(line, RowDecodeError)`` and
    skipped, so the caller can count / report it. Blank lines are no rows."""
    with open(path, "rb") as f:
        yield from read_jsonl(f, path, errors)


def read_jsonl(lines: Iterable[bytes], name: Path | str, errors: list | None = None) -> Iterator[dict]:
    """`iter_jsonl` over an already open binary file (or any iterable of byte lines, e.g. a
    committed object opened by `checks._duck.Reader.open`); `name` names it in errors (line
    numbers count from 1, blank lines included)."""
    from .jsonrows import RowDecodeError, loads_object

    for lineno, line in enumerate(lines, 1):
        if line.strip():
            try:
                row = loads_object(line)
            except RowDecodeError as e:
                if errors is None:
                    raise JsonlRowError(f"{name}:{lineno}: {e}") from None
                errors.append((lineno, e))
                continue
            yield row


def sha256_file(path: Path | str) -> str:
    """The sha256 (64 hex chars) of the file's bytes (`hashlib.file_digest`). The one file hasher
    (manifests, target imports, caches; `storage._sha256` is the same call, apart only to avoid
    an import cycle). Raises OSError."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def sha256_files(paths: Iterable[Path | str]) -> str:
    """sha256 (64 hex chars) of several files: for each, sorted by path, its *base name*, a NUL
    and its `sha256_file` hex. A flat list's hash (the inputs of a step, a checkpoint's two
    files), independent of where the files are. Not for a folder tree: two files of the same
    name in different sub-folders are not told apart by name, which is why a model folder's
    version is `target_import.content_version` (relative paths, one line per file) instead;
    the two are kept apart because changing either would change every recorded data version."""
    h = hashlib.sha256()
    for p in sorted(Path(x) for x in paths):
        h.update(p.name.encode())
        h.update(b"\0")
        h.update(sha256_file(p).encode())
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


_PACKAGES = ("specforge-assets", "dagster", "datasets", "transformers", "tokenizers", "torch", "duckdb", "httpx")


def package_versions(names: Iterable[str] = _PACKAGES) -> dict[str, str]:
    out = {}
    for n in names:
        try:
            out[n] = importlib_metadata.version(n)
        except importlib_metadata.PackageNotFoundError:
            pass
    out["python"] = platform.python_version()
    return out


def git_revision() -> str | None:
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5)
        return r.stdout.strip() or None if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def write_manifest(directory: Path | str, **fields: Any) -> Path:
    """`manifest.json` beside an artifact: caller's fields + package versions + git revision.

    Never pass secrets here: manifests are meant to be read and shared.
    """
    manifest = {**fields, "packages": package_versions(), "git_revision": git_revision()}
    path = Path(directory) / "manifest.json"
    with atomic_write(path) as f:
        json.dump(manifest, f, indent=2, sort_keys=True, default=str)
        f.write("\n")
    return path


def read_manifest(directory: Path | str) -> dict | None:
    path = Path(directory) / "manifest.json"
    if not path.exists():
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _renameat2_exchange():
    """libc's `renameat2(..., RENAME_EXCHANGE)` (Linux >= 3.15, glibc >= 2.28), or None."""
    global _EXCHANGE
    if _EXCHANGE is not None:
        return _EXCHANGE or None
    _EXCHANGE = False
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            fn = libc.renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            fn.restype = ctypes.c_int
            _EXCHANGE = fn
        except (OSError, AttributeError):
            pass
    return _EXCHANGE or None


_EXCHANGE = None
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def exchange_paths(a: Path | str, b: Path | str) -> bool:
    """Swap two existing paths in one atomic step (Linux `renameat2(RENAME_EXCHANGE)`).
    Returns False where the system or file system cannot (the caller falls back)."""
    fn = _renameat2_exchange()
    if fn is None:
        return False
    import ctypes

    rc = fn(_AT_FDCWD, os.fsencode(str(a)), _AT_FDCWD, os.fsencode(str(b)), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def replace_dir(tmp: Path | str, dst: Path | str) -> None:
    """Publish a fully written folder `tmp` as `dst`, as one unit (`swap_dir`); when `dst` lies
    in the local working copy of an object-store data root, it is then uploaded there
    (`storage.published`: files first, its commit marker last)."""
    swap_dir(tmp, dst)
    from .storage import published

    published(dst)


def swap_dir(tmp: Path | str, dst: Path | str) -> None:
    """Put a fully written folder `tmp` in place as `dst`, as one unit (local only).

    Where the kernel can, the two folders are exchanged in one atomic step and the old one is
    removed afterwards: a reader (or a SIGKILL at any moment) sees the old folder or the new
    one, whole. Elsewhere the old `dst` is renamed aside first and removed only after the new
    one is in place (a crash in between leaves `dst` missing beside a complete
    `.<name>.old-<pid>`, which `clean_stale_staging` puts back)."""
    tmp, dst = Path(tmp), Path(dst)
    if dst.exists():
        if exchange_paths(tmp, dst):
            shutil.rmtree(tmp, ignore_errors=True)  # now the old version
            return
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
        os.replace(tmp, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, dst)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_staging(dst: Path | str) -> list[str]:
    """Remove what crashed runs left beside `dst`: staging folders (`.<name>.stage-<pid>-*`) and
    files (`.<name>.*.tmp`) whose process is gone, and an `.<name>.old-<pid>` folder (put back
    as `dst` when `dst` itself is missing: the crash hit between the two renames).
    Returns the names removed or restored."""
    dst = Path(dst)
    parent = dst.parent
    if not parent.is_dir():
        return []
    done = []
    prefix = f".{dst.name}."
    for p in parent.iterdir():
        name = p.name
        if not name.startswith(prefix):
            continue
        tail = name[len(prefix) :]
        pid = None
        for tag in ("stage-", "old-"):
            if tail.startswith(tag):
                with contextlib.suppress(ValueError):
                    pid = int(tail[len(tag) :].split("-", 1)[0])
        if pid is None or pid == os.getpid() or _pid_alive(pid):
            continue
        if tail.startswith("old-") and not dst.exists():
            os.replace(p, dst)
            done.append(f"restored {name}")
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        done.append(name)
    return done
