"""Editing tokenizer/template config marks tokenized/dataset and everything below it stale, and
nothing else (config hash folded into code_version; seen after a code-location reload)."""

import dagster as dg
import yaml
from dagster._core.definitions.data_version import CachingStaleStatusResolver
from dagster._core.loader import LoadingContextForTest
from toy_graph import ASSETS, build_toy_defs

from specforge_assets.partitions import SOURCES_PARTITION_NAME

from specforge_assets.keys import TOKENIZED as TOK
from specforge_assets.keys import VOCAB


def _statuses(defs, instance) -> dict[str, str]:
    resolver = CachingStaleStatusResolver(instance, defs.resolve_asset_graph(), LoadingContextForTest(instance))
    out = {}
    for key in defs.resolve_asset_graph().materializable_asset_keys:
        parts = ["alpha"] if key.path[0] in {"sources", "regenerated"} else [None]
        out[key.to_user_string()] = resolver.get_status(key, parts[0]).value
    return out


def test_tokenizer_config_change_marks_tokenized_and_below_stale(toy, dagster_instance):
    defs, root, config_dir = toy
    inst = dagster_instance
    (config_dir / "tokenize.yaml").write_text(
        yaml.safe_dump({"max_length": 2048, "workers": 1, "vocab_mapping": {"draft_vocab_size": 32000}})
    )
    (config_dir / "target.yaml").write_text(yaml.safe_dump({"path": None, "chat_template": "qwen"}))
    defs = build_toy_defs(root, config_dir)
    inst.add_dynamic_partitions(SOURCES_PARTITION_NAME, ["alpha"])
    mapped = list(defs.assets) + list(defs.asset_checks)  # with the config-hashed code versions
    assert dg.materialize(
        mapped,
        selection=[a.key for a in ASSETS if a.partitions_def],
        partition_key="alpha",
        instance=inst,
        resources=defs.resources,
    ).success
    assert dg.materialize(
        mapped, selection=[a.key for a in ASSETS if not a.partitions_def], instance=inst, resources=defs.resources
    ).success
    base = _statuses(defs, inst)
    assert set(base.values()) == {"FRESH"}, base

    # worker count: not a tokenization input → nothing stale
    (config_dir / "tokenize.yaml").write_text(
        yaml.safe_dump({"max_length": 2048, "workers": 2, "vocab_mapping": {"draft_vocab_size": 32000}})
    )
    assert set(_statuses(build_toy_defs(root, config_dir), inst).values()) == {"FRESH"}

    # the template → tokenized/dataset and everything downstream of it stale, nothing else
    (config_dir / "target.yaml").write_text(yaml.safe_dump({"path": None, "chat_template": "llama3"}))
    got = _statuses(build_toy_defs(root, config_dir), inst)
    stale = {k for k, v in got.items() if v == "STALE"}
    assert stale == {"tokenized/dataset", "tokenized/vocab_mapping", "models/draft_model", "models/draft_evaluation"}, (
        got
    )
    (config_dir / "target.yaml").write_text(yaml.safe_dump({"path": None, "chat_template": "qwen"}))

    # max_length too
    (config_dir / "tokenize.yaml").write_text(
        yaml.safe_dump({"max_length": 1024, "workers": 2, "vocab_mapping": {"draft_vocab_size": 32000}})
    )
    got = _statuses(build_toy_defs(root, config_dir), inst)
    assert {k for k, v in got.items() if v == "STALE"} == stale

    # the draft vocabulary size: vocab mapping and below, not the tokenized dataset
    (config_dir / "tokenize.yaml").write_text(
        yaml.safe_dump({"max_length": 2048, "workers": 2, "vocab_mapping": {"draft_vocab_size": 16000}})
    )
    got = _statuses(build_toy_defs(root, config_dir), inst)
    assert {k for k, v in got.items() if v == "STALE"} == stale - {"tokenized/dataset"}


def test_real_tokenized_asset_code_version_carries_config_hash():
    from specforge_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    assert "+cfg." in graph.get(TOK).code_version
    assert "+cfg." in graph.get(VOCAB).code_version
    assert "+cfg." in graph.get(dg.AssetKey(["models", "draft_model"])).code_version
    for upstream in (["mix", "training_mix"], ["sources", "conversations"], ["models", "target_model"]):
        assert "+cfg." not in (graph.get(dg.AssetKey(upstream)).code_version or "")


def test_which_tokenize_settings_change_the_tokens():
    """The contract behind the fingerprints: operational settings (workers, shard sizes,
    verification, cache size, check bounds) and the vocab mapping's section never stale the
    tokenized dataset; everything else in configs/tokenize.yaml does."""
    from specforge_assets.tokenize.build import token_settings, tokenize_config, vocab_settings

    cfg = tokenize_config({"max_length": 1024, "workers": 3, "vocab_mapping": {"draft_vocab_size": 100}})
    picked = token_settings(cfg)
    assert picked["max_length"] == 1024
    assert not {"workers", "shard_rows", "verify_every", "cache_keep", "checks", "vocab_mapping"} & set(picked)
    assert {"chat_template", "max_length", "is_preformatted", "train_only_last_turn", "corrected", "templates"} == set(
        picked
    )
    assert vocab_settings(cfg) == {"vocab_mapping": {"draft_vocab_size": 100}}
