"""NeRF's two passes (Mildenhall et al. 2020, MonoAvatar's renderer): a coarse network on stratified samples, then a
fine network on those and more drawn from the coarse weights. :func:`render_nerf_passes` runs both with one
:class:`~headfields.renderers.RenderContext`, fixed shapes included, so the model that owns the two networks
never sees the step's mode.

    passes = render_nerf_passes(coarse_field, fine_field, rays, head, StratifiedSampler(64), 128, background, context)
    loss = mse(passes.coarse.composite.rgb, target, passes.loss_weight) + mse(passes.fine.composite.rgb, ...)
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from jaxtyping import Float
from torch import Tensor

from ..cameras import Rays
from ..checks import check_count
from ..fields import Field
from ..parametric import Head
from .context import RenderContext
from .hierarchical import importance_samples, merge_samples
from .samplers import StratifiedSampler
from .samples import PackedSamples, SampleCount, SlotSamples
from .volume import NerfRender, render_context, render_nerf

__all__ = ["NerfPasses", "render_nerf_passes"]


class NerfPasses(NamedTuple):
    """The coarse network's render and the fine network's (what evaluation shows)."""

    coarse: NerfRender
    fine: NerfRender

    @property
    def count(self) -> SampleCount:
        """Both passes' samples. In fixed slots the march's are the coarse pass's (what its sampler placed; the fine
        samples follow from them) and the rays dropped the fine pass's."""
        total = self.coarse.count + self.fine.count
        if self.fine.slots is None:
            return total
        return SampleCount(self.coarse.count.marched, total.trained, self.fine.count.dropped)

    @property
    def loss_weight(self) -> Float[Tensor, " R"] | None:
        """Both passes' per-ray loss weight: 0 on the rays that did not fit the slots (in neither pass), else None."""
        return self.fine.loss_weight


def render_nerf_passes(
    coarse_field: Field,
    fine_field: Field,
    rays: Rays,
    head: Head,
    sampler: StratifiedSampler,
    fine_samples: int,
    background: Float[Tensor, " 3"] | Float[Tensor, "R 3"] | None = None,
    context: RenderContext | None = None,
) -> NerfPasses:
    """``coarse_field`` on ``sampler``'s samples, then ``fine_field`` on those and ``fine_samples`` more a ray drawn
    from the coarse weights (:func:`~headfields.renderers.importance_samples`, joined by
    :func:`~headfields.renderers.merge_samples`), each pass with ``context``'s jitter and early stop
    (:func:`~headfields.renderers.render_nerf`).

    With ``context.slots``: both passes in fixed slots, nothing read back. The coarse samples fill ``slots.march``
    slots (at most the sampler's samples a ray); every ray draws its fine ones, merged into slots that hold every
    ray's pieces. Rays whose coarse samples do not fit are in neither pass (``loss_weight`` 0). With early stop each
    pass compacts the samples in front within its own slots (``slots.train`` counts both networks' samples: it is
    not split between them)."""
    if not isinstance(sampler, StratifiedSampler):
        raise TypeError(f"sampler: expected a StratifiedSampler (a fixed number a ray), got {type(sampler).__name__}")
    check_count("fine_samples", fine_samples, 1)
    context = render_context(context)
    placed = sampler  # (render_nerf draws the samples)
    if context.slots is not None:
        most = rays.origins.shape[0] * sampler.num_samples  # (slots past every ray's samples hold padding)
        placed = sampler(rays, head, None, context.generator, slots=min(context.slots.march, most))
    each = dataclasses.replace(context, slots=None)  # (each pass renders the samples in slots as they come)
    coarse = render_nerf(coarse_field, rays, head, placed, background, each)
    samples = coarse.samples if coarse.slots is None else coarse.slots
    drawn = importance_samples(samples, coarse.composite.weights.detach(), fine_samples, context.generator)
    merged = merge_samples(samples, drawn, _merged_slots(samples, sampler, fine_samples, context.early_stop))
    return NerfPasses(coarse, render_nerf(fine_field, rays, head, merged, background, each))


def _merged_slots(
    coarse: PackedSamples | SlotSamples, sampler: StratifiedSampler, fine: int, early_stop: float | None
) -> int | None:
    """The fine pass's slots, which hold every ray's pieces: a ray with all its ``n`` coarse samples has at most
    ``fine + 1`` pieces more, so without a shell or early termination (which leave a ray fewer) the coarse slots in
    that proportion; otherwise ``merge_samples``' default, which holds any contiguous fine samples."""
    if not isinstance(coarse, SlotSamples) or sampler.shell is not None or early_stop is not None:
        return None
    n = sampler.num_samples
    return -(-coarse.slots * (n + fine + 1) // n)  # (rounded up)
