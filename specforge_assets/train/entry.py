"""The training process: `torchrun ... -m specforge_assets.train.entry --spec launch.json`.

Launched by the `models/draft_model` asset through Dagster Pipes (or by `specforge-assets train`
without Dagster). Imports `dagster_pipes` only (never `dagster`), so the same entry runs wherever
the Pipes client puts it (a local subprocess, a k8s pod, a Slurm allocation).

* Every rank reads the launch spec (a JSON file written by the launcher, `train/launch.py`, which
  also builds this torchrun command; all ranks need it, and only rank 0 talks to Dagster).
* Global rank 0 opens Pipes (when launched by Dagster); the other ranks never touch it (the
  bootstrap env vars reach every torchrun worker; N writers would interleave open/close
  messages) and log to stdout, which the Pipes client forwards into the run.
* `torch.distributed` is initialised when torchrun started several processes: gloo on CPU,
  NCCL on GPU (one device per local rank).
* Several nodes (launch.nnodes > 1, c10d rendezvous): node 0 is launched as above, the others
  with `--node-rank K` and no spec; `join_nodes` makes node 0's first process global rank 0 and
  hands node 0's spec to every rank (see there).
* `train_draft` trains into a work folder keyed by the run's fingerprint (config + upstream data
  versions), so a crashed/killed run resumes from its last checkpoint when relaunched with the
  same inputs, and never from a checkpoint of other inputs.
* Rank 0 then publishes the final checkpoint atomically into the asset's folder (the previous
  version moves to `<out_dir>_previous` for the evaluation's comparison), writes manifest.json,
  and reports the materialization (metadata + data version = hash of the checkpoint tensors).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any

from .errors import TrainFileNotFound, TrainInputError
from .launch import SPEC_VERSION
from .ranks import global_rank, local_rank, local_world_size, resolve_device, world_size


class StdoutPipes:
    """What a rank that does not talk to Dagster uses (the part of the Pipes context `run` calls):
    logs to stdout; rank 0 prints its materialization as one JSON line."""

    def __init__(self, rank: int):
        self.rank = rank
        self.log = self

    def _emit(self, level: str, msg: str) -> None:
        print(f"[rank {self.rank}] {level}: {msg}", flush=True)

    def info(self, msg: str) -> None:
        self._emit("INFO", msg)

    def error(self, msg: str) -> None:
        self._emit("ERROR", msg)

    def report_asset_materialization(self, metadata=None, data_version=None, asset_key=None) -> None:
        if self.rank == 0:
            print(
                json.dumps(
                    {"materialization": {"data_version": data_version, "metadata": _plain(metadata)}}, default=str
                ),
                flush=True,
            )


def _plain(metadata: dict | None) -> dict:
    out = {}
    for k, v in (metadata or {}).items():
        out[k] = v.get("raw_value") if isinstance(v, dict) and "raw_value" in v else v
    return out


@contextlib.contextmanager
def pipes_for_rank(rank: int):
    """Pipes on global rank 0 when launched by Dagster; a stdout stand-in otherwise."""
    # dagster_pipes is imported only when Dagster launched us: a bare torchrun needs nothing of it
    if rank == 0 and os.environ.get("DAGSTER_PIPES_CONTEXT"):
        from dagster_pipes import open_dagster_pipes

        with open_dagster_pipes() as pipes:
            yield pipes
    else:
        yield StdoutPipes(rank)


def checkpoint_version(ckpt_dir: Path) -> str:
    """Data version of a draft checkpoint: hash of its config and tensors."""
    from ..fileio import sha256_files

    return sha256_files([ckpt_dir / "config.json", ckpt_dir / "model.safetensors"])[:24]


def publish_checkpoint(src: Path, out_dir: Path, previous_dir: Path | None, keep: tuple[str, ...]) -> None:
    """Copy the SGLang-loadable files of `src` into `out_dir` atomically (build a temp sibling,
    rename); the old `out_dir` becomes `previous_dir` (when given and different)."""
    from ..fileio import replace_dir

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.publish-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name in keep:
        if (src / name).exists():
            shutil.copy2(src / name, tmp / name)
    old_version = None
    if (out_dir / "model.safetensors").exists() and (out_dir / "config.json").exists():
        old_version = checkpoint_version(out_dir)
    if out_dir.exists():
        if previous_dir is not None and old_version and old_version != checkpoint_version(tmp):
            shutil.rmtree(previous_dir, ignore_errors=True)
            os.replace(out_dir, previous_dir)
            os.replace(tmp, out_dir)
            from ..storage import published

            published(previous_dir)  # object-store data root: upload both (no-op for a local root)
            published(out_dir)
            return
    replace_dir(tmp, out_dir)


def _setup_distributed(device: str, log) -> Any:
    import torch
    import torch.distributed as dist

    if world_size() > 1 and not dist.is_initialized():
        if device.startswith("cuda"):
            torch.cuda.set_device(local_rank())
            dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank()))
        else:
            dist.init_process_group("gloo")
        log(f"torch.distributed initialised: backend={dist.get_backend()} world_size={dist.get_world_size()}")
    return dist


# -- several nodes -------------------------------------------------------------------------------

JOIN_TIMEOUT_S = 300


def join_nodes(spec: dict | None, node_rank: int, timeout_s: float = JOIN_TIMEOUT_S) -> dict:
    """Make launch.node_rank 0 global rank 0 and give every rank node 0's spec; returns the spec.

    Under a c10d rendezvous torchrun numbers the nodes in its own order (sorted host/pid), so
    node 0 (the one Dagster launched, with the Pipes context and the spec) may come up as, say,
    rank 3. Before torch.distributed starts, the workers meet in torchrun's own store
    (MASTER_ADDR:MASTER_PORT): each node's first process registers its node_rank (a second node
    with the same node_rank is refused), node 0's first process publishes its torchrun rank and
    its spec, and every rank renumbers itself by that offset (RANK = (torchrun rank - node 0's)
    mod world size: each node's ranks stay contiguous). Rank 0 is then node 0's first process:
    it alone opens Pipes, saves checkpoints and publishes. The other nodes read node 0's paths,
    so the data root must be on storage shared by every node, at the same path (checked: the
    run's work folder that node 0 created must be visible here)."""
    from datetime import timedelta

    import torch.distributed as dist

    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "")
    prefix = f"specforge/join/{run_id}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False, timeout=timedelta(seconds=timeout_s)
    )
    torch_rank, world = global_rank(), world_size()
    if local_rank() == 0 and store.add(f"{prefix}/node/{node_rank}", 1) > 1:
        raise TrainInputError(
            f"launch.node_rank {node_rank}: another node of rendezvous {run_id!r} already has it; "
            "give each node its own node_rank 0..nnodes-1"
        )
    key = f"{prefix}/leader"
    if node_rank == 0 and local_rank() == 0:
        store.set(key, json.dumps({"rank": torch_rank, "spec": spec}))
    try:
        store.wait([key], timedelta(seconds=timeout_s))
    except Exception as e:  # noqa: BLE001 - torch raises a bare RuntimeError/DistStoreError on timeout
        raise TrainInputError(
            f"no node with launch.node_rank 0 joined rendezvous {run_id!r} within {timeout_s:.0f}s: "
            "node 0 (the Dagster run, or `specforge-assets train` there) prepares the run"
        ) from e
    leader = json.loads(store.get(key))
    rank = (torch_rank - int(leader["rank"])) % world
    os.environ["RANK"] = str(rank)
    spec = leader["spec"]
    if node_rank != 0 and spec.get("spec_version") != SPEC_VERSION:
        raise TrainInputError(
            f"node {node_rank}: node 0 sent a launch spec of version {spec.get('spec_version')!r}, this "
            f"node's code reads version {SPEC_VERSION}: install the same specforge-assets on every node"
        )
    if node_rank != 0 and not Path(spec["work_dir"]).is_dir():
        raise TrainFileNotFound(
            f"node {node_rank}: the run's work folder {spec['work_dir']} (made by node 0) is not "
            "visible here: every node needs the data root at the same path, on shared storage"
        )
    print(f"[rank {rank}] node_rank {node_rank}: torchrun rank {torch_rank} is rank {rank} of {world}", flush=True)
    return spec


def run(spec: dict, node_rank: int = 0) -> dict:
    import torch

    rank = global_rank()
    with pipes_for_rank(rank) as pipes:

        def log(msg: str) -> None:
            if rank == 0:
                pipes.log.info(str(msg))
            else:
                print(f"[rank {rank}] {msg}", flush=True)

        try:
            return _run(spec, pipes, log, rank, node_rank)
        except BaseException as e:
            if rank == 0 and not isinstance(e, SystemExit):
                with contextlib.suppress(Exception):
                    pipes.log.error(f"training failed: {type(e).__name__}: {e}")
            raise
        finally:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                with contextlib.suppress(Exception):
                    dist.destroy_process_group()
    del torch


def _run(spec: dict, pipes, log, rank: int, node_rank: int = 0) -> dict:
    import torch

    from .loop import train_draft
    from .settings import make_train_config

    # the spec (launch.json, version-checked) carries every validated `launch:` value
    device = resolve_device(spec["device"])
    threads = int(spec["threads_per_proc"])
    if device == "cpu":
        if threads <= 0:
            threads = max(1, (os.cpu_count() or 1) // max(1, local_world_size()))
        torch.set_num_threads(threads)
    dist = _setup_distributed(device, log)

    work_dir = Path(spec["work_dir"])
    out_dir = Path(spec["out_dir"])
    cfg = make_train_config(spec.get("train", {}))
    log(
        f"EAGLE3 draft training: device={device} world_size={world_size()} threads/proc={torch.get_num_threads()} "
        f"mode={spec['mode']} work_dir={work_dir}"
    )

    from .loop import latest_state

    state = latest_state(work_dir) if spec["resume"] else None
    resumed_from = 0
    if state is not None:
        resumed_from = int(json.loads((state.parent / "latest.json").read_text()).get("step", 0))
        log(f"found training state {state} (step {resumed_from}): resuming")

    extra_kwargs = {}
    if spec["mode"] == "offline":
        from .hidden_states import offline_training_kwargs

        extra_kwargs = offline_training_kwargs(spec["hidden_states_path"], spec["target_path"])
    t0 = time.time()
    result = train_draft(
        cfg,
        device=f"cuda:{local_rank()}" if device.startswith("cuda") else device,
        target_path=spec["target_path"],
        dataset_path=spec["dataset_path"],
        vocab_mapping_path=spec["vocab_mapping_path"],
        out_dir=str(work_dir),
        log=log,
        resume=bool(spec["resume"]),
        manifest={
            "fingerprint": spec.get("fingerprint"),
            "upstream_data_versions": spec.get("upstream_data_versions", {}),
        },
        **extra_kwargs,
    )
    seconds = time.time() - t0
    result = dict(result or {})
    result["resumed_from_step"] = resumed_from
    if dist.is_initialized():
        dist.barrier()
    log(f"trained {int(result.get('step', 0) or 0)} steps (world size {world_size()}, node_rank {node_rank})")
    if rank != 0:
        return result

    ckpt = work_dir
    if not (ckpt / "model.safetensors").exists():
        raise FileNotFoundError(f"train_draft returned no checkpoint: {ckpt}/model.safetensors is missing")
    previous = Path(spec["previous_dir"]) if spec.get("previous_dir") else None
    from ..fileio import make_staging_dir, write_manifest

    # The run's output is assembled in a folder of its own (inside its work folder), kept as the
    # immutable versions/draft_model/<v>/, and only then published as the current draft.
    files = ("config.json", "model.safetensors", "metrics.json", "manifest.json")
    stage = make_staging_dir(work_dir, ".publish-")
    try:
        for name in files[:3]:
            if (ckpt / name).exists():
                shutil.copy2(ckpt / name, stage / name)
        version = checkpoint_version(stage)
        _write_draft_manifest(stage, spec, result, version, device, seconds, write_manifest)
        version_path = None
        if spec.get("data_root"):
            from ..versioned import publish_version

            version_path = publish_version(stage, spec["data_root"], "draft_model", version)
        publish_checkpoint(stage, out_dir, previous, keep=files)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    metadata = _materialization_metadata(spec, result, out_dir, version, seconds, device)
    if version_path is not None:
        metadata["version_path"] = {"raw_value": str(version_path), "type": "path"}
    pipes.report_asset_materialization(metadata=metadata, data_version=version)
    log(f"draft checkpoint published at {out_dir} (data version {version}) after {seconds:.0f}s")
    return result


def _write_draft_manifest(
    out_dir: Path, spec: dict, result: dict, version: str, device: str, seconds: float, write_manifest
) -> None:
    summary = {k: v for k, v in result.items() if isinstance(v, (int, float, str, bool, list)) and k != "history"}
    write_manifest(
        out_dir,
        artifact="eagle3_draft",
        data_version=version,
        fingerprint=spec.get("fingerprint"),
        upstream_data_versions=spec.get("upstream_data_versions", {}),
        inputs=spec.get("inputs", {}),
        run_id=spec.get("run_id"),
        work_dir=spec.get("work_dir"),
        training_config=spec.get("train", {}),
        launch={k: spec[k] for k in ("mode", "device", "nproc_per_node")}
        | {
            "nnodes": int(spec["nnodes"]),
            "device_resolved": device,
            "world_size": world_size(),
            "published_by": {"rank": global_rank(), "host": socket.gethostname()},
        },
        target_path=str(spec["target_path"]),
        dataset_path=str(spec["dataset_path"]),
        vocab_mapping_path=str(spec["vocab_mapping_path"]),
        result=summary,
        training_seconds=round(seconds, 2),
    )


def _num(v) -> Any:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _materialization_metadata(spec, result, out_dir: Path, version: str, seconds: float, device: str) -> dict:
    acc = [round(float(a), 4) for a in (result.get("acc") or [])]
    md: dict[str, Any] = {
        "path": {"raw_value": str(out_dir), "type": "path"},
        "checkpoint_data_version": version,
        "training_seconds": round(seconds, 2),
        "device": device,
        "world_size": world_size(),
        "nnodes": int(spec["nnodes"]),
        "mode": spec["mode"],
        "steps": int(result.get("step", 0) or 0),
        "ttt_length": len(acc),
        "resumed_from_step": int(result.get("resumed_from_step", 0) or 0),
        "per_step_ttt_acc": {"raw_value": acc, "type": "json"},
        "aux_layer_ids": {"raw_value": result.get("aux_layer_ids"), "type": "json"},
        "training_config": {"raw_value": spec.get("train", {}), "type": "json"},
    }
    for k in ("loss", "first_loss", "tokens_per_s", "num_rows", "num_tokens", "draft_vocab_size", "elapsed_s"):
        v = _num(result.get(k))
        if v is not None:
            md["final_loss" if k == "loss" else k] = round(v, 5) if isinstance(result.get(k), float) else int(v)
    for i, a in enumerate(acc):
        md[f"ttt_acc_{i}"] = a
    return md


def main(argv: list[str] | None = None) -> int:
    from .settings import LaunchSettings

    launch = LaunchSettings.model_fields
    ap = argparse.ArgumentParser(prog="python -m specforge_assets.train.entry", description=__doc__.splitlines()[0])
    ap.add_argument("--spec", help="launch spec JSON written by the launcher (node 0; other nodes receive it)")
    ap.add_argument(
        "--nnodes", type=int, default=launch["nnodes"].default, help="nodes in the rendezvous (launch.nnodes)"
    )
    ap.add_argument(
        "--node-rank",
        type=int,
        default=launch["node_rank"].default,
        help="this node's launch.node_rank (0 = the reporting node)",
    )
    args = ap.parse_args(argv)
    if args.spec is None and args.node_rank == 0:
        ap.error("--spec is required on node 0")
    spec = None
    if args.spec is not None:
        spec = json.loads(Path(args.spec).read_text(encoding="utf-8"))
        if spec.get("spec_version") != SPEC_VERSION:
            raise SystemExit(f"{args.spec}: spec_version {spec.get('spec_version')!r} != {SPEC_VERSION}")
    try:
        if args.nnodes > 1:
            spec = join_nodes(spec, args.node_rank)
        run(spec, node_rank=args.node_rank)
    except Exception as e:  # noqa: BLE001 - an expected failure is one line; a bug keeps its traceback
        from ..errors import user_message

        msg = user_message(e)
        if msg is None or os.environ.get("SPECFORGE_DEBUG", "").strip().lower() in {"1", "true", "yes", "on"}:
            raise
        print(f"error: {msg}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
