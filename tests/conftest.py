"""Shared fixtures. Layer tests live in tests/<layer>/."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
# ../shared sits beside the checkout in the developers' and CI's layout; absent on a plain clone.
SHARED = Path(os.environ.get("SPECFORGE_SHARED_DIR", REPO_ROOT.parent / "shared"))


@pytest.fixture
def data_root(tmp_path, monkeypatch) -> Path:
    """A fresh data root for one test (SPECFORGE_DATA_ROOT points at it)."""
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("SPECFORGE_DATA_ROOT", str(root))
    return root


@pytest.fixture
def dagster_instance():
    import dagster as dg

    with dg.instance_for_test() as instance:
        yield instance


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test with the reason when it is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"optional fixture {p} is absent (../shared not beside this checkout)")
    return p


def pytest_collection_modifyitems(config, items):
    """Browser tests run last: they are the slowest, and Playwright's sync API keeps an event
    loop running in the main thread while its browser is open (asyncio.run() elsewhere would
    fail)."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)


@pytest.fixture
def shared():
    """`shared(*parts)`: a path under ../shared, or skip with the reason (see shared_path)."""
    return shared_path


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


class _LogCapture:
    """Log records of one sensor evaluation; `.warnings` lists the WARNING messages."""

    def __init__(self):
        import logging

        class _Handler(logging.Handler):
            def emit(inner, record):
                self.records.append((record.levelname, record.getMessage()))

        self.records: list[tuple[str, str]] = []
        self.handler = _Handler()

    @property
    def warnings(self) -> list[str]:
        return [m for lvl, m in self.records if lvl == "WARNING"]


def evaluate_sensor_tick(defs, instance, name, cursor=None):
    """One real evaluation of sensor `name` (its dynamic-partition requests applied to the
    instance, as the daemon would). Returns (tick data, captured log records)."""
    import dagster as dg
    from dagster._core.instance.types import CachingDynamicPartitionsLoader

    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs, resources=defs.resources)
    ctx.__dict__["caching_dynamic_partitions_loader"] = CachingDynamicPartitionsLoader(instance)
    cap = _LogCapture()
    ctx.log.addHandler(cap.handler)
    data = defs.get_sensor_def(name).evaluate_tick(ctx)
    for req in data.dynamic_partitions_requests or []:
        if isinstance(req, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    return data, cap


@pytest.fixture
def sensor_tick():
    """`sensor_tick(defs, instance, name, cursor=None)`: see `evaluate_sensor_tick`."""
    return evaluate_sensor_tick
