"""The whole demo graph with the data root on S3 (a real S3 API: moto's server), then a second
machine-like process (another DAGSTER_HOME, working dir and working copy) reads what it made."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

# Tiny settings over the repo's configs (as tests/e2e), so the graph runs in minutes on 2 cores.
SOURCES = {
    "sample-ultrachat": {"preset": "ultrachat", "data_path": "sample:ultrachat", "sample_size": 30},
    "sample-custom": {"format": "auto", "data_path": "sample:custom/conversations.jsonl", "quarantine_threshold": 0.5},
}
OVERRIDES = {
    "regenerate": {"sources": {}},
    "train": {
        "training": {"max_steps": 4, "batch_size": 2, "max_length": 64, "save_every": 2},
        "evaluation": {"num_prompts": 2, "max_new_tokens": 6, "evaluate_previous": False},
        "demo_target": {"pretrain_steps": 4, "hidden_size": 32, "vocab_size": 512},
    },
    "tokenize": {"max_length": 128},
    "mix": {"eval": {"min_rows": 4, "fraction": 0.1}},
}


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and v else v
    return out


def _tiny_configs(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for f in (REPO / "configs").glob("*.yaml"):
        cfg = yaml.safe_load(f.read_text()) or {}
        if f.stem == "sources":
            cfg["sources"] = SOURCES
        cfg = _merge(cfg, OVERRIDES.get(f.stem, {}))
        (dest / f.name).write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dest


def _machine(tmp_path: Path, name: str, url: str, configs: Path) -> tuple[dict, Path]:
    """(environment, working dir) of one machine: its own DAGSTER_HOME, cwd and working copy."""
    base = tmp_path / name
    (base / "home").mkdir(parents=True)
    (base / "work").mkdir()
    env = {
        **os.environ,
        "SPECFORGE_DATA_ROOT": url,
        "SPECFORGE_CONFIG_DIR": str(configs),
        "SPECFORGE_DATA_CACHE": str(base / "cache"),
        "DAGSTER_HOME": str(base / "home"),
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    return env, base / "work"


READER = textwrap.dedent(
    """
    import json
    import duckdb
    from specforge_assets import storage
    from specforge_assets.resources import SpecforgeStore

    store = SpecforgeStore()
    root = store.root()  # pulls what the other machine published
    ds = store.layer_dir("tokenized", "dataset")
    man = json.loads((ds / "manifest.json").read_text())
    shards = sorted(str(p) for p in ds.glob("*.parquet"))
    rows_local = duckdb.sql(f"SELECT count(*) FROM read_parquet({shards!r})").fetchall()[0][0]
    # DuckDB reading the committed objects on the store itself, through fsspec
    remote, rel = storage.remote_of(ds)
    objs = [remote.object_url(rel, p.rsplit("/", 1)[-1]) for p in shards]
    con = storage.duckdb_connect(remote.url)
    rows_remote = con.sql(f"SELECT count(*) FROM read_parquet({objs!r})").fetchall()[0][0]
    draft = json.loads((store.layer_dir("models", "draft_model") / "manifest.json").read_text())
    report = json.loads((store.layer_dir("models", "draft_evaluation") / "report.json").read_text())
    print("RESULT " + json.dumps({
        "root": str(root), "dataset_version": man["data_version"], "rows": man["stats"]["rows"],
        "rows_local": rows_local, "rows_remote": rows_remote, "draft_version": draft.get("data_version"),
        "acceptance_length": report["acceptance_length"],
    }))
    """
)


@pytest.mark.slow
@pytest.mark.server
def test_the_demo_graph_on_s3_and_a_second_machine_reads_it(s3_env, tmp_path):
    import dagster as dg

    url = f"s3://{s3_env}/team/specforge"
    configs = _tiny_configs(tmp_path / "configs")
    env_a, cwd_a = _machine(tmp_path, "a", url, configs)
    a = subprocess.run(
        [sys.executable, "-m", "specforge_assets.cli", "demo"],
        cwd=cwd_a,
        env=env_a,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert a.returncode == 0, (a.stdout + a.stderr)[-6000:]
    assert "testing-secret" not in a.stdout + a.stderr

    from specforge_assets import storage
    from specforge_assets.tags import DATA_VERSION_TAG

    published = storage.Remote(url).published_folders()
    for rel in (
        "sources/sample-ultrachat",
        "regenerated/sample-custom",
        "mix",
        "tokenized/dataset",
        "tokenized/vocab_mapping",
        "models/target_model",
        "models/draft_model",
        "models/draft_evaluation",
    ):
        assert rel in published, sorted(published)
    assert any(r.startswith("versions/tokenized_dataset/") for r in published)

    env_b, cwd_b = _machine(tmp_path, "b", url, configs)
    b = subprocess.run(
        [sys.executable, "-c", READER], cwd=cwd_b, env=env_b, capture_output=True, text=True, timeout=600
    )
    assert b.returncode == 0, (b.stdout + b.stderr)[-6000:]
    got = json.loads(next(line for line in b.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert got["root"].startswith(str(tmp_path / "b" / "cache"))
    assert got["rows"] > 0 and got["rows_local"] == got["rows_remote"] == got["rows"]
    hidden = [p for p in storage.Remote(url).fs.find(storage.Remote(url).base) if "/." in p]
    assert not hidden, hidden  # machine A's scratch (hidden names) never left it

    # what machine B read is what machine A's Dagster recorded
    with dg.DagsterInstance.from_config(str(tmp_path / "a" / "home")) as inst:

        def version(key):
            ev = inst.get_latest_materialization_event(dg.AssetKey(key.split("/")))
            return ev.asset_materialization.tags.get(DATA_VERSION_TAG)

        assert version("tokenized/dataset") == got["dataset_version"]
        assert version("models/draft_model") == got["draft_version"]
