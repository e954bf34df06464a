"""Fixtures for the platform tests (sensors, automation, lineage) on the toy graph."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))

from toy_graph import build_toy_defs  # noqa: E402

from specforge_assets.automation import automation_settings  # noqa: E402

# the sensors' settings of the toy fixture: the defaults with no settle delay (files are written at once)
NO_SETTLE = {"sensors": {"incoming_files": {"settle_seconds": 0}}}


@pytest.fixture
def toy(tmp_path, data_root, monkeypatch):
    """(defs, root, config_dir) for the toy graph; two configured sources `alpha`, `beta`;
    sensor settings with no settle delay; incoming = <root>/incoming."""
    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    (config_dir / "sources.yaml").write_text(
        yaml.safe_dump(
            {
                "sources": {
                    "alpha": {"rows": [{"id": "a1", "text": "alpha one"}]},
                    "beta": {"rows": [{"id": "b1", "text": "beta one"}]},
                }
            }
        )
    )
    monkeypatch.setenv("SPECFORGE_CONFIG_DIR", str(config_dir))
    (data_root / "incoming").mkdir()
    return build_toy_defs(data_root, config_dir, settings=automation_settings(NO_SETTLE)), data_root, config_dir
