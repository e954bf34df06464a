"""The instance configs we ship (the team deployment's and the Docker / Kubernetes / Postgres
examples) pass Dagster's own validation: the instance schema (`dagster_instance_config`), then
each configurable class's config against that class's schema (the run launcher, the run
coordinator, the Postgres storage), the way `DagsterInstance` would before starting. A broken copy
of each fails, so the check can fail."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CONFIGS = {
    "deploy": REPO / "dagster_home" / "deploy" / "dagster.yaml",
    "postgres": REPO / "dagster_home" / "examples" / "dagster.postgres.yaml",
    "docker": REPO / "dagster_home" / "examples" / "dagster.docker.yaml",
    "k8s": REPO / "dagster_home" / "examples" / "dagster.k8s.yaml",
}
NEEDS = {"deploy": "dagster_postgres", "postgres": "dagster_postgres", "docker": "dagster_docker", "k8s": "dagster_k8s"}
PG_ENV = {
    "DAGSTER_PG_USERNAME": "u",
    "DAGSTER_PG_PASSWORD": "p",
    "DAGSTER_PG_HOST": "db.example",
    "DAGSTER_PG_DB": "dagster",
    "DAGSTER_PG_PORT": "5432",
}


def validate_instance_config(config: dict, base_dir: Path) -> None:
    """Raise DagsterInvalidConfigError (or AssertionError naming the section) when `config` is not a
    valid dagster.yaml."""
    from dagster._config import process_config
    from dagster._core.errors import DagsterInvalidConfigError
    from dagster._core.instance.config import dagster_instance_config

    (base_dir / "dagster.yaml").write_text(yaml.safe_dump(config))
    processed, _ = dagster_instance_config(str(base_dir))  # the instance schema; resolves {env: ...}
    sections = []
    for name in ("run_launcher", "run_coordinator", "compute_logs", "scheduler"):
        if name in config:
            sections.append((name, config[name]["module"], config[name]["class"], config[name].get("config") or {}))
    storage = config.get("storage") or {}
    if "postgres" in storage:
        sections.append(("storage.postgres", "dagster_postgres", "DagsterPostgresStorage", storage["postgres"]))
    for name, module, cls, cfg in sections:
        klass = getattr(importlib.import_module(module), cls)
        result = process_config(klass.config_type(), cfg)
        if not result.success:
            raise DagsterInvalidConfigError(f"{name} ({module}.{cls})", result.errors, cfg)
    assert processed  # non-empty: the file was read


@pytest.fixture
def pg_env(monkeypatch):
    for k, v in PG_ENV.items():
        monkeypatch.setenv(k, v)


def _load(name: str) -> dict:
    pytest.importorskip(
        NEEDS[name], reason=f"{NEEDS[name]} not installed (pip install -e '.[deploy,deploy-launchers]')"
    )
    return yaml.safe_load(CONFIGS[name].read_text())


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_shipped_instance_configs_are_valid(name, pg_env, tmp_path):
    config = _load(name)
    validate_instance_config(config, tmp_path)
    # credentials only through the environment
    pg = config["storage"]["postgres"]["postgres_db"]
    for field in ("username", "password", "hostname", "db_name"):
        assert isinstance(pg[field], dict) and set(pg[field]) == {"env"}, (name, field)


def test_deploy_instance_is_queued_with_pools_and_monitoring():
    config = _load("deploy")
    assert config["run_launcher"]["class"] == "DefaultRunLauncher"
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["run_monitoring"]["enabled"] is True
    assert config["concurrency"]["pools"]["default_limit"] == 1


@pytest.mark.parametrize(
    "name, breakage",
    [
        ("docker", lambda c: c["run_launcher"]["config"].__setitem__("env_vars", "SPECFORGE_DATA_ROOT=/data")),
        ("docker", lambda c: c["run_launcher"]["config"].__setitem__("no_such_option", 1)),
        ("k8s", lambda c: c["run_launcher"]["config"].__setitem__("job_namespace", ["specforge"])),
        ("k8s", lambda c: c["run_launcher"]["config"].__setitem__("env_vars", "SPECFORGE_DATA_ROOT=/data")),
        ("deploy", lambda c: c["storage"]["postgres"]["postgres_db"].pop("hostname")),
        ("deploy", lambda c: c["run_monitoring"].__setitem__("poll_interval_seconds", "often")),
    ],
)
def test_broken_copies_are_refused(name, breakage, pg_env, tmp_path):
    from dagster._core.errors import DagsterInvalidConfigError

    config = _load(name)
    breakage(config)
    with pytest.raises(DagsterInvalidConfigError):
        validate_instance_config(config, tmp_path)


def test_missing_env_var_is_refused(pg_env, monkeypatch, tmp_path):
    from dagster._core.errors import DagsterInvalidConfigError

    monkeypatch.delenv("DAGSTER_PG_PASSWORD")
    with pytest.raises(DagsterInvalidConfigError, match="DAGSTER_PG_PASSWORD"):
        validate_instance_config(_load("deploy"), tmp_path)
