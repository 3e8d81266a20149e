"""Hierarchical (importance) sampling against a per-ray numpy inverse CDF, its distribution over the coarse
intervals, analytic cases (one weighted interval, uniform weights on even bins), packing, and bad input; the
fine pass's samples (coarse cut at the fine edges) against a per-ray numpy partition and a hand-worked case; both
in fixed slots (padding, every ray drawn) against themselves on the packed samples, and read nothing back."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from headfields.checks import trusted_values
from headfields.device_paths import cuda_paths
from headfields.renderers import PackedSamples, SlotSamples, importance_samples, stratified_samples
from headfields.renderers.hierarchical import PADDING, _by_ray_then_t, merge_samples

from helpers import raises_naming

HYPOTHESIS = settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def build_samples(rays: list[tuple[int, str, bool]], seed: int) -> tuple[PackedSamples, torch.Tensor]:
    """Rays given as (count, weights kind, contiguous): gapped or contiguous sorted intervals, some of zero
    length; weights all zero, sparse (some zeros) or dense."""
    rng = np.random.default_rng(seed)
    ray, t0, t1, w = [], [], [], []
    for r, (count, kind, contiguous) in enumerate(rays):
        if count == 0:
            continue
        if contiguous:
            edges = np.sort(rng.uniform(0, 4, count + 1))
            a, b = edges[:-1], edges[1:]
        else:
            edges = np.sort(rng.uniform(0, 4, 2 * count))
            a, b = edges[0::2], edges[1::2].copy()
            flat = rng.uniform(size=count) < 0.15
            b[flat] = a[flat]  # some zero-length intervals
        weights = {"zero": np.zeros(count), "sparse": rng.uniform(0, 2, count) * (rng.uniform(size=count) < 0.5)}
        ray += [r] * count
        t0.append(a)
        t1.append(b)
        w.append(weights.get(kind, rng.uniform(0, 2, count)))
    cat = (lambda x: torch.from_numpy(np.concatenate(x))) if ray else (lambda x: torch.zeros(0, dtype=torch.float64))
    samples = PackedSamples(torch.tensor(ray, dtype=torch.long), cat(t0), cat(t1), len(rays))
    return samples, cat(w)


def inverse_cdf(a: np.ndarray, b: np.ndarray, m: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``inf {t : F(t) > v}`` over the intervals with mass (the end of the last one for ``v >= 1``), for one
    ray with intervals ``[a_j, b_j]`` of normalised masses ``m_j`` and uniform density inside each."""
    keep = m > 0
    a, b, m = a[keep], b[keep], m[keep]
    c_hi = np.cumsum(m)
    c_hi /= c_hi[-1]
    c_lo = np.concatenate([[0.0], c_hi[:-1]])
    out = np.empty_like(v)
    for i, level in enumerate(v):
        j = next((j for j in range(len(m)) if level < c_hi[j]), len(m) - 1)
        frac = min(max((level - c_lo[j]) / (c_hi[j] - c_lo[j]), 0.0), 1.0)
        out[i] = a[j] + frac * (b[j] - a[j])
    return out


def reference_check(samples, weights, fine, num_samples, padding, xi):
    """Every new edge is the inverse CDF of its quantile, up to 1e-6 and up to the choice among equal
    quantiles where the CDF is flat (levels within 1e-12); and none lies inside a gap or a massless interval."""
    ray, a_all, b_all = samples.ray.cpu().numpy(), samples.t_start.cpu().numpy(), samples.t_end.cpu().numpy()
    w_all = weights.detach().cpu().double().numpy()
    fine_ray, f0, f1 = fine.ray.cpu().numpy(), fine.t_start.cpu().double().numpy(), fine.t_end.cpu().double().numpy()
    k = 0
    for r in range(samples.num_rays):
        sel = ray == r
        if not sel.any():
            assert not (fine_ray == r).any()
            continue
        a, b = a_all[sel], b_all[sel]
        m = w_all[sel] + padding
        m = m / m.sum() if m.sum() > 0 else np.full(len(m), 1 / len(m))
        steps = np.arange(num_samples + 1)
        u = steps / num_samples if xi is None else (steps + xi[k]) / (num_samples + 1)
        k += 1
        mine = fine_ray == r
        assert mine.sum() == num_samples
        edges = np.concatenate([f0[mine], f1[mine][-1:]])
        np.testing.assert_array_equal(f0[mine][1:], f1[mine][:-1])  # contiguous
        lo, hi = inverse_cdf(a, b, m, u - 1e-12), inverse_cdf(a, b, m, u + 1e-12)
        assert np.all(edges >= lo - 1e-6) and np.all(edges <= hi + 1e-6), (edges, lo, hi)
        in_mass = (edges[:, None] >= a[m > 0] - 1e-9) & (edges[:, None] <= b[m > 0] + 1e-9)
        assert in_mass.any(axis=1).all()


RAYS = st.lists(st.tuples(st.integers(0, 6), st.sampled_from(["zero", "sparse", "dense"]), st.booleans()), min_size=1, max_size=8)
# Coarse samples, weights and a draw of them: what the packed draws are tested over.
DRAWS = dict(
    rays=RAYS,
    seed=st.integers(0, 2**31 - 1),
    num_samples=st.integers(1, 9),
    padding=st.sampled_from([0.0, 1e-5, 0.5]),
    jitter=st.booleans(),
)


@HYPOTHESIS
@given(**DRAWS)
def test_matches_per_ray_numpy_inverse_cdf(rays, seed, num_samples, padding, jitter):
    samples, weights = build_samples(rays, seed)
    generator = torch.Generator().manual_seed(seed) if jitter else None
    fine = importance_samples(samples, weights, num_samples, generator=generator, padding=padding)
    xi = None
    if jitter:  # the documented jitter: one row of n + 1 uniforms per ray with samples, in ray order
        k = int((samples.counts() > 0).sum())
        xi = torch.rand(k, num_samples + 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).numpy()
    reference_check(samples, weights, fine, num_samples, padding, xi)


def gapped_ray(device, dtype=torch.float64) -> PackedSamples:
    t0 = torch.tensor([0.5, 1.0, 2.0, 3.5, 3.75], dtype=dtype, device=device)
    t1 = torch.tensor([0.75, 1.5, 3.0, 3.75, 4.5], dtype=dtype, device=device)
    return PackedSamples(torch.zeros(5, dtype=torch.long, device=device), t0, t1, 1)


def test_midpoint_fractions_follow_the_weights(device):
    """With stratified quantiles, interval j holds m_j (n + 1) +- 1 of the n + 1 edges, and the at most
    (nonempty intervals - 1) = 3 new intervals whose edges lie in different coarse intervals are the only
    midpoints that can land elsewhere: each fraction is within 5 / n of its weight (not a statistical
    tolerance), and likewise the edges in the left half of each interval (uniform density inside)."""
    samples = gapped_ray(device)
    weights = torch.tensor([0.1, 0.4, 0.0, 0.3, 0.2], dtype=torch.float64, device=device)
    n = 4000
    fine = importance_samples(samples, weights, n, generator=torch.Generator(device=device).manual_seed(3), padding=0.0)
    a, b = samples.t_start, samples.t_end
    mid = fine.t_mid
    fractions = ((mid[:, None] >= a) & (mid[:, None] <= b)).double().mean(dim=0)
    torch.testing.assert_close(fractions, weights, atol=5 / n, rtol=0)
    edges = torch.cat([fine.t_start, fine.t_end[-1:]])
    left = ((edges[:, None] >= a) & (edges[:, None] < (a + b) / 2)).double().sum(dim=0) / (n + 1)
    torch.testing.assert_close(left, weights / 2, atol=3 / n, rtol=0)


@pytest.mark.parametrize("jitter", [False, True])
def test_weight_in_one_interval_keeps_every_edge_there(device, jitter):
    samples = gapped_ray(device)
    weights = torch.tensor([0.0, 0.0, 0.7, 0.0, 0.0], dtype=torch.float64, device=device)
    generator = torch.Generator(device=device).manual_seed(0) if jitter else None
    fine = importance_samples(samples, weights, 9, generator=generator, padding=0.0)
    edges = torch.cat([fine.t_start, fine.t_end[-1:]])
    assert ((edges >= 2.0) & (edges <= 3.0)).all()
    if not jitter:  # uniform inside the interval: its even bins
        torch.testing.assert_close(edges, torch.linspace(2.0, 3.0, 10, dtype=torch.float64, device=device))
    # A tiny padding moves at most a tiny share of the quantiles out of it: with 9 samples, only the ends.
    fine = importance_samples(samples, weights, 9, generator=generator, padding=1e-7)
    inner = torch.cat([fine.t_start[1:], fine.t_end[:-1]])
    assert ((inner >= 2.0) & (inner <= 3.0)).all()


@pytest.mark.parametrize("num_samples", [5, 16])
@pytest.mark.parametrize("padding", [0.0, 1e-5])
def test_uniform_weights_on_even_bins_give_even_bins(device, num_samples, padding):
    origins = torch.zeros(3, 3, dtype=torch.float64, device=device)
    dirs = torch.tensor([[0.0, 0.0, 1.0]] * 3, dtype=torch.float64, device=device)
    near = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64, device=device)
    far = torch.tensor([2.5, 1.0, 5.0], dtype=torch.float64, device=device)  # the middle ray is empty
    coarse = stratified_samples((origins, dirs), near, far, 8)
    for weights in (
        torch.ones(len(coarse), dtype=torch.float64, device=device),
        torch.zeros(len(coarse), dtype=torch.float64, device=device),
    ):
        fine = importance_samples(coarse, weights, num_samples, padding=padding)
        assert fine.counts().tolist() == [num_samples, 0, num_samples]
        for r, (lo, hi) in ((0, (0.5, 2.5)), (2, (2.0, 5.0))):
            bins = torch.linspace(lo, hi, num_samples + 1, dtype=torch.float64, device=device)
            torch.testing.assert_close(fine.t_start[fine.ray == r], bins[:-1])
            torch.testing.assert_close(fine.t_end[fine.ray == r], bins[1:])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_packing_counts_seeds_and_no_gradient(device, dtype):
    spec = [(3, "dense", False), (0, "zero", True), (5, "sparse", True), (1, "zero", False), (0, "dense", True)]
    samples64, weights64 = build_samples(spec, seed=7)
    samples = PackedSamples(samples64.ray.to(device), samples64.t_start.to(device, dtype), samples64.t_end.to(device, dtype), 5)
    weights = weights64.to(device, dtype).requires_grad_()
    gen = lambda seed: torch.Generator(device=device).manual_seed(seed)  # noqa: E731
    fine = importance_samples(samples, weights, 6, generator=gen(1))
    assert fine.counts().tolist() == [6, 0, 6, 6, 0] and fine.num_rays == 5
    assert fine.t_start.dtype == dtype and fine.t_end.dtype == dtype and fine.device == samples.device
    assert not fine.t_start.requires_grad and not fine.t_end.requires_grad
    PackedSamples(fine.ray, fine.t_start, fine.t_end, fine.num_rays)  # the public checks: sorted rays, t_end >= t_start
    assert (fine.t_start[1:] >= fine.t_start[:-1])[fine.ray[1:] == fine.ray[:-1]].all()
    again = importance_samples(samples, weights, 6, generator=gen(1))
    other = importance_samples(samples, weights, 6, generator=gen(2))
    assert torch.equal(fine.t_start, again.t_start) and torch.equal(fine.t_end, again.t_end)
    assert not torch.equal(fine.t_start, other.t_start)
    # The float32 result is the float64 one rounded (the CDF is always computed in float64).
    exact = importance_samples(samples64, weights64, 6, generator=torch.Generator().manual_seed(1))
    if device.type == "cpu":
        torch.testing.assert_close(fine.t_end.double().cpu(), exact.t_end, atol=1e-5 if dtype == torch.float32 else 1e-12, rtol=0)


def test_no_coarse_samples(device):
    empty = PackedSamples(
        torch.zeros(0, dtype=torch.long, device=device), torch.zeros(0, device=device), torch.zeros(0, device=device), 4
    )
    fine = importance_samples(empty, torch.zeros(0, device=device), 8, generator=torch.Generator(device=device))
    assert len(fine) == 0 and fine.num_rays == 4 and fine.t_start.dtype == torch.float32


@HYPOTHESIS
@given(**DRAWS)
@example(rays=[(0, "dense", True), (0, "zero", False)], seed=0, num_samples=3, padding=0.0, jitter=True)  # no samples
def test_every_ray_draws_the_packed_draws_and_nothing_on_the_others(rays, seed, num_samples, padding, jitter, host_sync_spy):
    """``every_ray``: the rays with samples draw as the numpy inverse CDF (the jitter: a row of uniforms for every
    ray), exactly the packed draw where no jitter; the others get zero-length intervals at 0; one row a ray, and no
    value read back on CUDA's paths (no samples at all included)."""
    coarse, weights = build_samples(rays, seed)
    r, n = coarse.num_rays, num_samples
    generator = torch.Generator().manual_seed(seed) if jitter else None
    with cuda_paths(), trusted_values(), host_sync_spy() as spy:
        drawn = importance_samples(coarse, weights, n, generator, padding, every_ray=True)
    assert spy.reads == {}, spy.report()
    assert drawn.ray.tolist() == torch.arange(r).repeat_interleave(n).tolist() and drawn.num_rays == r
    has = coarse.counts() > 0
    on_rays = drawn.select(has[drawn.ray])
    assert (drawn.t_start.reshape(r, n)[~has] == 0).all() and (drawn.t_end.reshape(r, n)[~has] == 0).all()
    if jitter:
        xi = torch.rand(r, n + 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)[has].numpy()
        if len(coarse):
            reference_check(coarse, weights, on_rays, n, padding, xi)
    else:
        packed = importance_samples(coarse, weights, n, None, padding)
        for name in ("ray", "t_start", "t_end"):
            assert torch.equal(getattr(on_rays, name), getattr(packed, name)), name


def test_bad_input():
    samples = gapped_ray("cpu")
    w = torch.ones(5, dtype=torch.float64)
    with raises_naming("weights"):
        importance_samples(samples, torch.ones(4), 4)
    with raises_naming("weights"):
        importance_samples(samples, torch.ones(5, 1), 4)
    with raises_naming("weights"):
        importance_samples(samples, torch.ones(5, dtype=torch.long), 4)
    with raises_naming("weights"):
        importance_samples(samples, torch.tensor([1.0, math.nan, 1.0, 1.0, 1.0]), 4)
    with raises_naming("weights"):
        importance_samples(samples, torch.tensor([1.0, -1e-3, 1.0, 1.0, 1.0]), 4)
    with raises_naming("num_samples"):
        importance_samples(samples, w, 0)
    with raises_naming("num_samples"):
        importance_samples(samples, w, 2.5)
    for padding in (-1e-5, math.nan, math.inf, "0.1"):
        with raises_naming("padding"):
            importance_samples(samples, w, 4, padding=padding)
    with raises_naming("generator"):
        importance_samples(samples, w, 4, generator=0)
    with raises_naming("every_ray"):
        importance_samples(samples, w, 4, every_ray=1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_weights_on_another_device():
    with raises_naming("weights"):
        importance_samples(gapped_ray("cpu"), torch.ones(5, device="cuda"), 4)


# ---------------------------------------------------------------- the fine pass's samples


def merged_reference(coarse: PackedSamples, fine: PackedSamples) -> list[np.ndarray]:
    """Per ray: the sorted distinct edges of both sets, and the pieces between consecutive ones that lie within a
    coarse interval, as rows (start, end)."""
    out = []
    for r in range(coarse.num_rays):
        c, f = (coarse.ray == r).numpy(), (fine.ray == r).numpy()
        a, b = coarse.t_start.numpy()[c], coarse.t_end.numpy()[c]
        edges = np.unique(np.concatenate([a, b, fine.t_start.numpy()[f], fine.t_end.numpy()[f]]))
        lo, hi = edges[:-1, None], edges[1:, None]
        inside = ((lo >= a) & (hi <= b)).any(axis=1) if len(edges) > 1 else np.zeros(0, bool)
        out.append(np.stack([edges[:-1][inside], edges[1:][inside]], axis=1) if len(edges) > 1 else np.zeros((0, 2)))
    return out


def test_merge_hand_worked():
    """Coarse [0, 1], [1, 2], [3, 4] (a gap from 2 to 3), fine [0.5, 2.5], [2.5, 3.5]: the coarse intervals cut
    at 0.5 and 3.5; the fine pieces in the gap are dropped."""
    coarse = PackedSamples(torch.zeros(3, dtype=torch.long), torch.tensor([0.0, 1.0, 3.0]), torch.tensor([1.0, 2.0, 4.0]), 2)
    fine = PackedSamples(torch.tensor([0, 0, 1]), torch.tensor([0.5, 2.5, 7.0]), torch.tensor([2.5, 3.5, 8.0]), 2)
    merged = merge_samples(coarse, fine)
    assert merged.ray.tolist() == [0] * 5 and merged.num_rays == 2  # ray 1 has no coarse samples: none
    assert merged.t_start.tolist() == [0.0, 0.5, 1.0, 3.0, 3.5]
    assert merged.t_end.tolist() == [0.5, 1.0, 2.0, 3.5, 4.0]
    assert merged.t_start.dtype == torch.float32


@HYPOTHESIS
@given(rays=RAYS, seed=st.integers(0, 2**31 - 1), num_samples=st.integers(1, 9), jitter=st.booleans())
def test_merge_partitions_the_coarse_support_at_every_edge(rays, seed, num_samples, jitter):
    """Against the per-ray numpy partition, exactly (the edges are the inputs' own values): gapped and contiguous
    coarse intervals, zero-length ones, rays without samples, importance samples that straddle the gaps."""
    coarse, weights = build_samples(rays, seed)
    generator = torch.Generator().manual_seed(seed) if jitter else None
    fine = importance_samples(coarse, weights, num_samples, generator)
    merged = merge_samples(coarse, fine)
    expected = merged_reference(coarse, fine)
    assert merged.num_rays == coarse.num_rays and merged.t_start.dtype == torch.float64
    assert (merged.ray[1:] >= merged.ray[:-1]).all()
    for r in range(coarse.num_rays):
        mine = merged.ray == r
        got = torch.stack([merged.t_start[mine], merged.t_end[mine]], dim=1).numpy()
        np.testing.assert_array_equal(got, expected[r])
    # Lengths: the coarse support is covered exactly, once.
    covered = torch.zeros(coarse.num_rays, dtype=torch.float64).index_add(0, merged.ray, merged.deltas)
    support = torch.zeros(coarse.num_rays, dtype=torch.float64).index_add(0, coarse.ray, coarse.deltas)
    torch.testing.assert_close(covered, support, rtol=1e-12, atol=1e-12)


@HYPOTHESIS
@given(
    ray=st.lists(st.integers(0, 5), min_size=0, max_size=60),
    values=st.lists(
        st.sampled_from([0.0, -0.0, 1.5, -1.5, 2.0**-149, -(2.0**-149), 3e38, -3e38, 0.25, 7.0]), min_size=60, max_size=60
    ),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
@example(ray=[0, 0, 1], values=[0.0, -0.0, -0.0] + [0.0] * 57, dtype=torch.float32)  # equal, unequal bits
@example(ray=[0] * 8, values=[-1.5, -3e38, 0.25, -(2.0**-149), -0.25, 7.0, -7.0, -1.5] + [0.0] * 52, dtype=torch.float32)
def test_ray_then_t_order_is_numpys_stable_lexsort(ray, values, dtype):
    """The permutation merge_samples sorts by (float32: one integer key of the ray and t's bits; float64: two
    stable sorts) is numpy's stable lexsort: ties (-0.0 against 0.0 among them) in their order, negative and
    subnormal values, either sign."""
    n = len(ray)
    rays, t = torch.tensor(ray, dtype=torch.long), torch.tensor(values[:n], dtype=dtype)
    order = _by_ray_then_t(rays, t, 6)
    np.testing.assert_array_equal(order.numpy(), np.lexsort((t.numpy(), rays.numpy())))


def test_merge_float32_and_float64_agree(device):
    """The fine pass's samples in float32 (one integer sort) and in float64 (two float sorts): the same pieces."""
    rays = (torch.zeros(7, 3, device=device), torch.tensor([[0.0, 0.0, 1.0]] * 7, device=device))
    near, far = torch.linspace(0.5, 1.0, 7, device=device), torch.full((7,), 3.0, device=device)
    coarse = stratified_samples(rays, near, far, 12, torch.Generator(device=device).manual_seed(0))
    weights = torch.rand(len(coarse), generator=torch.Generator(device=device).manual_seed(1), device=device)
    fine = importance_samples(coarse, weights, 9, torch.Generator(device=device).manual_seed(2))
    merged = merge_samples(coarse, fine)
    wide = merge_samples(*(PackedSamples(s.ray, s.t_start.double(), s.t_end.double(), s.num_rays) for s in (coarse, fine)))
    assert merged.t_start.dtype == torch.float32 and torch.equal(merged.ray, wide.ray)
    assert torch.equal(merged.t_start.double(), wide.t_start) and torch.equal(merged.t_end.double(), wide.t_end)


def test_merge_contiguous_rays_get_coarse_plus_fine_plus_one(device):
    """Stratified coarse samples (contiguous) and jittered importance samples (edges strictly inside): every
    ray has n_c + n_f + 1 intervals, every coarse edge among them."""
    rays = (torch.zeros(5, 3, device=device), torch.tensor([[0.0, 0.0, 1.0]] * 5, device=device))
    near, far = torch.full((5,), 1.0, device=device), torch.full((5,), 3.0, device=device)
    coarse = stratified_samples(rays, near, far, 16, torch.Generator(device=device).manual_seed(0))
    weights = torch.rand(len(coarse), generator=torch.Generator(device=device).manual_seed(1), device=device)
    fine = importance_samples(coarse, weights, 8, torch.Generator(device=device).manual_seed(2))
    merged = merge_samples(coarse, fine)
    assert (merged.counts() == 16 + 8 + 1).all()
    assert torch.isin(coarse.t_start, merged.t_start).all() and torch.isin(coarse.t_end, merged.t_end).all()


def test_merge_bad_input():
    coarse = gapped_ray("cpu")
    other = PackedSamples(torch.zeros(1, dtype=torch.long), torch.zeros(1), torch.ones(1), 2)
    with raises_naming("fine"):
        merge_samples(coarse, other)


def in_slots(samples: PackedSamples, weights: torch.Tensor, spare: int) -> tuple[SlotSamples, torch.Tensor]:
    """``samples`` in ``len(samples) + spare`` slots (every ray fits; the padding after them) and their weights (0)."""
    n = len(samples)
    count = torch.tensor(n)
    everything = SlotSamples(samples, count, count, torch.ones(samples.num_rays, dtype=torch.bool))
    fixed = everything.compact(torch.ones(n, dtype=torch.bool), n + spare) if n else None
    return fixed, torch.cat([weights, weights.new_zeros(spare)])


@HYPOTHESIS
@given(
    rays=RAYS,
    seed=st.integers(0, 2**31 - 1),
    num_samples=st.integers(1, 9),
    spare=st.integers(1, 7),
    jitter=st.booleans(),
    padding=st.sampled_from([0.0, PADDING]),
)
@example(rays=[(3, "zero", True)], seed=0, num_samples=4, spare=2, jitter=False, padding=0.0)  # the padding's ray
def test_in_slots_every_ray_draws_and_the_merge_holds_the_packed_pieces(
    rays, seed, num_samples, spare, jitter, padding, host_sync_spy
):
    """In slots, the draws on the rays with samples are the per-ray numpy inverse CDF's (the padding has no mass; the
    jitter: one row of uniforms for every ray), the others' are zero-length intervals at 0; the merge in its default
    slots holds exactly the packed merge of the same draws, every ray fitting, the padding after them; no value is
    read back on CUDA's paths."""
    coarse, weights = build_samples(rays, seed)
    if len(coarse) == 0:
        return
    fixed, padded = in_slots(coarse, weights, spare)
    generator = torch.Generator().manual_seed(seed) if jitter else None
    with cuda_paths(), trusted_values(), host_sync_spy() as spy:
        drawn = importance_samples(fixed, padded, num_samples, generator, padding)
        merged = merge_samples(fixed, drawn)
    assert spy.reads == {}, spy.report()
    r, n = coarse.num_rays, num_samples
    assert drawn.ray.tolist() == torch.arange(r).repeat_interleave(n).tolist()
    has = coarse.counts() > 0
    xi = None
    if jitter:
        xi = torch.rand(r, n + 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)[has].numpy()
    on_rays = drawn.select(has[drawn.ray])
    reference_check(coarse, weights, on_rays, n, padding, xi)  # (with padding 0, zero weights: equal masses)
    assert (drawn.t_start.reshape(r, n)[~has] == 0).all() and (drawn.t_end.reshape(r, n)[~has] == 0).all()
    pieces = merge_samples(coarse, on_rays)  # the same draws, packed
    k = int(merged.count)
    assert merged.slots == fixed.slots + len(drawn) + r and bool(merged.fits.all()) and k == len(pieces)
    for name in ("ray", "t_start", "t_end"):
        torch.testing.assert_close(getattr(merged.samples, name)[:k], getattr(pieces, name), rtol=0, atol=0)
    assert (merged.samples.deltas[k:] == 0).all() and (merged.samples.ray[k:] == r - 1).all()


def test_a_merge_in_too_few_slots_leaves_the_last_rays_out():
    coarse, weights = build_samples([(4, "dense", True)] * 5, seed=3)
    fixed, padded = in_slots(coarse, weights, 2)
    drawn = importance_samples(fixed, padded, 3)
    pieces = merge_samples(coarse, drawn)  # (every ray has samples: the draws are on them all)
    merged = merge_samples(fixed, drawn, slots=20)
    through = torch.cumsum(pieces.counts(), 0)  # the pieces of each ray and those before it
    assert merged.fits.tolist() == (through <= 20).tolist() and not bool(merged.fits.all())
    k = int(merged.count)
    assert k == int(through[merged.fits][-1])
    torch.testing.assert_close(merged.samples.t_start[:k], pieces.t_start[:k], rtol=0, atol=0)
    with raises_naming("slots"):
        merge_samples(coarse, drawn, slots=20)  # packed coarse samples have no slots
