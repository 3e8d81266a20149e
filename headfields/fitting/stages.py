"""Staged Adam: a fit of named parameter groups whose weights and learning rates change at shares of a stage's
steps (MonoNPHM's ``photometric_tracking/tracking.py``: its ``update_lrs`` and its landmark weights), the optimiser
every tracking here runs.

- :data:`Schedule` and :func:`scheduled`: factors on a stage's weights and learning rates from a share of its
  steps on; :func:`check_schedule` checks one;
- :func:`run_stage`: Adam steps over named parameter groups with the schedule applied (:func:`.decayed_steps`'
  loop);
- :func:`frozen`: a module's parameters without gradients for the fit (but those fitted), then as they were.

    run_stage([("codes", [code], 5e-4), ("pose", [omega, shift], 5e-3)], 100, loss, schedule=((0.5, "pose", 0.5),))
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from .steps import decayed_steps

__all__ = ["Schedule", "check_schedule", "frozen", "run_stage", "scheduled"]

# (share of a stage's steps from which it holds, name, factor): a weight or a parameter group's learning rate
# times the product of the factors reached so far.
Schedule = tuple[tuple[float, str, float], ...]


def scheduled(schedule: Schedule, name: str, step: int, steps: int) -> float:
    """The factor on ``name`` at ``step`` of ``steps``: the product of ``schedule``'s factors for ``name`` whose
    share of the steps (``int(share * steps)``, as tracking.py's ``epoch == int(32 * ...)``) has been reached."""
    factor = 1.0
    for share, key, value in schedule:
        if key == name and step >= int(share * steps):
            factor *= value
    return factor


def check_schedule(name: str, schedule: Schedule, keys: Sequence[str]) -> None:
    """``schedule``: entries (share in [0, 1], one of ``keys``, a finite factor >= 0)."""
    for entry in schedule:
        ok = isinstance(entry, tuple) and len(entry) == 3 and entry[1] in keys
        if not (ok and 0 <= entry[0] <= 1 and 0 <= entry[2] < float("inf")):
            raise ValueError(f"{name}: expected entries (share in [0, 1], one of {list(keys)}, factor >= 0), got {entry!r}")


def run_stage(
    groups: Sequence[tuple[str, list[Tensor], float]],
    steps: int,
    loss: Callable[[int], Tensor],
    schedule: Schedule = (),
    after_backward: Callable[[], None] | None = None,
    decay: float = 1.0,
) -> None:
    """``steps`` Adam steps on ``loss(step)``: ``groups`` are (name, parameters, learning rate); a group's rate at a
    step is its rate times :func:`scheduled` (``schedule``, its name), falling exponentially to ``decay`` times it at
    the last step (:func:`.decayed_steps`). Groups with no parameters or a rate of 0 stay fixed. ``after_backward``
    runs between the backward pass and the step (to mask or clip gradients)."""
    live = [(name, params, rate) for name, params, rate in groups if params and rate > 0]
    optimizers = [torch.optim.Adam([{"params": params, "lr": rate} for _, params, rate in live])] if live else []

    def factors(step: int) -> list[list[float]]:
        return [[scheduled(schedule, name, step, steps) for name, _, _ in live]] if live else []

    decayed_steps(optimizers, steps, lambda step: (loss(step), {}), decay=decay, factors=factors, after_backward=after_backward)


@contextmanager
def frozen(module: nn.Module, fitted: Sequence[Tensor] = ()) -> Iterator[None]:
    """Within the block none of ``module``'s parameters takes a gradient but those in ``fitted`` (a fit of a few
    quantities beside frozen networks: the backward pass touches nothing else); after, each as it was."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    for t in fitted:
        t.requires_grad_(True)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(flag)
