"""`configs/target.yaml path:` a GGUF file → `models/target_model` materializes a normal HF folder
under the data root, versioned by content; downstream reads the imported folder; an unchanged
source is not imported again; moving the GGUF does not change the version."""

from __future__ import annotations

import json
import shutil

import dagster as dg
import pytest
import yaml

from specforge_assets.assets import models as M
from specforge_assets.keys import TARGET
from specforge_assets.resources import SpecforgeStore
from specforge_assets.target import target_model_path


def _materialize(instance):
    res = dg.materialize(
        [M.target_model], instance=instance, resources={"store": SpecforgeStore()}, raise_on_error=False
    )
    assert res.success, [e.message for e in res.all_events if e.is_failure]
    (mat,) = res.asset_materializations_for_node(M.target_model.op.name)
    checks = {e.check_name: e.passed for e in res.get_asset_check_evaluations()}
    return mat, checks


@pytest.mark.slow
def test_gguf_target_materializes_an_hf_folder_by_content(tmp_path, monkeypatch, data_root, smollm2_gguf):
    cfg_dir = tmp_path / "configs"
    cfg_dir.mkdir()
    monkeypatch.setenv("SPECFORGE_CONFIG_DIR", str(cfg_dir))
    gguf = tmp_path / "a" / smollm2_gguf.name
    gguf.parent.mkdir()
    shutil.copy(smollm2_gguf, gguf)
    (cfg_dir / "target.yaml").write_text(yaml.safe_dump({"path": str(gguf), "chat_template": "auto"}))
    with dg.instance_for_test() as instance:
        first, checks = _materialize(instance)
        out = data_root / "models" / "target_model"
        cfg = json.loads((out / "config.json").read_text())
        assert (cfg["num_hidden_layers"], cfg["hidden_size"], cfg["vocab_size"]) == (30, 576, 49152)
        assert checks == {"loads_with_chat_template": True}
        assert first.metadata["kind"].value == "imported gguf" and first.metadata["cached"].value is False
        assert target_model_path(data_root) == out  # downstream reads the imported folder
        version = first.tags["dagster/data_version"]
        assert (data_root / "versions" / "target_model" / version / "model.safetensors").exists()
        again, _ = _materialize(instance)
        assert again.metadata["cached"].value is True and again.tags["dagster/data_version"] == version
        # the same model moved elsewhere: imported again (another source path), same content version
        moved = tmp_path / "b" / gguf.name
        moved.parent.mkdir()
        shutil.move(gguf, moved)
        (cfg_dir / "target.yaml").write_text(yaml.safe_dump({"path": str(moved), "chat_template": "auto"}))
        third, _ = _materialize(instance)
        assert third.tags["dagster/data_version"] == version
        assert instance.get_latest_materialization_event(TARGET) is not None
