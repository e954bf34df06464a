"""Immutable, content-versioned copies of published artifacts (no Dagster import).

Every layer that later runs must read *by version* (the mix, the tokenized dataset, the vocab
mapping, the demo target, the draft) keeps, beside its "current" folder, a copy under

    <data root>/versions/<artifact>/<data version>/

written once and never changed: a folder of that name exists only complete (it is built in a
staging folder and renamed into place in one step), and a later build that yields the same
version reuses it. Copies are hard links where the file system allows (free; the writers
only ever replace files by rename, never rewrite them in place).

Why a separate tree and not `<layer>/versions/`: the current folder (e.g. `<root>/mix/`) is
itself published as one unit by a directory swap (`fileio.staged_dir`); versions nested inside
it would be swapped away with it.

With an object-store data root (`storage`), each version folder is uploaded once, when it is
first kept here, and a pruned one is removed there too.

The version folder is published *before* the current folder is swapped, so by the time
anything (a Dagster materialization, the "current" folder) names a version, its folder is there.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .fileio import clean_stale_staging, make_staging_dir
from .paths import check_key
from .storage import published
from .storage import removed as unpublished

VERSIONS_DIR = "versions"


def versions_root(root: Path | str, artifact: str) -> Path:
    return Path(root) / VERSIONS_DIR / check_key(artifact, "artifact")


def version_dir(root: Path | str, artifact: str, version: str) -> Path:
    return versions_root(root, artifact) / check_key(str(version), "data version")


def existing_version_dir(root: Path | str, artifact: str, version: str | None) -> Path | None:
    """`<root>/versions/<artifact>/<version>/` when it exists (the immutable folder a run reads),
    else None (no version, or a layer/version that keeps no folder). Raises UserError for an
    artifact or version that is not a safe path component (`keys.check_key`)."""
    if not version:
        return None
    d = version_dir(root, artifact, version)
    return d if d.is_dir() else None


def _link_or_copy(src: Path, dst: Path) -> None:
    if src.is_dir():
        dst.mkdir()
        for p in src.iterdir():
            _link_or_copy(p, dst / p.name)
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def publish_version(src: Path | str, root: Path | str, artifact: str, version: str, skip: tuple[str, ...] = ()) -> Path:
    """Keep `src`'s files as `<root>/versions/<artifact>/<version>/` (once; an existing folder
    of that version is complete by construction and is reused). Returns the version folder."""
    src = Path(src)
    dst = version_dir(root, artifact, version)
    if dst.is_dir():
        os.utime(dst)  # last used (what `prune_versions` keeps)
        published(dst, if_new=True)  # object-store root: upload once (no-op for a local root)
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(dst)
    tmp = make_staging_dir(dst.parent, f".{dst.name}.stage-{os.getpid()}-")
    try:
        for p in src.iterdir():
            if p.name not in skip and not p.name.startswith("."):
                _link_or_copy(p, tmp / p.name)
        try:
            os.rename(tmp, dst)  # atomic; fails if another run published the same version first
        except OSError:
            if not dst.is_dir():
                raise
        published(dst, if_new=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dst


def prune_versions(
    root: Path | str, artifact: str, keep: int, protect: set[str] | frozenset = frozenset()
) -> list[str]:
    """Remove all but the `keep` most recently used versions of `artifact` (those in `protect`
    always stay). `keep` <= 0 keeps everything. Returns the removed versions."""
    base = versions_root(root, artifact)
    if keep <= 0 or not base.is_dir():
        return []
    entries = sorted(
        (
            (d.stat().st_mtime, d)
            for d in base.iterdir()
            if d.is_dir() and not d.name.startswith(".") and d.name not in protect
        ),
        reverse=True,
    )
    removed = []
    for _, d in entries[max(0, keep - len(protect)) :]:
        shutil.rmtree(d, ignore_errors=True)
        unpublished(d)
        removed.append(d.name)
    return sorted(removed)
