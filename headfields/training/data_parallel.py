"""Data-parallel training steps: the model's ``training_step`` under ``DistributedDataParallel``, which averages the
gradients of the forward it wraps (see :mod:`headfields.training.distributed`)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .contract import RayBatch, StepOutput

__all__ = ["data_parallel"]


class _TrainingStep(nn.Module):
    """The model's training step as a forward: DistributedDataParallel averages the gradients of the forward it
    wraps, and our models train through ``training_step``, not ``forward``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: RayBatch, step: int) -> StepOutput:
        return self.model.training_step(batch, step)


def data_parallel(model: nn.Module, device: torch.device) -> DistributedDataParallel:
    """``model``'s training step under DistributedDataParallel. Construction gives every rank rank 0's
    parameters and buffers; each forward gives every rank rank 0's buffers again, after ``before_step``
    changed them (an occupancy grid refreshed from one rank's density), so all ranks march the same grid."""
    index = (device.index if device.index is not None else torch.cuda.current_device()) if device.type == "cuda" else None
    return DistributedDataParallel(  # its default syncs the buffers at each forward
        _TrainingStep(model),
        device_ids=None if index is None else [index],  # CPU ranks (gloo): none
        # Parameters can sit out a step (MonoAvatar's error-correction warp before its start step): DDP then has
        # to look for them, one walk over the autograd graph per step, and leaves their gradients None.
        find_unused_parameters=True,
    )
