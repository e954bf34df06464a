"""The preset registry: SpecForge's dataset presets, read as data from `configs/sources.yaml`."""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import paths
from .errors import UnknownSourceError, UnsupportedPresetError

DEFAULT_SOURCES_YAML = paths.REPO_ROOT / "configs" / "sources.yaml"


@dataclass(frozen=True)
class Part:
    """One hub dataset (+config) read for a preset; `name` names its local sub-folder."""

    name: str
    hub_id: str
    config: str | None
    split: str


@dataclass(frozen=True)
class Preset:
    name: str
    parts: tuple[Part, ...]
    converter: str
    options: dict = field(default_factory=dict, hash=False)
    subset: dict | None = field(default=None, hash=False)
    remote_code: bool = False

    def select_parts(self, subset: str | None = None) -> tuple[Part, ...]:
        """The parts read for `--opc-subset`-style selection (no subset → default / all)."""
        if self.subset is None:
            if subset is not None:
                raise ValueError(f"preset {self.name!r} has no subsets (got subset {subset!r})")
            return self.parts
        subset = subset or self.subset["default"]
        by_name = {p.name: p for p in self.parts}
        if subset == "all":
            names = self.subset.get("all") or [p.name for p in self.parts]
        elif subset in by_name:
            names = [subset]
        else:
            choices = ", ".join([*by_name, "all"])
            raise ValueError(f"unknown subset {subset!r} for preset {self.name!r}; choose one of: {choices}")
        return tuple(by_name[n] for n in names)


def _presets_section(config: dict | None) -> tuple[dict, dict]:
    cfg = paths.load_config("sources") if config is None else config
    if "presets" not in cfg:  # a user config with only `sources:` still gets the built-in presets
        cfg = paths.load_yaml(DEFAULT_SOURCES_YAML) if DEFAULT_SOURCES_YAML.exists() else {}
    return cfg.get("presets") or {}, cfg.get("unsupported") or {}


def _parse(name: str, spec: dict) -> Preset:
    if not isinstance(spec, dict) or "converter" not in spec:
        raise ValueError(f"sources.yaml presets.{name}: needs a mapping with a 'converter'")
    split = spec.get("split", "train")
    if spec.get("parts"):
        parts = tuple(
            Part(name=str(p["name"]), hub_id=str(p["hub_id"]), config=p.get("config"), split=p.get("split", split))
            for p in spec["parts"]
        )
    else:
        if "hub_id" not in spec:
            raise ValueError(f"sources.yaml presets.{name}: needs 'hub_id' or 'parts'")
        configs = spec.get("configs") or [None]
        parts = tuple(Part(name=c or "default", hub_id=spec["hub_id"], config=c, split=split) for c in configs)
    return Preset(
        name=name,
        parts=parts,
        converter=spec["converter"],
        options=dict(spec.get("options") or {}),
        subset=spec.get("subset"),
        remote_code=bool(spec.get("remote_code", False)),
    )


def get_preset(name: str, config: dict | None = None) -> Preset:
    section, unsupported = _presets_section(config)
    if name in unsupported:
        raise UnsupportedPresetError(f"preset {name!r} is not supported: {unsupported[name]}")
    if name not in section:
        raise UnknownSourceError(f"unknown preset {name!r}; supported presets: {', '.join(section)}")
    return _parse(name, section[name])
