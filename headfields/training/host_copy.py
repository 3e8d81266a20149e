"""Values a training step computes on the device, read on the host a few steps later without stalling the GPU.

``.item()`` on a CUDA tensor waits for every kernel queued before it: the GPU empties while Python queues the next
step. A :class:`HostCopy` copies the values into pinned host memory without waiting and records an event; read
``READ_LAG`` steps later, the GPU has long finished that step while running the next one, so the read waits for
nothing. On the CPU the values are simply kept.

    copy = HostCopy([loss.detach(), samples_trained])  # 0-d tensors: no wait
    ...                                               # READ_LAG steps later
    loss, trained = copy.read()                       # Python floats (ints for integer tensors)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["READ_LAG", "HostCopy"]

# Steps between a step and the read of its copies: the step after it runs on the GPU meanwhile.
READ_LAG = 2


class HostCopy:
    """0-d tensors of one device, copied to the host without waiting; :meth:`read` gives them as Python numbers."""

    def __init__(self, values: Sequence[Tensor]):
        if not values or not all(isinstance(v, Tensor) and v.dim() == 0 for v in values):
            raise TypeError("values: expected 0-d tensors, at least one")
        # Values of one dtype are cast once, after the stack (a cast is a kernel on a GPU; a cast to their own dtype is
        # none): the step's counts are all int64, and int64 counts and a float32 loss are exact in float64 either way.
        common = values[0].dtype if len({v.dtype for v in values}) == 1 else torch.float64
        stacked = torch.stack([v.detach().to(common) for v in values]).to(torch.float64)
        self.integer = [not v.is_floating_point() for v in values]
        self.event = None
        if stacked.device.type == "cuda":
            self.host = torch.empty(stacked.shape, dtype=stacked.dtype, pin_memory=True)
            self.host.copy_(stacked, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.host = stacked
        self._values: list[float | int] | None = None

    def read(self) -> list[float | int]:
        """The values (waits for the copy to land: instantly once the GPU has moved past the step)."""
        if self._values is None:
            if self.event is not None:
                self.event.synchronize()
            values = self.host.tolist()  # a host tensor: no device read-back
            self._values = [int(v) if integer else v for v, integer in zip(values, self.integer, strict=True)]
        return self._values
