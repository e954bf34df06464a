"""The one place where Definitions are assembled."""

from __future__ import annotations

import dagster as dg

from . import automation
from . import sensors as _sensors
from .assets import mix, models, regenerate, sources, tokenize
from .resources import SpecforgeStore, training_pipes

LAYERS = (sources, regenerate, mix, tokenize, models)


def build_definitions(store: SpecforgeStore | None = None) -> dg.Definitions:
    """The code location. Configuration that shapes the graph is read through `store` (the same
    resource the assets get), here and not when a module is imported."""
    store = store or SpecforgeStore()
    own = dg.Definitions(
        sensors=list(_sensors.build_sensors(automation.automation_settings(store.config("automation"))).values()),
        jobs=list(_sensors.jobs),
        # `pipes`: torchrun's launcher, with configs/train.yaml's launch.termination_timeout_s
        resources={"store": store, "pipes": training_pipes(store)},
        # Steps run in the run's own process, one after another. The graph is a chain (sources →
        # regenerated → mix → tokenized → vocab → draft → evaluation; each partition is its own
        # run), so a process per step bought no parallelism and cost 5–15 s of Python start-up
        # per step and per asset check on 2 cores (bench/RESULTS.md, "Step overhead"). Heavy
        # work already leaves the run process where it must: training through Pipes + torchrun,
        # regeneration's launched servers.
        executor=dg.in_process_executor,
    )
    defs = dg.Definitions.merge(*(layer.definitions(store) for layer in LAYERS), own)
    # Declarative automation and config-aware code versions (automation.py) are attached here
    # so that the layer modules stay free of cross-layer policy.
    return automation.apply(defs)


defs = build_definitions()
