"""The team setup of the README's "Running as a team", whole: the PostgreSQL deployment
(`scripts/deploy.sh up`: code server, daemon, webserver, a process per run) with the data root
on object storage (a real S3 API: moto's server on 127.0.0.1). A backfill of both source
partitions launched over GraphQL runs in run workers that keep only a local working copy; a
second machine-like process (another working copy, no Dagster instance) reads what they
published from the store, with the data versions Dagster recorded in PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_deploy import (  # noqa: E402  (tests/deploy/test_deploy.py: the deployment helpers)
    BACKFILL_STATUS,
    JOB,
    KEYS,
    LAUNCH_BACKFILL,
    SCRIPT,
    _add_partitions,
    _graphql,
    _pg,
    _pg_available,
    _read_env,
    _write_configs,
    conversations,
)

pytestmark = [pytest.mark.slow, pytest.mark.server]

ROWS_PER_KEY = 20

READER = textwrap.dedent(
    """
    import json, sys
    from specforge_assets.resources import SpecforgeStore

    store = SpecforgeStore()
    out = {"root": str(store.root())}  # pulls what the deployment's run workers published
    for key in sys.argv[1:]:
        d = store.layer_dir("regenerated", key)
        man = json.loads((d / "manifest.json").read_text())
        rows = sum(1 for line in (d / "train.jsonl").open() if line.strip())
        out[key] = {"data_version": man.get("data_version"), "rows": rows}
    print("RESULT " + json.dumps(out))
    """
)


def test_backfill_on_the_deployment_with_the_data_root_on_s3(s3_env, tmp_path):
    why = _pg_available()
    if why:
        pytest.skip(why)
    url = f"s3://{s3_env}/team"
    files, config_dir = tmp_path / "files", tmp_path / "configs"
    files.mkdir()
    rows = conversations(ROWS_PER_KEY * len(KEYS))
    for i, k in enumerate(KEYS):
        (files / f"{k}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows[i * ROWS_PER_KEY : (i + 1) * ROWS_PER_KEY])
        )
    _write_configs(config_dir, files)
    env = {
        **os.environ,  # the AWS_* variables of s3_env: credentials and endpoint, as a user sets them
        "PYTHON": sys.executable,
        "SPECFORGE_DATA_ROOT": url,
        "SPECFORGE_CONFIG_DIR": str(config_dir),
        "SPECFORGE_DATA_CACHE": str(tmp_path / "deploy-cache"),
        "HF_HUB_OFFLINE": "1",
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "PYTHONPATH": os.pathsep.join(p for p in [str(REPO), os.environ.get("PYTHONPATH", "")] if p),
    }
    env.pop("DAGSTER_HOME", None)
    up = subprocess.run(["bash", str(SCRIPT), "up"], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    state = Path(up.stdout.strip().splitlines()[-1]) if up.stdout.strip() else None
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        denv = _read_env(state / "env")
        web = denv["SPECFORGE_DEPLOY_URL"]
        _add_partitions(web)
        repo = {"repositoryLocationName": "specforge", "repositoryName": "__repository__"}
        out = _graphql(
            web,
            LAUNCH_BACKFILL,
            {
                "params": {
                    "selector": {"partitionSetName": f"{JOB}_partition_set", "repositorySelector": repo},
                    "partitionNames": KEYS,
                }
            },
        )["launchPartitionBackfill"]
        assert out["__typename"] == "LaunchBackfillSuccess", out
        backfill = out["backfillId"]
        deadline = time.time() + 600
        status = None
        while time.time() < deadline:
            status = _graphql(web, BACKFILL_STATUS, {"id": backfill})["partitionBackfillOrError"]["status"]
            if status in ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"):
                break
            time.sleep(3)
        with _pg(denv) as conn, conn.cursor() as cur:
            cur.execute(
                "select r.status, p.value from runs r "
                "join run_tags b on b.run_id = r.run_id and b.key = 'dagster/backfill' and b.value = %s "
                "join run_tags p on p.run_id = r.run_id and p.key = 'dagster/partition'",
                (backfill,),
            )
            runs = cur.fetchall()
        logs = "\n".join((state / "logs" / f"{n}.log").read_text()[-2000:] for n in ("daemon", "code-server"))
        assert sorted(runs) == [("SUCCESS", k) for k in sorted(KEYS)], f"backfill {status}: {runs}\n{logs}"

        # the data versions Dagster recorded (PostgreSQL) for each partition's regenerated asset
        recorded = {}
        for k in KEYS:
            q = """query($k: AssetKeyInput!, $p: [String!]) { assetOrError(assetKey: $k) { ... on Asset {
                     assetMaterializations(partitions: $p, limit: 1) { tags { key value } } } } }"""
            mats = _graphql(web, q, {"k": {"path": ["regenerated", "conversations"]}, "p": [k]})["assetOrError"]
            tags = {t["key"]: t["value"] for t in mats["assetMaterializations"][0]["tags"]}
            recorded[k] = tags["dagster/data_version"]

        # nothing of the data on the deployment's machine outside its working copy: the store has it
        import s3fs

        fs = s3fs.S3FileSystem()
        published = [p for p in fs.find(f"{s3_env}/team") if p.endswith("_published.json")]
        for k in KEYS:
            assert any(f"/regenerated/{k}/_published.json" in p for p in published), published

        # a second machine: another working copy, no Dagster instance, the same store
        other = {**env, "SPECFORGE_DATA_CACHE": str(tmp_path / "other-cache")}
        r = subprocess.run(
            [sys.executable, "-c", READER, *KEYS], cwd=tmp_path, env=other, capture_output=True, text=True, timeout=300
        )
        assert r.returncode == 0, r.stderr[-3000:]
        got = json.loads(next(line for line in r.stdout.splitlines() if line.startswith("RESULT "))[7:])
        assert got["root"].startswith(str(tmp_path / "other-cache"))
        for k in KEYS:
            assert got[k]["rows"] == ROWS_PER_KEY, got
            # the asset records the first 32 hex digits of the manifest's sha256 as its data version
            assert len(recorded[k]) >= 16 and got[k]["data_version"].startswith(recorded[k]), (got, recorded)
    finally:
        if state is not None and (state / "env").exists():
            subprocess.run(["bash", str(SCRIPT), "down", str(state)], env=env, timeout=300, check=False)
