"""regenerate_partition (the asset's body) against stub servers: addresses, test split, config layering."""

from __future__ import annotations

import json

import pytest

from specforge_assets.checks.regenerate import quality, reconcile
from specforge_assets.regenerate.config import source_config
from specforge_assets.regenerate.partition import regenerate_partition

from .conftest import make_rows, read_jsonl, write_rows


def test_config_layers_and_unknown_keys():
    yaml_cfg = {
        "defaults": {"temperature": 0.2, "launch": {"backend": "transformers"}},
        "sources": {"a": {"enabled": True, "max_tokens": 9}},
    }
    c = source_config("a", yaml_cfg, {"max_tokens": None, "top_k": 5, "server_addresses": []})
    assert c["enabled"] and c["temperature"] == 0.2 and c["max_tokens"] == 9 and c["top_k"] == 5
    assert c["launch"]["backend"] == "transformers" and c["launch"]["device"] == "cpu"  # nested merge
    assert not source_config("b", yaml_cfg)["enabled"]
    with pytest.raises(ValueError, match="unknown regeneration key 'temprature'"):
        source_config("a", {"sources": {"a": {"temprature": 1}}})


def test_deployment_servers_sit_between_the_file_and_the_run_config():
    """The regen_servers resource (the deployment's servers) overrides configs/regenerate.yaml;
    a run's Launchpad config overrides both; unset ("", [], None) is transparent."""
    yaml_cfg = {"sources": {"a": {"enabled": True, "server_addresses": ["file:1"], "model": "file-model"}}}
    deployment = {"server_addresses": ["deploy:1", "deploy:2"], "model": ""}
    c = source_config("a", yaml_cfg, {"server_addresses": [], "model": None}, deployment=deployment)
    assert c["server_addresses"] == ["deploy:1", "deploy:2"] and c["model"] == "file-model"
    c = source_config("a", yaml_cfg, {"server_addresses": ["run:1"], "model": "run-model"}, deployment=deployment)
    assert c["server_addresses"] == ["run:1"] and c["model"] == "run-model"
    assert source_config("a", yaml_cfg, None, deployment={"server_addresses": []})["server_addresses"] == ["file:1"]


def test_partition_with_addresses_regenerates_train_and_test(tmp_path, stub_server):
    root = tmp_path / "data"
    src = root / "sources" / "s1"
    train_rows, test_rows = make_rows(30, prefix="tr"), make_rows(5, prefix="te")
    train_rows[3]["conversations"][-2]["content"] = "TRUNCATE THINK"
    write_rows(src / "train.jsonl", train_rows)
    write_rows(src / "test.jsonl", test_rows)
    s = stub_server()
    cfg = source_config(
        "s1",
        {
            "sources": {
                "s1": {
                    "enabled": True,
                    "server_addresses": [s.address],
                    "model": "stub-model",
                    "test_split": "regenerate",
                    "concurrency": 4,
                }
            }
        },
    )
    summary = regenerate_partition("s1", cfg, root=root, log=lambda m: None)
    out = root / "regenerated" / "s1"
    assert summary["counts"]["success"] == 30 and summary["reconciles"]
    assert summary["test_split"] == "regenerated" and summary["test_counts"]["success"] == 5
    assert all(r["status"] == "success" for r in read_jsonl(out / "test.jsonl"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["regenerated"] is True and manifest["settings"]["model"] == "stub-model"
    assert manifest["server_addresses"] == [s.address]
    rec = reconcile(src / "train.jsonl", out)
    assert rec.passed and rec.metadata["id_mismatches"] == 0
    q = quality(out, truncation_threshold=0.5, reasoning="none")
    assert q["truncation_rate"].metadata["truncated_turns"] == 1
    assert q["no_think_markers"].metadata["answers_with_think_markers"] == 1
    assert {name: o.passed for name, o in q.items()} == {
        "truncation_rate": True,
        "no_empty_answers": True,
        "no_think_markers": False,
    }

    # tamper: a duplicated output row breaks the blocking reconcile check
    with open(out / "train.jsonl", "a") as f:
        f.write(json.dumps(read_jsonl(out / "train.jsonl")[0]) + "\n")
    rec = reconcile(src / "train.jsonl", out)
    assert not rec.passed and rec.metadata["id_mismatches"] == 1
    assert "tr0: in 1 / out 2" in rec.metadata["id_mismatch_examples"]


def test_partition_off_passes_through_and_needs_sources(tmp_path):
    root = tmp_path / "data"
    with pytest.raises(FileNotFoundError, match="materialize sources/conversations"):
        regenerate_partition("nope", source_config("nope", {}), root=root, log=lambda m: None)
    src = root / "sources" / "s2"
    write_rows(src / "train.jsonl", [{"id": "p1", "text": "pre-formatted"}] + make_rows(3))
    summary = regenerate_partition("s2", source_config("s2", {}), root=root, log=lambda m: None)
    out = root / "regenerated" / "s2"
    assert summary["regenerated"] is False and summary["counts"]["passthrough"] == 4
    assert (out / "train.jsonl").read_bytes() == (src / "train.jsonl").read_bytes()
    assert (out / "errors.jsonl").read_text() == "" and (out / "skipped.jsonl").read_text() == ""
    assert reconcile(src / "train.jsonl", out).passed
