"""Crash a training run at a given optimizer step, for the crash-resume tests.

`kill_at_step(n)` arms `killhook_site/sitecustomize.py` for every process started inside the
`with` block (the Dagster Pipes client and torchrun pass the environment on): rank 0 of
`specforge_assets.train.entry` exits hard (`os._exit(17)`, no cleanup) right after the metrics of
optimizer step `n` are reported, i.e. after that step's checkpoint (if it saves one) is written.
The package itself carries no such hook.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

SITE_DIR = Path(__file__).resolve().parent / "killhook_site"
KILL_AT_STEP_ENV = "SPECFORGE_TEST_KILL_AT_STEP"  # the name killhook_site/sitecustomize.py reads
EXIT_CODE = 17


@contextlib.contextmanager
def kill_at_step(step: int) -> Iterator[None]:
    """Within the block, training processes started from this one exit with code 17 at optimizer
    step `step` (>= 1). Sets SPECFORGE_TEST_KILL_AT_STEP and puts `killhook_site/` first on
    PYTHONPATH (any entries already there stay, after it); both are restored on exit, so a later
    launch trains normally. ValueError for step < 1."""
    if step < 1:
        raise ValueError(f"kill_at_step: step must be >= 1, got {step}")
    saved = {k: os.environ.get(k) for k in (KILL_AT_STEP_ENV, "PYTHONPATH")}
    os.environ[KILL_AT_STEP_ENV] = str(step)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(SITE_DIR), saved["PYTHONPATH"]) if p)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
