"""Object-store data root vs local disk: sources → tokenized (results: bench/RESULTS.md,
section `## Data root on object storage`).

The same Dagster materializations (`demo.materialize_selection`, checks included) of
`sources/conversations` + `regenerated/conversations` (regeneration off: pass-through) for one
source partition, then `mix/training_mix` + `tokenized/dataset`, on N generated conversations,
once with `SPECFORGE_DATA_ROOT` a local folder and once an `s3://` URL served by moto's S3
server (a real S3 API over HTTP on 127.0.0.1, in this parent process; the work runs in a child
process with a fresh working copy). The demo target (tiny build, not timed) is materialized
first in both. Each mode in a fresh data root, Dagster instance and process.

    .venv/bin/python bench/bench_object_store.py [--rows 200000] [--out bench/results/object_store.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
WORDS = (
    "the a model token data server batch check source draft target answer question number "
    "apple book code list value python function return sum count river city color green blue"
).split()


def gen_conversations(path: Path, n: int, seed: int = 1) -> None:
    rng = random.Random(seed)

    def text(lo, hi):
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))).capitalize() + "."

    with open(path, "w") as f:
        for i in range(n):
            conv = []
            for _ in range(rng.randint(1, 3)):
                conv += [{"role": "user", "content": text(5, 40)}, {"role": "assistant", "content": text(10, 120)}]
            f.write(json.dumps({"id": f"c{i}", "conversations": conv}) + "\n")


def write_configs(dest: Path, data: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    over = {
        "sources": {"sources": {"bench": {"format": "auto", "data_path": str(data)}}},
        "regenerate": {"sources": {}},
        "train": {"demo_target": {"pretrain_steps": 4, "hidden_size": 32, "vocab_size": 512}},
    }
    for f in (REPO / "configs").glob("*.yaml"):
        cfg = yaml.safe_load(f.read_text()) or {}
        for k, v in over.get(f.stem, {}).items():
            cfg[k] = {**cfg[k], **v} if isinstance(v, dict) and isinstance(cfg.get(k), dict) and k != "sources" else v
        (dest / f.name).write_text(yaml.safe_dump(cfg, sort_keys=False))


def child() -> None:
    """Runs in the child: materialize and time; prints one JSON line."""
    import dagster as dg

    sys.path.insert(0, str(REPO))
    from specforge_assets.demo import materialize_selection
    from specforge_assets.partitions import sync_source_partitions
    from specforge_assets.tags import DATA_VERSION_TAG

    from specforge_assets import storage

    # time spent in the store's I/O (uploads incl. hashing, syncs incl. listing and pulls)
    spent = {"publish_s": 0.0, "sync_s": 0.0, "bytes_published": 0, "folders_published": 0}

    def timed(fn, key):
        def wrapper(*a, **kw):
            t = time.perf_counter()
            try:
                r = fn(*a, **kw)
            finally:
                spent[key] += time.perf_counter() - t
            if key == "publish_s" and r:
                spent["folders_published"] += 1
                spent["bytes_published"] += sum(f["size"] for f in r["files"].values())
            return r

        return wrapper

    storage.Remote.publish = timed(storage.Remote.publish, "publish_s")
    storage.sync = timed(storage.sync, "sync_s")
    K = dg.AssetKey
    inst = dg.DagsterInstance.get()
    sync_source_partitions(inst, ["bench"])
    assert materialize_selection(inst, [K(["models", "target_model"])], trigger="bench")
    out = {}
    for k in spent:  # the target build above is not counted
        spent[k] = type(spent[k])()
    t0 = time.perf_counter()
    assert materialize_selection(
        inst, [K(["sources", "conversations"]), K(["regenerated", "conversations"])], "bench", trigger="bench"
    )
    out["sources+regenerated_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    assert materialize_selection(inst, [K(["mix", "training_mix"]), K(["tokenized", "dataset"])], trigger="bench")
    out["mix+tokenized_s"] = time.perf_counter() - t1
    out["total_s"] = time.perf_counter() - t0
    ev = inst.get_latest_materialization_event(K(["tokenized", "dataset"]))
    out["tokenized_version"] = ev.asset_materialization.tags.get(DATA_VERSION_TAG)
    out["store_io"] = spent
    print("RESULT " + json.dumps(out), flush=True)


def run_mode(mode: str, base: Path, configs: Path, s3_url: str | None) -> dict:
    work = base / mode
    (work / "home").mkdir(parents=True)
    env = {
        **os.environ,
        "SPECFORGE_CONFIG_DIR": str(configs),
        "DAGSTER_HOME": str(work / "home"),
        "SPECFORGE_DATA_ROOT": s3_url if mode == "s3" else str(work / "data"),
        "SPECFORGE_DATA_CACHE": str(work / "cache"),
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "PYTHONPATH": os.pathsep.join(p for p in [str(REPO), os.environ.get("PYTHONPATH", "")] if p),
    }
    p = subprocess.run([sys.executable, __file__, "--child"], env=env, cwd=work, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{(p.stdout + p.stderr)[-4000:]}")
    return json.loads(next(x for x in p.stdout.splitlines() if x.startswith("RESULT "))[7:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "object_store.json"))
    a = ap.parse_args()
    if a.child:
        return child()
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    base = Path(tempfile.mkdtemp(prefix="specforge-bench-s3-"))
    data = base / "conversations.jsonl"
    gen_conversations(data, a.rows)
    input_bytes = data.stat().st_size
    configs = base / "configs"
    write_configs(configs, data)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
    )
    boto3.client("s3").create_bucket(Bucket="bench")
    load0 = os.getloadavg()
    try:
        local = run_mode("local", base, configs, None)
        s3 = run_mode("s3", base, configs, "s3://bench/specforge")
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    res = {
        "rows": a.rows,
        "input_bytes": input_bytes,
        "local": local,
        "s3_moto": s3,
        "ratio_total_s3_over_local": s3["total_s"] / local["total_s"],
        "same_tokenized_version": local["tokenized_version"] == s3["tokenized_version"],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "loadavg_before_after": [list(load0), list(os.getloadavg())],
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
