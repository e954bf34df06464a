"""The mix, tokenized dataset and vocab mapping assets on a real Dagster instance, with a real
(small, trained here) ChatML tokenizer as the target, checks included."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml
from tok_helpers import build_chatml_tokenizer, corpus

from specforge_assets.assets import mix as mix_assets
from specforge_assets.assets import tokenize as tok_assets
from specforge_assets.partitions import sync_source_partitions
from specforge_assets.resources import SpecforgeStore

REPO = Path(__file__).resolve().parents[2]


def _write_sources(root: Path, rows: list[dict]) -> None:
    a, b = rows[:120], rows[100:200]  # 20 rows shared → cross-source duplicates
    for key, part in (("alpha", a), ("beta", b)):
        d = root / "sources" / key
        d.mkdir(parents=True)
        with open(d / "train.jsonl", "w") as f:
            for r in part:
                f.write(json.dumps(r) + "\n")
    # beta also has a regenerated output, which the mix must prefer
    d = root / "regenerated" / "beta"
    d.mkdir(parents=True)
    shutil.copy(root / "sources" / "beta" / "train.jsonl", d / "train.jsonl")


def _configs(tmp: Path, tokenize: dict | None = None, mix: dict | None = None, target: dict | None = None) -> Path:
    cfg = tmp / "configs"
    cfg.mkdir(exist_ok=True)
    (cfg / "mix.yaml").write_text(yaml.safe_dump(mix or {"eval": {"fraction": 0.1, "min_rows": 24}}))
    (cfg / "tokenize.yaml").write_text(yaml.safe_dump(tokenize or {"max_length": 2048}))
    (cfg / "target.yaml").write_text(yaml.safe_dump(target or {"path": None, "chat_template": "qwen"}))
    return cfg


@pytest.fixture
def env(tmp_path, data_root, monkeypatch):
    rows = corpus()[:200]
    _write_sources(data_root, rows)
    texts = [m["content"] for r in rows for m in r["conversations"]]
    build_chatml_tokenizer(data_root / "models" / "target_model", texts)
    cfg = _configs(tmp_path)
    monkeypatch.setenv("SPECFORGE_CONFIG_DIR", str(cfg))
    return data_root, cfg


def _materialize(instance, selection=None, raise_on_error=True):
    return dg.materialize(
        [mix_assets.training_mix, tok_assets.tokenized_dataset, tok_assets.vocab_mapping],
        instance=instance,
        resources={"store": SpecforgeStore()},
        selection=selection,
        raise_on_error=raise_on_error,
    )


def _checks(result) -> dict[str, bool]:
    return {
        ev.event_specific_data.check_name: ev.event_specific_data.passed
        for ev in result.all_events
        if ev.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def _mat(result, key):
    return [m for m in result.asset_materializations_for_node(key)][0]


def test_assets_end_to_end(env, dagster_instance):
    root, cfg = env
    sync_source_partitions(dagster_instance, ["alpha", "beta"])
    res = _materialize(dagster_instance)
    assert res.success
    checks = _checks(res)
    assert checks and all(checks.values()), checks
    (agreement,) = [
        ev.event_specific_data
        for ev in res.all_events
        if ev.event_type_value == "ASSET_CHECK_EVALUATION"
        and ev.event_specific_data.check_name == "matches_target_chat_template"
    ]
    details = {k: v.value for k, v in agreement.metadata.items()}
    assert details["checked"] > 0 and details["agreed"] == details["checked"], details  # rows were compared

    mix_md = res.asset_materializations_for_node("mix__training_mix")[0].metadata
    assert mix_md["duplicates_removed"].value == 20
    assert mix_md["test_rows"].value >= 24
    assert "data:image/png;base64," in mix_md["mix_chart"].value
    train = [json.loads(l) for l in open(root / "mix" / "train.jsonl")]
    assert {r["source"] for r in train} == {"alpha", "beta"} and all("conversations" in r for r in train)
    q = [json.loads(l) for l in open(root / "mix" / "quarantine.jsonl")]
    assert len(q) == 20 and all(x["reason"].startswith("duplicate") for x in q)
    assert (
        json.loads((root / "mix" / "manifest.json").read_text())["report"]["inputs"]["beta"]["origin"] == "regenerated"
    )

    md = res.asset_materializations_for_node("tokenized__dataset")[0].metadata
    assert md["dagster/row_count"].value == len(train)
    assert md["zero_supervised_rows"].value == 0
    assert md["cache_hit"].value is False
    assert 0 < md["supervised_fraction"].value < 1
    assert "⟦" in md["example"].value and "data:image/png" in md["length_histogram"].value
    ds = root / "tokenized" / "dataset"
    assert list(ds.glob("part-*.parquet")) and (ds / "train.jsonl").exists()
    first = json.loads(open(ds / "train.jsonl").readline())
    assert set(first) == {"id", "input_ids", "loss_mask"} and len(first["input_ids"]) == len(first["loss_mask"])

    vmd = res.asset_materializations_for_node("tokenized__vocab_mapping")[0].metadata
    import torch

    m = torch.load(root / "tokenized" / "vocab_mapping" / "vocab_mapping.pt", weights_only=True)
    assert vmd["clamped_to_target_vocab"].value is True  # demo-size vocab < 32000
    assert len(m["d2t"]) == vmd["draft_vocab_size"].value == len(m["t2d"])
    assert 0.99 <= vmd["coverage"].value <= 1.0

    # same inputs → cache hit and the same DataVersion
    v1 = dagster_instance.get_latest_materialization_event(
        dg.AssetKey(["tokenized", "dataset"])
    ).asset_materialization.tags
    res2 = _materialize(dagster_instance, selection=[dg.AssetKey(["tokenized", "dataset"])])
    md2 = res2.asset_materializations_for_node("tokenized__dataset")[0].metadata
    assert md2["cache_hit"].value is True and md2["cache_key"].value == md["cache_key"].value
    v2 = dagster_instance.get_latest_materialization_event(
        dg.AssetKey(["tokenized", "dataset"])
    ).asset_materialization.tags
    # the data version is the content of the rows (not the cache key), kept immutable by version
    assert v1["dagster/data_version"] == v2["dagster/data_version"] == md["content_version"].value
    vdir = root / "versions" / "tokenized_dataset" / md["content_version"].value
    assert (vdir / "train.jsonl").exists()
    # the histogram and the marked example are part of the published version (written in staging,
    # not into the published folder afterwards), identical to what the current folder shows
    for name in ("lengths.png", "example.html"):
        assert (vdir / name).read_bytes() == (ds / name).read_bytes(), name
    assert md["example_html"].value == str(ds / "example.html")

    # a changed option → cache miss, new key
    (cfg / "tokenize.yaml").write_text(yaml.safe_dump({"max_length": 512}))
    # (truncation to 512 leaves some rows with no supervised token: the blocking check may fail
    # the run; the recomputation itself is what is asserted here)
    res3 = _materialize(dagster_instance, selection=[dg.AssetKey(["tokenized", "dataset"])], raise_on_error=False)
    md3 = res3.asset_materializations_for_node("tokenized__dataset")[0].metadata
    assert md3["cache_hit"].value is False and md3["cache_key"].value != md["cache_key"].value
    assert md3["truncated_rows"].value > 0

    # cache_keep: 1 -> older cache entries are pruned; the published dataset stays whole
    (cfg / "tokenize.yaml").write_text(yaml.safe_dump({"max_length": 1024, "cache_keep": 1}))
    res4 = _materialize(dagster_instance, selection=[dg.AssetKey(["tokenized", "dataset"])], raise_on_error=False)
    md4 = res4.asset_materializations_for_node("tokenized__dataset")[0].metadata
    assert sorted(md4["cache_pruned"].value) == sorted([md["cache_key"].value, md3["cache_key"].value])
    assert [p.name for p in (root / "tokenized" / "cache").iterdir()] == [md4["cache_key"].value]
    assert len((ds / "train.jsonl").read_text().splitlines()) == len(train)


def test_cache_pruning_keeps_the_most_recently_used(tmp_path):
    import os
    import time

    from specforge_assets.tokenize.build import STALE_STAGING_S, prune_cache

    now = time.time()
    for i, name in enumerate(["a", "b", "c", "d"]):  # d used last, a first
        (tmp_path / name).mkdir()
        (tmp_path / name / "stats.json").write_text("{}")
        os.utime(tmp_path / name, (now - 100 + i, now - 100 + i))
    (tmp_path / "incomplete").mkdir()  # no stats.json: a build in progress elsewhere, never touched
    (tmp_path / ".old-staging").mkdir()
    os.utime(tmp_path / ".old-staging", (now - STALE_STAGING_S - 5,) * 2)
    (tmp_path / ".fresh-staging").mkdir()
    assert prune_cache(tmp_path, 0, "a") == []  # 0 keeps everything
    assert prune_cache(tmp_path, 2, "a") == ["b", "c"]  # the current one (a) + the latest other (d)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".fresh-staging", "a", "d", "incomplete"]


def _step_failure(res, step: str) -> str:
    fails = [e for e in res.all_events if e.is_step_failure and e.step_key == step]
    assert fails, f"{step} did not fail"
    data = fails[0].step_failure_data
    return data.user_failure_data.description if data.user_failure_data else data.error.message


def test_markers_never_match_fails_check_naming_template(env, dagster_instance):
    """Every loss mask all zero: the dataset is refused (nothing published, one-line step failure
    naming the template), not materialized for the checks to find afterwards."""
    root, cfg = env
    (cfg / "tokenize.yaml").write_text(yaml.safe_dump({"max_length": 2048, "chat_template": "llama3"}))
    sync_source_partitions(dagster_instance, ["alpha", "beta"])
    res = _materialize(
        dagster_instance,
        selection=[dg.AssetKey(["mix", "training_mix"]), dg.AssetKey(["tokenized", "dataset"])],
        raise_on_error=False,
    )
    desc = _step_failure(res, "tokenized__dataset")
    assert desc.startswith("no supervised tokens in ") and "all loss masks zero" in desc
    assert "'llama3'" in desc and "never match" in desc and "\n" not in desc
    assert not res.asset_materializations_for_node("tokenized__dataset")
    assert not (root / "tokenized" / "dataset").exists()


def test_no_chat_template_uses_fallback_with_warning(env, dagster_instance):
    root, cfg = env
    tdir = root / "models" / "target_model"
    shutil.rmtree(tdir)
    rows = corpus()[:50]
    build_chatml_tokenizer(tdir, [m["content"] for r in rows for m in r["conversations"]], chat_template=None)
    sync_source_partitions(dagster_instance, ["alpha", "beta"])
    # (the blocking checks may fail the run; the materialization with its warning is recorded)
    res = _materialize(
        dagster_instance,
        selection=[dg.AssetKey(["mix", "training_mix"]), dg.AssetKey(["tokenized", "dataset"])],
        raise_on_error=False,
    )
    md = res.asset_materializations_for_node("tokenized__dataset")[0].metadata
    assert md["fallback_render_rows"].value == md["dagster/row_count"].value
    assert any("fallback" in w for w in md["warnings"].value)


def test_template_check_follows_the_template_actually_used(env, dagster_instance):
    """tokenize.yaml's chat_template wins over target.yaml's: the template check judges the
    template the dataset was tokenized with (`auto` → a mismatch is an ERROR), not target.yaml's
    (here `qwen`, or null, which used to reach the check as the string "None")."""
    root, cfg = env
    for target_template in ("qwen", None):
        (cfg / "tokenize.yaml").write_text(yaml.safe_dump({"max_length": 2048, "chat_template": "auto"}))
        (cfg / "target.yaml").write_text(yaml.safe_dump({"path": None, "chat_template": target_template}))
        sync_source_partitions(dagster_instance, ["alpha", "beta"])
        res = _materialize(
            dagster_instance,
            selection=[dg.AssetKey(["mix", "training_mix"]), dg.AssetKey(["tokenized", "dataset"])],
        )
        assert res.asset_materializations_for_node("tokenized__dataset")[0].metadata["chat_template"].value == "auto"
        (agreement,) = [
            ev.event_specific_data
            for ev in res.all_events
            if ev.event_type_value == "ASSET_CHECK_EVALUATION"
            and ev.event_specific_data.check_name == "matches_target_chat_template"
        ]
        assert agreement.passed and agreement.severity == dg.AssetCheckSeverity.ERROR, (target_template, agreement)
