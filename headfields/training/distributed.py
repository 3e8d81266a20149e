"""Data-parallel training across processes: joining the process group that ``torchrun`` describes, and the few
collective steps the training loop needs (:func:`~headfields.training.train` runs data-parallel whenever a
process group of more than one rank is initialised).

Without a process group, or with one of a single rank, every function here is the identity: the loop runs
unchanged in one process.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import torch
import torch.distributed as dist
from jaxtyping import Float
from torch import Tensor

from ..checks import check_device

__all__ = [
    "broadcast_object",
    "destroy_distributed",
    "init_distributed",
    "is_distributed",
    "mean_over_ranks",
    "rank",
    "world_size",
]


def _initialised() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank in the process group (0 without one)."""
    return dist.get_rank() if _initialised() else 0


def world_size() -> int:
    """The number of ranks in the process group (1 without one)."""
    return dist.get_world_size() if _initialised() else 1


def is_distributed() -> bool:
    """Whether this process is one of several ranks of an initialised process group."""
    return world_size() > 1


def init_distributed(device: str | torch.device | None = None, timeout: datetime.timedelta | None = None) -> torch.device:
    """Join the process group that ``torchrun``'s environment describes; return this rank's device.

    Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment), CUDA ranks get ``cuda:{LOCAL_RANK}`` (made the
    current device) and the NCCL backend; CPU ranks (``device="cpu"``, or no GPU) get gloo. Of ``device`` only
    the kind counts there: each rank picks its own GPU. Without ``torchrun``, or when the group already exists,
    nothing is joined and ``device`` is returned as given (default: ``cuda`` when available, else ``cpu``).
    ``timeout`` bounds every collective wait (torch's default: 10 minutes for NCCL); ranks wait for rank 0's
    evaluations, so a long final evaluation needs a longer one."""
    device = check_device("device", device)
    ranks = int(os.environ.get("WORLD_SIZE", "1"))
    if ranks <= 1 and not _initialised():
        return device
    if not dist.is_available():
        raise RuntimeError(f"WORLD_SIZE: {ranks} ranks requested, but this torch build has no torch.distributed")
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise ValueError(f"device: expected a GPU for local rank {local}, got {torch.cuda.device_count()} GPUs")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not _initialised():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    return device


def destroy_distributed() -> None:
    """Leave the process group at the end of a script (nothing without one)."""
    if _initialised():
        dist.destroy_process_group()


def mean_over_ranks(values: Float[Tensor, "*S"]) -> Float[Tensor, "*S"]:
    """The mean of ``values`` over every rank (a copy; ``values`` itself in one process)."""
    if not is_distributed():
        return values
    total = values.detach().clone()
    dist.all_reduce(total)  # a sum: gloo has no average
    return total / world_size()


def broadcast_object(obj: Any, device: torch.device) -> Any:
    """Rank 0's ``obj`` (anything picklable) on every rank; ``device`` carries it (NCCL needs the rank's GPU)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=device)
    return box[0]
