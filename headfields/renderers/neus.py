"""NeuS rendering primitives (MonoNPHM's renderer): discrete SDF opacity, learnable sharpness, up-sampling.

NeuS (Wang et al. 2021) turns a signed distance ``f`` into opacity through the logistic CDF ``Phi_s(f) =
sigmoid(s f)`` of sharpness ``s`` (``inv_s``): a section of a ray from ``f_prev`` to ``f_next`` has
``alpha = (Phi_s(f_prev) - Phi_s(f_next)) / Phi_s(f_prev)``, clipped to ``[0, 1]``. The section's end values
come from its midpoint's SDF and slope, so the SDF is queried once per section (see PAPERS.md, MonoNPHM
"Rendering"). Compose the alphas with :func:`~headfields.renderers.compositing.composite_alpha`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from ..checks import IntLike, check_count, check_finite, check_float, check_shape, checking_values
from .compositing import _alpha_weights
from .hierarchical import importance_samples
from .samples import PackedSamples, per_ray, stratified_points

# MonoNPHM's (and NeuS's) alpha: sigmoid(s f_prev) - sigmoid(s f_next) + 1e-5 over sigmoid(s f_prev) + 1e-5, so a
# section whose start is already deep inside (both CDFs ~0) divides nothing by zero (PAPERS.md, MonoNPHM).
NEUS_ALPHA_EPS = 1e-5
# NeuS's learnable sharpness: inv_s = exp(10 v) with v initialised to 0.3 (PAPERS.md: MonoNPHM writes exp(10 v)).
NEUS_INITIAL_VARIANCE = 0.3
NEUS_VARIANCE_SCALE = 10.0
# NeuS's sampler: 64 uniform points, then 4 rounds of 16 importance points at inv_s = 64 * 2^i (PAPERS.md).
NEUS_NUM_SAMPLES = 64
NEUS_ROUNDS = 4
NEUS_SAMPLES_PER_ROUND = 16
NEUS_BASE_INV_S = 64.0
# NeuS bounds the up-sampler's finite-difference slope to [-1e3, 0]: only entering sections (slope < 0) are
# surfaces, and the bound keeps two nearly coincident points with different SDF from giving an unbounded slope.
NEUS_MIN_SLOPE = -1e3

InvS = float | Float[Tensor, ""] | Float[Tensor, " S"]


def _alpha(sdf: Tensor, slope: Tensor, deltas: Tensor, inv_s: Tensor | float) -> Tensor:
    half = slope * deltas / 2
    prev_cdf = torch.sigmoid((sdf - half) * inv_s)
    next_cdf = torch.sigmoid((sdf + half) * inv_s)
    return ((prev_cdf - next_cdf + NEUS_ALPHA_EPS) / (prev_cdf + NEUS_ALPHA_EPS)).clamp(0, 1)


def neus_alpha(
    sdf: Float[Tensor, " S"], slope: Float[Tensor, " S"], deltas: Float[Tensor, " S"], inv_s: InvS
) -> Float[Tensor, " S"]:
    """NeuS's discrete opacity of sections of length ``deltas`` whose midpoints have SDF ``sdf``.

    ``f_prev = sdf - slope deltas / 2``, ``f_next = sdf + slope deltas / 2`` and ``alpha = clip((sigmoid(s
    f_prev) - sigmoid(s f_next) + eps) / (sigmoid(s f_prev) + eps), 0, 1)`` with ``s = inv_s`` and ``eps =
    NEUS_ALPHA_EPS``. ``slope`` is the SDF's derivative along the ray, ``d . grad f`` at the midpoint (negative
    where the ray enters the surface); the caller shapes it: NeuS passes a blend that anneals, early in training, to
    ``-relu(-slope)`` (so that sections where the ray leaves the surface become transparent), and exactly
    ``-relu(-slope)`` once annealed. ``inv_s`` (> 0) is a number, a 0-d
    tensor (:class:`InverseVariance`) or one value per section. Differentiable (twice) in ``sdf``, ``slope``,
    ``deltas`` and a tensor ``inv_s``.
    """
    check_shape("sdf", sdf, [None])
    s, device = sdf.shape[0], sdf.device
    check_shape("slope", slope, [s], device=device)
    check_shape("deltas", deltas, [s], device=device)
    tensors = [("sdf", sdf), ("slope", slope), ("deltas", deltas)]
    if isinstance(inv_s, Tensor):
        check_shape("inv_s", inv_s, [] if inv_s.dim() == 0 else [s], device=device)
        tensors.append(("inv_s", inv_s))
    elif isinstance(inv_s, bool) or not isinstance(inv_s, (int, float)):
        raise TypeError(f"inv_s: expected a finite number > 0 or a float tensor [] or [{s}], got {inv_s!r}")
    elif not (math.isfinite(inv_s) and inv_s > 0):
        raise ValueError(f"inv_s: expected a finite number > 0, got {inv_s!r}")
    for name, x in tensors:
        if not x.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got {x.dtype}")
    if checking_values():  # (a training step's own values are trusted: no read-back)
        # The values with one reduction (one sync on CUDA), as compositing checks its fields.
        with torch.no_grad():
            stats = [x.sum().isfinite() for _, x in tensors]
            stats.append(deltas.amin() >= 0 if s > 0 else torch.ones((), dtype=torch.bool, device=device))
            if isinstance(inv_s, Tensor):
                stats.append(inv_s.amin() > 0 if inv_s.numel() > 0 else torch.ones((), dtype=torch.bool, device=device))
            stats = torch.stack(stats).tolist()
        for (name, x), finite in zip(tensors, stats, strict=False):
            if not finite:
                check_finite(name, x)
        if not stats[len(tensors)]:
            raise ValueError("deltas: expected non-negative section lengths, found a negative one")
        if isinstance(inv_s, Tensor) and not stats[-1]:
            raise ValueError("inv_s: expected values > 0, found one <= 0")
    dtype = torch.promote_types(torch.promote_types(sdf.dtype, slope.dtype), deltas.dtype)
    if isinstance(inv_s, Tensor):
        dtype = torch.promote_types(dtype, inv_s.dtype)
        inv_s = inv_s.to(dtype)
    return _alpha(sdf.to(dtype), slope.to(dtype), deltas.to(dtype), inv_s)


class InverseVariance(nn.Module):
    """NeuS's sharpness ``inv_s = exp(scale * v)``, ``v`` a scalar parameter (a buffer when not ``learnable``,
    e.g. for a scheduled sharpness: set ``v`` from :func:`inverse_variance_schedule`)."""

    def __init__(self, initial: float = NEUS_INITIAL_VARIANCE, scale: float = NEUS_VARIANCE_SCALE, learnable: bool = True):
        super().__init__()
        for name, value in (("initial", initial), ("scale", scale)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise TypeError(f"{name}: expected a finite number, got {value!r}")
        if not scale > 0:
            raise ValueError(f"scale: expected a number > 0, got {scale!r}")
        self.scale = float(scale)
        v = torch.tensor(float(initial))
        if learnable:
            self.v = nn.Parameter(v)
        else:
            self.register_buffer("v", v)

    def forward(self) -> Float[Tensor, ""]:
        return torch.exp(self.v * self.scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, learnable={isinstance(self.v, nn.Parameter)}"


def inverse_variance_schedule(step: IntLike, start: float, end: float, steps: IntLike) -> float:
    """A scheduled ``inv_s``: log-linear from ``start`` at step 0 to ``end`` at ``steps``, then ``end``
    (MonoNPHM schedules NeuS's sharpness rather than learning it)."""
    step = check_count("step", step, 0)
    steps = check_count("steps", steps, 0)
    for name, value in (("start", start), ("end", end)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")
    if step >= steps:
        return float(end)
    return float(start) * (end / start) ** (step / steps)


SdfFn = Callable[[Float[Tensor, "N 3"], Int[Tensor, " N"]], Float[Tensor, " N"]]


def _evaluate(sdf_fn: SdfFn, origins: Tensor, dirs: Tensor, rays: Tensor, t: Tensor) -> Tensor:
    """``sdf_fn`` at the points ``t [K, n]`` of rays ``rays [K]``, as ``[K, n]`` in ``t``'s dtype."""
    k, n = t.shape
    ray = rays[:, None].expand(k, n).reshape(-1)
    points = origins[ray] + t.reshape(-1, 1) * dirs[ray]
    sdf = sdf_fn(points, ray)
    check_float("sdf_fn", sdf, [k * n], device=t.device)  # the callable's output, named after it
    return sdf.to(t.dtype).reshape(k, n)


def neus_samples(
    origins: Float[Tensor, "R 3"],
    dirs: Float[Tensor, "R 3"],
    near: Float[Tensor, " R"] | float,
    far: Float[Tensor, " R"] | float,
    sdf_fn: SdfFn,
    num_samples: IntLike = NEUS_NUM_SAMPLES,
    rounds: IntLike = NEUS_ROUNDS,
    samples_per_round: IntLike = NEUS_SAMPLES_PER_ROUND,
    base_inv_s: float = NEUS_BASE_INV_S,
    generator: torch.Generator | None = None,
    keep_coarse: bool = True,
    keep_misses: bool = False,
) -> PackedSamples:
    """NeuS's up-sampling: ``num_samples + rounds * samples_per_round`` points on every ray with ``far > near``
    (none on the others; ``keep_misses``: theirs too, all at ``near``, so that the shapes follow from the rays alone
    and nothing is read back, ``TrainingConfig.fixed_shapes``), concentrated where the SDF crosses zero.

    It starts from ``num_samples`` points in ``[near, far]``, those of :func:`stratified_samples` (jittered by
    ``generator``). Round ``i`` views consecutive points as sections, estimates each section's SDF at its middle
    (the mean of its ends) and its slope (finite difference, the minimum with the previous section's, bounded to
    ``[NEUS_MIN_SLOPE, 0]``), weights the sections with :func:`neus_alpha` at ``inv_s = base_inv_s * 2**i`` and
    adds ``samples_per_round`` points by inverse CDF at the centres of equal quantile strata (``F^-1((k + 1/2) /
    n)``, NeuS's deterministic draw; :func:`importance_samples`' odd edges for ``2 n`` intervals). Points stay
    sorted per ray.

    ``sdf_fn(points [N, 3], ray [N]) -> sdf [N]`` is called under ``torch.no_grad`` once at the start and once
    after each round but the last (whose points steer no further round), each time on the new points only. The
    result partitions ``[near, far]`` as :func:`stratified_samples` does, one interval around each point: edges
    ``near``, the midpoints between consecutive points, ``far``; so every point is inside its interval, and
    ``rounds = 0`` gives exactly the stratified set. Nothing is differentiable (the renderer queries the field at
    the intervals' midpoints, with gradients).

    ``keep_coarse=False`` (MonoNPHM's tracking renderer) returns the up-samples alone, each the start of a section
    that ends at the next one (the last one a coarse step long, NeuS's ``sample_dist``): the stratified points only
    steer where the up-samples go. It needs ``rounds >= 1``.
    """
    check_float("origins", origins, [None, 3])
    r, device = origins.shape[0], origins.device
    check_float("dirs", dirs, [r, 3], device=device)
    near, far = per_ray("near", near, r, origins), per_ray("far", far, r, origins)
    if not callable(sdf_fn):
        raise TypeError(f"sdf_fn: expected a callable (points [N, 3], ray [N]) -> sdf [N], got {type(sdf_fn).__name__}")
    rounds = check_count("rounds", rounds, 0)
    n = check_count("num_samples", num_samples, 2 if rounds > 0 else 1)  # rounds need at least one section
    per_round = check_count("samples_per_round", samples_per_round, 1)
    if not keep_coarse and rounds == 0:
        raise ValueError("rounds: expected at least 1 with keep_coarse=False (the up-samples are the samples)")
    if not isinstance(keep_misses, bool):
        raise TypeError(f"keep_misses: expected True or False, got {keep_misses!r}")
    if (
        isinstance(base_inv_s, bool)
        or not isinstance(base_inv_s, (int, float))
        or not (math.isfinite(base_inv_s) and base_inv_s > 0)
    ):
        raise ValueError(f"base_inv_s: expected a finite number > 0, got {base_inv_s!r}")

    with torch.no_grad():
        if keep_misses:  # (a miss's sections: of no length, at near)
            rays, far = torch.arange(r, device=device), torch.maximum(far, near)
        else:
            rays = torch.nonzero(far > near)[:, 0]
        k = rays.shape[0]
        lo, span = near[rays, None], (far - near)[rays, None]
        t = stratified_points(near, far, n, generator)[rays]  # the points stratified_samples draws
        # Every ray has the same number of points, so they stay dense [K, m] until the end.
        drawn = [t[:, :0]]
        if rounds > 0 and k > 0:
            sdf = _evaluate(sdf_fn, origins, dirs, rays, t)
            for i in range(rounds):
                new = _upsample(rays, t, sdf, r, base_inv_s * 2**i, per_round, every_ray=keep_misses)
                drawn.append(new)
                t, order = torch.sort(torch.cat([t, new], dim=1), dim=1, stable=True)
                if i + 1 < rounds:  # the last round's points steer no further round: their SDF is not needed
                    sdf = torch.gather(torch.cat([sdf, _evaluate(sdf_fn, origins, dirs, rays, new)], dim=1), 1, order)
        if keep_coarse:
            edges = torch.cat([lo, (t[:, 1:] + t[:, :-1]) / 2, lo + span], dim=1)
            start, end = edges[:, :-1], edges[:, 1:]
        else:
            start = torch.sort(torch.cat(drawn, dim=1), dim=1).values
            end = torch.cat([start[:, 1:], start[:, -1:] + span / n], dim=1)
        m = start.shape[1]
        ray = rays[:, None].expand(k, m).reshape(-1)
        return PackedSamples._trusted(ray, start.reshape(-1), end.reshape(-1), r)


def _upsample(rays: Tensor, t: Tensor, sdf: Tensor, num_rays: int, inv_s: float, count: int, every_ray: bool) -> Tensor:
    """One NeuS up-sampling round: ``count`` new points per ray ``[K, count]`` from the sections between the
    sorted points ``t [K, m]`` with SDF values ``sdf [K, m]``; ``every_ray``: ``rays`` are all ``num_rays``."""
    k, m = t.shape
    deltas = t[:, 1:] - t[:, :-1]
    mid = (sdf[:, 1:] + sdf[:, :-1]) / 2
    # Coincident points (a draw on an existing point) give a zero-length section: slope 0, no division by 0.
    slope = torch.where(deltas > 0, (sdf[:, 1:] - sdf[:, :-1]) / torch.where(deltas > 0, deltas, 1.0), 0.0)
    previous = torch.cat([slope.new_zeros(k, 1), slope[:, :-1]], dim=1)
    slope = torch.minimum(slope, previous).clamp(NEUS_MIN_SLOPE, 0)
    ray = rays[:, None].expand(k, m - 1).reshape(-1)
    sections = PackedSamples._trusted(ray, t[:, :-1].reshape(-1), t[:, 1:].reshape(-1), num_rays)
    weights = _alpha_weights(sections, _alpha(mid.reshape(-1), slope.reshape(-1), deltas.reshape(-1), inv_s))
    # Edges j / (2 count) of 2 count intervals: the odd ones are the strata centres (every ray has sections).
    drawn = importance_samples(sections, weights, 2 * count, every_ray=every_ray)
    return drawn.t_start.reshape(k, 2 * count)[:, 1::2]


FieldT = TypeVar("FieldT")
# (points [S, 3], ray [S]) -> (sdf [S], the canonical points the SDF read [S, 3], anything else the caller needs)
SdfFieldFn = Callable[[Float[Tensor, "S 3"], Int[Tensor, " S"]], tuple[Float[Tensor, " S"], Float[Tensor, "S 3"], FieldT]]


@dataclass
class NeusRays(Generic[FieldT]):
    """What :func:`neus_rays` returns: the samples, their NeuS opacities and the SDF's gradients there."""

    samples: PackedSamples
    alpha: Float[Tensor, " S"]
    canonical: Float[Tensor, "S 3"]  # the canonical points the SDF read at the samples
    gradient: Float[Tensor, "S 3"]  # of the SDF w.r.t. the sample points: normals, and NeuS's slopes
    canonical_gradient: Float[Tensor, "S 3"]  # w.r.t. the canonical points the SDF read (the eikonal term's)
    field: FieldT  # the field function's third output at the samples
    # keep_misses: the samples of rays that cross their bounds (the others are of no length, transparent, and
    # belong in no loss); None: every sample is
    real: Bool[Tensor, " S"] | None = None


def neus_rays(
    origins: Float[Tensor, "R 3"],
    dirs: Float[Tensor, "R 3"],
    near: Float[Tensor, " R"] | float,
    far: Float[Tensor, " R"] | float,
    field_fn: SdfFieldFn,
    inv_s: InvS,
    num_samples: IntLike = NEUS_NUM_SAMPLES,
    rounds: IntLike = NEUS_ROUNDS,
    samples_per_round: IntLike = NEUS_SAMPLES_PER_ROUND,
    base_inv_s: float = NEUS_BASE_INV_S,
    generator: torch.Generator | None = None,
    keep_coarse: bool = True,
    keep_misses: bool = False,
) -> NeusRays[FieldT]:
    """NeuS opacities along rays of an SDF seen through a deformation: :func:`neus_samples` with ``field_fn``'s
    sdf, then ``field_fn`` at the samples' midpoints with its gradients w.r.t. those points and w.r.t. the
    canonical points, then :func:`neus_alpha` with the slope of the SDF along each ray.

    Gradients are computed in evaluation too (normals need them); with grad mode on they keep their graph, so the
    opacities, the normals and the eikonal term train the field. Midpoints that already require grad (rays
    that depend on a tracked pose) are kept as they are, so the pose gets gradients too.

    ``keep_misses`` (:func:`neus_samples`'): the rays that miss their bounds have samples too, of no length; their
    opacity is 0 and ``real`` says which samples are on the other rays."""

    def sdf_fn(points: Tensor, ray: Tensor) -> Tensor:
        return field_fn(points, ray)[0]

    samples = neus_samples(
        origins, dirs, near, far, sdf_fn, num_samples, rounds, samples_per_round, base_inv_s, generator, keep_coarse,
        keep_misses,
    )  # fmt: skip
    train = torch.is_grad_enabled()
    with torch.enable_grad():
        x = samples.midpoints(origins, dirs)
        if not x.requires_grad:
            x = x.detach().requires_grad_(True)
        sdf, canonical, field = field_fn(x, samples.ray)
        gradient, canonical_gradient = torch.autograd.grad(sdf.sum(), [x, canonical], create_graph=train, retain_graph=train)
    if not train:
        sdf = sdf.detach()
    slope = (gradient * dirs[samples.ray]).sum(-1)
    alpha = neus_alpha(sdf, slope, samples.deltas, inv_s)
    real = None
    if keep_misses:  # (NeuS's alpha of a section of no length is not 0: eps over eps and its start's CDF)
        r = origins.shape[0]
        real = (per_ray("far", far, r, origins) > per_ray("near", near, r, origins))[samples.ray]
        alpha = torch.where(real, alpha, 0.0)
    return NeusRays(samples, alpha, canonical, gradient, canonical_gradient, field, real)
