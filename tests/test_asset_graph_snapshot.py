"""Snapshot of the whole asset graph: a renamed key, a lost dependency, a moved group or a
dropped check shows up here instead of silently orphaning history in the instance.

Regenerate after an intended change: UPDATE_SNAPSHOT=1 pytest tests/test_asset_graph_snapshot.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

SNAPSHOT = Path(__file__).parent / "fixtures" / "asset_graph.json"
SHIPPED_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def shipped_definitions():
    """The definitions built from the shipped configs/, fresh: not the module-level `defs`, which
    a test that imported it first under its own SPECFORGE_CONFIG_DIR may have built from another
    config (the graph's deps follow configs/regenerate.yaml)."""
    from specforge_assets.definitions import build_definitions
    from specforge_assets.resources import SpecforgeStore

    return build_definitions(SpecforgeStore(config_dir=str(SHIPPED_CONFIGS)))


def graph_snapshot() -> dict:
    defs = shipped_definitions()
    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.materializable_asset_keys, key=lambda k: k.to_user_string()):
        node = graph.get(key)
        pdef = node.partitions_def
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "partitions": None if pdef is None else f"{type(pdef).__name__}:{getattr(pdef, 'name', '')}",
            "checks": sorted(c.name for c in node.check_keys),
            "has_code_version": node.code_version is not None,
        }
    return {
        "assets": assets,
        "sensors": sorted(s.name for s in defs.sensors or []),
        "jobs": sorted(j.name for j in defs.jobs or []),
    }


def test_asset_graph_matches_snapshot():
    snap = graph_snapshot()
    if os.environ.get("UPDATE_SNAPSHOT") or not SNAPSHOT.exists():
        SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
        SNAPSHOT.write_text(json.dumps(snap, indent=2, sort_keys=True) + "\n")
    expected = json.loads(SNAPSHOT.read_text())
    assert snap == expected, "asset graph changed: review, then UPDATE_SNAPSHOT=1 to accept"


def test_every_asset_documented_and_versioned():
    defs = shipped_definitions()
    graph = defs.resolve_asset_graph()
    for key in graph.materializable_asset_keys:
        node = graph.get(key)
        assert node.description, f"{key.to_user_string()} has no docstring"
        assert node.code_version, f"{key.to_user_string()} has no code_version"
