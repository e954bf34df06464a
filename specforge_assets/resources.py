"""Resources shared by every layer. Layer-specific resources live beside their assets."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from . import paths


class SpecforgeStore(dg.ConfigurableResource):
    """The data root and config folder. Empty strings mean the defaults of `paths`
    (`$SPECFORGE_DATA_ROOT` or `./data`; `$SPECFORGE_CONFIG_DIR` or `./configs`). The data root
    may be an fsspec URL (`s3://bucket/prefix`): `root()` is then its local working copy
    (`storage`), brought up to date unless `pull=False` (callers touching only local folders)."""

    data_root: str = ""
    config_dir: str = ""

    def root(self, pull: bool = True) -> Path:
        return paths.root_from(self.data_root, pull=pull) if self.data_root else paths.data_root(pull)

    def configs(self) -> Path:
        return Path(self.config_dir).resolve() if self.config_dir else paths.config_dir()

    def layer_dir(self, layer: str, *parts: str) -> Path:
        return paths.layer_dir(layer, *parts, root=self.root())

    def config(self, name: str) -> dict:
        return paths.load_config(name, self.configs())
