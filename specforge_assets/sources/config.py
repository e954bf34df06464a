"""`configs/sources.yaml` `sources:` entries → `SourceSpec`; the incoming folder.

A partition key resolves to the entry of the same name in `sources:`; a key that is not there
resolves to a file `<incoming>/<key>.jsonl|.json|.parquet` (format auto-detected). The
platform's file-drop sensor calls `list_incoming` and `resolve_source`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import paths
from .errors import SourceError, UnknownSourceError
from .formats import FORMATS
from .loaders import SUFFIXES
from .presets import get_preset

# Preference when several files share a stem in the incoming folder.
INCOMING_SUFFIXES = (".parquet", ".jsonl", ".json")
_DEFAULTS = {"split_eval": False, "sample_size": None, "quarantine_threshold": 0.1, "dedup_ids": True}
_OWN_KEYS = {
    "preset", "format", "data_path", "hub_id", "config", "split", "opc_subset", "sample_size",
    "split_eval", "quarantine_threshold", "dedup_ids", "description",
}


@dataclass
class SourceSpec:
    key: str
    preset: str | None = None
    format: str | None = None  # custom sources
    data_path: str | None = None
    hub_id: str | None = None
    config: str | None = None
    split: str = "train"
    opc_subset: str | None = None
    sample_size: int | None = None
    split_eval: bool = False
    quarantine_threshold: float = 0.1
    dedup_ids: bool = True
    description: str | None = None
    origin: str = "config"  # config | incoming
    extra: dict = field(default_factory=dict)  # keys other layers own (regenerate, weight, ...)

    @property
    def kind(self) -> str:
        return "preset" if self.preset else "custom"

    def identity(self) -> dict:
        """What determines this layer's output (goes into the cache key and the manifest)."""
        d = asdict(self)
        d.pop("extra")
        d.pop("description")
        return d


def _config(config: dict | None) -> dict:
    return paths.load_config("sources") if config is None else config


def hub_offline(config: dict | None = None) -> bool:
    """`hub: {offline: true}` in sources.yaml (HF_HUB_OFFLINE=1 works too, see loaders)."""
    return bool((_config(config).get("hub") or {}).get("offline"))


def incoming_dir(config: dict | None = None, root: Path | None = None) -> Path:
    cfg = _config(config)
    d = (cfg.get("incoming") or {}).get("dir")
    base = Path(root) if root is not None else paths.data_root()
    if not d:
        return (base / "incoming").resolve()
    p = Path(str(d)).expanduser()
    return (p if p.is_absolute() else base / p).resolve()


def list_incoming(config: dict | None = None, root: Path | None = None) -> dict[str, Path]:
    """`{key: path}` for every `<incoming>/<key>.parquet|.jsonl|.json` whose stem is a valid key,
    and every folder `<incoming>/<key>/` holding such files (shards of one source).

    Invalid names (spaces, leading dot, temp files) are ignored; when several entries share a
    key the first of .parquet, .jsonl, .json, folder wins (`resolve_source` uses the same rule).
    """
    d = incoming_dir(config, root)
    if not d.is_dir():
        return {}
    found: dict[str, Path] = {}
    for suffix in INCOMING_SUFFIXES:
        for p in sorted(d.glob(f"*{suffix}")):
            if not p.is_file() or p.suffix != suffix:
                continue
            try:
                key = paths.check_key(p.stem)
            except paths.UnsafeKeyError:
                continue
            found.setdefault(key, p)
    for p in sorted(d.iterdir()):  # a folder of shards <incoming>/<key>/*.parquet|*.jsonl|*.json
        if p.is_dir() and any(is_data_file(f) for f in p.iterdir() if f.is_file()):
            try:
                found.setdefault(paths.check_key(p.name), p)
            except paths.UnsafeKeyError:
                continue
    return dict(sorted(found.items()))


def _spec_from_entry(key: str, entry: dict, defaults: dict, config: dict) -> SourceSpec:
    if not isinstance(entry, dict):
        raise SourceError(f"sources.yaml sources.{key}: expected a mapping, got {type(entry).__name__}")
    merged = {**_DEFAULTS, **(defaults or {}), **entry}
    preset, fmt = merged.get("preset"), merged.get("format")
    if preset and fmt:
        raise SourceError(f"sources.yaml sources.{key}: set either 'preset' or 'format', not both")
    if preset:
        get_preset(str(preset), config)  # unknown / vision preset → clear error now
    else:
        fmt = fmt or "auto"
        if fmt not in FORMATS:
            raise SourceError(f"sources.yaml sources.{key}: unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
        if not merged.get("data_path") and not merged.get("hub_id"):
            raise SourceError(f"sources.yaml sources.{key}: a custom source needs 'data_path' or 'hub_id'")
    if merged.get("data_path") and merged.get("hub_id"):
        raise SourceError(f"sources.yaml sources.{key}: set either 'data_path' or 'hub_id', not both")
    ss = merged.get("sample_size")
    if ss is not None and (not isinstance(ss, int) or isinstance(ss, bool) or ss <= 0):
        raise SourceError(f"sources.yaml sources.{key}: sample_size must be a positive integer, got {ss!r}")
    qt = merged.get("quarantine_threshold")
    if not isinstance(qt, (int, float)) or not 0 <= qt <= 1:
        raise SourceError(f"sources.yaml sources.{key}: quarantine_threshold must be in [0, 1], got {qt!r}")
    return SourceSpec(
        key=key,
        preset=str(preset) if preset else None,
        format=None if preset else fmt,
        data_path=str(merged["data_path"]) if merged.get("data_path") else None,
        hub_id=merged.get("hub_id"),
        config=merged.get("config"),
        split=merged.get("split") or "train",
        opc_subset=merged.get("opc_subset"),
        sample_size=ss,
        split_eval=bool(merged.get("split_eval")),
        quarantine_threshold=float(qt),
        dedup_ids=bool(merged.get("dedup_ids", True)),
        description=merged.get("description"),
        extra={k: v for k, v in entry.items() if k not in _OWN_KEYS},
    )


def resolve_source(key: str, config: dict | None = None, root: Path | None = None) -> SourceSpec:
    """The spec of partition `key`: its `sources:` entry, else an incoming file, else an error."""
    paths.check_key(key)
    cfg = _config(config)
    sources = cfg.get("sources") or {}
    if key in sources:
        return _spec_from_entry(key, sources[key] or {}, cfg.get("defaults") or {}, cfg)
    incoming = list_incoming(cfg, root)
    if key in incoming:
        spec = _spec_from_entry(key, {"format": "auto", "data_path": str(incoming[key])}, cfg.get("defaults") or {}, cfg)
        spec.origin = "incoming"
        return spec
    known = ", ".join(list(sources)) or "(none)"
    raise UnknownSourceError(
        f"unknown source {key!r}: not in configs/sources.yaml `sources:` (known: {known}) and no "
        f"{key}.jsonl/.json/.parquet in the incoming folder {incoming_dir(cfg, root)}"
    )


def is_data_file(p: Path) -> bool:
    return p.suffix.lower() in SUFFIXES
