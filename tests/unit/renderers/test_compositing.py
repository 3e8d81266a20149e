"""Volume compositing against a per-ray Python loop (values and autograd gradients), the analytic opacity of a
constant-density slab, gradcheck, empty rays, float32 accuracy over long batches, and bad input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headfields.renderers import PackedSamples, composite, stratified_samples

from helpers import raises_naming

HYPOTHESIS = settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def random_samples(num_rays: int, seed: int, dtype=torch.float64, device="cpu", max_per_ray: int = 7) -> PackedSamples:
    """Rays with 0..max_per_ray samples each (some empty), contiguous or gapped sorted intervals."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, max_per_ray + 1, (num_rays,), generator=g)
    ray = torch.repeat_interleave(torch.arange(num_rays), counts)
    t_start, t_end = [], []
    for c in counts.tolist():
        edges = torch.sort(torch.rand(2 * c, generator=g, dtype=torch.float64) * 4).values
        t_start.append(edges[0::2])
        t_end.append(edges[1::2])
    t0, t1 = torch.cat(t_start), torch.cat(t_end)
    return PackedSamples(ray.to(device), t0.to(dtype=dtype, device=device), t1.to(dtype=dtype, device=device), num_rays)


def loop_reference(samples: PackedSamples, density, rgb, background):
    """Front-to-back compositing one ray and one sample at a time: T <- T * (1 - alpha)."""
    colors, depths, opacities, weights = [], [], [], []
    for r in range(samples.num_rays):
        trans = torch.ones((), dtype=density.dtype, device=density.device)
        color = torch.zeros(3, dtype=density.dtype, device=density.device)
        depth = torch.zeros((), dtype=density.dtype, device=density.device)
        for s in (samples.ray == r).nonzero()[:, 0].tolist():
            delta = samples.t_end[s] - samples.t_start[s]
            alpha = 1 - torch.exp(-density[s] * delta)
            w = trans * alpha
            weights.append(w)
            color = color + w * rgb[s]
            depth = depth + w * (samples.t_start[s] + samples.t_end[s]) / 2
            trans = trans * (1 - alpha)
        bg = background if background.dim() == 1 else background[r]
        colors.append(color + trans * bg)
        depths.append(depth)
        opacities.append(1 - trans)
    empty = torch.zeros(0, dtype=density.dtype, device=density.device)
    return torch.stack(colors), torch.stack(depths), torch.stack(opacities), torch.stack(weights) if weights else empty


@pytest.mark.parametrize("per_ray_background", [False, True])
def test_matches_per_ray_loop_values_and_gradients(device, per_ray_background):
    samples = random_samples(12, seed=0, device=device)
    g = torch.Generator().manual_seed(1)
    s = len(samples)
    density = (torch.rand(s, generator=g, dtype=torch.float64) * 3).to(device).requires_grad_()
    rgb = torch.rand(s, 3, generator=g, dtype=torch.float64).to(device).requires_grad_()
    shape = (12, 3) if per_ray_background else (3,)
    background = torch.rand(shape, generator=g, dtype=torch.float64).to(device).requires_grad_()
    out = composite(samples, density, rgb, background)
    ref = loop_reference(samples, density, rgb, background)
    for got, want in zip((out.rgb, out.depth, out.opacity, out.weights), ref, strict=True):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)
    # Gradients of the same random scalar of all outputs.
    mix = [torch.rand(t.shape, generator=g, dtype=torch.float64).to(device) for t in ref]
    loss = sum((m * t).sum() for m, t in zip(mix, (out.rgb, out.depth, out.opacity, out.weights), strict=True))
    loss_ref = sum((m * t).sum() for m, t in zip(mix, ref, strict=True))
    grads = torch.autograd.grad(loss, (density, rgb, background))
    grads_ref = torch.autograd.grad(loss_ref, (density, rgb, background))
    for got, want in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("jitter", [False, True])
def test_constant_density_slab_has_analytic_opacity(device, jitter):
    # Rays crossing a slab [near, far] of constant density: opacity 1 - exp(-sigma L) whatever the sampling,
    # and the colour of a uniformly coloured slab over a background is the matching blend.
    near = torch.tensor([0.5, 1.0, 2.0, 0.0], dtype=torch.float64, device=device)
    far = torch.tensor([1.5, 1.25, 5.0, 3.0], dtype=torch.float64, device=device)
    sigma = 1.7
    origins = torch.zeros(4, 3, dtype=torch.float64, device=device)
    dirs = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64, device=device).expand(4, 3)
    generator = torch.Generator().manual_seed(3) if jitter else None
    samples = stratified_samples((origins, dirs), near, far, 33, generator)
    density = torch.full((len(samples),), sigma, dtype=torch.float64, device=device)
    color = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64, device=device)
    background = torch.tensor([1.0, 0.0, 0.3], dtype=torch.float64, device=device)
    out = composite(samples, density, color.expand(len(samples), 3), background)
    opacity = 1 - torch.exp(-sigma * (far - near))
    torch.testing.assert_close(out.opacity, opacity, atol=1e-12, rtol=0)
    torch.testing.assert_close(out.rgb, opacity[:, None] * color + (1 - opacity[:, None]) * background, atol=1e-12, rtol=0)
    # Many samples approach the continuous expected depth: integral of t sigma exp(-sigma (t - near)) dt.
    fine = stratified_samples((origins, dirs), near, far, 4000)
    depth = composite(fine, torch.full((len(fine),), sigma, dtype=torch.float64, device=device), color.expand(len(fine), 3)).depth
    length = far - near
    exact = near * opacity + (1 - torch.exp(-sigma * length) * (1 + sigma * length)) / sigma
    torch.testing.assert_close(depth, exact, atol=1e-5, rtol=0)


def test_gradcheck(device):
    samples = random_samples(5, seed=4, device=device, max_per_ray=4)
    g = torch.Generator().manual_seed(5)
    s = len(samples)
    density = (torch.rand(s, generator=g, dtype=torch.float64) * 2 + 0.1).to(device).requires_grad_()
    rgb = torch.rand(s, 3, generator=g, dtype=torch.float64).to(device).requires_grad_()
    background = torch.rand(3, generator=g, dtype=torch.float64).to(device).requires_grad_()

    def fn(d, c, b):
        out = composite(samples, d, c, b)
        return out.rgb, out.depth, out.opacity, out.weights

    assert torch.autograd.gradcheck(fn, (density, rgb, background))


def test_rays_without_samples_show_the_background(device):
    # Rays 0 and 2 have samples, 1 and 3 none; then a batch with no samples at all.
    samples = PackedSamples(
        torch.tensor([0, 0, 2], device=device),
        torch.tensor([0.0, 1.0, 0.5], device=device),
        torch.tensor([1.0, 2.0, 0.7], device=device),
        4,
    )
    background = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9], [1.0, 0.0, 0.5]], device=device)
    out = composite(samples, torch.ones(3, device=device), torch.ones(3, 3, device=device), background)
    assert out.opacity[1] == 0 and out.opacity[3] == 0 and out.depth[1] == 0 and out.depth[3] == 0
    torch.testing.assert_close(out.rgb[[1, 3]], background[[1, 3]])
    none = PackedSamples(
        torch.zeros(0, dtype=torch.long, device=device), torch.zeros(0, device=device), torch.zeros(0, device=device), 2
    )
    out = composite(none, torch.zeros(0, device=device), torch.zeros(0, 3, device=device), background[0])
    torch.testing.assert_close(out.rgb, background[0].expand(2, 3))
    assert (out.opacity == 0).all() and (out.depth == 0).all() and out.weights.shape == (0,)
    # No background: black.
    out = composite(samples, torch.zeros(3, device=device), torch.ones(3, 3, device=device))
    assert (out.rgb == 0).all()


@HYPOTHESIS
@given(seed=st.integers(0, 2**31 - 1), num_rays=st.integers(1, 20), scale=st.floats(0.01, 50.0))
def test_weights_sum_to_opacity(seed, num_rays, scale):
    samples = random_samples(num_rays, seed=seed, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    density = torch.rand(len(samples), generator=g) * scale
    out = composite(samples, density, torch.rand(len(samples), 3, generator=g))
    sums = torch.zeros(num_rays).index_add(0, samples.ray, out.weights)
    torch.testing.assert_close(sums, out.opacity, atol=1e-6, rtol=0)
    assert (out.weights >= 0).all() and (out.opacity <= 1 + 1e-6).all()
    # The opacity telescopes to 1 - exp(-sum of sigma delta) on each ray.
    tau = torch.zeros(num_rays, dtype=torch.float64).index_add(0, samples.ray, (density * samples.deltas).double())
    torch.testing.assert_close(out.opacity.double(), 1 - torch.exp(-tau), atol=1e-5, rtol=0)


def test_float32_accuracy_does_not_degrade_along_a_long_batch():
    # 20000 rays of 64 samples with optical depth ~1 each: the packed running sum reaches ~1e6, where float32
    # would keep ~0.06 of absolute error. The last rays must still match a float64 computation.
    samples = stratified_samples((torch.zeros(20000, 3), torch.tensor([[0.0, 0.0, 1.0]]).expand(20000, 3)), 0.0, 64.0, 64)
    g = torch.Generator().manual_seed(6)
    density = torch.rand(len(samples), generator=g) * 2
    rgb = torch.rand(len(samples), 3, generator=g)
    out = composite(samples, density, rgb)
    last = samples.ray >= 19990
    sub = PackedSamples(samples.ray[last] - 19990, samples.t_start[last].double(), samples.t_end[last].double(), 10)
    ref = composite(sub, density[last].double(), rgb[last].double())
    torch.testing.assert_close(out.weights[last].double(), ref.weights, atol=1e-6, rtol=0)


def test_bad_input():
    samples = random_samples(3, seed=7, dtype=torch.float32)
    s = len(samples)
    density, rgb = torch.ones(s), torch.ones(s, 3)
    with raises_naming("density"):
        composite(samples, torch.ones(s + 1), torch.ones(s + 1, 3))  # consistent with each other, not with samples
    with raises_naming("density"):
        composite(samples, -density, rgb)
    with raises_naming("density"):
        composite(samples, density.clone().fill_(math.nan), rgb)
    with raises_naming("rgb"):
        composite(samples, density, torch.ones(s, 4))
    with raises_naming("rgb"):
        composite(samples, density, rgb.clone().fill_(math.inf))
    with raises_naming("density"):
        composite(samples, density.int(), rgb)
    with raises_naming("background"):
        composite(samples, density, rgb, torch.ones(4))
    with raises_naming("background"):
        composite(samples, density, rgb, torch.ones(5, 3))
