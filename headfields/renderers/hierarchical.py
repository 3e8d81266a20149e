"""Hierarchical sampling (NeRF coarse + fine, MonoAvatar's renderer): fine intervals drawn from coarse weights,
and the fine pass's samples: the coarse ones cut at the fine edges (:func:`merge_samples`).

The coarse weights of a ray define a piecewise-constant pdf over its coarse intervals: interval ``j`` gets mass
proportional to ``w_j + padding`` spread uniformly over ``[t_start_j, t_end_j]``. The CDF is piecewise linear
inside the intervals and flat over any gap between them (coarse samples removed by a filter, e.g.
:func:`mesh_guided_filter`), so no new edge lands inside a gap, though a new interval may straddle one. New
edges are inverse-CDF images of stratified quantiles, all rays at once: the per-ray CDFs are offset by the
ray index (``ray + cdf``) into one sorted array that one ``torch.searchsorted`` serves.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor

from ..checks import IntLike, check_count, check_finite, check_generator, check_shape, checking_values
from .samples import PackedSamples, SlotSamples

# NeRF (Mildenhall et al. 2020, sample_pdf) adds 1e-5 to the coarse weights before normalising, so empty rays
# resample uniformly and nothing divides by zero (mip-NeRF blurs the weights instead).
PADDING = 1e-5


def _check_weights(weights: Tensor, s: int, device: torch.device) -> None:
    """Shape and dtype, then the values with one reduction (one sync on CUDA): finite and non-negative."""
    check_shape("weights", weights, [s], device=device)
    if not weights.is_floating_point():
        raise TypeError(f"weights: expected a floating-point tensor, got {weights.dtype}")
    if s == 0 or not checking_values():  # (a training step's own weights: no read-back)
        return
    with torch.no_grad():
        finite, non_negative = torch.stack([weights.sum().isfinite(), weights.amin() >= 0]).tolist()
    if not finite:
        check_finite("weights", weights)
    if not non_negative:
        raise ValueError("weights: expected non-negative values, found a negative one")


def importance_samples(
    samples: PackedSamples | SlotSamples,
    weights: Float[Tensor, " S"],
    num_samples: IntLike,
    generator: torch.Generator | None = None,
    padding: float = PADDING,
    every_ray: bool = False,
) -> PackedSamples:
    """``num_samples`` contiguous intervals on every ray that has coarse samples, drawn from its coarse weights.

    Each ray's ``num_samples + 1`` new edges are ``F^-1(u_i)``, ``F`` the CDF of the pdf with mass
    ``weights + padding`` per coarse interval (uniform inside it), for quantiles ``u_0 <= ... <= u_n``
    (``n = num_samples``):

    - ``generator`` None: ``u_i = i / n``; deterministic, and the new intervals span the ray's weighted support.
    - with a ``generator``: ``u_i = (i + xi_i) / (n + 1)``, ``xi = torch.rand(K, n + 1, generator=generator,
      dtype=torch.float64)`` drawn on the generator's device, one row per ray that has samples (``K`` of them,
      in ray order): one quantile in each of ``n + 1`` equal strata of ``[0, 1)`` (stratified, mip-NeRF).

    ``F^-1(u)`` is the start of the support where ``F > u`` (``inf {t : F(t) > u}``), and its end for
    ``u = 1``: an edge never lies inside a gap between coarse intervals or inside an interval without mass,
    though a new interval may straddle a gap (and its midpoint lie in it). A ray whose padded weights sum
    to zero (all weights zero with ``padding = 0``) takes the limit ``padding -> 0``: equal mass per interval.
    Rays without coarse samples get no new ones. The result keeps the dtype and device of ``samples``; no
    gradient flows (weights and intervals are detached: new samples are where to query the field).

    ``samples`` in fixed slots (:class:`~headfields.renderers.SlotSamples`, ``TrainingConfig.fixed_shapes``): a draw
    for every ray (``K`` is the number of rays, ``xi`` a row each), so that the result's size does not depend on the
    data and nothing is read back; the slots' padding has no mass, and a ray without samples gets ``num_samples``
    zero-length intervals at 0. ``every_ray``: the same for packed samples (NeuS's up-sampling in fixed shapes, whose
    rays all have sections): a draw for every ray, without the read-back that finds the rays with samples.
    """
    real = None
    if isinstance(samples, SlotSamples):
        real, samples = samples.real(), samples.samples
    s, r, device = len(samples), samples.num_rays, samples.device
    _check_weights(weights, s, device)
    n = check_count("num_samples", num_samples, 1)
    check_generator("generator", generator, optional=True)
    if isinstance(padding, bool) or not isinstance(padding, (int, float)):
        raise TypeError(f"padding: expected a finite number >= 0, got {padding!r}")
    if not (math.isfinite(padding) and padding >= 0):
        raise ValueError(f"padding: expected a finite number >= 0, got {padding!r}")
    if not isinstance(every_ray, bool):
        raise TypeError(f"every_ray: expected True or False, got {every_ray!r}")
    every_ray = every_ray or real is not None
    dtype = samples.t_start.dtype
    if s == 0:  # (every_ray: each ray's intervals at 0, of no length)
        k = r if every_ray else 0
        at_zero = samples.t_start.new_zeros(k * n)
        ray = torch.arange(k, device=device).repeat_interleave(n)
        return PackedSamples._trusted(ray, at_zero, at_zero.clone(), r)

    with torch.no_grad():
        ray = samples.ray
        counts = samples.counts()
        mass = weights.detach().double() + (float(padding) if real is None else float(padding) * real)
        total = torch.zeros(r, dtype=torch.float64, device=device).index_add(0, ray, mass)
        no_mass = total == 0  # all weights zero and no padding: equal masses, the limit padding -> 0
        equal, shared = 1.0, counts  # (in slots: none for the padding of a ray with samples)
        if real is not None:
            real_counts = torch.zeros_like(counts).index_add_(0, ray, real.long())
            has_samples = real_counts > 0
            equal = torch.where(has_samples[ray], real.double(), 1.0)
            shared = torch.where(has_samples, real_counts, counts)
        mass = torch.where(no_mass[ray], equal, mass) / torch.where(no_mass, shared.double(), total)[ray]
        first = torch.cumsum(counts, dim=0) - counts
        last = first + counts - 1
        # Per-ray inclusive CDF from one global cumsum (of normalised masses, so the global sum stays ~ the
        # ray count and the per-ray differences keep their precision); dividing by each ray's own last value
        # makes the CDF end at exactly 1, so the offset keys ``ray + cdf`` are sorted across rays.
        running = torch.cat([mass.new_zeros(1), torch.cumsum(mass, dim=0)])
        base = running[first]
        cdf = (running[1:] - base[ray]) / (running[last + 1] - base)[ray]
        index = torch.arange(s, device=device)
        cdf_before = torch.where(index == first[ray], 0.0, torch.cat([cdf.new_zeros(1), cdf[:-1]]))
        positive = cdf > cdf_before
        # The last interval with mass on each ray: where u = 1 maps (its end), not onto trailing empty intervals.
        last_positive = torch.full((r,), -1, dtype=torch.long, device=device)
        last_positive = last_positive.scatter_reduce(0, ray, torch.where(positive, index, -1), "amax")

        if real is None:
            has_samples = counts > 0
        rays = torch.arange(r, device=device) if every_ray else torch.nonzero(has_samples)[:, 0]
        k = rays.shape[0]
        steps = torch.arange(n + 1, dtype=torch.float64, device=device)
        if generator is None:
            u = (steps / n).expand(k, n + 1)
        else:
            xi = torch.rand(k, n + 1, generator=generator, device=generator.device, dtype=torch.float64).to(device)
            u = (steps + xi) / (n + 1)
        keys = ray.double() + cdf
        # The first key above ray + u is in this ray (earlier rays' keys are <= ray) unless u reaches 1.
        found = torch.searchsorted(keys, (rays.double()[:, None] + u).contiguous(), right=True)
        found = torch.minimum(found, last_positive[rays][:, None])
        lo, hi = cdf_before[found], cdf[found]
        frac = ((u - lo) / torch.where(hi > lo, hi - lo, 1.0)).clamp(0, 1)
        t0, t1 = samples.t_start.detach().double()[found], samples.t_end.detach().double()[found]
        edges = torch.lerp(t0, t1, frac)
        edges = torch.cummax(edges, dim=1).values.to(dtype)  # non-decreasing despite rounding at interval ends
        if every_ray:  # (a ray without samples found another's: its intervals at 0, of no length)
            edges = torch.where(has_samples[:, None], edges, 0.0)
        new_ray = rays[:, None].expand(k, n).reshape(-1)
        return PackedSamples._trusted(new_ray, edges[:, :-1].reshape(-1), edges[:, 1:].reshape(-1), r)


# float32's bit patterns: the sign bit, and the 2^32 patterns (below which a ray index is shifted by _FLOAT32_BITS).
_SIGN = 2**31
_FLOAT32_BITS = 32


def _by_ray_then_t(ray: Tensor, t: Tensor, num_rays: int) -> Tensor:
    """The stable permutation sorting by ``ray`` (values below ``num_rays``), then ``t``. For float32 ``t``, one sort
    of an int64 key, the ray above ``t``'s bits mapped to integers in float order: a radix sort, where two stable
    sorts, one of them of floats, took 2.9x as long on the CPU (2-core Xeon: 6M samples, 0.42 against 1.22 s; the
    merge in MonoAvatar's 512² frame 1.12 -> 0.64 s). Ties keep their order, as with the two sorts."""
    if t.dtype != torch.float32 or num_rays > _SIGN:
        order = torch.argsort(t, stable=True)
        return order[torch.argsort(ray[order], stable=True)]
    bits = (t + 0.0).view(torch.int32).long()  # + 0.0 makes -0.0 +0.0, which compares equal to it
    # Non-negative floats order as their bits; negative ones in reverse, below them all.
    ordered = torch.where(bits >= 0, bits + _SIGN, -1 - bits)
    return torch.argsort((ray << _FLOAT32_BITS) | ordered, stable=True)


def merge_samples(
    coarse: PackedSamples | SlotSamples, fine: PackedSamples, slots: IntLike | None = None
) -> PackedSamples | SlotSamples:
    """NeRF's fine-pass samples: ``coarse``'s intervals cut at every edge of ``fine`` (samples on the same rays),
    so a fine network sees the coarse and the fine samples together, as NeRF evaluates its fine network on
    ``sort(z_coarse ∪ z_fine)``.

    On every ray the result partitions the union of its coarse intervals exactly, at every coarse and fine edge
    inside it: intervals of zero length are dropped, and so are the parts of fine intervals outside the coarse
    intervals (in a gap a filter cut, e.g. :func:`mesh_guided_filter`'s shell, which the fine intervals of
    :func:`importance_samples` may straddle). A ray with ``n_c`` contiguous coarse intervals and ``n_f``
    contiguous fine ones gets at most ``n_c + n_f + 1``; a ray without coarse samples gets none. Sorted by ray,
    then ``t``; the dtype and device of ``coarse``; no gradient (edges are where to query the field).

        coarse = StratifiedSampler(64)(rays, head)
        weights = composite(coarse, coarse_density, coarse_rgb).weights
        samples = merge_samples(coarse, importance_samples(coarse, weights, 128, generator))  # NeRF's fine pass

    ``coarse`` in fixed slots (:class:`~headfields.renderers.SlotSamples`, ``TrainingConfig.fixed_shapes``): the pieces
    in ``slots`` slots too, nothing read back; by default as many as hold every piece when each ray's fine intervals
    are contiguous (:func:`importance_samples`' are), ``coarse.slots + len(fine) + num_rays``: a ray's ``n_f``
    contiguous fine intervals cut its coarse ones at most ``n_f + 1`` times. Rays whose pieces do not fit have none,
    as :meth:`SlotSamples.compact` leaves them, and neither have those that did not fit ``coarse``.
    """
    fixed = None
    if isinstance(coarse, SlotSamples):
        fixed, coarse = coarse, coarse.samples
    elif slots is not None:
        raise ValueError("slots: expected None for coarse samples that are not in slots (SlotSamples)")
    if fine.num_rays != coarse.num_rays:
        raise ValueError(f"fine: expected samples on the {coarse.num_rays} rays of coarse, got {fine.num_rays} rays")
    if fine.device != coarse.device:
        raise ValueError(f"fine: expected samples on {coarse.device} (coarse's device), got {fine.device}")
    dtype = coarse.t_start.dtype
    with torch.no_grad():
        sc, sf = len(coarse), len(fine)
        ray = torch.cat([coarse.ray, coarse.ray, fine.ray, fine.ray])
        t = torch.cat([coarse.t_start, coarse.t_end, fine.t_start.to(dtype), fine.t_end.to(dtype)]).detach()
        # Coverage by coarse intervals changes by +1 where one starts and -1 where one ends; fine edges only cut.
        step = torch.cat([t.new_ones(sc), -t.new_ones(sc), t.new_zeros(2 * sf)]).long()
        order = _by_ray_then_t(ray, t, coarse.num_rays)
        ray, t, step = ray[order], t[order], step[order]
        # Every ray's starts and ends balance, so the running sum is each ray's own coverage after each edge.
        inside = torch.cumsum(step, dim=0)[:-1] > 0
        # A piece between consecutive edges of one ray lies inside a coarse interval or wholly outside them all
        # (every coarse edge is an edge here); at tied edges the coverage after the last of them is the piece's.
        keep = (ray[1:] == ray[:-1]) & (t[1:] > t[:-1]) & inside
        if fixed is None:
            return PackedSamples._trusted(ray[:-1][keep], t[:-1][keep], t[1:][keep], coarse.num_rays)
        # Every piece between consecutive edges in slots, those kept then compacted (the padding's have no length).
        pieces = PackedSamples._trusted(ray[:-1], t[:-1], t[1:], coarse.num_rays)
        everything = torch.full((), len(pieces), dtype=torch.long, device=ray.device)
        slots = fixed.slots + sf + coarse.num_rays if slots is None else check_count("slots", slots, 1)
        return SlotSamples(pieces, everything, everything, fixed.fits).compact(keep, slots)
