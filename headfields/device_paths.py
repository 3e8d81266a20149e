"""Which code path a device takes: CUDA's, or the CPU's own (:mod:`headfields.backends.cpu`), and the switch that sends
the CPU down CUDA's paths, for counting what a GPU step asks of its device where only a CPU is at hand.

    with cuda_paths():  # for counting only: the CPU's speed paths are off, nothing is faster
        model.training_step(batch, step)  # one Warp launch a kernel, Warp's own BVH, no oneDNN, a GPU's sort

Each site where the library chooses a path by device asks :func:`takes_cuda_path`; the stream, the Warp device, the
allocator and anything else that needs the device itself still read the tensors' own device. Under the switch a CPU
counts as a GPU with bfloat16 tensor cores (an H100's or H200's paths). The switch holds in the context (thread,
task) that enters it, as ``torch.no_grad`` does.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch

__all__ = ["cuda_paths", "takes_cuda_path"]

_CUDA_PATHS = contextvars.ContextVar("headfields_cuda_paths", default=False)


@contextlib.contextmanager
def cuda_paths(enabled: bool = True) -> Iterator[None]:
    """Within the block, work on the CPU takes the code paths it would take on a CUDA device (``enabled=False``: the
    CPU's own, as outside). For counting operations, launches, copies and shapes; slower on the CPU, never faster."""
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled: expected True or False, got {enabled!r}")
    token = _CUDA_PATHS.set(enabled)
    try:
        yield
    finally:
        _CUDA_PATHS.reset(token)


def takes_cuda_path(device: torch.device | str) -> bool:
    """Whether work on ``device`` takes CUDA's code paths: on a CUDA device, and on the CPU inside :func:`cuda_paths`."""
    kind = torch.device(device).type
    return kind == "cuda" or (kind == "cpu" and _CUDA_PATHS.get())
