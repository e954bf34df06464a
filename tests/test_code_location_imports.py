"""Loading the code location (`specforge_assets.definitions`) imports no heavy library that only
some steps need. Every run, the code server and every `dagster asset materialize` load it; torch
and transformers (the tokenizer, the vocab mapping, training) cost seconds to import and to tear
down at exit, the regeneration layer's HTTP clients (aiohttp, httpx) and DuckDB (the checks) about
0.4–0.6 s together (bench/RESULTS.md, "Step overhead"). A step imports what it uses when it runs.

Run in a fresh interpreter: the test process itself has imported most of these already."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Imported by some steps only; never at code-location load.
HEAVY = ("torch", "transformers", "datasets", "tokenizers", "aiohttp", "httpx", "duckdb", "matplotlib", "pyarrow")

PROBE = """
import json, sys
import dagster
by_dagster = set(sys.modules)
import specforge_assets.definitions
print(json.dumps({"ours": sorted(set(sys.modules) - by_dagster), "by_dagster": sorted(by_dagster)}))
"""


def test_loading_the_code_location_leaves_heavy_libraries_unimported():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    mods = json.loads(p.stdout.strip().splitlines()[-1])
    assert "specforge_assets.definitions" in mods["ours"]
    # Only what our modules bring in counts: if a future Dagster imports one of these itself, that
    # is not this project's import to move.
    loaded = sorted({m.split(".")[0] for m in mods["ours"]} & set(HEAVY))
    assert loaded == [], f"loading specforge_assets.definitions imports {loaded}; import them inside the step"
