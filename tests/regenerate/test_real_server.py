"""Against a real `transformers serve` (tiny local Qwen2 ChatML model) on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import yaml

from .conftest import FIXTURES, read_jsonl

pytestmark = pytest.mark.server


def test_cli_against_real_transformers_serve(tmp_path, real_server):
    inp = tmp_path / "in.jsonl"
    rows = [json.loads(l) for l in open(FIXTURES / "gsm8k_train.jsonl")][:6]
    rows.append(
        {
            "id": "multi",
            "conversations": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "hello"},
                {"role": "assistant", "content": "old"},
                {"role": "user", "content": "what is 6 times 7"},
                {"role": "assistant", "content": "old"},
            ],
        }
    )
    rows.append({"id": "bad", "conversations": [{"role": "assistant", "content": "x"}]})
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "regen" / "out.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "specforge_assets.cli",
        "regenerate",
        "--model",
        real_server.served_model_name,
        "--server-address",
        real_server.address,
        "--input-file-path",
        str(inp),
        "--output-file-path",
        str(out),
        "--max-tokens",
        "12",
        "--temperature",
        "0.8",
        "--top-k",
        "20",
        "--repetition-penalty",
        "1.2",
        "--seed",
        "3",
        "--dialect",
        "transformers",
        "--concurrency",
        "4",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert (summary["success"], summary["error"], summary["skipped"]) == (7, 0, 1)
    got = read_jsonl(out)
    assert [g["id"] for g in got] == [r["id"] for r in rows[:7]]
    multi = got[-1]
    assert [m["role"] for m in multi["conversations"]] == ["system", "user", "assistant", "user", "assistant"]
    prov = multi["regeneration"]
    assert prov["model"] == real_server.served_model_name and len(prov["turns"]) == 2
    assert all(t["finish_reason"] in ("stop", "length") and t["completion_tokens"] <= 12 for t in prov["turns"])
    assert prov["sampling"]["repetition_penalty"] == 1.2 and prov["sampling"]["top_k"] == 20
    assert prov["servers"] == [real_server.address]
    assert read_jsonl(tmp_path / "regen" / "out_skipped.jsonl")[0]["id"] == "bad"
    assert read_jsonl(tmp_path / "regen" / "out_error.jsonl") == []


def test_sample_partition_regenerated_through_dagster(tmp_path, data_root, dagster_instance, tiny_target):
    """sources/<key> -> regenerated/<key> via dg.materialize, launching `transformers serve` itself."""
    import dagster as dg

    from specforge_assets.assets import regenerate as layer
    from specforge_assets.checks.regenerate import reconcile
    from specforge_assets.resources import SpecforgeStore

    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "regenerate.yaml").write_text(
        yaml.safe_dump(
            {
                "defaults": {"enabled": False},
                "sources": {
                    "sample-gsm8k": {
                        "enabled": True,
                        "max_tokens": 8,
                        "num_samples": 8,
                        "beyond_limit": "passthrough",  # the 4 rows past num_samples reach train.jsonl
                        "seed": 0,
                        "concurrency": 4,
                        "launch": {"model_path": str(tiny_target), "backend": "transformers"},
                    }
                },
            }
        )
    )
    (configs / "target.yaml").write_text("path: null\n")
    for key in ("sample-gsm8k", "sample-other"):
        d = data_root / "sources" / key
        d.mkdir(parents=True)
        shutil.copy(FIXTURES / "gsm8k_train.jsonl", d / "train.jsonl")
    shutil.copy(FIXTURES / "gsm8k_test.jsonl", data_root / "sources" / "sample-gsm8k" / "test.jsonl")
    dagster_instance.add_dynamic_partitions("sources", ["sample-gsm8k", "sample-other"])
    store = SpecforgeStore(data_root=str(data_root), config_dir=str(configs))
    resources = {"store": store, "regen_servers": layer.regen_servers()}

    result = dg.materialize(
        layer.build_assets(store), instance=dagster_instance, resources=resources, partition_key="sample-gsm8k"
    )
    assert result.success
    out = data_root / "regenerated" / "sample-gsm8k"
    train = read_jsonl(out / "train.jsonl")
    src = read_jsonl(data_root / "sources" / "sample-gsm8k" / "train.jsonl")
    # a random tiny model may answer nothing within 8 tokens: that row is an error row (an empty
    # answer is never a success), named as such, and kept out of train.jsonl
    errors = read_jsonl(out / "errors.jsonl")
    assert all(
        "no usable assistant text" in e["error"] and e["regeneration"]["error_kind"] == "empty_content" for e in errors
    )
    assert sorted(r["id"] for r in train + errors) == sorted(r["id"] for r in src)
    assert [r["status"] for r in train] == ["success"] * (8 - len(errors)) + ["passthrough"] * 4
    for g in train[: 8 - len(errors)]:
        s = next(r for r in src if r["id"] == g["id"])
        assert g["conversations"][0] == s["conversations"][0]  # the user turn is kept
        assert g["regeneration"]["model"] == str(tiny_target)
        assert all(m["content"].strip() for m in g["conversations"] if m["role"] == "assistant")
    assert read_jsonl(out / "test.jsonl") == read_jsonl(data_root / "sources" / "sample-gsm8k" / "test.jsonl")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["regenerated"] is True and manifest["reconciles"] is True
    assert manifest["launched_server"]["backend"] == "transformers"
    mat = result.asset_materializations_for_node("regenerated__conversations")[0]
    assert mat.metadata["success"].value + mat.metadata["error"].value == 8
    assert mat.metadata["error"].value == len(errors) and mat.metadata["passthrough"].value == 4
    assert mat.metadata["dagster/row_count"].value == 12 - len(errors)
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["rows_reconcile"].passed
    assert set(checks) == {"rows_reconcile", "truncation_rate", "no_empty_answers", "no_think_markers"}
    assert reconcile(data_root / "sources" / "sample-gsm8k" / "train.jsonl", out).passed

    # regeneration off -> pass-through, recorded as such
    result = dg.materialize(
        layer.build_assets(store), instance=dagster_instance, resources=resources, partition_key="sample-other"
    )
    assert result.success
    other = data_root / "regenerated" / "sample-other"
    assert (other / "train.jsonl").read_bytes() == (data_root / "sources" / "sample-other" / "train.jsonl").read_bytes()
    assert json.loads((other / "manifest.json").read_text())["regenerated"] is False
    mat = result.asset_materializations_for_node("regenerated__conversations")[0]
    assert mat.metadata["regenerated"].value is False
