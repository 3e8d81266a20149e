"""The inference renderer: a density field's samples evaluated in rounds over the rays still alive, without
autograd (instant-ngp's ``NerfTracer`` in ``testbed_nerf.cu``; nerfacc's rendering with early termination).

Each round takes the next ``steps`` samples of every live ray, evaluates the field there, composites them onto
the ray's running colour and transmittance, then drops the rays whose transmittance fell below ``early_stop``
or whose samples ran out. A ray stopped early counts as opaque: its colour and depth are divided by its opacity
(instant-ngp's tracer). ``steps`` grows as rays finish: ``round_samples`` over the live rays, on the CPU between 1 and
MAX_ROUND_STEPS (past that once a round would hold fewer than ``round_samples / MAX_ROUND_STEPS`` samples), on a GPU
from 1 up, a round at most what the cap let it hold (the call's rays times MAX_ROUND_STEPS, or ``round_samples /
MAX_ROUND_STEPS``). So a round evaluates about the same number of samples, and a ray evaluates at most ``steps - 1``
samples past its stop. A ray's colour, depth and opacity differ from
:func:`~headfields.renderers.composite` over all its samples by the light behind the stop: at most ``early_stop``
(times the largest ``t`` for the depth). Scores use instant-ngp's 1e-4 (``EARLY_STOP_TRANSMITTANCE``), the viewer
its interactive 1e-2 (``INTERACTIVE_TRANSMITTANCE``).

    out = render_nerf_inference(field, rays, head, sampler, background)  # Composite; no gradient
    weights = nerf_weights_inference(field, rays, head, samples)  # its weights alone: no colour network
    out = render_neus_inference(field, rays, head, NeusSampler(), inv_s, background)  # an SDF field, the same way

A round's bookkeeping is two Warp kernels, a thread a live ray (:mod:`~headfields.renderers.round_kernels`): one
writes the samples to evaluate (their points, directions, frames and lengths), one composites them and says which
rays go on. In torch it was about seventy operations a round, each a kernel launch on a GPU; now about twenty-five.

An SDF field stops the same way (:func:`render_neus_inference`): NeuS's up-sampling draws every ray's samples
first, then the rounds evaluate the SDF with its gradient and the colour, and turn each NeuS opacity into an
optical thickness (``-log(1 - alpha)``).

Both flush denormal floats within the call and put the modes back after
(:func:`~headfields.backends.cpu.denormals.denormals_flushed`, which the training loop uses too): a sharp Softplus
(NeuS, beta 100) of pre-activations far below zero computes ``exp`` into denormals, which x86 CPUs compute with many
times slower. Flushed, the hyper NeuS avatar's 128² frame took 3.2 s against 7.6 s, pixel for pixel the same image
(``docs/results.md``, "The CPU's tunings").
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from jaxtyping import Float
from torch import Tensor, nn

from ..backends.cpu.denormals import denormals_flushed
from ..cameras import Rays, check_rays
from ..checks import check_count, trusted_values
from ..device_paths import takes_cuda_path
from ..fields import Field, NeusField
from ..parametric import Head
from .compositing import Composite
from .neus import neus_alpha, neus_samples
from .round_kernels import RoundSamples, composite_round, gather_round
from .samplers import ray_bounds
from .samples import PackedSamples
from .volume import EARLY_STOP_TRANSMITTANCE, NeusSampler, check_drawn_samples, check_early_stop

__all__ = [
    "MAX_ROUND_STEPS",
    "ROUND_SAMPLES",
    "ROUND_SAMPLES_GPU",
    "nerf_weights_inference",
    "render_nerf_inference",
    "render_neus_inference",
]

# instant-ngp's tracer marches between 1 and 8 steps a ray before it compacts the live rays
# (MIN/MAX_STEPS_INBETWEEN_COMPACTION): more steps waste samples behind the stop, fewer cost more rounds. The CPU
# keeps the cap, where a wasted sample costs as much as any. On a GPU a round costs a millisecond or two of Python,
# launches and its read-back whatever its size, where instant-ngp's fused tracer costs microseconds: there the steps
# are uncapped and a round as large as the cap let it be (the call's rays times the cap, or the least round), within
# the budget: no round holds more than it could before, and as rays finish the live ones take more steps (INSTA's
# 512² frame on an H200, the same run: caps of 8, 32, 64 and none took 111, 85, 82 and 81 ms at 1e-4, 73, 63, 63 and
# 60 ms at 1e-2; the images within 7e-5 a pixel).
MAX_ROUND_STEPS = 8
# Samples a round evaluates at most: the field's working set (a few hundred bytes a sample for a NeRF, far more for
# NeuS, whose rounds take the SDF's gradient), and enough that a round's fixed cost (Python, kernel launches) stays
# small next to its work.
ROUND_SAMPLES = 1 << 18
# On a GPU a round's fixed cost is its kernel launches and its read-back (the live rays' count), a millisecond or two
# whatever its size: a round of 2^21 samples takes a 512² frame's hundred thousand live rays twenty steps at once.
ROUND_SAMPLES_GPU = 1 << 21
_SUMS = 5  # colour, depth and opacity accumulated per ray


def _flushed(device: torch.device) -> contextlib.AbstractContextManager:
    """Denormals flushed within the block on the CPU (see the module docstring); nothing to do on a GPU."""
    return contextlib.nullcontext() if takes_cuda_path(device) else denormals_flushed()


def _check(rays: Rays, head: Head, early_stop: float, round_samples: int | None) -> int:
    """The arguments checked; the round size (None: ROUND_SAMPLES, or ROUND_SAMPLES_GPU off the CPU, read at the
    call)."""
    check_rays(rays, head.num_frames, head.vertices.device)
    check_early_stop(early_stop)
    if round_samples is None:
        round_samples = ROUND_SAMPLES_GPU if takes_cuda_path(rays.origins.device) else ROUND_SAMPLES
    return check_count("round_samples", round_samples, 1)


def _step_cap(device: torch.device) -> int | None:
    """The most steps a ray takes in a round: MAX_ROUND_STEPS on the CPU, none on a GPU (see MAX_ROUND_STEPS)."""
    return None if takes_cuda_path(device) else MAX_ROUND_STEPS


def render_nerf_inference(
    field: Field,
    rays: Rays,
    head: Head,
    sampler: nn.Module | PackedSamples,
    background: Float[Tensor, " 3"] | None = None,
    early_stop: float = EARLY_STOP_TRANSMITTANCE,
    round_samples: int | None = None,
) -> Composite:
    """``sampler``'s samples along ``rays`` (or samples drawn already), the field evaluated in rounds over the live
    rays and composited over ``background`` (black when None), each ray stopped once its transmittance falls below
    ``early_stop`` (see the module docstring). No gradient flows. ``Composite.weights`` holds each sample's weight,
    0 for those never evaluated (behind a stop): what a NeRF's fine pass draws from."""
    round_samples = _check(rays, head, early_stop, round_samples)
    check_drawn_samples(sampler, rays)
    with torch.no_grad(), trusted_values(), _flushed(rays.origins.device):
        samples = sampler if isinstance(sampler, PackedSamples) else sampler(rays, head, field, None)
        return _rounds(samples, rays, _nerf_evaluate(field, head, True), background, float(early_stop), round_samples)


def nerf_weights_inference(
    field: Field,
    rays: Rays,
    head: Head,
    samples: PackedSamples,
    early_stop: float = EARLY_STOP_TRANSMITTANCE,
    round_samples: int | None = None,
) -> Float[Tensor, " S"]:
    """:func:`render_nerf_inference`'s ``Composite.weights`` from the density alone: the field is asked without
    directions, so its colour network never runs (a NeRF's coarse pass, whose colour the fine pass never reads). The
    same rounds and stop; the same weights, bit for bit, as the field's density does not read the directions."""
    round_samples = _check(rays, head, early_stop, round_samples)
    check_drawn_samples(samples, rays)
    with torch.no_grad(), trusted_values(), _flushed(rays.origins.device):
        return _rounds(samples, rays, _nerf_evaluate(field, head, False), None, float(early_stop), round_samples).weights


def _nerf_evaluate(field: Field, head: Head, colour: bool) -> Callable[[RoundSamples], tuple[Tensor, Tensor]]:
    """A round's evaluation of a density field: optical thickness and colour (black without ``colour``: the field
    asked for its density alone)."""

    def evaluate(batch: RoundSamples) -> tuple[Tensor, Tensor]:
        out = field(batch.points, batch.directions if colour else None, batch.frame, head)
        rgb = out.rgb if colour else batch.points.new_zeros(len(batch.index), 3)
        return out.density.to(batch.deltas.dtype) * batch.deltas, rgb

    return evaluate


def render_neus_inference(
    field: NeusField,
    rays: Rays,
    head: Head,
    sampler: NeusSampler,
    inv_s: Float[Tensor, ""] | float,
    background: Float[Tensor, " 3"] | None = None,
    early_stop: float = EARLY_STOP_TRANSMITTANCE,
    round_samples: int | None = None,
) -> Composite:
    """:func:`~headfields.renderers.render_neus`'s image in rounds over the live rays: the up-sampling as it is
    (the SDF without gradient), then the SDF with its gradient (for the slope and the normals) and the colour at
    the final samples, a round at a time, each ray stopped once its transmittance falls below ``early_stop``. No
    gradient flows out."""
    round_samples = _check(rays, head, early_stop, round_samples)
    if isinstance(inv_s, Tensor) and inv_s.dim() != 0:
        raise ValueError(f"inv_s: expected one sharpness (a float or a 0-d tensor), got shape {list(inv_s.shape)}")
    dtype = rays.origins.dtype
    box = None if sampler.box is None else torch.tensor(sampler.box, dtype=dtype, device=rays.origins.device)
    near, far = ray_bounds(rays, head, box, sampler.padding)
    with torch.no_grad(), trusted_values(), _flushed(rays.origins.device):

        def sdf(points: Tensor, ray: Tensor) -> Tensor:
            return field.geometry(points, rays.frame[ray], head).sdf

        samples = neus_samples(
            rays.origins, rays.directions, near, far, sdf, sampler.coarse, sampler.rounds, sampler.per_round,
            sampler.base_inv_s, None, sampler.keep_coarse,
        )  # fmt: skip

        def evaluate(batch: RoundSamples) -> tuple[Tensor, Tensor]:
            with torch.enable_grad():  # the SDF's slope along the ray and the normals
                x = batch.points.requires_grad_(True)
                geometry = field.geometry(x, batch.frame, head)
                (gradient,) = torch.autograd.grad(geometry.sdf.sum(), [x])
            alpha = neus_alpha(geometry.sdf.detach(), (gradient * batch.directions).sum(-1), batch.deltas, inv_s)
            rgb = field.colour(geometry, gradient, batch.frame, head)
            return -torch.log1p(-alpha.to(batch.deltas.dtype)), rgb

        return _rounds(samples, rays, evaluate, background, float(early_stop), round_samples)


def _round_steps(live: Tensor, budget: int, cap: int | None, least: int) -> Tensor:
    """Steps each live ray takes this round, from the count of live rays ``live`` (a 0-d tensor, so the rule runs
    where the rays are): ``budget`` samples over the live rays, between 1 and ``cap`` (None: no cap); the last few
    rays a round of at least ``least`` samples. A field call costs milliseconds of fixed work on a CPU (its Python and
    kernel launches): they finish in a few rounds, not a step at a time."""
    live = live.clamp(min=1)
    steps = (budget // live).clamp(1, cap)
    return torch.maximum(steps, -(-least // live))


def _rounds(
    samples: PackedSamples,
    rays: Rays,
    evaluate: Callable[[RoundSamples], tuple[Tensor, Tensor]],
    background: Tensor | None,
    early_stop: float,
    budget: int,
) -> Composite:
    """The rounds: ``evaluate(round)`` gives the optical thickness and the colour of a round's samples (their points,
    directions, frames and lengths written by one kernel, :func:`~headfields.renderers.round_kernels.gather_round`),
    summed in the rays' dtype.

    A round reads one thing back from the device: the live rays' count, its steps and its samples, in one copy. The
    rest is sized by them (``nonzero_static``, integer indices), so a GPU is never waited for within a round."""
    r, device, dtype = samples.num_rays, samples.device, rays.origins.dtype
    if dtype not in (torch.float32, torch.float64):  # half-precision rays: the kernels work in float32
        wide = Rays(rays.origins.float(), rays.directions.float(), rays.frame)
        out = _rounds(samples, wide, evaluate, background, early_stop, budget)
        return Composite(**{k: getattr(out, k).to(dtype) for k in ("rgb", "depth", "opacity", "weights")})
    cap, least = _step_cap(device), budget // MAX_ROUND_STEPS  # the least round: the last few rays' steps
    if cap is None:  # uncapped steps, a round no larger than the cap let it be (the field's memory): the call's rays
        budget = min(budget, max(r * MAX_ROUND_STEPS, least))  # times the cap, or the least round
    # What the kernels read of the rays, once: detached (a Warp view of a tensor that wants a gradient would give it
    # one), in one dtype, the frames int64.
    origins, directions = rays.origins.detach().contiguous(), rays.directions.detach().to(dtype).contiguous()
    ray_rows = (origins, directions, rays.frame.long().contiguous())
    t_mid = samples.t_mid.detach().to(dtype).contiguous()
    along = (t_mid, samples.deltas.detach().to(dtype).contiguous())
    state = (
        torch.ones(r, dtype=dtype, device=device),  # each ray's transmittance so far
        torch.zeros(r, _SUMS, dtype=dtype, device=device),
        torch.zeros(len(samples), dtype=dtype, device=device),  # the weights
    )
    # The live rays, each one's next sample and its samples left (compacted with the rays); keep: which go on.
    live, following, left = torch.arange(r, device=device), samples.first(), samples.counts()
    keep = left > 0
    while True:
        alive = keep.sum()
        steps_t = _round_steps(alive, budget, cap, least)
        census = torch.stack([alive, steps_t, torch.where(keep, left, 0).clamp(max=steps_t).sum()])
        a, steps, n = census.tolist()  # the round's one read-back
        if a == 0:
            break
        pick = torch.nonzero_static(keep, size=a).squeeze(1)
        live, following, left = live[pick], following[pick], left[pick]
        count = left.clamp(max=steps)  # the samples each ray has this round
        start = torch.cumsum(count, 0) - count
        batch = gather_round(ray_rows, along, (live, count, start, following), n)
        thickness, rgb = evaluate(batch)
        per_ray = (live, count, start, following, left)
        keep = composite_round(thickness, rgb, batch.index, t_mid, steps, early_stop, state, per_ray)
    light, sums, weights = state
    # A ray stopped early is taken as opaque: its colour and depth divided by its opacity (instant-ngp's tracer,
    # testbed_nerf.cu: local_rgba /= local_rgba.w() at the stop), so the light left at a stop of 1e-2 goes to what
    # the ray has seen, not to the background behind the head.
    stopped = (light < early_stop)[:, None]
    sums = torch.where(stopped, sums / torch.where(stopped, sums[:, 4:], 1), sums)
    rgb, depth, opacity = sums[:, :3], sums[:, 3], sums[:, 4]
    if background is not None:
        rgb = rgb + (1 - opacity)[:, None] * background.to(dtype)
    return Composite(rgb=rgb, depth=depth, opacity=opacity, weights=weights)
