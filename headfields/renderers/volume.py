"""The two volume renderers, each taking a field (:mod:`headfields.fields`), rays, the frames' head and a sampler.

:func:`render_nerf` composites a density field's samples (NeRF, INSTA, MonoAvatar, the 360° portrait);
:func:`render_neus` turns an SDF field into NeuS opacities with up-sampling near its zero level (MonoNPHM).
Both work on packed samples (nerfacc's layout) and return typed results. A training step's choices (its jitter,
early termination, fixed shapes) come in one :class:`~headfields.renderers.RenderContext`. With its ``early_stop``,
:func:`render_nerf` trains only the samples in front of the point where a ray's transmittance falls below it (instant-ngp's and
nerfacc's early termination): a pass without gradient finds them, then the field runs with gradient on those alone,
from the encoding that pass made where the field can train from it (each sample deformed and encoded once).

    out = render_nerf(field, rays, head, StratifiedSampler(64, padding=0.03), background, RenderContext(generator))
    out.composite.rgb  # [R, 3]; out.composite.depth, out.composite.opacity, out.field.canonical.face, ...
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor, nn

from ..cameras import Rays, check_rays
from ..checks import check_count, check_positive, trusted_values
from ..fields import EncodedSamples, Field, FieldOutput, NerfField, NeusField, SdfGeometry
from ..parametric import Head
from .compositing import Composite, accumulate, composite, composite_alpha, transmittance
from .context import RenderContext
from .early_stop import compact_in_front
from .neus import NEUS_BASE_INV_S, NEUS_NUM_SAMPLES, NEUS_ROUNDS, NEUS_SAMPLES_PER_ROUND, neus_rays
from .samplers import ray_bounds
from .samples import PackedSamples, SampleCount, SampleSlots, SlotSamples

__all__ = [
    "EARLY_STOP_TRANSMITTANCE",
    "INTERACTIVE_TRANSMITTANCE",
    "NerfRender",
    "NeusRender",
    "NeusSampler",
    "check_early_stop",
    "render_nerf",
    "render_neus",
]

# instant-ngp's training march stops a ray once its transmittance falls below 1e-4 (testbed_nerf.cu: the samples
# after are not trained); nerfacc's early_stop_eps has the same default. A sample behind it weighs under 1e-4.
EARLY_STOP_TRANSMITTANCE = 1e-4
# instant-ngp's interactive renderer (INSTA's fork, include/neural-graphics-primitives/testbed.h:
# rendering_min_transmittance = 0.01f) stops a ray at a transmittance of 1e-2; only its scoring script
# (scripts/run.py) sets 1e-4. The viewer renders with this stop, the scores with EARLY_STOP_TRANSMITTANCE.
INTERACTIVE_TRANSMITTANCE = 1e-2


def check_early_stop(early_stop: float) -> float:
    """``early_stop`` as a transmittance in [0, 1) (0: never stop early), or a ValueError naming it."""
    if isinstance(early_stop, bool) or not (isinstance(early_stop, int | float) and 0 <= early_stop < 1):
        raise ValueError(f"early_stop: expected a transmittance in [0, 1) (0: never stop early), got {early_stop!r}")
    return float(early_stop)


@dataclass
class NerfRender:
    composite: Composite  # rgb, depth, opacity per ray; weights per sample
    samples: PackedSamples
    points: Float[Tensor, "S 3"]  # the samples' midpoints (world)
    field: FieldOutput  # the field at those points
    count: SampleCount  # the samples the sampler gave and those rendered (fewer after early termination)
    slots: SlotSamples | None = None  # with slots: ``samples`` in them (their count, the rays that fit)

    @property
    def fits(self) -> Bool[Tensor, " R"] | None:
        """With slots: the rays whose samples fit them (leave the others out of a loss)."""
        return None if self.slots is None else self.slots.fits

    @property
    def loss_weight(self) -> Float[Tensor, " R"] | None:
        """A per-ray weight for the colour loss: 0 on the rays whose samples did not fit the slots, 1 elsewhere;
        None where every ray rendered (no slots)."""
        return None if self.slots is None else self.slots.fits.to(self.composite.rgb.dtype)


def render_context(context: RenderContext | None) -> RenderContext:
    """``context``, or the default one (no jitter generator, no early stop, shapes that follow the data)."""
    if context is None:
        return RenderContext()
    if not isinstance(context, RenderContext):
        raise TypeError(f"context: expected a RenderContext or None, got {type(context).__name__}")
    return context


def check_drawn_samples(sampler: nn.Module | PackedSamples | SlotSamples, rays: Rays) -> None:
    """Samples drawn already (a renderer's ``sampler`` may be them) must lie on ``rays``, one ray for each."""
    drawn = sampler.samples if isinstance(sampler, SlotSamples) else sampler
    if isinstance(drawn, PackedSamples) and drawn.num_rays != rays.origins.shape[0]:
        raise ValueError(f"sampler: expected samples on the {rays.origins.shape[0]} rays, got {drawn.num_rays} rays")


def render_nerf(
    field: Field,
    rays: Rays,
    head: Head,
    sampler: nn.Module | PackedSamples | SlotSamples,
    background: Float[Tensor, " 3"] | Float[Tensor, "R 3"] | None = None,
    context: RenderContext | None = None,
) -> NerfRender:
    """``sampler``'s samples along ``rays``, the field's density and colour there, composited over ``background``.
    ``sampler`` may also be samples drawn already (NeRF's fine pass: :func:`~headfields.renderers.hierarchical.merge_samples`
    of the coarse pass's samples and those drawn from its weights). The rays are checked once here; what is
    computed from them is not re-checked (:func:`~headfields.checks.trusted_values`).

    ``context`` (:class:`~headfields.renderers.RenderContext`; None: no jitter generator, no early stop, shapes
    that follow the data) holds what the training step decides. Its ``early_stop`` (e.g.
    :data:`EARLY_STOP_TRANSMITTANCE`), when gradients are on: the field's density at every
    sample without gradient first, then density and colour with gradient only at the samples whose transmittance
    (of the samples before them on their ray) is at least ``early_stop``; the others are left out of the
    composite, which changes each ray's colour by less than ``early_stop``. It pays where many samples lie behind
    the surface (a large box, no shell); where few do, the extra pass costs more than it saves. Without gradients
    it is not applied (the one pass is cheaper).

    Its ``slots`` (``TrainingConfig.fixed_shapes``): shapes that do not depend on the data, so nothing is read back to
    the host (on CUDA the GPU never waits for Python): the sampler marches into ``slots.march`` slots, then the
    samples trained (those in front of ``early_stop``, or all) are compacted into ``slots.train``; rays whose
    samples do not fit are rendered empty and weigh 0 in ``loss_weight``, and the counts are device tensors. The sampler
    must take ``slots`` (:class:`~headfields.renderers.OccupancySampler`). ``sampler`` may also be samples in slots
    already (:class:`~headfields.renderers.SlotSamples`: NeRF's fine pass in fixed shapes), rendered as they are, or
    those in front of ``early_stop`` compacted into ``slots.train`` slots (without ``slots``: into as many as they
    fill)."""
    check_rays(rays, head.num_frames, head.vertices.device)
    check_drawn_samples(sampler, rays)
    context = render_context(context)
    generator, early_stop, slots = context.generator, context.early_stop, context.slots
    stopping = early_stop is not None and torch.is_grad_enabled()
    drawn = isinstance(sampler, PackedSamples | SlotSamples)
    if slots is not None:
        in_slots = isinstance(sampler, SlotSamples) or (not drawn and "slots" in inspect.signature(sampler.forward).parameters)
        if not in_slots:
            raise ValueError(
                f"slots: expected a sampler that marches into fixed slots (OccupancySampler: TrainingConfig.fixed_shapes "
                f"needs one), got {type(sampler).__name__}"
            )
    with trusted_values():
        if slots is not None or isinstance(sampler, SlotSamples):
            return _render_slots(field, rays, head, sampler, background, generator, early_stop if stopping else None, slots)
        samples = sampler if drawn else sampler(rays, head, field, generator)
        marched = len(samples)
        x = samples.midpoints(rays.origins, rays.directions)
        encoded = None
        if stopping and marched:
            density, encoded = _front_density(field, samples, x, rays, head)
            keep = transmittance(samples, density * samples.deltas.to(density.dtype)) >= early_stop
            samples, x = samples.select(keep), x[keep]
            encoded = None if encoded is None else encoded.rows(keep)
        out = _trained(field, x, rays, samples, head, encoded)
        count = SampleCount(marched, len(samples))
        return NerfRender(composite(samples, out.density, out.rgb, background), samples, x, out, count)


def _render_slots(field, rays, head, sampler, background, generator, early_stop, slots: SampleSlots | None) -> NerfRender:
    """:func:`render_nerf` in fixed slots: no value read back."""
    fixed = sampler if isinstance(sampler, SlotSamples) else sampler(rays, head, field, generator, slots=slots.march)
    train = fixed.slots if slots is None else slots.train
    marched = fixed.wanted  # every ray's samples, those past the slots too
    encoded = None
    if early_stop is not None:
        x = fixed.samples.midpoints(rays.origins, rays.directions)
        density, encoded = _front_density(field, fixed.samples, x, rays, head)
        fixed = compact_in_front(fixed, density, early_stop, train)
        # (padding slots take the first slot's point and encoding: zero-length, they weigh nothing, nor does their
        # gradient)
        encoded = None if encoded is None else encoded.rows(fixed.source)
        x = x[fixed.source]
    else:
        if train != fixed.slots:
            fixed = fixed.compact(fixed.real(), train)
        x = fixed.samples.midpoints(rays.origins, rays.directions)
    samples = fixed.samples
    out = _trained(field, x, rays, samples, head, encoded)
    count = SampleCount(marched, fixed.count, (~fixed.fits).sum())
    return NerfRender(composite(samples, out.density, out.rgb, background), samples, x, out, count, fixed)


def _front_density(
    field: Field, samples: PackedSamples, x: Tensor, rays: Rays, head: Head
) -> tuple[Tensor, EncodedSamples | None]:
    """The field's density at every sample, without gradient (the density alone, without the colour branch), for
    early termination to find the samples a ray still sees through. For a field that trains from its encoding
    (:meth:`~headfields.fields.NerfField.trains_from_encoding`), the samples deformed (with their directions) and
    encoded on the way, so that those kept are not deformed and encoded again."""
    frame = rays.frame[samples.ray]
    with torch.no_grad():
        encoded = None
        if isinstance(field, NerfField) and field.trains_from_encoding(head):
            encoded = field.encode_samples(x, rays.directions[samples.ray], frame, head)
            density = field.decode_samples(encoded, frame, head, colour=False).density
        else:
            density = field(x, None, frame, head).density
        return density, encoded


def _trained(field: Field, x: Tensor, rays: Rays, samples: PackedSamples, head: Head, encoded: EncodedSamples | None):
    """The field with gradient at the samples trained: from their encoding where the early-termination pass made it
    (its values, trained as encoded again), else evaluated here."""
    frame = rays.frame[samples.ray]
    if encoded is None:
        return field(x, rays.directions[samples.ray], frame, head)
    return field.decode_samples(field.trainable(encoded), frame, head)


@dataclass(frozen=True)
class NeusSampler:
    """NeuS's samples: ``coarse`` stratified points between the ray's bounds (a fixed ``box``, or its frame's
    posed-mesh box padded by ``padding``), then ``rounds`` of ``per_round`` up-samples at ``inv_s =
    base_inv_s * 2^i``; ``keep_coarse=False`` renders the up-samples alone (MonoNPHM's tracking: 32 stratified
    points steer 32 up-samples at a fixed ``inv_s``; see :func:`~headfields.renderers.neus_samples`). Defaults:
    NeuS's (64, then 4 rounds of 16)."""

    coarse: int = NEUS_NUM_SAMPLES
    rounds: int = NEUS_ROUNDS
    per_round: int = NEUS_SAMPLES_PER_ROUND
    base_inv_s: float = NEUS_BASE_INV_S
    padding: float = 0.0
    box: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None
    keep_coarse: bool = True

    def __post_init__(self) -> None:
        check_count("rounds", self.rounds, 0 if self.keep_coarse else 1)
        check_count("coarse", self.coarse, 2 if self.rounds else 1)  # a round needs one section at least
        check_count("per_round", self.per_round, 1)
        check_positive("base_inv_s", self.base_inv_s)
        if not self.padding >= 0:
            raise ValueError(f"padding: expected a non-negative distance, got {self.padding}")


@dataclass
class NeusRender:
    """Depth in metres along the (unit) world rays; normals are unit world SDF normals composited with the
    weights (their length is the opacity)."""

    composite: Composite
    normals: Float[Tensor, "R 3"]
    samples: PackedSamples
    sdf_gradient: Float[Tensor, "S 3"]  # w.r.t. the canonical points the SDF read, in its units (eikonal)
    geometry: SdfGeometry  # the field's geometry at the samples (canonical points, deformer extras)
    real: Bool[Tensor, " S"] | None = None  # fixed shapes: the samples of rays that cross the box (the rest weigh 0)


def render_neus(
    field: NeusField,
    rays: Rays,
    head: Head,
    sampler: NeusSampler,
    inv_s: Float[Tensor, ""] | float,
    background: Float[Tensor, " 3"] | None = None,
    context: RenderContext | None = None,
    box: Float[Tensor, "2 3"] | None = None,
) -> NeusRender:
    """NeuS rendering of an SDF field: up-sampled samples, the opacity of each section from the SDF and its
    slope along the ray, the colour from the SDF's features and world normal, composited with the alphas.
    Differentiable in the field (and in the rays, for tracking) when grad mode is on. The rays are checked once.

    ``context`` (:class:`~headfields.renderers.RenderContext`): its ``generator`` jitters the samples; with its
    ``fixed_shapes`` every ray has the sampler's samples, those that miss the box too (of no length, transparent;
    ``real`` says which are not theirs), so that the shapes follow from the rays alone and nothing is read back to
    the host. ``box``: the sampler's fixed box as a tensor on the rays' device
    already (a model's buffer: nothing copied from the host a step); None: made from ``sampler.box``."""
    check_rays(rays, head.num_frames, head.vertices.device)
    context = render_context(context)
    with trusted_values():
        return _render_neus(field, rays, head, sampler, inv_s, background, context.generator, context.fixed_shapes, box)


def _render_neus(field, rays, head, sampler, inv_s, background, generator, keep_misses, box) -> NeusRender:
    if box is None and sampler.box is not None:
        box = torch.tensor(sampler.box, dtype=rays.origins.dtype, device=rays.origins.device)
    near, far = ray_bounds(rays, head, box, sampler.padding)

    def field_fn(x: Tensor, ray: Tensor) -> tuple[Tensor, Tensor, SdfGeometry]:
        geometry = field.geometry(x, rays.frame[ray], head)
        return geometry.sdf, geometry.points, geometry

    neus = neus_rays(
        rays.origins, rays.directions, near, far, field_fn, inv_s,
        sampler.coarse, sampler.rounds, sampler.per_round, sampler.base_inv_s, generator, sampler.keep_coarse,
        keep_misses,
    )  # fmt: skip
    samples, frame = neus.samples, rays.frame[neus.samples.ray]
    rgb = field.colour(neus.field, neus.gradient, frame, head)
    comp = composite_alpha(samples, neus.alpha, rgb, background)
    normals = accumulate(samples, comp.weights, F.normalize(neus.gradient, dim=-1))
    return NeusRender(comp, normals, samples, neus.canonical_gradient, neus.field, neus.real)
