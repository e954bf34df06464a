"""Online training on CPU: the loss drops on a learnable toy, crash + resume continues exactly,
dataset reading errors name the file/row/field, DDP under torchrun (gloo) runs."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from specforge_assets.train.data import load_tokenized
from specforge_assets.train.loop import latest_state, train_draft
from specforge_assets.train.settings import TrainConfig
from tests.helpers.toy import cached_toy_target, toy_rows, write_toy_dataset, write_vocab_mapping


FIXTURE_TARGET = Path(__file__).resolve().parent.parent / "fixtures" / "train" / "toy_target"


def toy_target_dir() -> Path:
    """The committed pretrained toy target, or a cached build of the same when absent."""
    return FIXTURE_TARGET if (FIXTURE_TARGET / "model.safetensors").exists() else cached_toy_target()


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    d = tmp_path_factory.mktemp("toy")
    shutil.copytree(toy_target_dir(), d / "target")
    write_toy_dataset(d / "dataset", n=96, seed=0)
    write_vocab_mapping(d / "vocab_mapping" / "vocab_mapping.pt", toy_rows(96, seed=0), draft_vocab_size=58)
    return d


def _run(toy, out, cfg, **kw):
    logs: list[str] = []
    res = train_draft(
        cfg,
        target_path=toy / "target",
        dataset_path=toy / "dataset",
        vocab_mapping_path=toy / "vocab_mapping",
        out_dir=out,
        log=logs.append,
        **kw,
    )
    return res, logs


def test_short_training_lowers_loss(toy, tmp_path):
    cfg = TrainConfig(ttt_length=3, lr=3e-3, warmup_ratio=0.05, epochs=4, batch_size=8, max_length=64, log_every=6)
    seen: list[tuple[int, dict]] = []
    res, logs = _run(toy, tmp_path / "out", cfg, metrics_cb=lambda s, m: seen.append((s, m)))
    assert res["step"] == res["total_steps"] == 48
    assert res["loss"] < 0.6 * res["first_loss"], res
    assert res["acc"][0] > 0.5 and len(res["acc"]) == 3
    assert seen and seen[-1][0] == 48
    m = seen[-1][1]
    assert {"loss", "acc", "tokens_per_s", "lr"} <= set(m) and m["tokens_per_s"] > 0
    out = tmp_path / "out"
    for f in ("config.json", "model.safetensors", "manifest.json", "metrics.json", "training_state/metrics.jsonl"):
        assert (out / f).exists(), f
    assert not any("embed" in k for k in load_file(str(out / "model.safetensors")))
    man = json.loads((out / "manifest.json").read_text())
    assert man["train_config"]["ttt_length"] == 3 and man["metrics"]["step"] == 48
    assert any("resumed" not in line and "training draft" in line for line in logs)


class Crash(RuntimeError):
    pass


def test_resume_after_crash_matches_uninterrupted_run(toy, tmp_path):
    cfg = TrainConfig(
        ttt_length=2, lr=2e-3, warmup_ratio=0.1, max_steps=10, batch_size=16, max_length=64, save_every=4, log_every=2
    )
    ref, _ = _run(toy, tmp_path / "ref", cfg)

    def crash_at_6(step, metrics):
        if step == 6:
            raise Crash("simulated crash")

    with pytest.raises(Crash):
        _run(toy, tmp_path / "crashed", cfg, metrics_cb=crash_at_6)
    st = latest_state(tmp_path / "crashed")
    assert st is not None and st.name == "step_00000004.pt"  # checkpoints every 4 steps
    assert not (tmp_path / "crashed" / "model.safetensors").exists()

    steps: list[int] = []
    res, logs = _run(toy, tmp_path / "crashed", cfg, metrics_cb=lambda s, m: steps.append(s))
    assert any("resumed" in line and "step 4/10" in line for line in logs)
    assert steps[0] == 6 and steps[-1] == 10  # continues the step count after the checkpoint
    assert res["step"] == 10
    a = load_file(str(tmp_path / "ref" / "model.safetensors"))
    b = load_file(str(tmp_path / "crashed" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k
    # a finished run resumes to "nothing to do" and keeps its result
    again, _ = _run(toy, tmp_path / "crashed", cfg)
    assert again["step"] == 10


def test_dataset_formats_and_errors(tmp_path):
    rows = toy_rows(5, seed=1)
    write_toy_dataset(tmp_path / "pq", n=5, seed=1, shards=2)
    jl = tmp_path / "rows.jsonl"
    jl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    a, b = load_tokenized(tmp_path / "pq", 64), load_tokenized(jl, 64)
    assert a.ids == b.ids == [r["id"] for r in rows]
    assert all(torch.equal(x, y) for x, y in zip(a.input_ids, b.input_ids))
    t = load_tokenized(jl, 10)
    assert t.truncated == 5 and all(x.numel() == 10 for x in t.input_ids)
    bad = dict(rows[0], loss_mask=rows[0]["loss_mask"][:-1])
    jb = tmp_path / "bad.jsonl"
    jb.write_text(json.dumps(rows[1]) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2 .*loss_mask"):
        load_tokenized(jb, 64)
    jn = tmp_path / "nosup.jsonl"
    jn.write_text(
        json.dumps({"id": "z", "input_ids": [1, 2, 3], "loss_mask": [0, 0, 1]}) + "\n" + json.dumps(rows[0]) + "\n"
    )
    r = load_tokenized(jn, 64)
    assert r.skipped_no_supervision == 1 and len(r) == 1
    with pytest.raises(ValueError, match="outside the target vocab"):
        load_tokenized(jl, 64, vocab_size=20)


DDP_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch.distributed as dist
    from pathlib import Path
    from specforge_assets.train.loop import train_draft
    from specforge_assets.train.settings import TrainConfig
    toy, out = Path(sys.argv[1]), Path(sys.argv[2])
    dist.init_process_group("gloo")
    cfg = TrainConfig(ttt_length=2, lr=2e-3, max_steps=4, batch_size=4, max_length=64, log_every=2, save_every=2)
    res = train_draft(cfg, target_path=toy / "target", dataset_path=toy / "dataset",
                      vocab_mapping_path=toy / "vocab_mapping", out_dir=out)
    (out / f"rank{dist.get_rank()}.json").write_text(json.dumps({"world": res["world_size"], "step": res["step"]}))
    dist.destroy_process_group()
    """
)


@pytest.mark.slow
def test_ddp_torchrun_gloo(toy, tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not found")
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", TRANSFORMERS_VERBOSITY="error")
    with socket.socket() as s:  # a free port on 127.0.0.1 (port 0 makes torchrun's rendezvous hang)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = subprocess.run(
        [
            torchrun,
            "--nproc_per_node",
            "2",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(port),
            str(script),
            str(toy),
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    for r in (0, 1):
        assert json.loads((tmp_path / "out" / f"rank{r}.json").read_text()) == {"world": 2, "step": 4}
    assert (tmp_path / "out" / "model.safetensors").exists()
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["final"]["world_size"] == 2


def test_non_finite_step_falls_back_then_skips(toy):
    """A compiled step that yields NaN gradients is redone eagerly (compile switched off); a step
    whose eager gradient is also non-finite is skipped without touching the weights."""
    from transformers import AutoModelForCausalLM

    from specforge_assets.train.data import collate
    from specforge_assets.train.eagle3 import build_draft
    from specforge_assets.train.loop import Eagle3Trainer

    target = AutoModelForCausalLM.from_pretrained(str(toy / "target")).eval()
    draft = build_draft(target, seed=0)
    tr = Eagle3Trainer(TrainConfig(ttt_length=2, lr=1e-3, compile=False), target, draft, torch.device("cpu"), 10)
    rows = toy_rows(4, seed=3)
    batch = collate(
        [{"input_ids": torch.tensor(r["input_ids"]), "loss_mask": torch.tensor(r["loss_mask"])} for r in rows]
    )

    def poisoned(call):
        def f(*a):
            loss, out = call(*a)
            return loss * float("nan"), out

        return f

    tr.call = poisoned(tr.eager_call)  # stands in for a compiled step gone wrong
    before = draft.fc.weight.detach().clone()
    res = tr.train_step(batch)
    assert tr.compile_disabled and tr.call is tr.eager_call
    assert torch.isfinite(res["grad_norm"]) and tr.skipped_steps == 0
    assert all(torch.isfinite(p).all() for p in draft.parameters())
    assert not torch.equal(before, draft.fc.weight)

    good = tr.eager_call
    tr.eager_call = tr.call = poisoned(good)
    before = draft.fc.weight.detach().clone()
    tr.train_step(batch)
    assert tr.skipped_steps == 1 and tr.step_num == 2
    assert torch.equal(before, draft.fc.weight)


def test_compiler_failure_mid_run_falls_back_to_eager(toy):
    """A torch.compile crash at a later step (an Inductor assertion on a new sequence length was
    seen on an H200) redoes that step eagerly and switches compilation off; the update happens.
    Errors of the computation itself (here a shape error) are not swallowed."""
    from torch._inductor.exc import InductorError
    from transformers import AutoModelForCausalLM

    from specforge_assets.train.data import collate
    from specforge_assets.train.eagle3 import build_draft
    from specforge_assets.train.loop import Eagle3Trainer, is_compiler_error

    target = AutoModelForCausalLM.from_pretrained(str(toy / "target")).eval()
    draft = build_draft(target, seed=0)
    tr = Eagle3Trainer(TrainConfig(ttt_length=2, lr=1e-3, compile=False), target, draft, torch.device("cpu"), 10)
    rows = toy_rows(4, seed=3)
    batch = collate(
        [{"input_ids": torch.tensor(r["input_ids"]), "loss_mask": torch.tensor(r["loss_mask"])} for r in rows]
    )

    def crashing(*a):  # stands in for a compiled module whose recompile fails inside Inductor
        try:
            raise AssertionError("get_pw_red_splits")
        except AssertionError as inner:
            raise InductorError(inner, None) from inner

    tr.call = crashing
    before = draft.fc.weight.detach().clone()
    res = tr.train_step(batch)
    assert tr.call is tr.eager_call and "compiler failure at step 1: InductorError" in tr.compile_disabled
    assert torch.isfinite(res["grad_norm"]) and not torch.equal(before, draft.fc.weight)

    def shape_bug(*a):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    tr.eager_call, tr.call = tr.eager_call, shape_bug
    with pytest.raises(RuntimeError, match="shapes"):
        tr.train_step(batch)
    assert not is_compiler_error(RuntimeError("x")) and is_compiler_error(InductorError(AssertionError(), None))
