"""What a training step decides about how its rays render, handed to the renderers whole (:class:`RenderContext`):
the step's jitter, early termination, and whether the shapes are fixed. A model passes it on as it came; only the
samplers and the renderers read it, so no model branches on the step's mode (tiny-cuda-nn's callers never see its
padding either).

    context = RenderContext(generator, early_stop=EARLY_STOP_TRANSMITTANCE, slots=SampleSlots(march, train))
    out = render_nerf(field, rays, head, sampler, background, context)
    loss = mse_loss(out.composite.rgb, target, out.loss_weight)  # None, or 0 on the rays past the slots
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..checks import check_generator
from .samples import SampleSlots

__all__ = ["RenderContext"]


@dataclass(frozen=True)
class RenderContext:
    """``generator``: the step's jitter (None: torch's global generator). ``early_stop``: a transmittance in (0, 1)
    behind which a ray's samples are not trained (None: all are). ``slots``: fixed sizes for the samples
    (``TrainingConfig.fixed_shapes`` with a sample budget): the march fills ``slots.march`` and the samples trained
    are compacted into ``slots.train``; rays whose samples do not fit are left out of the loss weight.
    ``fixed_shapes``: no size may depend on the data even without slots (NeuS then keeps the rays that miss its box,
    of no length); slots imply it."""

    generator: torch.Generator | None = None
    early_stop: float | None = None
    slots: SampleSlots | None = None
    fixed_shapes: bool = False

    def __post_init__(self) -> None:
        check_generator("generator", self.generator, optional=True)
        stop = self.early_stop
        if stop is not None and (isinstance(stop, bool) or not (isinstance(stop, int | float) and 0 < stop < 1)):
            raise ValueError(f"early_stop: expected a transmittance in (0, 1) or None, got {stop!r}")
        if self.slots is not None and not isinstance(self.slots, SampleSlots):
            raise TypeError(f"slots: expected SampleSlots or None, got {type(self.slots).__name__}")
        if not isinstance(self.fixed_shapes, bool):
            raise TypeError(f"fixed_shapes: expected True or False, got {self.fixed_shapes!r}")
        if self.slots is not None:
            object.__setattr__(self, "fixed_shapes", True)  # slots are fixed shapes
