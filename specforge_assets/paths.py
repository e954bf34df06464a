"""Where things live: the data root, the configs folder, and safe config loading.

No Dagster import: domain packages and the CLI use this too.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
SAMPLE_DIR = PACKAGE_DIR / "sample"

DATA_ROOT_ENV = "SPECFORGE_DATA_ROOT"
CONFIG_DIR_ENV = "SPECFORGE_CONFIG_DIR"

# A partition / source key becomes a folder name: keep it to a safe alphabet so that a key
# can never escape the data root (`../x`, absolute paths, separators).
_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class UnsafeKeyError(UserError, ValueError):
    pass


def _in_checkout() -> bool:
    return (REPO_ROOT / "pyproject.toml").exists()


def data_root(pull: bool = True) -> Path:
    """`$SPECFORGE_DATA_ROOT`, else `<repo>/data` in a checkout, else `./data`.

    An fsspec URL (``s3://bucket/prefix``, ``file:///...``) gives the local working copy of that
    root, brought up to date first unless `pull` is False (`storage.local_root`;
    `storage.StorageError` when the store cannot be read)."""
    env = os.environ.get(DATA_ROOT_ENV)
    if env:
        return root_from(env, expand_user=True, pull=pull)
    return (REPO_ROOT / "data") if _in_checkout() else (Path.cwd() / "data").resolve()


def root_from(value: str, expand_user: bool = False, pull: bool = True) -> Path:
    """A configured data root: a local path (resolved), or for an fsspec URL the local working
    copy of it (`storage.local_root`, `pull` passed on)."""
    from . import storage

    if storage.is_url(value):
        return storage.local_root(value, pull=pull)
    p = Path(value)
    return (p.expanduser() if expand_user else p).resolve()


def config_dir() -> Path:
    env = os.environ.get(CONFIG_DIR_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return (REPO_ROOT / "configs") if _in_checkout() else (Path.cwd() / "configs").resolve()


def check_key(key: str, what: str = "source key") -> str:
    """Reject keys that could escape the data root or are not plain folder names."""
    if not isinstance(key, str) or not _SAFE_KEY.match(key) or key in {".", ".."}:
        raise UnsafeKeyError(
            f"invalid {what} {key!r}: use letters, digits, '.', '_' or '-' "
            "(no path separators, no leading dot) so it stays inside the data root"
        )
    return key


def layer_dir(layer: str, *parts: str, root: Path | None = None) -> Path:
    """`<data root>/<layer>/<parts...>`, each part validated, guaranteed inside the root."""
    base = (root or data_root()).resolve()
    path = base / check_key(layer, "layer")
    for p in parts:
        path = path / check_key(p)
    resolved = path.resolve()
    if base != resolved and base not in resolved.parents:
        raise UnsafeKeyError(f"{resolved} escapes the data root {base}")
    return resolved


def load_yaml(path: Path) -> Any:
    """Parse YAML safely (never executes tags); clear error naming the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"invalid YAML in {path}: {e}") from e


def load_config(name: str, directory: Path | None = None) -> dict:
    """Load `configs/<name>.yaml` (safe loader). Missing file → empty dict."""
    path = (directory or config_dir()) / f"{name}.yaml"
    if not path.exists():
        return {}
    cfg = load_yaml(path)
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: top level must be a mapping, got {type(cfg).__name__}")
    return cfg
