"""Optimiser steps under a time budget with the learning rates decaying exponentially or scheduled: the one loop of
every fit here, a fit that draws its own batches (MonoNPHM's prior, auto-decoded on scans:
:func:`~headfields.models.mononphm.train_prior`) and a tracking's stages (:func:`~headfields.fitting.run_stage`).

    history = decayed_steps([adam], 2000, loss, decay=0.1, clip=(networks, 1.0), max_minutes=30)
    history.steps, history.seconds, history.logs[-1]["loss"]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..checks import check_count, check_positive
from ..training.optimizer import descend

__all__ = ["StepHistory", "decayed_steps"]


@dataclass
class StepHistory:
    """What :func:`decayed_steps` did: steps, seconds and the logged losses."""

    steps: int = 0
    seconds: float = 0.0
    logs: list[dict[str, float]] = field(default_factory=list)


def decayed_steps(
    optimizers: Sequence[torch.optim.Optimizer],
    steps: int,
    loss: Callable[[int], tuple[Tensor, dict[str, float]]],
    *,
    decay: float = 1.0,
    factors: Callable[[int], Sequence[Sequence[float]]] | None = None,
    clip: tuple[Sequence[Tensor], float] | None = None,
    after_backward: Callable[[], None] | None = None,
    after_step: Callable[[], None] | None = None,
    max_minutes: float | None = None,
    log_every: int = 100,
) -> StepHistory:
    """Up to ``steps`` steps of every optimiser in ``optimizers`` on ``loss(step)`` (the loss and its terms, floats):
    each parameter group's learning rate falls exponentially from its rate at the start to ``decay`` times it at
    the last step, times ``factors(step)[optimizer][group]`` where given (a stage's schedule). ``clip``: (parameters,
    max norm), their gradients' norm clipped before the step; ``after_backward``: runs between the backward pass and
    the step (to mask gradients); ``after_step``: runs after the optimisers stepped (to project parameters);
    ``max_minutes``: no step starts once this has passed.
    The loss and its terms are logged every ``log_every`` steps and at the last."""
    check_count("steps", steps, 0)
    check_count("log_every", log_every, 1)
    check_positive("decay", decay)
    check_positive("max_minutes", max_minutes)
    initial = [[group["lr"] for group in optimizer.param_groups] for optimizer in optimizers]
    history, start = StepHistory(), time.perf_counter()
    for step in range(steps):
        if max_minutes is not None and time.perf_counter() - start > 60 * max_minutes:
            break
        fraction = decay ** (step / max(steps - 1, 1))
        scheduled = factors(step) if factors is not None else [[1.0] * len(rates) for rates in initial]
        for optimizer, rates, scales in zip(optimizers, initial, scheduled, strict=True):
            for group, lr, scale in zip(optimizer.param_groups, rates, scales, strict=True):
                group["lr"] = lr * fraction * scale
        value, logs = loss(step)
        descend(optimizers, value, after_backward=after_backward, clip=clip)
        if after_step is not None:
            after_step()
        history.steps = step + 1
        if step % log_every == 0 or step == steps - 1:
            history.logs.append({"step": step, "loss": float(value.detach()), **logs})
    history.seconds = time.perf_counter() - start
    return history
