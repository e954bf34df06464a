"""The preset registry: SpecForge's dataset presets, read as data from `configs/sources.yaml`.

`PresetEntry` is one `presets.<name>:` entry of the file (validated with the file, see
`config.SourcesFile`); `Preset` is the resolved preset the readers use (its `parts`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, StrictBool, model_validator

from .. import paths
from ..configmodel import ConfigModel

DEFAULT_SOURCES_YAML = paths.REPO_ROOT / "configs" / "sources.yaml"


@dataclass(frozen=True)
class Part:
    """One hub dataset (+config) read for a preset; `name` names its local sub-folder."""

    name: str
    hub_id: str
    config: str | None
    split: str


class PartEntry(ConfigModel):
    """One item of a preset's `parts:` (a hub dataset; `split` defaults to the preset's)."""

    name: str
    hub_id: str
    config: str | None = None
    split: str | None = None


class SubsetEntry(ConfigModel):
    """A preset's `subset:`: the config `--opc-subset` selects by default, and what `all` reads
    (null: every config)."""

    default: str
    all: list[str] | None = None


class PresetEntry(ConfigModel):
    """One `presets.<name>:` entry of configs/sources.yaml: where the hub data lives (`hub_id` +
    `configs`, or `parts`) and the converter (a function of converters.py) with its options."""

    hub_id: str | None = None
    split: str = "train"
    configs: list[str | None] | None = Field(default=None, description="hub configs, concatenated in order")
    parts: list[PartEntry] | None = Field(default=None, description="several hub datasets, concatenated in order")
    subset: SubsetEntry | None = None
    converter: str
    options: dict[str, Any] = Field(default_factory=dict, description="the converter's keyword options")
    remote_code: StrictBool = False

    @model_validator(mode="after")
    def _one_origin(self) -> "PresetEntry":
        if not self.parts and not self.hub_id:
            raise ValueError("needs 'hub_id' or 'parts'")
        return self

    def resolve(self, name: str) -> "Preset":
        """This entry as the `Preset` named `name` (its parts spelled out)."""
        if self.parts:
            parts = tuple(
                Part(name=p.name, hub_id=p.hub_id, config=p.config, split=p.split or self.split) for p in self.parts
            )
        else:
            assert self.hub_id is not None  # _one_origin
            hub_id = self.hub_id
            parts = tuple(
                Part(name=c or "default", hub_id=hub_id, config=c, split=self.split) for c in (self.configs or [None])
            )
        return Preset(
            name=name,
            parts=parts,
            converter=self.converter,
            options=dict(self.options),
            subset=self.subset.model_dump() if self.subset else None,
            remote_code=self.remote_code,
        )


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
