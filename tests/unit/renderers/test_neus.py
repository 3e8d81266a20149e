"""NeuS primitives: the discrete opacity against a float64 numpy evaluation and gradcheck, a plane crossing
composited with composite_alpha against the analytic logistic, composite_alpha and accumulate against per-ray
loops (alpha = 1 included), the learnable and scheduled sharpness, the up-sampler on a sphere (counts, sorting,
bounds, calls on new points only, concentration at the surface), and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.special import expit

from headfields.checks import trusted_values
from headfields.device_paths import cuda_paths
from headfields.renderers import (
    InverseVariance,
    PackedSamples,
    accumulate,
    composite_alpha,
    inverse_variance_schedule,
    neus_alpha,
    neus_rays,
    neus_samples,
    ray_aabb,
    stratified_samples,
)

from helpers import raises_naming

HYPOTHESIS = settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def random_samples(num_rays: int, seed: int, dtype=torch.float64, device="cpu", max_per_ray: int = 7) -> PackedSamples:
    """Rays with 0..max_per_ray sorted, gapped intervals each (some rays empty)."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, max_per_ray + 1, (num_rays,), generator=g)
    ray = torch.repeat_interleave(torch.arange(num_rays), counts)
    edges = [torch.sort(torch.rand(2 * c, generator=g, dtype=torch.float64) * 4).values for c in counts.tolist()]
    t0, t1 = torch.cat([e[0::2] for e in edges]), torch.cat([e[1::2] for e in edges])
    return PackedSamples(ray.to(device), t0.to(dtype=dtype, device=device), t1.to(dtype=dtype, device=device), num_rays)


# --- neus_alpha ---------------------------------------------------------------------------------------------


def numpy_alpha(sdf, slope, deltas, inv_s):
    prev = expit(inv_s * (sdf - slope * deltas / 2))
    nxt = expit(inv_s * (sdf + slope * deltas / 2))
    return np.clip((prev - nxt + 1e-5) / (prev + 1e-5), 0.0, 1.0)


@HYPOTHESIS
@given(seed=st.integers(0, 2**31 - 1), size=st.integers(0, 40), kind=st.sampled_from(["float", "0-d", "per-sample"]))
def test_alpha_matches_numpy(seed, size, kind):
    rng = np.random.default_rng(seed)
    sdf = rng.normal(0, 0.3, size)
    slope = rng.uniform(-1.5, 1.0, size)
    deltas = rng.uniform(0, 0.1, size)
    inv_s = {"float": rng.uniform(1, 500), "0-d": np.array(rng.uniform(1, 500)), "per-sample": rng.uniform(1, 500, size)}[kind]
    want = numpy_alpha(sdf, slope, deltas, inv_s)
    arg = float(inv_s) if kind == "float" else torch.from_numpy(np.asarray(inv_s))
    got = neus_alpha(torch.from_numpy(sdf), torch.from_numpy(slope), torch.from_numpy(deltas), arg)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-12, rtol=1e-10)
    # float32 inputs: the same to float32 accuracy (a float64 inv_s tensor promotes the result).
    args32 = [torch.from_numpy(x).float() for x in (sdf, slope, deltas)]
    got32 = neus_alpha(*args32, arg.float() if isinstance(arg, torch.Tensor) else arg)
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.double().numpy(), want, atol=2e-5, rtol=0)


def test_alpha_gradcheck(device):
    g = torch.Generator().manual_seed(0)
    n = 12
    sdf = (torch.randn(n, generator=g, dtype=torch.float64) * 0.05).to(device).requires_grad_()
    slope = (-0.2 - torch.rand(n, generator=g, dtype=torch.float64)).to(device).requires_grad_()  # entering: alpha in (0, 1)
    deltas = (0.01 + 0.05 * torch.rand(n, generator=g, dtype=torch.float64)).to(device).requires_grad_()
    inv_s = torch.tensor(20.0, dtype=torch.float64, device=device, requires_grad=True)
    per_sample = (10 + 30 * torch.rand(n, generator=g, dtype=torch.float64)).to(device).requires_grad_()
    alpha = neus_alpha(sdf, slope, deltas, inv_s)
    assert ((alpha > 0) & (alpha < 1)).all()  # away from the clip
    assert torch.autograd.gradcheck(neus_alpha, (sdf, slope, deltas, inv_s))
    assert torch.autograd.gradcheck(neus_alpha, (sdf, slope, deltas, per_sample))
    assert torch.autograd.gradgradcheck(neus_alpha, (sdf, slope, deltas, inv_s))


@pytest.mark.parametrize("inv_s", [16.0, 64.0, 256.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_plane_crossing_composites_to_the_logistic(inv_s, dtype):
    # A ray entering the half-space n.p < c: f(t) = c0 + k t with k = n.d < 0 exactly, so the slope is exact, the
    # sections telescope and the weights are the logistic density of scale 1 / (s |k|) around t* = -c0 / k:
    # total mass 1, mean t*, mean absolute deviation 2 ln 2 / (s |k|).
    d = torch.tensor([0.36, 0.48, 0.8], dtype=torch.float64)
    o = torch.tensor([0.1, -0.2, 0.0], dtype=torch.float64)
    n, c = torch.tensor([0.0, -0.6, -0.8], dtype=torch.float64), -1.2
    k, c0 = float(n @ d), float(n @ o) - c
    t_star = -c0 / k
    samples = stratified_samples((o[None].to(dtype), d[None].to(dtype)), 0.5, 3.5, 300, torch.Generator().manual_seed(1))
    t = samples.t_mid
    sdf = c0 + k * t
    alpha = neus_alpha(sdf, torch.full_like(sdf, k), samples.deltas, inv_s)
    out = composite_alpha(samples, alpha, torch.ones(len(samples), 3, dtype=dtype))
    w = out.weights.double()
    assert abs(out.opacity.item() - 1) < 1e-5
    # The 1e-5 floor on every alpha before the surface pulls the mean slightly forward.
    assert abs(out.depth.item() - t_star) < 2e-3
    scale = 1 / (inv_s * abs(k))
    deviation = float((w * (t.double() - t_star).abs()).sum())
    if inv_s <= 64:  # sections much shorter than the scale: the continuous value
        assert abs(deviation - 2 * math.log(2) * scale) < 0.05 * 2 * math.log(2) * scale
    assert deviation < 3 * scale
    near = (t.double() - t_star).abs() <= 6 * scale + samples.deltas.max().double()
    assert float(w[near].sum()) > 0.99  # tanh(3) = 0.995 of the logistic mass


# --- composite_alpha and accumulate ---------------------------------------------------------------------------


def alpha_loop(samples: PackedSamples, alpha, rgb, background):
    """Front to back one ray and one sample at a time: T <- T * (1 - alpha)."""
    colors, depths, opacities, weights = [], [], [], []
    for r in range(samples.num_rays):
        trans = torch.ones((), dtype=alpha.dtype, device=alpha.device)
        color = torch.zeros(3, dtype=alpha.dtype, device=alpha.device)
        depth = torch.zeros((), dtype=alpha.dtype, device=alpha.device)
        for s in (samples.ray == r).nonzero()[:, 0].tolist():
            w = trans * alpha[s]
            weights.append(w)
            color = color + w * rgb[s]
            depth = depth + w * (samples.t_start[s] + samples.t_end[s]) / 2
            trans = trans * (1 - alpha[s])
        colors.append(color + trans * background)
        depths.append(depth)
        opacities.append(1 - trans)
    return torch.stack(colors), torch.stack(depths), torch.stack(opacities), torch.stack(weights)


def test_composite_alpha_matches_loop_with_opaque_samples(device):
    samples = random_samples(14, seed=2, device=device, max_per_ray=8)
    g = torch.Generator().manual_seed(3)
    s = len(samples)
    alpha = torch.rand(s, generator=g, dtype=torch.float64)
    special = torch.rand(s, generator=g)
    alpha[special < 0.15] = 1.0  # some rays hold one opaque sample, some two or more
    alpha[(special >= 0.15) & (special < 0.25)] = 0.0
    alpha = alpha.to(device).requires_grad_()
    rgb = torch.rand(s, 3, generator=g, dtype=torch.float64).to(device).requires_grad_()
    background = torch.rand(3, generator=g, dtype=torch.float64).to(device).requires_grad_()
    out = composite_alpha(samples, alpha, rgb, background)
    ref = alpha_loop(samples, alpha, rgb, background)
    got = (out.rgb, out.depth, out.opacity, out.weights)
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    mix = [torch.rand(t.shape, generator=g, dtype=torch.float64).to(device) for t in ref]
    grads = torch.autograd.grad(sum((m * t).sum() for m, t in zip(mix, got, strict=True)), (alpha, rgb, background))
    grads_ref = torch.autograd.grad(sum((m * t).sum() for m, t in zip(mix, ref, strict=True)), (alpha, rgb, background))
    for a, b in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opaque_sample_stops_the_ray(device, dtype):
    # Two rays of five samples; ray 0 is opaque at its third sample, ray 1 (after it in the packed sums) is not.
    ray = torch.tensor([0] * 5 + [1] * 5, device=device)
    t = torch.arange(5, dtype=dtype, device=device).repeat(2)
    samples = PackedSamples(ray, t, t + 1, 2)
    alpha = torch.tensor([0.2, 0.5, 1.0, 0.7, 1.0, 0.1, 0.1, 0.1, 0.1, 0.1], dtype=dtype, device=device)
    alpha.requires_grad_()
    out = composite_alpha(samples, alpha, torch.ones(10, 3, dtype=dtype, device=device))
    w = out.weights.detach()
    assert (w[3:5] == 0).all()
    torch.testing.assert_close(w[:3], torch.tensor([0.2, 0.4, 0.4], dtype=dtype, device=device))
    assert out.opacity[0] == 1
    torch.testing.assert_close(w[5:], 0.1 * 0.9 ** torch.arange(5, dtype=dtype, device=device))
    out.rgb.sum().backward()
    assert torch.isfinite(alpha.grad).all()
    # Tolerated rounding just outside [0, 1] is clamped.
    nudged = alpha.detach().clone()
    nudged[2], nudged[5] = 1 + 5e-7, -5e-7
    torch.testing.assert_close(
        composite_alpha(samples, nudged, torch.ones(10, 3, dtype=dtype, device=device)).weights[5], w[5] * 0
    )


def test_composite_alpha_background_and_empty(device):
    samples = PackedSamples(torch.tensor([0, 0, 2], device=device), torch.tensor([0.0, 1.0, 0.5], device=device),
                            torch.tensor([1.0, 2.0, 0.7], device=device), 3)  # fmt: skip
    background = torch.rand(3, 3, generator=torch.Generator().manual_seed(4)).to(device)
    out = composite_alpha(samples, torch.tensor([0.5, 0.5, 0.25], device=device), torch.ones(3, 3, device=device), background)
    torch.testing.assert_close(out.opacity, torch.tensor([0.75, 0.0, 0.25], device=device))
    torch.testing.assert_close(out.rgb[1], background[1])
    torch.testing.assert_close(out.rgb[2], 0.25 + 0.75 * background[2])
    none = PackedSamples(
        torch.zeros(0, dtype=torch.long, device=device), torch.zeros(0, device=device), torch.zeros(0, device=device), 2
    )
    out = composite_alpha(none, torch.zeros(0, device=device), torch.zeros(0, 3, device=device))
    assert out.weights.shape == (0,) and (out.rgb == 0).all() and (out.opacity == 0).all()


def test_accumulate_matches_loop(device):
    samples = random_samples(9, seed=5, device=device)
    g = torch.Generator().manual_seed(6)
    weights = torch.rand(len(samples), generator=g, dtype=torch.float64).to(device).requires_grad_()
    values = torch.randn(len(samples), 4, generator=g, dtype=torch.float64).to(device).requires_grad_()
    got = accumulate(samples, weights, values)
    want = torch.stack(
        [
            sum((weights[s] * values[s] for s in (samples.ray == r).nonzero()[:, 0].tolist()), values.new_zeros(4))
            for r in range(9)
        ]
    )
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
    assert torch.autograd.gradcheck(lambda w, v: accumulate(samples, w, v), (weights, values))
    # Mixed dtypes promote; no samples give zeros.
    assert accumulate(samples, weights.detach().float(), values.detach()).dtype == torch.float64
    none = PackedSamples(
        torch.zeros(0, dtype=torch.long, device=device), torch.zeros(0, device=device), torch.zeros(0, device=device), 3
    )
    assert torch.equal(
        accumulate(none, torch.zeros(0, device=device), torch.zeros(0, 2, device=device)), torch.zeros(3, 2, device=device)
    )


# --- sharpness ------------------------------------------------------------------------------------------------


def test_inverse_variance():
    module = InverseVariance()
    value = module()
    assert value.shape == () and math.isclose(value.item(), math.exp(3.0), rel_tol=1e-6)
    (grad,) = torch.autograd.grad(value, module.v)
    assert math.isclose(grad.item(), 10 * math.exp(3.0), rel_tol=1e-6)  # d exp(10 v) / dv
    module.double()
    assert module().dtype == torch.float64
    fixed = InverseVariance(initial=0.5, scale=4.0, learnable=False)
    assert list(fixed.parameters()) == [] and "v" in fixed.state_dict()
    assert math.isclose(fixed().item(), math.exp(2.0), rel_tol=1e-6) and not fixed().requires_grad
    # The sharpness drives neus_alpha and gets its gradient through it.
    alpha = neus_alpha(torch.tensor([0.01, -0.02]), torch.tensor([-1.0, -0.5]), torch.tensor([0.05, 0.05]), module().float())
    alpha.sum().backward()
    assert module.v.grad is not None and module.v.grad.abs() > 0


def test_inverse_variance_schedule():
    assert inverse_variance_schedule(0, 16.0, 1024.0, 100) == 16.0
    assert inverse_variance_schedule(100, 16.0, 1024.0, 100) == 1024.0
    assert inverse_variance_schedule(10**6, 16.0, 1024.0, 100) == 1024.0
    assert math.isclose(inverse_variance_schedule(50, 16.0, 1024.0, 100), 128.0)  # log-linear: the geometric mean
    assert math.isclose(inverse_variance_schedule(25, 1024.0, 16.0, 100), 1024.0 * 64**-0.25)  # decreasing too
    assert inverse_variance_schedule(0, 16.0, 64.0, 0) == 64.0
    with raises_naming("step"):
        inverse_variance_schedule(-1, 1.0, 2.0, 10)
    with raises_naming("start"):
        inverse_variance_schedule(1, 0.0, 2.0, 10)
    with raises_naming("end"):
        inverse_variance_schedule(1, 1.0, math.inf, 10)
    with raises_naming("steps"):
        inverse_variance_schedule(1, 1.0, 2.0, 2.5)
    with raises_naming("scale"):
        InverseVariance(scale=0.0)
    with raises_naming("initial"):
        InverseVariance(initial=math.nan)


# --- neus_samples ---------------------------------------------------------------------------------------------

RADIUS = 0.5
OFFSETS = [0.0, 0.2, 0.4, 0.8]  # lateral offsets of rays along +z: three hit the sphere, the last misses


class CountingSphere:
    """A sphere SDF that records every call: the points it saw and their rays."""

    def __init__(self):
        self.points, self.rays = [], []

    def __call__(self, points, ray):
        assert not torch.is_grad_enabled()
        self.points.append(points.clone())
        self.rays.append(ray.clone())
        return points.norm(dim=1) - RADIUS


def sphere_rays(dtype, device):
    """The OFFSETS rays from z = -2, clipped to the box [-1, 1]^3, plus one with far <= near."""
    origins = torch.tensor([[x, 0.0, -2.0] for x in OFFSETS] + [[0.0, 0.0, -2.0]], dtype=dtype, device=device)
    dirs = torch.tensor([[0.0, 0.0, 1.0]], dtype=dtype, device=device).expand(len(origins), 3)
    box = torch.tensor([[-1.0] * 3, [1.0] * 3], dtype=dtype, device=device)
    near, far, _ = ray_aabb(origins, dirs, box)
    far = torch.where(torch.arange(len(origins), device=device) == len(OFFSETS), near, far)
    return origins, dirs, near, far


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("jitter", [False, True])
def test_samples_counts_order_bounds_and_calls(device, dtype, jitter):
    origins, dirs, near, far = sphere_rays(dtype, device)
    sphere = CountingSphere()
    n, rounds, per_round = 24, 3, 8
    generator = torch.Generator(device=device).manual_seed(7) if jitter else None
    samples = neus_samples(origins, dirs, near, far, sphere, n, rounds, per_round, generator=generator)
    PackedSamples(samples.ray, samples.t_start, samples.t_end, samples.num_rays)  # the public checks pass
    m = n + rounds * per_round
    assert samples.counts().tolist() == [m] * len(OFFSETS) + [0]
    assert samples.t_start.dtype == dtype and samples.device == origins.device
    # Called once at the start, then after each round but the last, on new points only: every point at most once.
    assert [len(p) for p in sphere.points] == [len(OFFSETS) * n] + [len(OFFSETS) * per_round] * (rounds - 1)
    points, rays = torch.cat(sphere.points), torch.cat(sphere.rays)
    t = ((points - origins[rays]) * dirs[rays]).sum(dim=1)
    torch.testing.assert_close(points, origins[rays] + t[:, None] * dirs[rays])  # on their rays
    for r in range(len(OFFSETS)):
        mine = samples.ray == r
        t0, t1 = samples.t_start[mine], samples.t_end[mine]
        assert t0[0] == near[r] and t1[-1] == far[r]
        assert torch.equal(t0[1:], t1[:-1]) and (t1 >= t0).all()  # a sorted partition of [near, far]
        # Each point sdf_fn saw lies in an interval of its own; the last round's points (never evaluated) fill
        # the other intervals. The inner edges are the midpoints between consecutive points, so walking up from
        # the first point (a stratified one: up-samples fall between points) recovers every point.
        seen = torch.sort(t[rays == r]).values.tolist()
        assert len(seen) == m - per_round and near[r] <= seen[0] and seen[-1] <= far[r]
        owner = [None] * m
        for point in seen:
            (k,) = [k for k in range(m) if t0[k] <= point <= t1[k] and owner[k] is None][:1]
            owner[k] = point
        assert owner[0] == seen[0] and owner.count(None) == per_round
        walked = [owner[0]]
        for k in range(1, m):
            walked.append(2 * float(t0[k]) - walked[-1])  # t0[k] = (point k-1 + point k) / 2
            if owner[k] is not None:
                assert walked[k] == pytest.approx(owner[k], abs=1e-4 if dtype == torch.float32 else 1e-10)
                walked[k] = owner[k]
            assert t0[k] - 1e-5 <= walked[k] <= t1[k] + 1e-5  # each point in its own interval


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_samples_concentrate_at_the_surface(dtype):
    origins, dirs, near, far = sphere_rays(dtype, "cpu")
    entry = 2 - torch.sqrt(RADIUS**2 - torch.tensor(OFFSETS[:3], dtype=torch.float64) ** 2)
    fractions = []
    for rounds in (0, 1, 2, 4):
        samples = neus_samples(origins, dirs, near, far, CountingSphere(), 64, rounds, 16)
        hit = samples.ray < 3
        p = origins[samples.ray[hit]] + samples.t_mid[hit, None] * dirs[samples.ray[hit]]
        fractions.append(float(((p.double().norm(dim=1) - RADIUS).abs() < 0.01).double().mean()))
        if rounds == 4:  # the first crossing is sampled finely
            for r in range(3):
                assert (samples.t_mid[samples.ray == r].double() - entry[r]).abs().min() < 2e-3
    assert all(b > a for a, b in zip(fractions, fractions[1:], strict=False)), fractions
    assert fractions[-1] > 0.25


def test_without_the_coarse_points_the_up_samples_alone_are_rendered():
    # MonoNPHM's tracking renderer: the stratified points only steer the up-samples.
    origins, dirs, near, far = sphere_rays(torch.float64, "cpu")
    n, rounds, per_round = 24, 2, 8
    sphere = CountingSphere()
    samples = neus_samples(origins, dirs, near, far, sphere, n, rounds, per_round, keep_coarse=False)
    assert samples.counts().tolist() == [rounds * per_round] * len(OFFSETS) + [0]
    # The up-samples sdf_fn saw: the first round's (the last round's steer nothing and are not evaluated).
    points, rays = torch.cat(sphere.points[1:]), torch.cat(sphere.rays[1:])
    assert len(sphere.points) == rounds and len(points) == len(OFFSETS) * per_round * (rounds - 1)
    t = ((points - origins[rays]) * dirs[rays]).sum(dim=1)
    for r in range(len(OFFSETS)):
        mine = samples.ray == r
        t0, t1 = samples.t_start[mine], samples.t_end[mine]
        assert (t0[1:] >= t0[:-1]).all() and (t0 >= near[r]).all() and (t0 <= far[r]).all()
        # Each up-sample sdf_fn saw starts a section of its own.
        assert ((t[rays == r][:, None] - t0[None, :]).abs() < 1e-12).sum(dim=1).tolist() == [1] * per_round
        assert torch.equal(t0[1:], t1[:-1])  # and ends at the next
        torch.testing.assert_close(t1[-1], t0[-1] + (far[r] - near[r]) / n)  # the last: one coarse step
    entry = 2 - math.sqrt(RADIUS**2 - OFFSETS[0] ** 2)  # the ray through the centre: all of them near its entry
    assert float((samples.t_start[samples.ray == 0] - entry).abs().max()) < 0.1
    with raises_naming("rounds"):
        neus_samples(origins, dirs, near, far, sphere, n, 0, per_round, keep_coarse=False)


def test_no_rounds_is_the_stratified_set():
    origins, dirs, near, far = sphere_rays(torch.float64, "cpu")
    for seed in (None, 3):
        generators = [None if seed is None else torch.Generator().manual_seed(seed) for _ in range(2)]
        sphere = CountingSphere()
        got = neus_samples(origins, dirs, near, far, sphere, 16, 0, 8, generator=generators[0])
        want = stratified_samples((origins, dirs), near, far, 16, generator=generators[1])
        assert sphere.points == []  # nothing to evaluate
        for a, b in ((got.ray, want.ray), (got.t_start, want.t_start), (got.t_end, want.t_end)):
            assert torch.equal(a, b)


def test_samples_without_rays_with_room():
    origins, dirs, near, _ = sphere_rays(torch.float32, "cpu")
    sphere = CountingSphere()
    samples = neus_samples(origins, dirs, near, near, sphere, 8, 2, 4)
    assert len(samples) == 0 and samples.num_rays == len(origins) and sphere.points == []


@pytest.mark.parametrize("keep_coarse", [True, False])
@pytest.mark.parametrize("jitter", [False, True])
def test_samples_keeping_the_misses_are_the_hits_samples_and_the_misses_of_no_length(keep_coarse, jitter, host_sync_spy):
    """``keep_misses``: the rays that cross their bounds have exactly the samples they have without it (one row of
    jitter a ray either way), the one that does not has as many, of no length at its near; the shapes follow from
    the rays alone, so nothing is read back on CUDA's paths."""
    origins, dirs, near, far = sphere_rays(torch.float64, "cpu")
    miss = len(OFFSETS)  # (far == near)

    def draw(keep_misses: bool) -> PackedSamples:
        generator = torch.Generator().manual_seed(5) if jitter else None
        return neus_samples(
            origins, dirs, near, far, CountingSphere(), 16, 2, 8, generator=generator, keep_coarse=keep_coarse,
            keep_misses=keep_misses,
        )  # fmt: skip

    want = draw(False)
    with cuda_paths(), trusted_values(), host_sync_spy() as spy:
        got = draw(True)
    assert spy.reads == {}, spy.report()
    per_ray = (16 if keep_coarse else 0) + 2 * 8
    assert got.counts().tolist() == [per_ray] * len(origins) and got.num_rays == want.num_rays
    hit = got.ray != miss
    for name in ("ray", "t_start", "t_end"):
        assert torch.equal(getattr(got.select(hit), name), getattr(want, name)), name
    assert (got.t_start[~hit] == near[miss]).all() and (got.t_end[~hit] == near[miss]).all()
    with raises_naming("keep_misses"):
        neus_samples(origins, dirs, near, far, CountingSphere(), 16, 2, 8, keep_misses=1)


def test_rays_keeping_the_misses_give_them_no_opacity_and_say_which_samples_are_real():
    """A miss's sections are of no length, where NeuS's alpha is not 0 (eps over eps and its start's CDF): kept,
    they weigh nothing, ``real`` marks the others, and those are the samples, opacities and gradients without it."""
    origins, dirs, near, far = sphere_rays(torch.float64, "cpu")

    def field_fn(x, ray):
        return x.norm(dim=1) - RADIUS, x, None

    def render(keep_misses: bool):
        generator = torch.Generator().manual_seed(1)
        return neus_rays(origins, dirs, near, far, field_fn, 50.0, 16, 2, 8, generator=generator, keep_misses=keep_misses)

    want, got = render(False), render(True)
    real = got.samples.ray != len(OFFSETS)
    assert want.real is None and torch.equal(got.real, real) and bool((~real).any())
    assert (got.alpha[~real] == 0).all()
    sdf = field_fn(got.samples.midpoints(origins, dirs), None)[0]
    unmasked = neus_alpha(sdf, torch.zeros(len(real)), got.samples.deltas, 50.0)
    assert (unmasked[~real] > 0).all()  # (what the mask is for)
    for name in ("alpha", "gradient", "canonical_gradient"):
        assert torch.equal(getattr(got, name)[real], getattr(want, name)), name


def test_rays_through_a_deformation_match_the_analytic_sphere():
    """A sphere seen through a shift (canonical = x + shift, sdf = ||canonical|| - r): the gradients are the analytic
    unit normal at the canonical point, w.r.t. the posed point and the canonical one alike; the opacities are
    neus_alpha's with the analytic slope; the samples are neus_samples' with the same generator; the third output
    comes back; and the graph trains the shift only in grad mode."""
    origins, dirs, near, far = sphere_rays(torch.float64, "cpu")
    shift = torch.tensor([0.1, -0.05, 0.2], dtype=torch.float64, requires_grad=True)

    def field_fn(x, ray):
        canonical = x + shift
        return canonical.norm(dim=1) - RADIUS, canonical, ray * 2

    out = neus_rays(origins, dirs, near, far, field_fn, 50.0, 16, 2, 8, generator=torch.Generator().manual_seed(1))

    def sdf_fn(x, ray):
        return (x + shift).norm(dim=1) - RADIUS

    want = neus_samples(origins, dirs, near, far, sdf_fn, 16, 2, 8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out.samples.t_start, want.t_start) and torch.equal(out.samples.ray, want.ray)
    canonical = want.midpoints(origins, dirs) + shift.detach()
    normal = canonical / canonical.norm(dim=1, keepdim=True)
    torch.testing.assert_close(out.canonical, canonical, rtol=0, atol=1e-12)
    torch.testing.assert_close(out.gradient, normal, rtol=0, atol=1e-12)
    torch.testing.assert_close(out.canonical_gradient, normal, rtol=0, atol=1e-12)
    slope = (normal * dirs[want.ray]).sum(dim=1)
    expected = neus_alpha(canonical.norm(dim=1) - RADIUS, slope, want.deltas, 50.0)
    torch.testing.assert_close(out.alpha, expected, rtol=0, atol=1e-12)
    assert torch.equal(out.field, want.ray * 2)
    (grad,) = torch.autograd.grad(out.alpha.sum(), shift)
    assert float(grad.abs().sum()) > 0  # the opacities train what the field depends on

    with torch.no_grad():
        evaluated = neus_rays(origins, dirs, near, far, field_fn, 50.0, 16, 2, 8, generator=torch.Generator().manual_seed(1))
    assert not evaluated.alpha.requires_grad and not evaluated.gradient.requires_grad
    torch.testing.assert_close(evaluated.alpha, out.alpha.detach(), rtol=0, atol=0)


def test_rays_pass_gradients_to_origins_that_require_them():
    """Tracking: rays that depend on a pose get gradients through the sample points."""
    origins, dirs, near, far = sphere_rays(torch.float64, "cpu")
    origins = origins.clone().requires_grad_(True)

    def field_fn(x, ray):
        return x.norm(dim=1) - RADIUS, x, None

    out = neus_rays(origins, dirs, near, far, field_fn, 50.0, 16, 1, 8)
    (grad,) = torch.autograd.grad(out.alpha.sum(), origins)
    assert float(grad[: len(OFFSETS) - 1].abs().sum()) > 0


def test_bad_input():
    s = 4
    sdf, slope, deltas = torch.zeros(s), -torch.ones(s), torch.full((s,), 0.1)
    with raises_naming("sdf"):
        neus_alpha(torch.zeros(s, 1), slope, deltas, 1.0)
    with raises_naming("slope"):
        neus_alpha(sdf, torch.ones(s + 1), deltas, 1.0)
    with raises_naming("deltas"):
        neus_alpha(sdf, slope, -deltas, 1.0)
    with raises_naming("sdf"):
        neus_alpha(sdf.clone().fill_(math.nan), slope, deltas, 1.0)
    with raises_naming("slope"):
        neus_alpha(sdf, slope.int(), deltas, 1.0)
    for bad in (0.0, -1.0, math.inf, torch.tensor(0.0), torch.ones(s + 1), torch.tensor(math.nan), "64"):
        with raises_naming("inv_s"):
            neus_alpha(sdf, slope, deltas, bad)
    samples = random_samples(3, seed=8, dtype=torch.float32)
    n = len(samples)
    with raises_naming("alpha"):
        composite_alpha(samples, torch.full((n,), 1.01), torch.ones(n, 3))
    with raises_naming("alpha"):
        composite_alpha(samples, torch.full((n,), -0.01), torch.ones(n, 3))
    with raises_naming("alpha"):
        composite_alpha(samples, torch.full((n,), math.nan), torch.ones(n, 3))
    with raises_naming("rgb"):
        composite_alpha(samples, torch.zeros(n), torch.ones(n, 4))
    with raises_naming("background"):
        composite_alpha(samples, torch.zeros(n), torch.ones(n, 3), torch.ones(2))
    with raises_naming("weights"):
        accumulate(samples, torch.ones(n + 1), torch.ones(n + 1, 2))  # consistent with each other only
    with raises_naming("values"):
        accumulate(samples, torch.ones(n), torch.full((n, 2), math.inf))
    origins, dirs, near, far = sphere_rays(torch.float32, "cpu")
    sphere = CountingSphere()
    with raises_naming("origins"):
        neus_samples(origins[:, :2], dirs, near, far, sphere, 8, 1, 4)
    with raises_naming("far"):
        neus_samples(origins, dirs, near, far[:2], sphere, 8, 1, 4)
    with raises_naming("sdf_fn"):
        neus_samples(origins, dirs, near, far, "sphere", 8, 1, 4)
    with raises_naming("sdf_fn"):
        neus_samples(origins, dirs, near, far, lambda p, r: p, 8, 1, 4)  # [N, 3], not [N]
    with raises_naming("num_samples"):
        neus_samples(origins, dirs, near, far, sphere, 1, 1, 4)  # no section to weight
    with raises_naming("rounds"):
        neus_samples(origins, dirs, near, far, sphere, 8, -1, 4)
    with raises_naming("samples_per_round"):
        neus_samples(origins, dirs, near, far, sphere, 8, 1, 0)
    with raises_naming("base_inv_s"):
        neus_samples(origins, dirs, near, far, sphere, 8, 1, 4, base_inv_s=0.0)
