"""Where this process sits in a torchrun job, and the device it computes on: the one implementation
used by the training entry, the training loop and the evaluation.

torchrun gives every worker RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE; a process started
without torchrun is rank 0 of 1. Imports nothing heavy (torch only inside `resolve_device`).
"""

from __future__ import annotations

import os

from .errors import TrainInputError


def global_rank() -> int:
    """This process's rank in the whole job (torchrun's RANK; 0 without torchrun)."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """Processes in the whole job, all nodes (torchrun's WORLD_SIZE; 1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank(default: int = 0) -> int:
    """This process's rank on its node (torchrun's LOCAL_RANK; `default` when unset). Picks the
    GPU: local rank i uses cuda:i."""
    return int(os.environ.get("LOCAL_RANK", str(default)))


def local_world_size() -> int:
    """Processes on this node (torchrun's LOCAL_WORLD_SIZE; the world size when unset)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size())))


def resolve_device(device: str | None, local_rank: int | None = None) -> str:
    """The torch device string for a configured device.

    `device`: "auto" / "" / None → "cuda" when a GPU is visible (with `local_rank` given:
    "cuda:<local_rank mod visible GPUs>"), else "cpu"; "cpu", "cuda", "cuda:N" are returned as
    given. Raises TrainInputError when a CUDA device is asked for and none is visible."""
    import torch

    if device in ("", "auto", None):
        if not torch.cuda.is_available():
            return "cpu"
        return "cuda" if local_rank is None else f"cuda:{local_rank % torch.cuda.device_count()}"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainInputError(f"device {device!r} requested but no CUDA device is visible")
    return device
