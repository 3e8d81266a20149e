"""Whether a step's loss is finite, known on the device at once and on the host a few steps later: a step of fixed
shapes never waits for the GPU to check its loss. A non-finite loss's step changes nothing (:func:`finite_flag` feeds
:func:`~headfields.training.optimizer.step_if`); when its loss is read, the run stops with the loss's terms."""

from __future__ import annotations

import math
from collections import deque

import torch

from .contract import StepOutput
from .host_copy import READ_LAG, HostCopy

__all__ = ["LateLossChecks", "finite_flag", "non_finite"]


def finite_flag(loss: torch.Tensor) -> torch.Tensor:
    """Whether ``loss`` is finite: a 0-d device tensor (no read-back)."""
    # |loss| < inf is False for NaN too: isfinite's answer in two kernels, not its four (== itself, |x| != inf, and).
    return loss.detach().abs() < math.inf


def non_finite(step: int, loss: float, logs: dict) -> None:
    """Stop the run: step ``step``'s loss is ``loss`` (its ``logs``' terms said)."""
    terms = ", ".join(f"{k} {float(v):.4g}" for k, v in logs.items())
    raise FloatingPointError(f"training_step: the loss is {loss} at step {step} ({terms})")


class LateLossChecks:
    """The losses of fixed-shape steps, copied to the host without waiting and read ``READ_LAG`` steps later."""

    def __init__(self):
        self.pending: deque[tuple[int, HostCopy, list[str], dict]] = deque()  # step, copy, its terms' names, the rest

    def add(self, step: int, result: StepOutput) -> None:
        """Copy step ``step``'s loss and its 0-d logged terms (a CUDA graph's replay overwrites its own); read the
        losses due by now."""
        terms = {k: v for k, v in result.logs.items() if isinstance(v, torch.Tensor) and v.dim() == 0}
        copy = HostCopy([result.loss.detach(), *terms.values()])
        self.pending.append((step, copy, list(terms), {k: v for k, v in result.logs.items() if k not in terms}))
        self.read(READ_LAG)

    def read(self, keep: int = 0) -> None:
        """Read the losses copied but the last ``keep``: a non-finite one stops the run."""
        while len(self.pending) > keep:
            step, copy, names, others = self.pending.popleft()
            value, *terms = copy.read()
            if not math.isfinite(value):
                non_finite(step, value, {**dict(zip(names, terms, strict=True)), **others})
