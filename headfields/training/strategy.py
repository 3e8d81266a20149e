"""A model's own steps inside the shared loop: :class:`StepStrategy`, the part the loop calls where a model does not
train on rays (a rasteriser renders one whole frame a step and grows or prunes its primitives after backward), as
gsplat's training script calls its ``Strategy`` objects.

The loop keeps what every model shares: the budget and its clocks, the step count, the finite-loss check,
``backward`` and ``optimizer.step()``, logging, held-out evaluations, checkpoints and their cadence, the final
evaluation and ``metrics.json``. The strategy gives the rest: the optimiser, how a step's batch is drawn and its loss
computed, what runs between ``backward`` and ``optimizer.step()``, and its own state in the checkpoint. The
:class:`TrainingConfig` fields that only ray steps read are named in :attr:`StepStrategy.refused`, and a run that sets
one of them is refused before anything is written (:func:`~headfields.training.unused.check_unused`).

A model with a strategy gives it from ``step_strategy()`` (a fresh one a run)::

    class Model(AvatarModel):
        draws_images = True

        def step_strategy(self) -> StepStrategy: ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor

from ..data import FrameSet
from ..parametric import Head
from .config import TrainingConfig
from .contract import AvatarModel, StepOutput

__all__ = ["RAY_FIELDS", "FrameBatch", "StepStrategy", "step_strategy"]

# The TrainingConfig fields only ray steps read (how many rays a step draws, from which frames, how a ray's samples
# are kept): a strategy that draws whole frames refuses them.
RAY_FIELDS = (
    "rays_per_batch", "samples_per_batch", "max_rays_per_batch", "early_stop", "fixed_shapes", "frames_per_batch",
    "balance_views", "render_chunk",
)  # fmt: skip


@dataclass
class FrameBatch:
    """One whole training frame: what a strategy that renders images trains on (the loop's running PSNR compares
    ``StepOutput.rgb``, the rendered pixels in the same order, with ``rgb``)."""

    frame: int  # into the training frames
    rgb: Float[Tensor, "P 3"]  # the frame's pixels row by row (H W 3 flattened), in [0, 1]


@runtime_checkable
class StepStrategy(Protocol):
    """How a model's training steps go (see the module docstring). ``step`` counts the steps done before this one
    (0 at the first), as the loop's ``step`` does; ``generator`` is the loop's sampler generator, seeded from
    ``TrainingConfig.seed`` and saved in the checkpoint."""

    refused: tuple[str, ...]  # TrainingConfig fields the strategy has no use for

    def optimizer(self, train_frames: FrameSet, train_head: Head, config: TrainingConfig) -> torch.optim.Optimizer:
        """The optimiser of the run, built once before training (and before a checkpoint is restored)."""
        ...

    def step(
        self, step: int, train_frames: FrameSet, train_head: Head, generator: torch.Generator
    ) -> tuple[FrameBatch, StepOutput]:
        """Draw this step's batch and compute its loss (the loop checks it is finite, then calls ``backward``)."""
        ...

    def after_backward(self, step: int) -> dict[str, float]:
        """Between ``backward`` and ``optimizer.step()`` (density control with the view-space gradients); what it
        returns is logged with the step's terms."""
        ...

    def state_dict(self) -> dict:
        """The strategy's state, beside the model's and the optimiser's in the checkpoint (its keys at the top)."""
        ...

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` from a checkpoint's whole state."""
        ...

    def metrics(self) -> dict[str, object]:
        """What ``metrics.json`` says of the run beyond the scores (the number of primitives)."""
        ...


def step_strategy(model: AvatarModel) -> StepStrategy | None:
    """``model.step_strategy()``, checked, or None for a model that trains on rays."""
    strategy = model.step_strategy()
    if strategy is not None and not isinstance(strategy, StepStrategy):
        raise TypeError(f"model: expected step_strategy() to give a StepStrategy, got {type(strategy).__name__}")
    return strategy
