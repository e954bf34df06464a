"""The one place where Definitions are assembled."""
from __future__ import annotations

import warnings

import dagster as dg

from . import automation
from . import sensors as _sensors
from .assets import mix, models, regenerate, sources, tokenize
from .resources import SpecforgeStore

LAYERS = (sources, regenerate, mix, tokenize, models)


def build_definitions() -> dg.Definitions:
    resources: dict = {"store": SpecforgeStore()}
    for layer in LAYERS:
        resources.update(layer.resources)
    defs = dg.Definitions(
        assets=[a for layer in LAYERS for a in layer.assets],
        asset_checks=[c for layer in LAYERS for c in layer.asset_checks],
        sensors=list(_sensors.sensors),
        jobs=list(_sensors.jobs),
        resources=resources,
    )
    # Declarative automation (automation.py) is attached here so that the layer modules stay
    # free of cross-layer policy.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)  # map_asset_specs is "preview" in 1.13
        return defs.map_asset_specs(func=automation.with_automation)


defs = build_definitions()
