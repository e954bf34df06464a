"""`configs/sources.yaml` `sources:` entries → `SourceSpec`; the incoming folder.

A partition key resolves to the entry of the same name in `sources:`; a key that is not there
resolves to a file `<incoming>/<key>.jsonl|.json|.parquet` (format auto-detected). The
platform's file-drop sensor calls `scan_incoming` (partitions + why other entries are not) and
`resolve_source`.

Links: the incoming folder is a trust boundary (entries whose links leave it are refused); a
relative `data_path` must stay inside the data root unless the source sets
`allow_outside_links: true`; an absolute `data_path` is the user's explicit choice. The one rule
is `loaders.check_link`. A bad key in `sources:` is reported by `source_keys`, never fatal.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, StrictBool, StrictInt, model_validator

from .. import paths
from ..configmodel import ConfigError, ConfigModel, validate
from .errors import SourceError, UnknownSourceError
from .formats import FORMATS
from . import loaders
from .loaders import SUFFIXES
from .errors import UnsupportedPresetError
from .presets import DEFAULT_SOURCES_YAML, Preset, PresetEntry

# Preference when several files share a stem in the incoming folder.
INCOMING_SUFFIXES = (".parquet", ".jsonl", ".json")


class SourceEntry(ConfigModel):
    """One `sources.<key>:` entry of configs/sources.yaml (over the file's `defaults:`). An
    unknown key is an error naming the file, the source and the key (with the known keys). A
    source's mix weight is not here: it is `weights:` of configs/mix.yaml, the mix's one
    declaration (with its caps and size)."""

    preset: str | None = Field(default=None, description="a preset of `presets:`")
    format: str | None = Field(default=None, description=f"a custom source: {' | '.join(FORMATS)}")
    data_path: str | None = Field(default=None, description="file or folder; sample:<file>; relative: data root")
    hub_id: str | None = None
    config: str | None = None
    split: str | None = "train"
    opc_subset: str | None = None
    sample_size: StrictInt | None = Field(default=None, gt=0, description="keep the first N raw rows")
    split_eval: bool = Field(default=False, description="also write test.jsonl (SpecForge's 5% split)")
    quarantine_threshold: float = Field(default=0.1, ge=0, le=1, description="blocking check: max quarantined share")
    # the quarantine-rate gate blocks only from this many quarantined rows on: a handful of bad
    # rows in a small file is quarantined and reported, not a failed partition
    quarantine_min_rows: StrictInt = Field(default=10, ge=0)
    max_duplicate_rate: float = Field(
        default=0.0, ge=0, le=1, description="warning check: max share of rows whose content duplicates another row"
    )
    dedup_ids: bool = Field(default=True, description="quarantine later rows whose id was already seen")
    description: str | None = None
    allow_outside_links: StrictBool = Field(
        default=False, description="a relative data_path may be/contain links leaving the data root"
    )

    @model_validator(mode="after")
    def _one_origin(self) -> "SourceEntry":
        if self.preset and self.format:
            raise ValueError("set either 'preset' or 'format', not both")
        if not self.preset:
            fmt = self.format or "auto"
            if fmt not in FORMATS:
                raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
            if not self.data_path and not self.hub_id:
                raise ValueError("a custom source needs 'data_path' or 'hub_id'")
        if self.data_path and self.hub_id:
            raise ValueError("set either 'data_path' or 'hub_id', not both")
        return self


def entry_default(name: str) -> Any:
    """The default of `SourceEntry` field `name` (what a source entry that leaves it out gets).
    Raises KeyError for a name that is not a field."""
    return SourceEntry.model_fields[name].default


@dataclass
class SourceSpec:
    """A resolved source (the defaults are `SourceEntry`'s)."""

    key: str
    preset: str | None = None
    format: str | None = None  # custom sources
    data_path: str | None = None
    hub_id: str | None = None
    config: str | None = None
    split: str = entry_default("split")
    opc_subset: str | None = None
    sample_size: int | None = None
    split_eval: bool = entry_default("split_eval")
    quarantine_threshold: float = entry_default("quarantine_threshold")
    quarantine_min_rows: int = entry_default("quarantine_min_rows")
    max_duplicate_rate: float = entry_default("max_duplicate_rate")
    dedup_ids: bool = entry_default("dedup_ids")
    description: str | None = None
    allow_outside_links: bool = entry_default("allow_outside_links")
    origin: str = "config"  # config | incoming

    @property
    def kind(self) -> str:
        return "preset" if self.preset else "custom"

    def identity(self) -> dict:
        """What determines this layer's output (goes into the cache key and the manifest)."""
        d = asdict(self)
        d.pop("description")
        d.pop("quarantine_min_rows")  # check settings: they do not change the output
        d.pop("max_duplicate_rate")
        if not d["allow_outside_links"]:  # only when set, so that existing cache keys stay valid
            d.pop("allow_outside_links")
        return d


class HubSettings(ConfigModel):
    """`hub:` of configs/sources.yaml."""

    offline: StrictBool = Field(
        default=False, description="never try the hub (HF_HUB_OFFLINE=1 works too); hub sources then fail fast"
    )


class IncomingSettings(ConfigModel):
    """`incoming:` of configs/sources.yaml: the drop folder."""

    dir: str | None = Field(default=None, description="null: <data_root>/incoming; relative: under the data root")


class SourcesFile(ConfigModel):
    """configs/sources.yaml. `presets:` absent → the shipped presets (and their `unsupported:`), so
    that a user file with only `sources:` still has them. `sources:` entries are validated one by
    one (`SourceEntry`, over `defaults:`), so that a bad entry or key never hides the others
    (`source_keys`); `defaults:` is a partial entry, checked merged into each source."""

    presets: dict[str, PresetEntry] | None = None
    unsupported: dict[str, str] = Field(default_factory=dict, description="preset name → why it is refused")
    defaults: dict[str, Any] = Field(default_factory=dict, description="keys of a source entry, for every source")
    hub: HubSettings = Field(default_factory=HubSettings)
    incoming: IncomingSettings = Field(default_factory=IncomingSettings)
    sources: Any = Field(default_factory=dict, description="key → source entry (SourceEntry)")


def sources_file(config: dict | SourcesFile | None = None) -> SourcesFile:
    """configs/sources.yaml as `SourcesFile` (`config`: its parsed content; None reads the file).
    Raises `ConfigError` (one line, e.g. ``configs/sources.yaml: unknown key 'hubb' (known:
    ...)``) for a file that does not fit the model."""
    if isinstance(config, SourcesFile):
        return config
    cfg = paths.load_config("sources") if config is None else config
    f = validate(SourcesFile, cfg, "configs/sources.yaml")
    if "presets" not in f.model_fields_set and DEFAULT_SOURCES_YAML.exists():
        shipped = validate(SourcesFile, paths.load_yaml(DEFAULT_SOURCES_YAML), str(DEFAULT_SOURCES_YAML))
        f = f.model_copy(update={"presets": shipped.presets, "unsupported": shipped.unsupported})
    return f


def get_preset(name: str, config: dict | SourcesFile | None = None) -> Preset:
    """Preset `name` of configs/sources.yaml `presets:` (`config` as for `sources_file`). Raises
    `UnsupportedPresetError` for an `unsupported:` one (the vision presets, with the reason),
    `UnknownSourceError` (naming the supported ones) for a name that is not there."""
    f = sources_file(config)
    if name in f.unsupported:
        raise UnsupportedPresetError(f"preset {name!r} is not supported: {f.unsupported[name]}")
    presets = f.presets or {}
    if name not in presets:
        raise UnknownSourceError(f"unknown preset {name!r}; supported presets: {', '.join(presets)}")
    return presets[name].resolve(name)


def _sources(f: SourcesFile) -> dict:
    return f.sources or {}


def hub_offline(config: dict | SourcesFile | None = None) -> bool:
    """`hub: {offline: true}` in sources.yaml (HF_HUB_OFFLINE=1 works too, see loaders)."""
    return sources_file(config).hub.offline


def incoming_dir(config: dict | SourcesFile | None = None, root: Path | None = None) -> Path:
    """The drop folder (`incoming.dir`; null → <data root>/incoming; relative → under the data
    root `root`, default `paths.data_root()`), absolute."""
    d = sources_file(config).incoming.dir
    base = Path(root) if root is not None else paths.data_root()
    if not d:
        return (base / "incoming").resolve()
    p = Path(str(d)).expanduser()
    return (p if p.is_absolute() else base / p).resolve()


# Hidden and temporary names (a copy in progress) are skipped silently; every other entry that
# cannot become a partition is reported with the rule it breaks (`IncomingScan.skipped`).
_TEMP_SUFFIXES = (".tmp", ".temp", ".part", ".partial", ".crdownload", ".download", ".swp", "~")


@dataclass
class IncomingScan:
    """What is in the incoming folder: `found` `{key: path}` (the partitions), `skipped`
    `{entry name: reason}` for every entry that is not one (bad name, unsupported suffix,
    shadowed by another entry with the same key, a link leaving the folder), and `refused`
    `{key: reason}` for entries refused for their links (so `resolve_source` can say why)."""

    dir: Path
    found: dict[str, Path] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)


def key_problem(key: str) -> str | None:
    """Which rule of `paths.check_key` a would-be partition key breaks (None: it is valid)."""
    try:
        paths.check_key(key)
        return None
    except paths.UnsafeKeyError:
        pass
    if not key:
        return "the name is empty"
    if len(key) > 128:
        return f"the name is {len(key)} characters long (at most 128)"
    if not key.isascii():
        return "the name has non-ASCII characters (use letters, digits, '.', '_' or '-')"
    if any(c.isspace() for c in key):
        return "the name has spaces (use letters, digits, '.', '_' or '-')"
    if not key[0].isalnum():
        return "the name must start with a letter or digit"
    return "the name has characters other than letters, digits, '.', '_' or '-'"


def scan_incoming(config: dict | SourcesFile | None = None, root: Path | None = None) -> IncomingScan:
    """Every entry of the incoming folder, sorted into partitions and skipped entries.

    A partition is `<incoming>/<key>.parquet|.jsonl|.json` (suffix in any case: `data.JSONL` is
    key `data`) or a folder `<incoming>/<key>/` holding such files (shards of one source). The
    drop folder is a trust boundary: an entry that is, or contains, a link leading outside the
    incoming folder is refused (`loaders.check_tree`), never listed or read. Names that cannot be
    a key (spaces, non-ASCII, longer than 128, ...) are skipped with that reason, never renamed
    (a sanitized name would make a partition key that no file has, and two files could collide);
    only hidden (leading dot) and temporary names (.tmp, .part, ~, ...) are skipped silently.
    When several entries share a key the first of .parquet, .jsonl, .json, folder wins and the
    others are skipped with the reason.
    """
    d = incoming_dir(config, root)
    scan = IncomingScan(dir=d)
    if not d.is_dir():
        return scan
    candidates: dict[str, list[tuple[int, Path]]] = {}
    for p in sorted(d.iterdir()):
        name = p.name
        if name.startswith(".") or name.lower().endswith(_TEMP_SUFFIXES):
            continue
        suffix = p.suffix.lower()
        key = name if not suffix or suffix not in INCOMING_SUFFIXES else p.stem
        try:
            loaders.check_tree(p, d, "drop-folder rule", loaders.INCOMING_HINT)
        except loaders.OutsideLinkError as e:
            scan.skipped[name] = str(e)
            if key_problem(key) is None:
                scan.refused[key] = str(e)
            continue
        except OSError as e:  # unreadable entry: say so, never crash the listing
            scan.skipped[name] = f"cannot be read: {e}"
            continue
        if p.is_dir():
            if not any(is_data_file(f) for f in p.iterdir() if f.is_file()):
                scan.skipped[name] = "a folder with no .parquet/.jsonl/.json files in it"
                continue
            rank, key = len(INCOMING_SUFFIXES), name
        elif p.is_file():
            if suffix not in INCOMING_SUFFIXES:
                scan.skipped[name] = "not a .parquet, .jsonl or .json file"
                continue
            rank = INCOMING_SUFFIXES.index(suffix)
        else:
            scan.skipped[name] = "not a file or folder (a broken link?)"
            continue
        problem = key_problem(key)
        if problem:
            scan.skipped[name] = f"{problem}; rename it to become a partition"
            continue
        candidates.setdefault(key, []).append((rank, p))
    for key in sorted(candidates):
        ranked = sorted(candidates[key], key=lambda rp: (rp[0], rp[1].name))
        scan.found[key] = ranked[0][1]
        for _, other in ranked[1:]:
            scan.skipped[other.name] = (
                f"same partition key {key!r} as {ranked[0][1].name}, which wins (.parquet, .jsonl, .json, folder)"
            )
    return scan


def list_incoming(config: dict | None = None, root: Path | None = None) -> dict[str, Path]:
    """`{key: path}` of the partitions in the incoming folder (see `scan_incoming`, which also
    says why the other entries are not partitions)."""
    return scan_incoming(config, root).found


def _entry(key: str, entry: Any, defaults: dict) -> SourceEntry:
    where = f"sources.yaml sources.{key}"
    if not isinstance(entry, dict):
        raise SourceError(f"{where}: expected a mapping, got {type(entry).__name__}")
    merged = {**(defaults or {}), **entry}
    if "weight" in merged:  # one place for mix weights, beside the caps and the mix size
        raise SourceError(f"{where}: 'weight' is set in configs/mix.yaml (weights: {{{key}: N}}), not per source")
    try:
        return validate(SourceEntry, merged, where)
    except ConfigError as err:
        raise SourceError(str(err)) from None


def _spec_from_entry(key: str, entry: dict, config: SourcesFile) -> SourceSpec:
    e = _entry(key, entry, config.defaults)
    if e.preset:
        get_preset(e.preset, config)  # unknown / vision preset → clear error now
    return SourceSpec(
        key=key,
        preset=e.preset,
        format=None if e.preset else (e.format or "auto"),
        data_path=e.data_path or None,
        hub_id=e.hub_id,
        config=e.config,
        split=e.split or "train",
        opc_subset=e.opc_subset,
        sample_size=e.sample_size,
        split_eval=e.split_eval,
        quarantine_threshold=float(e.quarantine_threshold),
        quarantine_min_rows=e.quarantine_min_rows,
        max_duplicate_rate=e.max_duplicate_rate,
        dedup_ids=e.dedup_ids,
        description=e.description,
        allow_outside_links=e.allow_outside_links,
    )


def source_keys(config: dict | SourcesFile | None = None) -> tuple[list[str], dict[str, str]]:
    """The keys of the `sources:` mapping, split into (valid keys in file order, `{bad key:
    reason}`). A bad key (`"bad key!"`, `../x`) is reported, never fatal: the other sources still
    register, resolve and materialize (partition registration and the sensors use this)."""
    sources = _sources(sources_file(config))
    if not isinstance(sources, dict):
        return [], {"sources": f"`sources:` must be a mapping of key → entry, got {type(sources).__name__}"}
    good: list[str] = []
    bad: dict[str, str] = {}
    for k in sources:
        problem = key_problem(k) if isinstance(k, str) else f"the key is a {type(k).__name__}, not a name"
        if problem:
            bad[str(k)] = (
                f"configs/sources.yaml `sources:` key {k!r} is not a valid source key: {problem}; this source is ignored"
            )
        else:
            good.append(k)
    return good, bad


def _check_links(spec: SourceSpec, root: Path | None) -> SourceSpec:
    """A relative `data_path` lives under the data root: it, and every file in it when it is a
    folder, must not be a link leading outside the data root (`loaders.check_tree`), unless the
    source sets `allow_outside_links: true` — then the path is used as if the user had written
    it absolute. An absolute `data_path` is the user's explicit choice and `sample:` paths are
    held inside the shipped sample folder by `loaders.resolve_data_path`."""
    dp = spec.data_path
    if not dp or dp.startswith(loaders.SAMPLE_PREFIX) or Path(dp).expanduser().is_absolute():
        return spec
    base = Path(root) if root is not None else paths.data_root()
    if spec.allow_outside_links:
        spec.data_path = os.path.abspath(base / dp)
        return spec
    if (base / dp).exists() or (base / dp).is_symlink():
        loaders.check_tree(base / dp, base, f"source {spec.key!r}", loaders.DATA_ROOT_HINT)
    return spec


def resolve_source(key: str, config: dict | SourcesFile | None = None, root: Path | None = None) -> SourceSpec:
    """The spec of partition `key`: its `sources:` entry, else an incoming file, else an error.

    Links are checked here with the same rule the readers apply (`loaders.check_link`): an
    incoming entry that is or contains a link leaving the incoming folder is refused with the
    reason, even when its partition was registered by hand."""
    paths.check_key(key)
    cfg = sources_file(config)
    sources = _sources(cfg)
    if key in sources:
        spec = _spec_from_entry(key, sources[key] or {}, cfg)
        return _check_links(spec, root)
    scan = scan_incoming(cfg, root)
    if key in scan.found:
        spec = _spec_from_entry(key, {"format": "auto", "data_path": str(scan.found[key])}, cfg)
        spec.origin = "incoming"
        return spec
    if key in scan.refused:
        raise loaders.OutsideLinkError(f"source {key!r}: {scan.refused[key]}")
    known = ", ".join(list(sources)) or "(none)"
    raise UnknownSourceError(
        f"unknown source {key!r}: not in configs/sources.yaml `sources:` (known: {known}) and no "
        f"{key}.jsonl/.json/.parquet in the incoming folder {incoming_dir(cfg, root)}"
    )


def is_data_file(p: Path) -> bool:
    return p.suffix.lower() in SUFFIXES
