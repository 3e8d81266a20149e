"""Packed ray samples (nerfacc style), ray-box intersection and stratified sampling.

Samples of all rays live in flat tensors sorted by ray: sample ``s`` covers ``[t_start[s], t_end[s]]`` along
ray ``ray[s]`` (``t`` in units of the ray direction, which the renderers take to be unit length). Rays may
have any number of samples, none included; within a ray the intervals are in increasing ``t``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from .. import kernels
from ..cameras import Rays
from ..checks import IntLike, check_count, check_float, check_generator, check_nonzero_rows, check_shape, checking_values


@dataclass
class PackedSamples:
    """Intervals along rays, packed: ``ray`` sorted ascending, in ``[0, num_rays)``."""

    ray: Int[Tensor, " S"]
    t_start: Float[Tensor, " S"]
    t_end: Float[Tensor, " S"]
    num_rays: int

    def __post_init__(self) -> None:
        # Checks everything, values included (a few passes over the data): for samples built by callers.
        # The samplers here build theirs with ``_trusted``.
        self.num_rays = check_count("num_rays", self.num_rays, 0)
        check_shape("ray", self.ray, [None])
        if self.ray.dtype != torch.long:
            raise TypeError(f"ray: expected an int64 tensor, got {self.ray.dtype}")
        s = self.ray.shape[0]
        check_float("t_start", self.t_start, [s], device=self.ray.device)
        check_float("t_end", self.t_end, [s], device=self.ray.device)
        if s > 0:
            # One reduction, one sync: sorted rays in range and non-negative interval lengths.
            bad = (self.ray[0] < 0) | (self.ray[-1] >= self.num_rays) | (self.ray[1:] < self.ray[:-1]).any()
            if bool(bad):
                raise ValueError(f"ray: expected ray indices sorted ascending in [0, {self.num_rays})")
            if bool((self.t_end < self.t_start).any()):
                raise ValueError("t_end: expected t_end >= t_start for every sample")

    @classmethod
    def _trusted(cls, ray: Tensor, t_start: Tensor, t_end: Tensor, num_rays: int, **derived: Tensor | None) -> PackedSamples:
        """Samples known to be valid (made by this package's samplers): skips the value checks. ``derived``: values
        the sampler wrote on the way (``t_mid``, ``ray_first``), kept as those their methods make, to the bit."""
        samples = cls.__new__(cls)
        samples.ray, samples.t_start, samples.t_end, samples.num_rays = ray, t_start, t_end, num_rays
        samples._derived = {name: value for name, value in derived.items() if value is not None}
        return samples

    def __len__(self) -> int:
        return self.ray.shape[0]

    @property
    def device(self) -> torch.device:
        return self.ray.device

    # The values derived from the samples are made once an instance (a step asks for them several times, and each
    # torch operation is a kernel launch on a GPU): samples are not changed after they are made. Values of
    # intervals with a gradient are made afresh, so that one made under ``no_grad`` is never reused with one.

    def _memo(self, name: str, make):
        if self.t_start.requires_grad or self.t_end.requires_grad:
            return make()
        memo = self.__dict__.setdefault("_derived", {})
        if name not in memo:
            memo[name] = make()
        return memo[name]

    @property
    def t_mid(self) -> Float[Tensor, " S"]:
        return self._memo("t_mid", lambda: (self.t_start + self.t_end) / 2)

    @property
    def deltas(self) -> Float[Tensor, " S"]:
        """Interval lengths ``t_end - t_start`` (the δ of volume rendering)."""
        return self._memo("deltas", lambda: self.t_end - self.t_start)

    def counts(self) -> Int[Tensor, " R"]:
        """Number of samples on each ray: where each ray's samples end less where they start, by binary searches of
        the sorted ``ray`` (``bincount`` would read the largest index back from a GPU)."""
        rays = kernels.row_numbers(self.num_rays, self.device)
        return torch.searchsorted(self.ray, rays, right=True) - self.first()

    def first(self) -> Int[Tensor, " R"]:
        """Index of each ray's first sample (where its samples would start, for a ray without any): a binary
        search of the sorted ``ray``, with no host synchronisation (``bincount`` reads the largest index)."""
        return self._memo("first", lambda: torch.searchsorted(self.ray, kernels.row_numbers(self.num_rays, self.device)))

    def ray_first(self) -> Int[Tensor, " S"]:
        """Index of each sample's ray's first sample (``first()[ray]``)."""
        return self._memo("ray_first", lambda: self.first()[self.ray])

    def midpoints(self, origins: Float[Tensor, "R 3"], dirs: Float[Tensor, "R 3"]) -> Float[Tensor, "S 3"]:
        """World points at the interval midpoints: ``origins[ray] + t_mid * dirs[ray]``."""
        check_float("origins", origins, [self.num_rays, 3], device=self.device)
        check_float("dirs", dirs, [self.num_rays, 3], device=self.device)
        t = self.t_mid.to(torch.promote_types(self.t_mid.dtype, origins.dtype))
        return origins[self.ray] + t[:, None] * dirs[self.ray]

    def select(self, keep: Bool[Tensor, " S"]) -> PackedSamples:
        """The samples where ``keep`` is True (order, hence sorting, is preserved)."""
        _check_keep(keep, len(self), self.device)
        return PackedSamples._trusted(self.ray[keep], self.t_start[keep], self.t_end[keep], self.num_rays)


def _check_keep(keep: Tensor, samples: int, device: torch.device) -> None:
    check_shape("keep", keep, [samples], device=device)
    if keep.dtype != torch.bool:
        raise TypeError(f"keep: expected a bool tensor, got {keep.dtype}")


Count = int | Int[Tensor, ""]  # a host number, or a device one read when convenient (fixed slots: no read-back)


@dataclass(frozen=True)
class SampleCount:
    """The samples of a training step: those its samplers placed along the rays (``marched``), those the field was
    trained on (``trained``: fewer after early termination) and the rays left out because their samples did not fit
    fixed slots (``dropped``). A sample budget (``TrainingConfig.samples_per_batch``) counts ``trained``; with fixed
    slots the counts are 0-d device tensors, ``marched`` counts the samples every ray had for the slots, the
    dropped rays' too, and ``trained`` those in the slots."""

    marched: Count
    trained: Count
    dropped: Count = 0

    def __add__(self, other: SampleCount) -> SampleCount:  # a model with two passes (NeRF's coarse and fine)
        return SampleCount(self.marched + other.marched, self.trained + other.trained, self.dropped + other.dropped)


@dataclass(frozen=True)
class SampleSlots:
    """Fixed sizes for a step's samples (``TrainingConfig.fixed_shapes``): ``march`` slots the march fills and
    ``train`` slots for the samples trained after early termination (``train`` alone without it)."""

    march: int
    train: int

    def __post_init__(self) -> None:
        check_count("march", self.march, 1)
        check_count("train", self.train, 1)


@dataclass
class SlotSamples:
    """Packed samples in a fixed number of slots, a size that does not depend on the data (no host synchronisation;
    instant-ngp pads its buffers the same way): the samples first, then zero-length intervals at the far end of
    the last ray (weight 0 when composited). The rays whose samples did not all fit have none (``fits`` False): a
    loss leaves them out, as instant-ngp's does with the rays past its compacted buffer. They are the last rays:
    rays fit in order."""

    samples: PackedSamples  # exactly ``slots`` samples
    count: Int[Tensor, ""]  # the samples in the slots; the rest is padding
    wanted: Int[Tensor, ""]  # the samples the rays had for the slots, fitting or not (more than count when some did not)
    fits: Bool[Tensor, " R"]  # the rays whose samples are all in the slots
    source: Int[Tensor, " S"] | None = None  # after compact: the slot each came from (padding: the first)

    @property
    def slots(self) -> int:
        return len(self.samples)

    def real(self) -> Bool[Tensor, " S"]:
        """The slots that hold a sample (not padding)."""
        return torch.arange(self.slots, device=self.count.device) < self.count

    def compact(self, keep: Bool[Tensor, " S"], slots: IntLike) -> SlotSamples:
        """The samples where ``keep`` is True, in order, into ``slots`` slots: a ray keeps its kept samples if they
        all fit after those of the rays before it (those that did not fit included), else it has none and stops
        fitting. ``source`` says which of these slots each came from."""
        slots = check_count("slots", slots, 1)
        _check_keep(keep, self.slots, self.count.device)
        s, device = self.samples, self.count.device
        keep = keep & self.real() & self.fits[s.ray]
        wanted = keep.sum()
        # Kept samples through each ray's last slot (the slot before the next ray's first; -1: none yet).
        first = s.first()
        last_slot = torch.cat([first[1:], first.new_full((1,), self.slots)]) - 1
        through = torch.where(last_slot >= 0, torch.cumsum(keep, 0)[last_slot.clamp(min=0)], 0)
        mine = torch.zeros_like(through).index_add_(0, s.ray, keep.to(through.dtype))
        fits = self.fits & ((through <= slots) | (mine == 0))  # a ray with nothing to train fits anywhere
        keep = keep & fits[s.ray]
        count = keep.sum()
        # Each kept sample's place; the others go to a spare place past the end, cut off.
        place = torch.where(keep, torch.cumsum(keep, 0) - 1, slots)
        source = torch.zeros(slots + 1, dtype=torch.long, device=device)
        source = source.scatter_(0, place, torch.arange(self.slots, device=device))[:slots]
        pad = torch.arange(slots, device=device) >= count
        far = s.t_end[-1:].expand(slots)  # the far end of the last slot: padding stays behind every sample of the last ray
        ray = torch.where(pad, s.num_rays - 1, s.ray[source])
        start, end = torch.where(pad, far, s.t_start[source]), torch.where(pad, far, s.t_end[source])
        return SlotSamples(PackedSamples._trusted(ray, start, end, s.num_rays), count, wanted, fits, source)


@dataclass
class BoxHit:
    """Where rays cross a box: ``t`` in ``[near, far]`` is inside, with ``near >= 0`` (the ray starts at its
    origin). Misses have ``hit`` False and ``near = far = 0``."""

    near: Float[Tensor, " R"]
    far: Float[Tensor, " R"]
    hit: Bool[Tensor, " R"]

    def __iter__(self):  # ``near, far, hit = ray_aabb(...)``
        return iter((self.near, self.far, self.hit))


def _check_aabb(name: str, aabb: Tensor, device: torch.device | None = None, rays: int | None = None) -> None:
    """``aabb``: one box ``[2, 3]`` or, where ``rays`` is given, also one box per ray ``[rays, 2, 3]``."""
    if rays is not None and isinstance(aabb, Tensor) and aabb.dim() == 3:
        check_float(name, aabb, [rays, 2, 3], device=device)
    else:
        check_float(name, aabb, [2, 3], device=device)
    if checking_values() and not bool((aabb[..., 1, :] > aabb[..., 0, :]).all()):
        raise ValueError(f"{name}: expected min corner < max corner on every axis, got {aabb.tolist()}")


def ray_aabb(
    origins: Float[Tensor, "R 3"], dirs: Float[Tensor, "R 3"], aabb: Float[Tensor, "2 3"] | Float[Tensor, "R 2 3"]
) -> BoxHit:
    """Intersect rays with the axis-aligned box ``aabb = [min corner, max corner]`` (slab method): one box for
    all rays, or one per ray (``[R, 2, 3]``, e.g. each ray's frame's box).

    A ray that only touches the box (``far == near``) counts as a miss. The bounds carry no gradient (nerfacc's
    do not either): they place samples, which a refined camera moves through the samples' points instead.
    """
    check_float("origins", origins, [None, 3])
    check_float("dirs", dirs, [origins.shape[0], 3], device=origins.device)
    _check_aabb("aabb", aabb, device=origins.device, rays=origins.shape[0])
    lo, hi = aabb[..., 0, :].to(origins.dtype), aabb[..., 1, :].to(origins.dtype)
    # A direction's zero axes give infinite slab distances (x / ±0 = ±inf): the axis constrains nothing when the
    # origin is inside its slab (-inf to +inf), everything when outside (both ends at the same infinity). An origin on
    # a slab's plane gives 0 / 0 = NaN there, which counts as inside. In few operations: each is a GPU launch.
    origins, dirs = origins.detach(), dirs.detach()
    t0, t1 = (lo.detach() - origins) / dirs, (hi.detach() - origins) / dirs
    t_min = torch.minimum(t0, t1).nan_to_num(nan=-math.inf, posinf=math.inf, neginf=-math.inf).amax(dim=-1).clamp(min=0)
    t_max = torch.maximum(t0, t1).nan_to_num(nan=math.inf, posinf=math.inf, neginf=-math.inf).amin(dim=-1)
    hit = t_max > t_min
    return BoxHit(near=torch.where(hit, t_min, 0.0), far=torch.where(hit, t_max, 0.0), hit=hit)


def per_ray(name: str, value: Tensor | float, rays: int, like: Tensor) -> Tensor:
    """A per-ray bound given as a number or a tensor ``[R]``, as a tensor ``[R]`` of ``like``'s dtype."""
    if isinstance(value, Tensor):
        check_float(name, value, [rays], device=like.device)
        return value.to(like.dtype)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{name}: expected a finite number or a float tensor [{rays}], got {value!r}")
    return torch.full((rays,), float(value), dtype=like.dtype, device=like.device)


def stratified_points(
    near: Float[Tensor, " R"], far: Float[Tensor, " R"], n: int, generator: torch.Generator | None
) -> Float[Tensor, "R n"]:
    """One point in each of ``n`` equal bins of ``[near, far]`` per ray: uniformly placed in its bin with a
    ``generator`` (one row of draws per ray, all rays), at the bin's centre without (unchecked: for samplers)."""
    if generator is None:
        u = torch.full((near.shape[0], n), 0.5, dtype=near.dtype, device=near.device)
    else:
        u = torch.rand(near.shape[0], n, generator=generator, device=generator.device, dtype=near.dtype).to(near.device)
    bins = torch.arange(n, device=near.device, dtype=near.dtype)
    return near[:, None] + (bins + u) * ((far - near)[:, None] / n)


def stratified_samples(
    rays: Rays | tuple[Float[Tensor, "R 3"], Float[Tensor, "R 3"]],
    near: Float[Tensor, " R"] | float,
    far: Float[Tensor, " R"] | float,
    num_samples: IntLike,
    generator: torch.Generator | None = None,
    keep_misses: bool = False,
) -> PackedSamples:
    """``num_samples`` contiguous intervals per ray partitioning ``[near, far]`` (rays with ``far <= near``
    get none; ``keep_misses``: theirs too, ``num_samples`` a ray, a shape that does not depend on the data).

    The interval ``[near, far]`` is cut into equal bins; each bin gets one point, at a uniformly random place
    when ``generator`` is given (stratified sampling, NeRF) or at its centre when it is None. The intervals'
    boundaries are ``near``, the midpoints between consecutive points, and ``far``; so without a generator
    the intervals are the bins themselves and their midpoints are evenly spaced.
    """
    origins, dirs = (rays.origins, rays.directions) if isinstance(rays, Rays) else rays
    check_float("origins", origins, [None, 3])
    r = origins.shape[0]
    if dirs.shape[:1] != origins.shape[:1]:
        raise ValueError(f"rays: expected as many directions as origins ({r}), got {dirs.shape[0]}")
    check_float("dirs", dirs, [r, 3], device=origins.device)
    check_nonzero_rows("dirs", dirs)
    n = check_count("num_samples", num_samples, 1)
    check_generator("generator", generator, optional=True)
    near, far = per_ray("near", near, r, origins), per_ray("far", far, r, origins)
    points = stratified_points(near, far, n, generator)
    edges = torch.cat([near[:, None], (points[:, 1:] + points[:, :-1]) / 2, far[:, None]], dim=1)
    ray = torch.arange(r, device=origins.device)[:, None].expand(r, n)
    if keep_misses:
        return PackedSamples._trusted(ray.reshape(-1), edges[:, :-1].reshape(-1), edges[:, 1:].reshape(-1), r)
    keep = (far > near)[:, None].expand(r, n)
    return PackedSamples._trusted(ray[keep], edges[:, :-1][keep], edges[:, 1:][keep], r)
