"""The exact inputs of a training or evaluation run, resolved from recorded versions. No Dagster import.

The asset layer asks the Dagster instance what was recorded (data versions, run ids, metadata)
and passes it here as plain values (`Recorded`); this module turns them into folders — the
immutable `<data root>/versions/<artifact>/<v>/` copies when they exist, else the current layer
folders with the versions their manifests give (data prepared outside Dagster) — and refuses,
with a `UserError` naming what to materialize, what cannot be read by version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..fileio import read_manifest
from ..lineage import inputs_by_asset
from ..paths import layer_dir
from ..tags import TRAINED_ON_TAG
from ..versioned import existing_version_dir

DATASET = "tokenized/dataset"
VOCAB = "tokenized/vocab_mapping"
MIX = "mix/training_mix"
TARGET = "models/target_model"
HIDDEN_STATES = "models/target_hidden_states"


@dataclass(frozen=True)
class Recorded:
    """One materialization as the instance recorded it: its data version, run id and metadata."""

    data_version: str | None
    run_id: str | None = None
    metadata: dict = field(default_factory=dict)


def require(path: Path, what: str) -> Path:
    """`path` when it exists, else a UserError "<what> not found at <path>: materialize it first"."""
    if not path.exists():
        raise UserError(f"{what} not found at {path}: materialize it first")
    return path


def folder_version(recorded: str | None, folder: Path) -> str | None:
    """An upstream's data version: the recorded one, else the `data_version` of the folder's manifest."""
    if recorded:
        return recorded
    m = read_manifest(folder) if folder.is_dir() else None
    return (m or {}).get("data_version")


def hidden_states_inputs(root: Path, target: Path | str, latest: dict[str, str | None]) -> tuple[Path, dict]:
    """The inputs of `models/target_hidden_states`: (the current tokenized dataset folder,
    {"tokenized/dataset": version, "models/target_model": version}). `target`: the target's folder
    (or hub id: no folder to read a manifest from); `latest`: the versions the instance recorded
    for both (None: the folder manifest's). Raises UserError when the dataset is not materialized."""
    dataset = require(layer_dir("tokenized", "dataset", root=root), DATASET)
    target_folder = target if isinstance(target, Path) else Path("/nonexistent")
    return dataset, {
        DATASET: folder_version(latest[DATASET], dataset),
        TARGET: folder_version(latest[TARGET], target_folder),
    }


def offline_hidden_states(root: Path, recorded: str | None) -> tuple[Path, str | None]:
    """`launch.mode: offline`: the hidden-states folder training reads and its data version
    (`recorded` by the instance, else its manifest's). Raises UserError when it is not materialized."""
    folder = require(layer_dir("models", "target_hidden_states", root=root), HIDDEN_STATES)
    return folder, folder_version(recorded, folder)


def pinned_target(root: Path, config: dict, version: str | None) -> tuple[dict, Path | str]:
    """The target a run reads, by version: ({data_version, path} as recorded, the folder as a Path
    or a hub id as a str). `version` (the one recorded upstream, or None) names the immutable copy
    under `<root>/versions/target_model/` when there is one; else the configured folder (or hub
    id) — after checking that
    a configured folder's content still is `version` (a model is its content, not its folder: a
    moved folder is fine, a changed one is refused with a UserError naming the folder and both
    versions). `config`: configs/target.yaml. Raises UserError when the folder has no config.json."""
    from ..target import target_config, target_model_path
    from ..target_import import quick_content_version

    d = existing_version_dir(root, "target_model", version)
    if d is not None:
        return {"data_version": version, "path": str(d)}, d
    target = target_model_path(root, config)
    if isinstance(target, Path):
        require(target / "config.json", TARGET)
        if target_config(config).get("path"):
            actual, _ = quick_content_version(target)
            if version and actual != version:
                raise UserError(
                    f"the target model at {target} changed since models/target_model recorded version "
                    f"{version} (its content is now {actual}): materialize models/target_model again"
                )
            version = actual
    return {"data_version": version, "path": str(target)}, target


@dataclass(frozen=True)
class TrainingInputs:
    """What a training run reads: the tokenized dataset and vocab mapping folders, the target
    (a folder as a Path, a hub id as a str), and `pinned`, per asset (DATASET, VOCAB, MIX, TARGET)
    ``{data_version, path[, run_id]}``: what the run records (manifest.json `inputs`, lineage)."""

    dataset: Path
    vocab_mapping: Path
    target: Path | str
    pinned: dict[str, dict]

    @property
    def versions(self) -> dict[str, str | None]:
        """{asset: data version} of `pinned`."""
        return {k: v.get("data_version") for k, v in self.pinned.items()}


def training_inputs(
    root: Path,
    *,
    target_config: dict,
    dataset: Recorded | None,
    vocab: Recorded | None,
    mix: dict,
    latest: dict[str, str | None],
    wanted: str | None = None,
) -> TrainingInputs:
    """The exact, immutable inputs of a training run (`TrainingInputs`).

    `dataset`: the tokenized/dataset materialization to train on (the one of version `wanted`,
    the run's `TRAINED_ON_TAG` tag, else the latest; None when there is none). `vocab`: the latest
    vocab mapping whose metadata `dataset_version` is that dataset's. `mix`: the latest mix as
    recorded ({data_version, path: its immutable folder or None}). `latest`: the latest recorded
    data version by asset (DATASET, VOCAB, MIX, TARGET), used for data prepared outside Dagster.
    Mix and target are those the dataset was tokenized from (its manifest's `inputs`). Raises UserError when `wanted` was never
    materialized or has no immutable copy, when no vocab was built from the dataset, or when a
    folder to read is missing."""
    out: dict = {}
    if wanted and dataset is None:
        raise UserError(
            f"tokenized/dataset version {wanted} (this run's {TRAINED_ON_TAG} tag) was never materialized in this instance"
        )
    ds_version = dataset.data_version if dataset else None
    ds_dir = existing_version_dir(root, "tokenized_dataset", ds_version)
    made_from: dict = {}
    if dataset is not None and ds_dir is not None:
        out[DATASET] = {"data_version": ds_version, "path": str(ds_dir), "run_id": dataset.run_id}
        made_from = (read_manifest(ds_dir) or {}).get("inputs") or {}
        v_version = vocab.data_version if vocab else None
        v_dir = existing_version_dir(root, "vocab_mapping", v_version)
        if vocab is None or v_dir is None:
            raise UserError(
                f"no tokenized/vocab_mapping built from tokenized/dataset {ds_version}: "
                "materialize tokenized/vocab_mapping first"
            )
        out[VOCAB] = {"data_version": v_version, "path": str(v_dir), "run_id": vocab.run_id}
    else:
        if wanted:
            raise UserError(
                f"tokenized/dataset version {wanted} has no immutable copy under {root}/versions: "
                "materialize tokenized/dataset again"
            )
        ds_folder = require(layer_dir("tokenized", "dataset", root=root), DATASET)
        vocab_folder = require(layer_dir("tokenized", "vocab_mapping", root=root), VOCAB)
        out[DATASET] = {"data_version": folder_version(latest.get(DATASET), ds_folder), "path": str(ds_folder)}
        out[VOCAB] = {"data_version": folder_version(latest.get(VOCAB), vocab_folder), "path": str(vocab_folder)}
    mix_in = made_from.get(MIX) or {}
    if not mix_in.get("path"):
        mix_in = mix
    if not mix_in.get("path"):
        mix_folder = layer_dir("mix", root=root)
        mix_in = {"data_version": folder_version(latest.get(MIX), mix_folder), "path": str(mix_folder)}
    out[MIX] = {"data_version": mix_in.get("data_version"), "path": mix_in["path"], **_run_of(mix_in)}
    target_made = made_from.get(TARGET) or {}
    out[TARGET], target = pinned_target(root, target_config, target_made.get("data_version") or latest.get(TARGET))
    if target_made.get("data_version") == out[TARGET]["data_version"]:
        out[TARGET].update(_run_of(target_made))  # the run that made the version read
    return TrainingInputs(
        dataset=Path(out[DATASET]["path"]), vocab_mapping=Path(out[VOCAB]["path"]), target=target, pinned=out
    )


def _run_of(record: dict) -> dict:
    """`{"run_id": ...}` of a recorded input when it names the run that made it, else {}."""
    return {"run_id": record["run_id"]} if record.get("run_id") else {}


def launched_work_dirs(work_root: Path) -> dict[Path, str]:
    """{work folder: run id of the run that launched it} for the folders under `work_root` whose
    `launch.json` names one (unreadable or missing files are skipped)."""
    found: dict[Path, str] = {}
    if not work_root.is_dir():
        return found
    for d in work_root.iterdir():
        try:
            run_id = json.loads((d / "launch.json").read_text()).get("run_id")
        except (OSError, ValueError):
            continue
        if run_id:
            found[d] = run_id
    return found


@dataclass(frozen=True)
class EvaluationInputs:
    """What a draft evaluation reads: the draft checkpoint folder, the mix's test split, the
    vocab mapping, the target (folder or hub id) and, per asset, {data_version, path, ...}."""

    draft_dir: Path
    test_jsonl: Path
    vocab_mapping: Path
    target: Path | str
    inputs: dict


def evaluation_inputs(
    root: Path, *, target_config: dict, draft: Recorded | None, latest: dict[str, str | None]
) -> EvaluationInputs:
    """The inputs of an evaluation of the latest draft (`draft`: its materialization; metadata
    `lineage/input_versions` (rows, read by `lineage.inputs_by_asset`) and `version_path`). The
    draft's immutable folder when it exists, else `models/draft_model`; the mix, vocab mapping
    and target it recorded as its inputs (its manifest's `inputs` for a draft recorded without
    input rows), else the current folders with
    the `latest` recorded versions (keys DATASET, VOCAB, MIX, TARGET). Raises UserError when the
    draft or the mix's test split is missing, or the target changed (`pinned_target`)."""
    meta = draft.metadata if draft else {}
    # what the draft's training read; the offline hidden states are no input of an evaluation
    draft_inputs = inputs_by_asset(meta.get("lineage/input_versions"))
    draft_inputs.pop(HIDDEN_STATES, None)
    vpath = meta.get("version_path")
    draft_dir = (
        Path(vpath)
        if vpath and Path(vpath).is_dir()
        else require(layer_dir("models", "draft_model", root=root), "models/draft_model")
    )
    if not draft_inputs:  # a draft recorded without input rows: its manifest, else the current folders
        draft_inputs = (read_manifest(draft_dir) or {}).get("inputs") or {}
    mix_folder = layer_dir("mix", root=root)
    vocab_folder = layer_dir("tokenized", "vocab_mapping", root=root)
    mix_in = draft_inputs.get(MIX) or {
        "path": str(mix_folder),
        "data_version": folder_version(latest.get(MIX), mix_folder),
    }
    vocab_in = draft_inputs.get(VOCAB) or {
        "path": str(vocab_folder),
        "data_version": folder_version(latest.get(VOCAB), vocab_folder),
    }
    target_in = draft_inputs.get(TARGET) or {}
    target: Path | str
    if target_in.get("path"):  # as the draft recorded it: a folder, or a hub id
        target = Path(target_in["path"]) if Path(str(target_in["path"])).exists() else target_in["path"]
    else:
        pinned, target = pinned_target(root, target_config, latest.get(TARGET))
        target_in = {**pinned, **({"data_version": target_in["data_version"]} if target_in.get("data_version") else {})}
    test = require(Path(mix_in["path"]) / "test.jsonl", "mix/training_mix test split (test.jsonl)")
    inputs = {
        "models/draft_model": {
            "data_version": draft.data_version if draft else None,
            "path": str(draft_dir),
            "run_id": draft.run_id if draft else None,
        },
        **draft_inputs,
    }
    inputs.setdefault(MIX, mix_in)
    inputs.setdefault(VOCAB, vocab_in)
    inputs.setdefault(TARGET, target_in)
    return EvaluationInputs(
        draft_dir=draft_dir, test_jsonl=test, vocab_mapping=Path(vocab_in["path"]), target=target, inputs=inputs
    )
