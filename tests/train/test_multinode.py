"""Multi-node training: launch.nnodes / node_rank / rdzv_endpoint / rdzv_id reach torchrun (c10d
rendezvous), validated with one-line errors; and two CPU "nodes" for real: two torchrun launchers
on this host (gloo, one process each), node 0 = the draft_model asset's own Pipes launch, node 1 =
`specforge-assets train --node-rank 1`. Only rank 0 (node 0's process) reports to Dagster and
publishes; both ranks train the same steps; the published draft loads."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.corpus import conversations  # noqa: E402
from models.test_assets import TINY_TRAIN, _seed_upstream, _write_configs  # noqa: E402

from specforge_assets.errors import user_message  # noqa: E402
from specforge_assets.train.launch import join_command, prepare_launch, torchrun_command  # noqa: E402
from specforge_assets.train.settings import train_settings  # noqa: E402
from specforge_assets.train.errors import TrainInputError  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(**kw) -> dict:
    return train_settings({"launch": kw})["launch"]


def test_one_node_command_is_unchanged():
    cmd = torchrun_command("/w/launch.json", 2, _launch())
    assert "--standalone" in cmd and "--nproc_per_node=2" in cmd
    assert not any(a.startswith(("--rdzv", "--nnodes")) for a in cmd)
    assert cmd[-2:] == ["--spec", "/w/launch.json"]


def test_nodes_and_rendezvous_reach_torchrun():
    launch = _launch(nnodes=3, node_rank=0, rdzv_endpoint="node0.example:29400", rdzv_id="run-7", nproc_per_node=4)
    cmd = torchrun_command("/w/launch.json", 4, launch)
    head = cmd[: cmd.index("-m", 3)]
    assert "--standalone" not in cmd
    assert {
        "--nnodes=3",
        "--rdzv_backend=c10d",
        "--rdzv_endpoint=node0.example:29400",
        "--rdzv_id=run-7",
        "--nproc_per_node=4",
    } <= set(head)
    # torchrun ignores --node_rank under c10d; the entry gets it (and the spec, on node 0)
    entry = cmd[cmd.index("specforge_assets.train.entry") + 1 :]
    assert entry == ["--spec", "/w/launch.json", "--nnodes", "3", "--node-rank", "0"]
    joiner = join_command({**launch, "node_rank": 2})
    assert "--rdzv_endpoint=node0.example:29400" in joiner and "--rdzv_id=run-7" in joiner
    assert joiner[joiner.index("specforge_assets.train.entry") + 1 :] == ["--nnodes", "3", "--node-rank", "2"]


@pytest.mark.parametrize(
    "launch, field",
    [
        ({"nnodes": 0}, "launch.nnodes"),
        ({"nnodes": "2"}, "launch.nnodes"),
        ({"nnodes": 2}, "launch.rdzv_endpoint"),
        ({"nnodes": 2, "rdzv_endpoint": "node0"}, "launch.rdzv_endpoint"),
        ({"nnodes": 2, "rdzv_endpoint": "node0:70000"}, "launch.rdzv_endpoint"),
        ({"nnodes": 2, "rdzv_endpoint": "node0:29400", "node_rank": 2}, "launch.node_rank"),
        ({"nnodes": 2, "rdzv_endpoint": "node0:29400", "node_rank": -1}, "launch.node_rank"),
        ({"node_rank": 1}, "launch.node_rank"),
        ({"nnodes": 2, "rdzv_endpoint": "node0:29400", "rdzv_id": "a b"}, "launch.rdzv_id"),
    ],
)
def test_bad_node_settings_are_one_line_errors(launch, field):
    with pytest.raises(TrainInputError) as ei:
        train_settings({"launch": launch})
    msg = user_message(ei.value)
    assert msg is not None and field in msg and "\n" not in msg


def test_ipv6_endpoint_accepted():
    assert _launch(nnodes=2, rdzv_endpoint="[::1]:29400")["rdzv_endpoint"] == "[::1]:29400"


def test_only_node_0_prepares_a_run(tmp_path):
    settings = train_settings({"launch": {"nnodes": 2, "node_rank": 1, "rdzv_endpoint": "h:1"}})
    with pytest.raises(TrainInputError, match="only node 0 prepares") as ei:
        prepare_launch(
            root=tmp_path,
            settings=settings,
            target_path=tmp_path,
            dataset_path=tmp_path,
            vocab_mapping_path=tmp_path,
            upstream_data_versions={},
        )
    assert "--node-rank 1" in str(ei.value)
    with pytest.raises(TrainInputError, match="node_rank > 0"):
        join_command(settings["launch"] | {"node_rank": 0})


def test_join_renumbers_node_0_first_and_shares_its_spec(tmp_path, monkeypatch):
    """`join_nodes` against a real TCPStore (what torchrun's agent serves to its workers): torchrun
    numbered node 0 as rank 1; after joining it is rank 0, node 1 is rank 1 and gets node 0's
    spec; a second node claiming node_rank 1, a node whose disk lacks the run's work folder, and a
    rendezvous without node 0 are one-line errors."""
    from datetime import timedelta

    import torch.distributed as dist

    from specforge_assets.train.entry import join_nodes
    from specforge_assets.train.errors import TrainFileNotFound

    port = _free_port()
    server = dist.TCPStore("127.0.0.1", port, is_master=True, timeout=timedelta(seconds=30))
    work = tmp_path / "work"
    work.mkdir()
    spec = {"spec_version": 1, "work_dir": str(work), "dataset_path": "/shared/data"}
    for k, v in {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "TORCHELASTIC_RUN_ID": "t1",
        "TORCHELASTIC_RESTART_COUNT": "0",
        "WORLD_SIZE": "2",
        "LOCAL_RANK": "0",
    }.items():
        monkeypatch.setenv(k, v)

    monkeypatch.setenv("RANK", "1")  # node 0, numbered second by torchrun
    assert join_nodes(spec, 0) == spec
    assert os.environ["RANK"] == "0"

    monkeypatch.setenv("RANK", "0")  # node 1, numbered first
    assert join_nodes(None, 1) == spec
    assert os.environ["RANK"] == "1"

    with pytest.raises(TrainInputError, match="node_rank 1: another node") as ei:
        join_nodes(None, 1)
    assert "\n" not in user_message(ei.value)

    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")  # a fresh round: node 0 publishes a spec this node cannot see
    join_nodes({**spec, "work_dir": str(tmp_path / "elsewhere")}, 0)
    with pytest.raises(TrainFileNotFound, match="not visible here") as ei:
        join_nodes(None, 1)
    assert "shared storage" in user_message(ei.value)

    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "2")  # node 0 runs other code
    join_nodes({**spec, "spec_version": 99}, 0)
    with pytest.raises(TrainInputError, match="same specforge-assets on every node"):
        join_nodes(None, 1)

    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "t2")
    with pytest.raises(TrainInputError, match="no node with launch.node_rank 0"):
        join_nodes(None, 1, timeout_s=1)
    del server


@pytest.mark.slow
def test_two_cpu_nodes_through_the_asset_launch(tmp_path):
    """Node 1 (a CLI launcher) starts first, so torchrun's c10d rendezvous usually numbers it rank
    0; the entry renumbers so that node 0, the Dagster-launched one, is rank 0 either way."""
    from specforge_assets.assets import models as M
    from specforge_assets.resources import SpecforgeStore, training_pipes
    from specforge_assets.train.eagle3 import load_draft_checkpoint

    root, cfg_dir = tmp_path / "data", tmp_path / "configs"
    root.mkdir()
    rows = conversations(72)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    port = _free_port()
    train = json.loads(json.dumps(TINY_TRAIN))
    train["launch"] |= {"nnodes": 2, "node_rank": 0, "rdzv_endpoint": f"127.0.0.1:{port}", "rdzv_id": "test-two-nodes"}
    train["training"]["max_steps"] = 5
    _write_configs(cfg_dir, corpus, train)
    store = SpecforgeStore(data_root=str(root), config_dir=str(cfg_dir))
    resources = {"store": store, "trainer": M.DraftTrainer(), "pipes": training_pipes(store)}

    env = {
        **os.environ,
        "SPECFORGE_DATA_ROOT": str(root),
        "SPECFORGE_CONFIG_DIR": str(cfg_dir),
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    log1 = tmp_path / "node1.log"
    with dg.instance_for_test() as instance:
        assert dg.materialize([M.target_model], instance=instance, resources={"store": store}).success
        _seed_upstream(root, rows, root / "models" / "target_model")
        with open(log1, "w") as out1:
            node1 = subprocess.Popen(
                [sys.executable, "-m", "specforge_assets.cli", "train", "--node-rank", "1"],
                cwd=tmp_path,
                env=env,
                stdout=out1,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            r = dg.materialize([M.draft_model], instance=instance, resources=resources, raise_on_error=False)
            rc1 = node1.wait(timeout=300)
        finally:
            if node1.poll() is None:
                os.killpg(node1.pid, signal.SIGKILL)
                node1.wait()
        text1 = log1.read_text()
        assert r.success, text1[-3000:]
        assert rc1 == 0, text1[-3000:]

        # node 1 joined through the rendezvous (its torchrun command) and trained as rank 1
        assert "--rdzv_backend=c10d" in text1 and f"--rdzv_endpoint=127.0.0.1:{port}" in text1
        assert "node_rank 1: torchrun rank" in text1 and "is rank 1 of 2" in text1
        assert "[rank 1] trained 5 steps (world size 2, node_rank 1)" in text1
        # ... and never reported or published
        assert '"materialization"' not in text1 and "published" not in text1

        # exactly one materialization, from rank 0 on node 0, for a world of two
        mats = [
            e.event_specific_data.materialization
            for e in r.get_asset_materialization_events()
            if e.event_specific_data.materialization.asset_key == M.DRAFT_KEY
        ]
        assert len(mats) == 1
        md = mats[0].metadata
        assert md["world_size"].value == 2 and md["nnodes"].value == 2 and md["steps"].value == 5
        assert "--nnodes=2" in md["launch_command"].value and "--node-rank 0" in md["launch_command"].value
        logs = "\n".join(e.message for e in instance.all_logs(r.run_id) if e.user_message)
        assert "backend=gloo world_size=2" in logs
        assert "trained 5 steps (world size 2, node_rank 0)" in logs
        checks = {c.check_name: c for c in r.get_asset_check_evaluations()}
        assert checks["sglang_checkpoint_format"].passed

    draft = root / "models" / "draft_model"
    manifest = json.loads((draft / "manifest.json").read_text())
    assert manifest["launch"]["world_size"] == 2 and manifest["launch"]["nnodes"] == 2
    assert manifest["launch"]["published_by"]["rank"] == 0
    assert manifest["result"]["step"] == 5
    from transformers import AutoModelForCausalLM

    target = AutoModelForCausalLM.from_pretrained(root / "models" / "target_model")
    model = load_draft_checkpoint(draft, target_model=target)
    assert model.config.draft_vocab_size == json.loads((draft / "config.json").read_text())["draft_vocab_size"]


@pytest.mark.parametrize("bad", [0, -5, "60", True, None])
def test_termination_timeout_must_be_positive_seconds(bad):
    """launch.termination_timeout_s is read (the Pipes client waits that long for torchrun to
    exit after a cancellation) and validated like the other launch settings."""
    with pytest.raises(
        TrainInputError, match=r"launch\.termination_timeout_s: must be (greater than 0|a valid number)"
    ):
        train_settings({"launch": {"termination_timeout_s": bad}})
    assert train_settings({"launch": {"termination_timeout_s": 2.5}})["launch"]["termination_timeout_s"] == 2.5
    assert train_settings({})["launch"]["termination_timeout_s"] == 60
