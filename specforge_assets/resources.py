"""Resources the code location builds from the store: the store itself (data root and configs,
shared by every layer) and the torchrun launcher (`training_pipes`, built with configs/train.yaml).
A layer's own settings resources live beside its assets."""

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


def training_pipes(store: SpecforgeStore) -> dg.PipesSubprocessClient:
    """The default `pipes` resource: how `models/draft_model` launches torchrun. It forwards the
    run's stdout/stderr and a cancellation (SIGINT) to torchrun, then waits
    `launch.termination_timeout_s` seconds (configs/train.yaml, read through `store`) for it and
    its ranks to flush a checkpoint and exit before killing them. A train.yaml that does not
    validate gives the default timeout here, so the code location loads and the training step
    reports the error. Replace the resource with another Pipes client to train elsewhere."""
    from .errors import UserError
    from .train.settings import LaunchSettings, train_settings

    try:
        timeout = float(train_settings(store.config("train"))["launch"]["termination_timeout_s"])
    except (UserError, ValueError):
        timeout = float(LaunchSettings().termination_timeout_s)
    return dg.PipesSubprocessClient(forward_termination=True, forward_stdio=True, termination_timeout_seconds=timeout)
