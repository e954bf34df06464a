"""The one place where Definitions are assembled."""

from __future__ import annotations

import os

import dagster as dg

from . import automation
from . import sensors as _sensors
from .assets import mix, models, regenerate, sources, tokenize
from .regenerate.config import API_KEY_ENV
from .resources import SpecforgeStore, training_pipes

LAYERS = (sources, regenerate, mix, tokenize, models)


def build_definitions(store: SpecforgeStore | None = None) -> dg.Definitions:
    """The code location. Configuration that shapes the graph is read through `store` (the same
    resource the assets get), here and not when a module is imported."""
    store = store or SpecforgeStore()
    # `pipes`: torchrun's launcher, with configs/train.yaml's launch.termination_timeout_s
    resources: dict = {"store": store, "pipes": training_pipes(store)}
    for layer in LAYERS:
        resources.update(layer.resources)
    resources["regen_servers"] = regen_servers()
    defs = dg.Definitions(
        assets=[a for layer in LAYERS for a in (layer.build_assets(store) if layer is regenerate else layer.assets)],
        asset_checks=[c for layer in LAYERS for c in layer.asset_checks],
        sensors=list(_sensors.build_sensors(automation.automation_settings(store.config("automation"))).values()),
        jobs=list(_sensors.jobs),
        resources=resources,
        # Steps run in the run's own process, one after another. The graph is a chain (sources →
        # regenerated → mix → tokenized → vocab → draft → evaluation; each partition is its own
        # run), so a process per step bought no parallelism and cost 5–15 s of Python start-up
        # per step and per asset check on 2 cores (bench/RESULTS.md, "Step overhead"). Heavy
        # work already leaves the run process where it must: training through Pipes + torchrun,
        # regeneration's launched servers.
        executor=dg.in_process_executor,
    )
    # Declarative automation and config-aware code versions (automation.py) are attached here
    # so that the layer modules stay free of cross-layer policy.
    return automation.apply(defs)


def regen_servers() -> regenerate.RegenerationServers:
    """The `regen_servers` resource with the deployment's API key as a Dagster secret:
    `api_key=dg.EnvVar("SPECFORGE_REGEN_API_KEY")`, read in the run's process, so that the run
    config, the Launchpad and the UI hold the variable's name and never the key. Only when that
    variable is set here: the key is optional, and an `EnvVar` whose variable is unset fails every
    run at launch (Dagster 1.13: "You have attempted to fetch the environment variable ... which
    is not set"), regenerations that need no key included."""
    key = dg.EnvVar(API_KEY_ENV) if os.environ.get(API_KEY_ENV) else None
    return regenerate.RegenerationServers(api_key=key)


defs = build_definitions()
