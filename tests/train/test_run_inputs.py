"""train.inputs and train.eval_summary: the inputs of a training / evaluation run resolved from
recorded versions, and a report in numbers (plain Python, no Dagster instance)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specforge_assets.errors import UserError
from specforge_assets.fileio import write_manifest
from specforge_assets.lineage import input_rows, inputs_by_asset
from specforge_assets.target_import import quick_content_version
from specforge_assets.train.eval_summary import headline_numbers, per_category_numbers, per_set_numbers, report_version
from specforge_assets.train.inputs import (
    DATASET,
    HIDDEN_STATES,
    MIX,
    TARGET,
    VOCAB,
    Recorded,
    evaluation_inputs,
    launched_work_dirs,
    pinned_target,
    training_inputs,
)
from specforge_assets.versioned import version_dir


def _hf_folder(path: Path, hidden: int = 8) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"architectures": ["Qwen2ForCausalLM"], "hidden_size": hidden}))
    (path / "model.safetensors").write_bytes(b"weights")
    return path


def _versioned(root: Path, artifact: str, version: str, **manifest) -> Path:
    d = version_dir(root, artifact, version)
    d.mkdir(parents=True)
    write_manifest(d, data_version=version, **manifest)
    return d


def test_a_changed_external_target_folder_is_refused_naming_the_folder_and_both_versions(tmp_path):
    target = _hf_folder(tmp_path / "my-target")
    recorded, _ = quick_content_version(target)
    config = {"path": str(target)}
    assert pinned_target(tmp_path / "data", config, recorded) == (
        {"data_version": recorded, "path": str(target.resolve())},
        target.resolve(),
    )
    (target / "model.safetensors").write_bytes(b"other weights")
    now, _ = quick_content_version(target)
    with pytest.raises(UserError) as e:
        pinned_target(tmp_path / "data", config, recorded)
    assert str(e.value) == (
        f"the target model at {target.resolve()} changed since models/target_model recorded version {recorded} "
        f"(its content is now {now}): materialize models/target_model again"
    )


def test_pinned_target_prefers_the_immutable_copy_and_needs_a_config_json(tmp_path):
    root = tmp_path / "data"
    kept = version_dir(root, "target_model", "v1")
    kept.mkdir(parents=True)
    assert pinned_target(root, {"path": None}, "v1") == ({"data_version": "v1", "path": str(kept)}, kept)
    # the demo target's folder, never built
    with pytest.raises(UserError, match=r"models/target_model not found at .*models/target_model/config\.json"):
        pinned_target(root, {"path": None}, "v2")
    # a hub id is read from its import under the data root, versioned by content when none was recorded
    imported = _hf_folder(root / "models" / "target_model")
    assert pinned_target(root, {"path": "org/model"}, None) == (
        {"data_version": quick_content_version(imported)[0], "path": str(root / "models" / "target_model")},
        root / "models" / "target_model",
    )


def test_training_inputs_by_version(tmp_path):
    root = tmp_path / "data"
    mix_dir = _versioned(root, "mix", "mix1")
    _versioned(root, "target_model", "t1")
    ds_dir = _versioned(
        root,
        "tokenized_dataset",
        "ds1",
        inputs={MIX: {"data_version": "mix1", "path": str(mix_dir)}, TARGET: {"data_version": "t1"}},
    )
    vocab_dir = _versioned(root, "vocab_mapping", "voc1")
    got = training_inputs(
        root,
        target_config={"path": None},
        dataset=Recorded("ds1", "run-ds"),
        vocab=Recorded("voc1", "run-voc"),
        mix={"data_version": "mix-latest", "path": None},
        latest={TARGET: "t-latest"},
    )
    assert got.pinned == {
        DATASET: {"data_version": "ds1", "path": str(ds_dir), "run_id": "run-ds"},
        VOCAB: {"data_version": "voc1", "path": str(vocab_dir), "run_id": "run-voc"},
        MIX: {"data_version": "mix1", "path": str(mix_dir)},
        TARGET: {"data_version": "t1", "path": str(version_dir(root, "target_model", "t1"))},
    }
    assert (got.dataset, got.vocab_mapping, got.target) == (ds_dir, vocab_dir, version_dir(root, "target_model", "t1"))
    assert got.versions == {DATASET: "ds1", VOCAB: "voc1", MIX: "mix1", TARGET: "t1"}
    with pytest.raises(UserError) as e:
        training_inputs(root, target_config={}, dataset=Recorded("ds1", "r"), vocab=None, mix={}, latest={})
    assert str(e.value) == (
        "no tokenized/vocab_mapping built from tokenized/dataset ds1: materialize tokenized/vocab_mapping first"
    )


def test_training_inputs_refuse_a_requested_version_that_cannot_be_read(tmp_path):
    root = tmp_path / "data"
    with pytest.raises(UserError) as e:
        training_inputs(root, target_config={}, dataset=None, vocab=None, mix={}, latest={}, wanted="abc")
    assert str(e.value) == (
        "tokenized/dataset version abc (this run's specforge/trigger_data_version tag) was never materialized "
        "in this instance"
    )
    with pytest.raises(UserError) as e:
        training_inputs(root, target_config={}, dataset=Recorded("abc"), vocab=None, mix={}, latest={}, wanted="abc")
    assert str(e.value) == (
        f"tokenized/dataset version abc has no immutable copy under {root}/versions: materialize tokenized/dataset again"
    )


def test_training_inputs_of_data_prepared_outside_dagster_read_the_current_folders(tmp_path):
    root = tmp_path / "data"
    with pytest.raises(UserError, match=r"^tokenized/dataset not found at .*tokenized/dataset: materialize it first$"):
        training_inputs(root, target_config={}, dataset=None, vocab=None, mix={}, latest={})
    for name, version in (("tokenized/dataset", "ds-m"), ("tokenized/vocab_mapping", None), ("mix", "mix-m")):
        (root / name).mkdir(parents=True)
        if version:
            write_manifest(root / name, data_version=version)
    _hf_folder(root / "models" / "target_model")
    got = training_inputs(
        root, target_config={"path": None}, dataset=None, vocab=None, mix={}, latest={VOCAB: "voc-recorded"}
    )
    assert got.pinned[DATASET] == {"data_version": "ds-m", "path": str(root / "tokenized" / "dataset")}
    assert got.pinned[VOCAB] == {"data_version": "voc-recorded", "path": str(root / "tokenized" / "vocab_mapping")}
    assert got.pinned[MIX] == {"data_version": "mix-m", "path": str(root / "mix")}
    assert got.pinned[TARGET] == {"data_version": None, "path": str(root / "models" / "target_model")}
    assert got.target == root / "models" / "target_model"  # a folder (a Path), not a hub id


def test_launched_work_dirs(tmp_path):
    assert launched_work_dirs(tmp_path / "none") == {}
    for name, content in (("a", {"run_id": "r1"}), ("b", {"run_id": None}), ("c", "not json")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "launch.json").write_text(content if isinstance(content, str) else json.dumps(content))
    (tmp_path / "d").mkdir()
    assert launched_work_dirs(tmp_path) == {tmp_path / "a": "r1"}


def test_evaluation_inputs_use_what_the_draft_recorded(tmp_path):
    root = tmp_path / "data"
    draft_dir = _versioned(root, "draft_model", "d1")
    mix_dir = _versioned(root, "mix", "mix1")
    target = _hf_folder(tmp_path / "target")
    recorded = {
        MIX: {"data_version": "mix1", "path": str(mix_dir)},
        VOCAB: {"data_version": "voc1", "path": str(tmp_path / "vocab")},
        TARGET: {"data_version": "t1", "path": str(target)},
    }
    # the draft's lineage rows, as the draft asset records them (an offline draft's hidden states too)
    rows = input_rows({**recorded, HIDDEN_STATES: {"data_version": "h1", "path": str(tmp_path / "hidden")}})
    draft = Recorded("d1", "run-d", {"lineage/input_versions": rows, "version_path": str(draft_dir)})
    with pytest.raises(UserError) as e:
        evaluation_inputs(root, target_config={}, draft=draft, latest={})
    assert str(e.value) == (
        f"mix/training_mix test split (test.jsonl) not found at {mix_dir / 'test.jsonl'}: materialize it first"
    )
    (mix_dir / "test.jsonl").write_text("{}\n")
    got = evaluation_inputs(root, target_config={}, draft=draft, latest={})
    assert (got.draft_dir, got.test_jsonl, got.vocab_mapping, got.target) == (
        draft_dir,
        mix_dir / "test.jsonl",
        tmp_path / "vocab",
        target,
    )
    assert got.inputs == {
        "models/draft_model": {"data_version": "d1", "path": str(draft_dir), "run_id": "run-d"},
        **recorded,
    }


def test_input_rows_round_trip_to_inputs_by_asset():
    inputs = {
        DATASET: {"data_version": "ds1", "path": "/d/versions/tokenized_dataset/ds1", "run_id": "run-t"},
        MIX: {"data_version": "mix1", "path": "/d/versions/mix/mix1"},
    }
    rows = input_rows(inputs)
    assert rows == [
        {
            "asset": DATASET,
            "partition": None,
            "data_version": "ds1",
            "path": inputs[DATASET]["path"],
            "run_id": "run-t",
        },
        {"asset": MIX, "partition": None, "data_version": "mix1", "path": inputs[MIX]["path"], "run_id": None},
    ]
    assert inputs_by_asset(rows) == inputs
    assert inputs_by_asset(None) == {}


def test_evaluation_inputs_without_a_draft_name_the_missing_folder(tmp_path):
    with pytest.raises(
        UserError, match=r"^models/draft_model not found at .*models/draft_model: materialize it first$"
    ):
        evaluation_inputs(tmp_path, target_config={}, draft=None, latest={})


def test_report_numbers_and_version():
    report = {
        "acceptance_length": 2.5,
        "untrained_acceptance_length": 1.25,
        "k": 4,
        "lossless": True,
        "num_prompts": 8,
        "seconds": 3.0,
        "previous": {"acceptance_length": 2.0},
        "per_category": {"math": {"acceptance_length": 3}, "chat": {"acceptance_length": 2}},
        "sets": {"mt": {"2": {"acceptance_length": 1.5}, "4": {"acceptance_length": 2}}},
    }
    assert headline_numbers(report) == {
        "acceptance_length": 2.5,
        "untrained_acceptance_length": 1.25,
        "improvement": 1.25,
        "k": 4,
        "lossless": True,
        "num_prompts": 8,
        "generated_tokens": None,
    }
    assert list(per_category_numbers(report).items()) == [
        ("previous_acceptance_length", 2.0),
        ("acceptance_length/chat", 2.0),
        ("acceptance_length/math", 3.0),
    ]
    assert per_set_numbers(report) == {"acceptance_length/mt/k2": 1.5, "acceptance_length/mt/k4": 2.0}
    assert report_version({**report, "seconds": 99.0}) == report_version(report)
    assert report_version({**report, "acceptance_length": 2.6}) != report_version(report)
    assert len(report_version(report)) == 24


def test_training_inputs_name_the_runs_that_made_the_mix_and_target(tmp_path):
    """The mix and target a dataset was tokenized from carry the run that made them (the dataset's
    manifest `inputs`), so the draft's lineage table links every input to its run."""
    root = tmp_path / "data"
    mix_dir = _versioned(root, "mix", "mix1")
    _versioned(root, "target_model", "t1")
    _versioned(
        root,
        "tokenized_dataset",
        "ds1",
        inputs={
            MIX: {"data_version": "mix1", "path": str(mix_dir), "run_id": "run-mix"},
            TARGET: {"data_version": "t1", "run_id": "run-target"},
        },
    )
    _versioned(root, "vocab_mapping", "voc1")
    got = training_inputs(
        root,
        target_config={"path": None},
        dataset=Recorded("ds1", "run-ds"),
        vocab=Recorded("voc1", "run-voc"),
        mix={},
        latest={},
    )
    assert got.pinned[MIX] == {"data_version": "mix1", "path": str(mix_dir), "run_id": "run-mix"}
    assert got.pinned[TARGET]["run_id"] == "run-target" and got.pinned[TARGET]["data_version"] == "t1"
    assert all(row.get("run_id") for row in got.pinned.values())
