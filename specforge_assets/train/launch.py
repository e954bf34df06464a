"""Preparing a training run (the launcher side of `python -m specforge_assets.train.entry`).

Used by the `models/draft_model` asset and `specforge-assets train`: resolve the run's work folder
(keyed by a fingerprint of everything the result depends on), write the launch spec the ranks
read, build the torchrun command lines (node 0, and the joining nodes of a multi-node run), and
prune the work folders of other fingerprints after a success. What runs inside the torchrun ranks
is `train/entry.py`. Imports nothing heavy at load (the code location imports it).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from ..configmodel import validate
from .errors import TrainFileNotFound, TrainInputError
from .settings import LaunchSettings

TRAIN_CODE_VERSION = "draft-train-v1"

# Version of the launch spec (launch.json) the launcher writes and every rank checks.
SPEC_VERSION = 1

# Where a publication moves the draft it replaces (`train.entry.publish_checkpoint`), under
# `<data root>/models/`: the previous draft version the evaluation compares with.
PREVIOUS_DRAFT_DIR = "draft_model_previous"


def previous_draft_dir(root: Path | str) -> Path:
    """`<root>/models/draft_model_previous`: the draft version the current one replaced (it
    exists once a second, different draft was published)."""
    return Path(root) / "models" / PREVIOUS_DRAFT_DIR


def _launch(launch: dict | LaunchSettings | None) -> LaunchSettings:
    """configs/train.yaml `launch:` (a dict as `train_settings` returns it, or part of one: the
    rest is the model's defaults) as `LaunchSettings`; `ConfigError` (one line) when invalid."""
    if isinstance(launch, LaunchSettings):
        return launch
    return validate(LaunchSettings, launch or {}, "configs/train.yaml launch")


def _torchrun_head(launch: LaunchSettings) -> list[str]:
    """`python -m torch.distributed.run` (= torchrun, from this interpreter's environment) and its
    node options: `--standalone` on one node; on several, a c10d rendezvous at
    launch.rdzv_endpoint under launch.rdzv_id (torchrun ignores --node_rank under c10d and numbers
    nodes in its own order: the entry's --node-rank is what puts node 0 at global rank 0)."""
    head = [sys.executable, "-m", "torch.distributed.run"]
    nnodes = launch.nnodes
    if nnodes == 1:
        head.append("--standalone")
    else:
        head += [
            f"--nnodes={nnodes}",
            "--rdzv_backend=c10d",
            f"--rdzv_endpoint={launch.rdzv_endpoint}",
            f"--rdzv_id={launch.rdzv_id}",
        ]
    return head + [f"--nproc_per_node={launch.nproc_per_node}", "-m", "specforge_assets.train.entry"]


def _node_args(launch: LaunchSettings) -> list[str]:
    nnodes = launch.nnodes
    return [] if nnodes == 1 else ["--nnodes", str(nnodes), "--node-rank", str(launch.node_rank)]


def torchrun_command(spec_path: Path | str, nproc_per_node: int, launch: dict | None = None) -> list[str]:
    """The torchrun command line of node 0 (the node that prepared `spec_path`): one node by
    default; `launch` (configs/train.yaml `launch:`) adds the multi-node rendezvous."""
    ls = _launch({**(launch or {}), "nproc_per_node": nproc_per_node})
    return _torchrun_head(ls) + ["--spec", str(spec_path)] + _node_args(ls)


def join_command(launch: dict) -> list[str]:
    """The torchrun command line of a node with launch.node_rank > 0: it joins the rendezvous and
    trains the run node 0 prepared (the spec comes from node 0 through torchrun's store; this
    node needs the data root at the same path, on storage shared with node 0)."""
    ls = _launch(launch)
    if ls.nnodes < 2 or ls.node_rank < 1:
        raise TrainInputError(
            "configs/train.yaml launch: joining a run needs nnodes > 1 and node_rank > 0 "
            f"(got nnodes={ls.nnodes!r}, node_rank={ls.node_rank!r})"
        )
    return _torchrun_head(ls) + _node_args(ls)


def prepare_launch(
    *,
    root: Path,
    settings: dict,
    target_path: Path | str,
    dataset_path: Path | str,
    vocab_mapping_path: Path | str,
    upstream_data_versions: dict,
    hidden_states_path: Path | str | None = None,
    resume: bool = True,
    run_id: str | None = None,
    inputs: dict | None = None,
) -> tuple[dict, Path, list[str]]:
    """Write the launch spec into the run's work folder; return (spec, spec path, command).

    The work folder is keyed by a fingerprint of everything the result depends on (training
    config, launch mode/device/world size, upstream data versions, code version), so a relaunch
    with the same inputs resumes, and other inputs start fresh: two retrainings of different data
    versions never share a folder. Paths are not part of it (a model is its content: the target
    counts by its data version, or by its path/id only when no version is known)."""
    from ..fileio import atomic_write, sha256_json

    from .data import check_trainable
    from .settings import make_train_config

    launch = _launch(settings["launch"])
    if launch.node_rank != 0:
        raise TrainInputError(
            f"configs/train.yaml launch.node_rank is {launch.node_rank}: only node 0 prepares, "
            "reports and publishes a training run (the Dagster run, or `specforge-assets train` on "
            f"node 0); start node {launch.node_rank} with `specforge-assets train --node-rank "
            f"{launch.node_rank}`"
        )
    try:
        make_train_config(settings["training"])  # validate early, in the launcher
    except (TypeError, ValueError) as e:
        if isinstance(e, TrainInputError):
            raise
        raise TrainInputError(f"configs/train.yaml training: {e}") from e
    mode = launch.mode
    if mode == "offline" and not hidden_states_path:
        raise TrainInputError(
            "launch.mode is offline but no hidden states path was given (materialize models/target_hidden_states)"
        )
    # a draft trained on nothing is refused before anything is launched
    check_trainable(dataset_path)
    vm = Path(vocab_mapping_path)
    if not vm.exists():
        raise TrainFileNotFound(
            f"vocab mapping not found: {vm} (run vocab-mapping / materialize tokenized/vocab_mapping)"
        )
    fp = sha256_json(
        {
            "code": TRAIN_CODE_VERSION,
            "train": settings["training"],
            "mode": mode,
            "device": launch.device,
            "nproc_per_node": launch.nproc_per_node,
            "upstream": upstream_data_versions,
            **({"nnodes": launch.nnodes} if launch.nnodes > 1 else {}),
            **({} if upstream_data_versions.get("models/target_model") else {"target": str(target_path)}),
        }
    )
    models_dir = Path(root) / "models"
    work_root = models_dir / "draft_model_work"
    work_dir = work_root / fp[:16]
    work_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "spec_version": SPEC_VERSION,
        "fingerprint": fp,
        "train": settings["training"],
        "mode": mode,
        "device": launch.device,
        "threads_per_proc": launch.threads_per_proc,
        "nproc_per_node": launch.nproc_per_node,
        "nnodes": launch.nnodes,
        "target_path": str(target_path),
        "dataset_path": str(dataset_path),
        "vocab_mapping_path": str(vocab_mapping_path),
        "hidden_states_path": str(hidden_states_path) if hidden_states_path else None,
        "work_dir": str(work_dir),
        "out_dir": str(models_dir / "draft_model"),
        "previous_dir": str(previous_draft_dir(root)),
        "upstream_data_versions": upstream_data_versions,
        "inputs": inputs or {k: {"data_version": v} for k, v in upstream_data_versions.items()},
        "data_root": str(root),
        "run_id": run_id,
        "resume": resume,
    }
    spec_path = work_dir / "launch.json"
    with atomic_write(spec_path) as f:
        json.dump(spec, f, indent=2, default=str)
    return spec, spec_path, torchrun_command(spec_path, launch.nproc_per_node, launch.model_dump())


def prune_work_dirs(spec: dict, protect: set | frozenset = frozenset()) -> list[Path]:
    """After a successful run: drop the work folders of other fingerprints (stale states), except
    those in `protect` (the launcher passes those of runs still in progress)."""
    keep = Path(spec["work_dir"])
    removed = []
    for d in keep.parent.iterdir():
        if d.is_dir() and d != keep and d not in protect:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed
