"""Models assets: an expected failure (a draft to be trained on nothing) fails the step with one
`dagster.Failure` line, before anything is launched."""

from __future__ import annotations

import json
import shutil

import dagster as dg
import yaml

from specforge_assets.assets import models as M
from specforge_assets.resources import SpecforgeStore, training_pipes

from tests.helpers.toy import cached_toy_target


def test_draft_model_refuses_a_dataset_without_supervised_tokens(tmp_path):
    root, cfg = tmp_path / "data", tmp_path / "configs"
    cfg.mkdir()
    target = tmp_path / "target"
    shutil.copytree(cached_toy_target(), target)
    (cfg / "target.yaml").write_text(yaml.safe_dump({"path": str(target), "chat_template": "qwen"}))
    (cfg / "train.yaml").write_text(
        yaml.safe_dump({"launch": {"nproc_per_node": 1, "device": "cpu", "mode": "online"}})
    )
    ds = root / "tokenized" / "dataset"
    ds.mkdir(parents=True)
    (ds / "train.jsonl").write_text(
        "".join(json.dumps({"id": f"z{i}", "input_ids": [1, 2, 3], "loss_mask": [0, 0, 0]}) + "\n" for i in range(2))
    )
    (root / "tokenized" / "vocab_mapping").mkdir(parents=True)
    (root / "tokenized" / "vocab_mapping" / "vocab_mapping.pt").write_bytes(b"")
    store = SpecforgeStore(data_root=str(root), config_dir=str(cfg))
    with dg.instance_for_test() as instance:
        res = dg.materialize(
            [M.draft_model],
            instance=instance,
            raise_on_error=False,
            resources={"store": store, "trainer": M.DraftTrainer(), "pipes": training_pipes(store)},
        )
    assert not res.success
    fail = [e for e in res.all_events if e.is_step_failure][0].step_failure_data
    assert fail.user_failure_data is not None  # a dagster.Failure, not a crash
    assert fail.user_failure_data.description == (
        f"no supervised tokens in {ds} (2 rows, all loss masks zero): nothing to train on; "
        "check max_length / chat template of the tokenize step"
    )
    assert not (root / "models" / "draft_model_work").exists()
