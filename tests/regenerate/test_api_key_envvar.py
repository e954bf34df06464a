"""The deployment's API key reaches the regeneration servers through Dagster's `EnvVar` (the
`regen_servers` resource built by definitions.py), through a real materialization against a stub
server that requires the key; the key is in no run config, event, metadata or output file; no key
still works; a source naming its own `api_key_env` uses that variable (a server with its own key)."""

from __future__ import annotations

import json

import dagster as dg
import yaml

from specforge_assets.assets import regenerate as layer
from specforge_assets.assets.regenerate import regen_servers
from specforge_assets.definitions import build_definitions
from specforge_assets.regenerate.config import API_KEY_ENV
from specforge_assets.resources import SpecforgeStore

from .conftest import make_rows, read_jsonl, write_rows

SECRET = "sk-envvar-SECRET-0987654321"
OTHER = "sk-other-server-KEY-1122334455"


def _setup(tmp_path, source: dict) -> tuple[SpecforgeStore, object]:
    root, configs = tmp_path / "data", tmp_path / "configs"
    configs.mkdir(parents=True)
    (configs / "regenerate.yaml").write_text(yaml.safe_dump({"sources": {"k": {"enabled": True, **source}}}))
    write_rows(root / "sources" / "k" / "train.jsonl", make_rows(6))
    return SpecforgeStore(data_root=str(root), config_dir=str(configs)), root / "regenerated" / "k"


def _materialize(store, instance, resource) -> dg.ExecuteInProcessResult:
    instance.add_dynamic_partitions("sources", ["k"])
    return dg.materialize(
        layer.build_assets(store),
        instance=instance,
        resources={"store": store, "regen_servers": resource},
        partition_key="k",
        raise_on_error=False,
    )


def _everything_dagster_kept(instance, run_id: str) -> str:
    run = instance.get_run_by_id(run_id)
    events = instance.all_logs(run_id)
    return json.dumps(run.run_config, default=str) + "".join(dg.serialize_value(e) for e in events)


def test_the_key_travels_as_an_envvar_and_is_never_kept(tmp_path, monkeypatch, stub_server, dagster_instance):
    s = stub_server(api_key=SECRET)
    store, out = _setup(tmp_path, {"server_addresses": [s.address], "model": "stub-model"})
    monkeypatch.setenv(API_KEY_ENV, SECRET)
    defs = build_definitions(store)  # the code location, as `dagster dev` loads it
    resource = defs.resources["regen_servers"]
    assert isinstance(resource.api_key, dg.EnvVar)  # the resource holds the name, not the key
    # what the UI shows of the code location (resources tab included): the variable's name only
    from dagster._core.remote_representation.external_data import RepositorySnap

    snap = RepositorySnap.from_def(defs.get_repository_def())
    (res,) = [r for r in snap.resources if r.name == "regen_servers"]
    assert getattr(res.configured_values["api_key"], "name", None) == API_KEY_ENV
    assert SECRET not in dg.serialize_value(snap)
    r = _materialize(store, dagster_instance, resource)
    assert r.success
    assert [row["status"] for row in read_jsonl(out / "train.jsonl")] == ["success"] * 6
    assert SECRET not in json.dumps(dagster_instance.get_run_by_id(r.run_id).run_config)
    assert SECRET not in _everything_dagster_kept(dagster_instance, r.run_id)  # logs, metadata, checks
    for p in out.iterdir():  # outputs, manifest, journal
        assert SECRET not in p.read_bytes().decode("utf-8", "replace")


def test_no_key_still_works_and_a_missing_key_is_a_clear_failure(tmp_path, monkeypatch, stub_server, dagster_instance):
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    assert regen_servers().api_key is None  # no EnvVar for an unset variable: runs still launch
    open_server = stub_server()
    store, out = _setup(tmp_path, {"server_addresses": [open_server.address], "model": "stub-model"})
    r = _materialize(store, dagster_instance, regen_servers())
    assert r.success and len(read_jsonl(out / "train.jsonl")) == 6
    locked = stub_server(api_key=SECRET)
    store, _ = _setup(tmp_path / "b", {"server_addresses": [locked.address], "model": "stub-model"})
    with dg.instance_for_test() as instance:
        r = _materialize(store, instance, regen_servers())
        assert not r.success
        failure = next(e for e in r.all_events if e.event_type_value == "STEP_FAILURE")
        assert "HTTP 401" in failure.event_specific_data.error.message


def test_a_source_with_its_own_key_variable_uses_it(tmp_path, monkeypatch, stub_server, dagster_instance):
    """`api_key_env: NAME` in configs/regenerate.yaml: this source's servers get $NAME, not the
    deployment's key (two gateways with two keys)."""
    s = stub_server(api_key=OTHER)
    store, out = _setup(
        tmp_path, {"server_addresses": [s.address], "model": "stub-model", "api_key_env": "GATEWAY_B_KEY"}
    )
    monkeypatch.setenv(API_KEY_ENV, SECRET)
    monkeypatch.setenv("GATEWAY_B_KEY", OTHER)
    r = _materialize(store, dagster_instance, regen_servers())
    assert r.success and len(read_jsonl(out / "train.jsonl")) == 6
    assert OTHER not in _everything_dagster_kept(dagster_instance, r.run_id)
