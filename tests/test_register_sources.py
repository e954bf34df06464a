"""`specforge-assets register-sources` makes `dagster asset materialize --partition KEY` work on a
fresh instance (configured sources and incoming files become partitions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_register_then_materialize_from_the_command_line(tmp_path):
    home, root = tmp_path / "home", tmp_path / "data"
    (root / "incoming").mkdir(parents=True)
    home.mkdir()
    (root / "incoming" / "drop1.jsonl").write_text(
        json.dumps(
            {"id": "a", "conversations": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
        )
        + "\n"
    )
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "SPECFORGE_DATA_ROOT": str(root),
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "HF_HUB_OFFLINE": "1",
    }
    reg = subprocess.run([str(BIN / "specforge-assets"), "register-sources"], env=env, capture_output=True, text=True)
    assert reg.returncode == 0, reg.stderr
    assert "sample-custom" in reg.stdout and "drop1" in reg.stdout
    again = subprocess.run([str(BIN / "specforge-assets"), "register-sources"], env=env, capture_output=True, text=True)
    assert again.stdout.startswith("registered 0 new source partition(s)")
    for key in ("sample-custom", "drop1"):
        r = subprocess.run(
            [
                str(BIN / "dagster"),
                "asset",
                "materialize",
                "-m",
                "specforge_assets.definitions",
                "--select",
                "sources/conversations",
                "--partition",
                key,
            ],
            env=env,
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        assert (root / "sources" / key / "manifest.json").exists()
