"""Test-only: a training rank exits hard at a given optimizer step (armed by `tests.helpers.killhook`).

Python imports `sitecustomize` at start-up from the first `sys.path` entry that has one. The
crash-resume tests put this folder first on PYTHONPATH for the processes they launch (the torchrun
agent and its ranks inherit it) and set SPECFORGE_TEST_KILL_AT_STEP=N. Then, when
`specforge_assets.train.loop` is imported, its `train_draft` is wrapped so that the per-step
metrics callback (called by rank 0 once per optimizer step, after that step's checkpoint, if any,
was written) ends the process with `os._exit(17)` (no cleanup, like a killed rank) at the first
step >= N. The step decides, never a clock.

Without the variable this module only runs the `sitecustomize` it shadows (if any), so a process
with this folder on PYTHONPATH behaves exactly as without it. Self-contained (standard library
only): the launched processes need not have `tests/` importable.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys

KILL_AT_STEP_ENV = "SPECFORGE_TEST_KILL_AT_STEP"
TARGET_MODULE = "specforge_assets.train.loop"
EXIT_CODE = 17


def _wrap_train_draft(module, kill_at: int) -> None:
    original = module.train_draft

    @functools.wraps(original)
    def train_draft(*args, metrics_cb=None, **kwargs):
        def killing_cb(step: int, metrics: dict) -> None:
            if metrics_cb is not None:
                metrics_cb(step, metrics)
            if step >= kill_at:
                rank = os.environ.get("RANK", "?")
                print(f"[rank {rank}] {KILL_AT_STEP_ENV}={kill_at}: exiting hard at step {step}", flush=True)
                os._exit(EXIT_CODE)

        return original(*args, metrics_cb=killing_cb, **kwargs)

    module.train_draft = train_draft


class _WrapOnImport(importlib.abc.MetaPathFinder):
    """Finds TARGET_MODULE through the other finders, and wraps `train_draft` once it executed."""

    def __init__(self, kill_at: int):
        self.kill_at = kill_at

    def find_spec(self, fullname, path, target=None):
        if fullname != TARGET_MODULE:
            return None
        sys.meta_path.remove(self)  # one module, once; the other finders resolve it
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module
        kill_at = self.kill_at

        def exec_and_wrap(module) -> None:
            exec_module(module)
            _wrap_train_draft(module, kill_at)

        spec.loader.exec_module = exec_and_wrap  # type: ignore[method-assign]
        return spec


def _run_shadowed_sitecustomize() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


_kill_at = os.environ.get(KILL_AT_STEP_ENV, "")
if _kill_at:
    sys.meta_path.insert(0, _WrapOnImport(int(_kill_at)))
_run_shadowed_sitecustomize()
