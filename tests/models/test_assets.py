"""The models layer materialized for real: dg.materialize on a temp instance, the demo target built
through the sources layer, the draft trained by a real `torchrun` subprocess talking Pipes,
evaluation by speculative decoding; crash-resume; only rank 0 reports."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest
import yaml

from specforge_assets.assets import models as M
from specforge_assets.resources import SpecforgeStore, training_pipes

from .corpus import conversations

TINY_TRAIN = {
    "launch": {"nproc_per_node": 1, "device": "cpu", "threads_per_proc": 1, "mode": "online"},
    "training": {
        "ttt_length": 2,
        "lr": 3e-3,
        "max_steps": 6,
        "batch_size": 4,
        "max_length": 96,
        "save_every": 3,
        "log_every": 2,
        "seed": 0,
    },
    "evaluation": {"k": 2, "max_new_tokens": 8, "num_prompts": 4, "max_prompt_tokens": 200, "untrained_seed": 0},
    "hidden_states": {"rows_per_shard": 16, "dtype": "float32"},
    "demo_target": {
        "pretrain_steps": 20,
        "seed": 0,
        "vocab_size": 400,
        "hidden_size": 32,
        "num_layers": 4,
        "intermediate_size": 64,
        "batch_size": 4,
        "block_size": 64,
    },
}


def _write_configs(cfg_dir: Path, corpus: Path, train: dict) -> None:
    cfg_dir.mkdir(parents=True, exist_ok=True)
    (cfg_dir / "sources.yaml").write_text(
        yaml.safe_dump(
            {
                "sources": {"tiny": {"format": "conversations", "data_path": str(corpus)}},
                "defaults": {"split_eval": False, "sample_size": None, "quarantine_threshold": 0.1, "dedup_ids": True},
            }
        )
    )
    (cfg_dir / "target.yaml").write_text(
        yaml.safe_dump({"path": None, "chat_template": "qwen", "trust_remote_code": False})
    )
    (cfg_dir / "train.yaml").write_text(yaml.safe_dump(train))


def _seed_upstream(root: Path, rows: list[dict], target: Path) -> None:
    """mix/ and tokenized/ as their layers write them, with those layers' own code."""
    from specforge_assets.tokenize.dataset import tokenize_jsonl
    from specforge_assets.tokenize.templates import get_template
    from specforge_assets.tokenize.vocab import build_mapping, iter_parquet_batches, save_mapping

    mix = root / "mix"
    mix.mkdir(parents=True, exist_ok=True)
    train, test = rows[8:], rows[:8]
    for name, part in (("train", train), ("test", test)):
        with open(mix / f"{name}.jsonl", "w") as f:
            for r in part:
                f.write(json.dumps({**r, "source": "tiny"}) + "\n")
    ds = root / "tokenized" / "dataset"
    tokenize_jsonl(mix / "train.jsonl", target, get_template("qwen"), ds)
    vocab = json.loads((target / "config.json").read_text())["vocab_size"]
    res = build_mapping(iter_parquet_batches(sorted(ds.rglob("*.parquet"))), vocab, 128)
    (root / "tokenized" / "vocab_mapping").mkdir(parents=True, exist_ok=True)
    save_mapping(res, root / "tokenized" / "vocab_mapping" / "vocab_mapping.pt")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("models")
    root, cfg_dir = base / "data", base / "configs"
    root.mkdir()
    rows = conversations(72)
    corpus = base / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _write_configs(cfg_dir, corpus, TINY_TRAIN)
    store = SpecforgeStore(data_root=str(root), config_dir=str(cfg_dir))
    with dg.instance_for_test() as instance:
        r = dg.materialize([M.target_model], instance=instance, resources={"store": store})
        assert r.success
        _seed_upstream(root, rows, root / "models" / "target_model")
        yield {"root": root, "cfg_dir": cfg_dir, "store": store, "instance": instance, "target_result": r}


def _resources(env, **trainer):
    return {"store": env["store"], "trainer": M.DraftTrainer(**trainer), "pipes": training_pipes(env["store"])}


def _mats(result, key):
    return [
        e.event_specific_data.materialization
        for e in result.get_asset_materialization_events()
        if e.event_specific_data.materialization.asset_key == key
    ]


def test_target_model_demo_built_from_sources_and_cached(env):
    r = env["target_result"]
    (mat,) = _mats(r, M.TARGET_KEY)
    md = mat.metadata
    assert md["kind"].value == "demo_target" and md["cached"].value is False
    assert md["corpus_rows"].value == 72  # every row of the configured source, via the sources layer
    (check,) = r.get_asset_check_evaluations()
    assert check.passed
    target = env["root"] / "models" / "target_model"
    assert (target / "model.safetensors").exists() and (target / "tokenizer.json").exists()
    # same corpus + params → reused, same data version
    r2 = dg.materialize([M.target_model], instance=env["instance"], resources={"store": env["store"]})
    (mat2,) = _mats(r2, M.TARGET_KEY)
    assert mat2.metadata["cached"].value is True
    assert mat2.tags["dagster/data_version"] == mat.tags["dagster/data_version"]


def test_draft_then_evaluation(env, capfd):
    root = env["root"]
    r = dg.materialize([M.draft_model, M.draft_evaluation], instance=env["instance"], resources=_resources(env))
    assert r.success
    (mat,) = _mats(r, M.DRAFT_KEY)
    md = mat.metadata
    assert md["steps"].value == 6 and md["world_size"].value == 1
    assert len(md["per_step_ttt_acc"].value) == 2
    assert md["final_loss"].value > 0 and md["tokens_per_s"].value > 0
    # data version = content of the published checkpoint
    from specforge_assets.train.entry import checkpoint_version

    draft = root / "models" / "draft_model"
    assert mat.tags["dagster/data_version"] == checkpoint_version(draft)
    manifest = json.loads((draft / "manifest.json").read_text())
    assert (
        manifest["upstream_data_versions"]["models/target_model"]
        == env["target_result"]
        .get_asset_materialization_events()[0]
        .event_specific_data.materialization.tags["dagster/data_version"]
    )
    assert manifest["training_config"]["max_steps"] == 6 and "torch" in manifest["packages"]
    checks = {c.check_name: c for c in r.get_asset_check_evaluations()}
    assert checks["sglang_checkpoint_format"].passed, checks["sglang_checkpoint_format"].metadata
    assert checks["lossless"].passed
    # training logs streamed into the run through Pipes (rank 0 → Dagster log)
    logs = [e.message for e in env["instance"].all_logs(r.run_id) if e.user_message]
    assert any("EAGLE3 draft training" in m for m in logs)

    report = json.loads((root / "models" / "draft_evaluation" / "report.json").read_text())
    for key in (
        "acceptance_length",
        "untrained_acceptance_length",
        "per_position_acceptance",
        "k",
        "lossless",
        "num_prompts",
        "checkpoint_path",
    ):
        assert key in report
    assert report["k"] == 2 and len(report["per_position_acceptance"]) == 2
    assert report["lossless"] is True and report["num_prompts"] == 4
    assert 1.0 <= report["acceptance_length"] <= 3.0
    # the evaluation read the draft by version (its immutable copy), not the current folder
    assert report["checkpoint_path"] == str(root / "versions" / "draft_model" / mat.tags["dagster/data_version"])
    assert checkpoint_version(Path(report["checkpoint_path"])) == checkpoint_version(draft)
    assert (root / "models" / "draft_evaluation" / "per_position_acceptance.png").stat().st_size > 1000
    (emat,) = _mats(r, M.EVAL_KEY)
    assert "plot" in emat.metadata and emat.metadata["lossless"].value is True


def test_pipes_only_rank0_reports_and_resume_after_kill(env, capfd):
    """Two torchrun ranks (gloo): the first run is killed hard at step 4 (checkpoint at 3),
    the relaunch resumes from step 3; exactly one materialization, reported by rank 0 only."""
    from tests.helpers.killhook import kill_at_step

    res = _resources(env, nproc_per_node=2, max_steps=7)
    with kill_at_step(4):
        r1 = dg.materialize([M.draft_model], instance=env["instance"], resources=res, raise_on_error=False)
    assert not r1.success
    assert not _mats(r1, M.DRAFT_KEY)
    work = [
        d
        for d in (env["root"] / "models" / "draft_model_work").iterdir()
        if (d / "training_state" / "latest.json").exists()
    ]
    states = {json.loads((d / "training_state" / "latest.json").read_text())["step"] for d in work}
    assert 3 in states
    out1 = capfd.readouterr()
    assert "exiting hard at step 4" in out1.out, out1.out[-2000:]  # rank 0 died at step 4, after the save at 3

    r2 = dg.materialize([M.draft_model], instance=env["instance"], resources=res)
    assert r2.success
    (mat,) = _mats(r2, M.DRAFT_KEY)
    assert mat.metadata["world_size"].value == 2
    assert mat.metadata["resumed_from_step"].value == 3
    assert mat.metadata["steps"].value == 7
    out = capfd.readouterr().out
    assert "[rank 1]" in out  # rank 1 logs to stdout (forwarded), never through Pipes
    assert "torch.distributed initialised: backend=gloo" in "\n".join(
        e.message for e in env["instance"].all_logs(r2.run_id) if e.user_message
    )
    # stale work folders of other inputs are pruned after success
    assert len(list((env["root"] / "models" / "draft_model_work").iterdir())) == 1


def test_offline_hidden_states_and_training(env):
    root = env["root"]
    r = dg.materialize([M.target_hidden_states], instance=env["instance"], resources=_resources(env))
    assert r.success
    hs = root / "models" / "target_hidden_states"
    man = json.loads((hs / "manifest.json").read_text())
    from specforge_assets.train.data import load_tokenized

    rows = load_tokenized(root / "tokenized" / "dataset", TINY_TRAIN["training"]["max_length"])
    assert man["rows"] == len(rows)
    assert [i for s in man["shards"] for i in s["ids"]] == rows.ids  # aligned to row ids, in order
    assert man["tokens"] == rows.num_tokens  # no padding stored
    assert man["total_bytes"] <= man["estimate"]["estimated_bytes"] * 1.05 + 4096 * len(man["shards"])
    from safetensors import safe_open

    with safe_open(str(hs / man["shards"][0]["file"]), "pt") as f:
        H = man["hidden_size"]
        assert f.get_slice("aux_hidden_states").get_shape()[1] == 3 * H
        assert f.get_slice("hidden_states").get_shape()[0] == man["shards"][0]["tokens"]

    r2 = dg.materialize(
        [M.draft_model], instance=env["instance"], resources=_resources(env, mode="offline", max_steps=4)
    )
    assert r2.success
    (mat,) = _mats(r2, M.DRAFT_KEY)
    assert mat.metadata["mode"].value == "offline" and mat.metadata["steps"].value == 4


def test_offline_features_equal_online(env):
    """The stored features give the same aux states and logits as running the target."""
    import torch
    from transformers import AutoModelForCausalLM

    from specforge_assets.train.data import collate, load_tokenized
    from specforge_assets.train.hidden_states import OfflineFeatureTarget
    from specforge_assets.train.loop import target_features

    root = env["root"]
    hs = root / "models" / "target_hidden_states"
    if not (hs / "manifest.json").exists():
        pytest.skip("needs test_offline_hidden_states_and_training first")
    off = OfflineFeatureTarget(hs)
    tgt = AutoModelForCausalLM.from_pretrained(root / "models" / "target_model", dtype=torch.float32).eval()
    rows = load_tokenized(root / "tokenized" / "dataset", TINY_TRAIN["training"]["max_length"])
    batch = collate([{"input_ids": rows.input_ids[i], "loss_mask": rows.loss_mask[i]} for i in (0, 5, 9)])
    aux = off.aux_layer_ids
    a1, l1 = target_features(tgt, batch["input_ids"], batch["attention_mask"], aux)
    a2, l2 = target_features(off, batch["input_ids"], batch["attention_mask"], aux)
    m = batch["attention_mask"].bool()
    assert torch.allclose(a1[m], a2[m], atol=1e-4)
    assert torch.allclose(l1[m], l2[m], atol=1e-3)


def test_evaluation_compares_with_previous_draft(env):
    """After a retrain the old checkpoint is kept as draft_model_previous and evaluated on the
    same prompts; the report it replaces is kept as previous_report.json."""
    root = env["root"]
    prev = root / "models" / "draft_model_previous"
    assert (prev / "model.safetensors").exists()  # earlier tests published more than one version
    r = dg.materialize([M.draft_evaluation], instance=env["instance"], resources=_resources(env))
    assert r.success
    out = root / "models" / "draft_evaluation"
    report = json.loads((out / "report.json").read_text())
    assert report["previous"]["checkpoint_path"] == str(prev)
    assert 1.0 <= report["previous"]["acceptance_length"] <= 3.0
    assert len(report["previous"]["per_position_acceptance"]) == report["k"]
    assert report["previous"]["checkpoint_version"] != report["checkpoint_version"]
    assert json.loads((out / "previous_report.json").read_text())["checkpoint_version"] != report["checkpoint_version"]
    (mat,) = _mats(r, M.EVAL_KEY)
    assert "previous_acceptance_length" in mat.metadata


def test_cli_evaluate_and_hidden_states_estimate(env, monkeypatch, capsys, tmp_path):
    """`specforge-assets evaluate` / `hidden-states` / `build-demo-target` run the same code."""
    from specforge_assets.cli import main

    root = env["root"]
    if not (root / "models" / "draft_model" / "model.safetensors").exists():  # run alone (-k)
        assert dg.materialize([M.draft_model], instance=env["instance"], resources=_resources(env)).success
    monkeypatch.setenv("SPECFORGE_DATA_ROOT", str(root))
    monkeypatch.setenv("SPECFORGE_CONFIG_DIR", str(env["cfg_dir"]))
    out = tmp_path / "eval"
    assert main(["evaluate", "--output", str(out), "--num-prompts", "2", "--max-new-tokens", "4"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    rep = json.loads(line)
    assert rep["num_prompts"] == 2 and rep["lossless"] is True
    assert json.loads((out / "report.json").read_text())["k"] == TINY_TRAIN["evaluation"]["k"]

    assert main(["hidden-states"]) == 0  # estimate only, writes nothing without --yes
    est = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["estimate"]
    assert est["rows"] > 0 and est["estimated_bytes"] == est["tokens"] * est["bytes_per_token"]

    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in conversations(12)))
    assert (
        main(["build-demo-target", "--input", str(rows), "--pretrain-steps", "0", "--output", str(tmp_path / "t")]) == 0
    )
    assert (tmp_path / "t" / "model.safetensors").exists()


def test_cli_evaluate_reads_the_settings_the_asset_reads(env, monkeypatch, capsys, tmp_path):
    """`specforge-assets evaluate` maps configs/train.yaml `evaluation:` and target.yaml as the
    models/draft_evaluation asset does: `trust_remote_code` reaches the target's tokenizer (here
    one shipped as code, which records that it ran; without it transformers silently loads the
    built-in one) and `evaluate_previous: false` leaves draft_model_previous out."""
    import shutil

    from safetensors.torch import load_file, save_file

    from specforge_assets.cli import main

    root = tmp_path / "data"
    shutil.copytree(env["root"], root)
    draft, prev = root / "models" / "draft_model", root / "models" / "draft_model_previous"
    if not (draft / "model.safetensors").exists():  # run alone (-k)
        assert dg.materialize([M.draft_model], instance=env["instance"], resources=_resources(env)).success
        shutil.copytree(env["root"] / "models" / "draft_model", draft, dirs_exist_ok=True)
    if not prev.exists():  # another draft version
        shutil.copytree(draft, prev)
        weights = load_file(prev / "model.safetensors")
        save_file({k: v + 0.01 if v.is_floating_point() else v for k, v in weights.items()}, prev / "model.safetensors")
    target, ran = tmp_path / "remote-code-target", tmp_path / "remote_code_ran"
    shutil.copytree(env["root"] / "models" / "target_model", target)
    (target / "tokenization_custom.py").write_text(
        "from pathlib import Path\n\nfrom transformers import PreTrainedTokenizerFast\n\n\n"
        "class CustomTokenizer(PreTrainedTokenizerFast):\n"
        "    def __init__(self, *a, **kw):\n"
        f"        Path({str(ran)!r}).touch()\n"
        "        super().__init__(*a, **kw)\n"
    )
    tok_cfg = json.loads((target / "tokenizer_config.json").read_text())
    tok_cfg.update(
        tokenizer_class="CustomTokenizer", auto_map={"AutoTokenizer": [None, "tokenization_custom.CustomTokenizer"]}
    )
    (target / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    cfg_dir = tmp_path / "configs"
    shutil.copytree(env["cfg_dir"], cfg_dir)
    (cfg_dir / "target.yaml").write_text(
        yaml.safe_dump({"path": str(target), "chat_template": "qwen", "trust_remote_code": True})
    )
    train = {**TINY_TRAIN, "evaluation": {**TINY_TRAIN["evaluation"], "evaluate_previous": False}}
    (cfg_dir / "train.yaml").write_text(yaml.safe_dump(train))
    monkeypatch.setenv("SPECFORGE_DATA_ROOT", str(root))
    monkeypatch.setenv("SPECFORGE_CONFIG_DIR", str(cfg_dir))
    out = tmp_path / "eval"
    rc = main(["evaluate", "--output", str(out), "--num-prompts", "2", "--max-new-tokens", "4"])
    assert rc == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["lossless"] is True and ran.exists()
    assert "previous" not in report or report["previous"] is None, report["previous"]
    # the same settings with evaluate_previous (the default): the previous draft is compared
    (cfg_dir / "train.yaml").write_text(yaml.safe_dump(TINY_TRAIN))
    assert main(["evaluate", "--output", str(out), "--num-prompts", "2", "--max-new-tokens", "4"]) == 0
    assert json.loads((out / "report.json").read_text())["previous"]["checkpoint_path"] == str(prev)


def test_external_target_recorded_with_content_version(env, tmp_path):
    """configs/target.yaml path → the folder is recorded (not rebuilt), versioned by content."""
    import shutil

    ext = tmp_path / "my-model"
    shutil.copytree(env["root"] / "models" / "target_model", ext)
    cfg_dir = tmp_path / "cfg"
    shutil.copytree(env["cfg_dir"], cfg_dir)
    (cfg_dir / "target.yaml").write_text(yaml.safe_dump({"path": str(ext), "chat_template": "qwen"}))
    store = SpecforgeStore(data_root=str(tmp_path / "data"), config_dir=str(cfg_dir))
    r = dg.materialize([M.target_model], instance=env["instance"], resources={"store": store})
    (mat,) = _mats(r, M.TARGET_KEY)
    assert mat.metadata["kind"].value == "external" and mat.metadata["trust_remote_code"].value is False
    assert r.get_asset_check_evaluations()[0].passed
    v1 = mat.tags["dagster/data_version"]
    (ext / "generation_config.json").write_text('{"do_sample": false}')
    r2 = dg.materialize([M.target_model], instance=env["instance"], resources={"store": store})
    assert _mats(r2, M.TARGET_KEY)[0].tags["dagster/data_version"] != v1
    assert not (tmp_path / "data" / "models" / "target_model").exists()  # nothing built


def test_bad_train_config_is_a_clear_error():
    from specforge_assets.train.settings import make_train_config, train_settings

    with pytest.raises(ValueError, match="unknown train config keys: \\['learning_rate'\\]"):
        make_train_config({"learning_rate": 1e-4})
    with pytest.raises(ValueError, match="launch.nproc_per_node"):
        train_settings({"launch": {"nproc_per_node": 0}})
    with pytest.raises(ValueError, match="unknown section"):
        train_settings({"trainig": {}})


def test_override_settings_apply_and_validate():
    from specforge_assets.train.settings import override_settings, train_settings

    base = train_settings({})
    before = json.loads(json.dumps(base))
    s = override_settings(base, nproc_per_node=2, device="", mode="offline", max_steps=7, ttt_length=0)
    assert s["launch"]["nproc_per_node"] == 2 and s["launch"]["mode"] == "offline"
    assert s["training"]["max_steps"] == 7
    assert s["launch"]["device"] == base["launch"]["device"]  # falsy → as configured
    assert base == before  # the input is not mutated
    with pytest.raises(ValueError, match="online|offline"):
        override_settings(base, mode="sideways")
