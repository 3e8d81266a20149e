"""The block-cooperative blend (CUDA's kernels, ``renderers.gaussian_blocks``) on the CPU, where Warp runs a block's
256 threads as cooperative fibers once ``wp.config.enable_cpu_blocks`` is set (a fixture sets it and puts it back;
Warp builds a CPU module a block size, so the kernels need no rebuild either way): against the brute-force reference
of ``test_gaussian_rasterizer`` (values to round-off, float64 gradients, gradcheck) and against the per-pixel kernels,
on odd image sizes, tiles of more than one batch, and opaque stacks where a block stops before its list's end. And
which pair ``rasterize_gaussians`` takes where."""

from __future__ import annotations

import pytest
import torch
import warp as wp
from test_gaussian_rasterizer import _cameras, _layers, _scene, reference

from headfields.device_paths import cuda_paths
from headfields.renderers import gaussian_blend, gaussian_blocks, rasterize_gaussians
from headfields.renderers.gaussians import _tile_lists, project_gaussians


@pytest.fixture
def cpu_blocks(monkeypatch):
    """Warp's CPU blocks on for the test (restored after), the cooperative kernels chosen."""
    monkeypatch.setattr(wp.config, "enable_cpu_blocks", True)
    monkeypatch.setattr(gaussian_blend, "KERNEL", "cooperative")


def _render(scene, cameras, background, kernel: str):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gaussian_blend, "KERNEL", kernel)
        out = rasterize_gaussians(*scene, cameras, background=background)
    return out.image, out.alpha, out.depth


def test_matches_the_reference_and_the_per_pixel_kernels(device, cpu_blocks):
    """150 Gaussians on a 37 x 29 image (partial tiles on both axes, two of them empty), lists of up to three batches."""
    cameras = _cameras(37, 29, device)
    scene = [t.requires_grad_() for t in _scene(150, 0, device, size=0.03)]
    proj = project_gaussians(*scene[:3], cameras)
    tiles = _tile_lists(proj, scene[3], cameras.width, cameras.height)
    assert int((tiles.end - tiles.start).max()) > 2 * gaussian_blocks.BATCH
    background = torch.tensor([0.2, 0.4, 0.9], dtype=torch.float64, device=device)
    ours = _render(scene, cameras, background, "cooperative")
    per_pixel = _render(scene, cameras, background, "per-pixel")
    leaves = [t.detach().cpu().requires_grad_() for t in scene]
    truth = reference(*leaves, cameras.to("cpu"), background.cpu())
    for got, want, pixel in zip(ours, truth, per_pixel, strict=True):
        torch.testing.assert_close(got.cpu(), want, atol=1e-10, rtol=1e-9)
        torch.testing.assert_close(got, pixel, atol=1e-12, rtol=0)  # the same arithmetic: round-off
    weights = [torch.randn(t.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64) for t in truth]

    def grads(outs, inputs):
        return torch.autograd.grad(sum((o * w.to(o.device)).sum() for o, w in zip(outs, weights, strict=True)), inputs)

    for name, a, b in zip(("means", "quats", "scales", "opacities", "sh"), grads(ours, scene), grads(truth, leaves), strict=True):
        torch.testing.assert_close(a.cpu(), b, atol=1e-8, rtol=1e-6, msg=name)


def test_opaque_stacks_stop_the_block_early(cpu_blocks):
    """Opaque Gaussians stacked over the image: every pixel stops before its list's end (the transmittance cut), the
    block with it, and the values and gradients are the reference's."""
    cameras = _cameras(21, 19, "cpu")
    means, quats, scales, opacities, sh = _scene(120, 2, "cpu", size=0.5)
    scene = [means * 0.2, quats, scales, torch.full_like(opacities, 0.95), sh]
    scene = [t.requires_grad_() for t in scene]
    ours = _render(scene, cameras, None, "cooperative")
    proj = project_gaussians(*scene[:3], cameras)
    tiles = _tile_lists(proj, scene[3], cameras.width, cameras.height)
    assert int((tiles.end - tiles.start).min()) > gaussian_blocks.BATCH  # each block's list longer than a batch
    # Every pixel stopped before its transmittance fell under 1e-4 (alpha 1 - T within [1 - 1e-4 / 0.05, 1 - 1e-4]).
    alpha = ours[1].detach()
    assert float(alpha.min()) > 0.99 and float(alpha.max()) <= 1 - 1e-4
    truth = reference(*scene, cameras, torch.zeros(3, dtype=torch.float64))
    for got, want in zip(ours, truth, strict=True):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-9)
    grads = [torch.autograd.grad(outs[0].sum() + outs[2].sum(), scene) for outs in (ours, truth)]
    for name, a, b in zip(("means", "quats", "scales", "opacities", "sh"), *grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-8, rtol=1e-6, msg=name)
    # Three opaque layers: clamped at 0.99, the third past the transmittance cut (test_transmittance_stop_and_alpha_clamp)
    pixel = rasterize_gaussians(*_layers(1.0, [1.0, 2.0, 3.0])).image[7, 7]
    torch.testing.assert_close(pixel, torch.tensor([0.99, 0.0099, 0.0], dtype=torch.float64), atol=1e-6, rtol=0)


def test_nothing_drawn_leaves_the_background(cpu_blocks):
    """No (tile, Gaussian) pairs at all (every list empty, no rows to load) and Gaussians behind the camera."""
    cameras, background = _cameras(24, 17, "cpu"), torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    scene = [t.requires_grad_() for t in _scene(4, 2, "cpu")]
    behind = [scene[0] + 3.0 * torch.tensor([0.05, -0.03, 1.0], dtype=torch.float64), *scene[1:]]
    for drawn in (behind, [t[:0] for t in scene]):
        image, alpha, depth = _render(drawn, cameras, background, "cooperative")
        torch.testing.assert_close(image, background.expand(17, 24, 3))
        assert float(alpha.detach().abs().max()) == 0 and float(depth.detach().abs().max()) == 0
    image.sum().backward()
    assert all(float(t.grad.abs().max()) == 0 for t in scene)


def test_gradcheck(device, cpu_blocks):
    cameras = _cameras(20, 18, device)
    scene = [t.requires_grad_() for t in _scene(5, 7, device, size=0.05)]

    def render(*scene):
        return _render(scene, cameras, torch.full((3,), 0.5, dtype=torch.float64, device=device), "cooperative")

    # CUDA's atomic adds sum the blocks' shares in another order each call: float64 summation error there.
    nondet_tol = 1e-10 if device.type == "cuda" else 0.0
    assert torch.autograd.gradcheck(render, tuple(scene), eps=1e-6, atol=1e-5, fast_mode=True, nondet_tol=nondet_tol)


def test_float32_matches_the_per_pixel_kernels(cpu_blocks):
    cameras = _cameras(24, 17, "cpu", torch.float32)
    scene = [t.float() for t in _scene(60, 3, "cpu", size=0.02)]
    for got, want in zip(_render(scene, cameras, None, "cooperative"), _render(scene, cameras, None, "per-pixel"), strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_which_kernels_blend(monkeypatch):
    """CUDA's pair on the CPU only under cuda_paths() with Warp's CPU blocks on; never where a block would run as one
    thread, where cuda_paths() still draws the right image."""
    cpu = torch.device("cpu")
    scene, cameras = _scene(8, 1, "cpu"), _cameras(20, 18, "cpu")
    image = rasterize_gaussians(*scene, cameras).image
    monkeypatch.setattr(wp.config, "enable_cpu_blocks", False)
    assert not gaussian_blend.cooperative(cpu)
    with cuda_paths():
        assert not gaussian_blend.cooperative(cpu)
        torch.testing.assert_close(rasterize_gaussians(*scene, cameras).image, image, atol=1e-13, rtol=0)
    monkeypatch.setattr(gaussian_blend, "KERNEL", "cooperative")
    with pytest.raises(ValueError, match="KERNEL: 'cooperative' on the CPU needs wp.config.enable_cpu_blocks"):
        rasterize_gaussians(*scene, cameras)
    monkeypatch.setattr(gaussian_blend, "KERNEL", "auto")
    monkeypatch.setattr(wp.config, "enable_cpu_blocks", True)
    assert not gaussian_blend.cooperative(cpu)  # the CPU keeps its own kernels
    with cuda_paths():
        assert gaussian_blend.cooperative(cpu)
    monkeypatch.setattr(gaussian_blend, "KERNEL", "per-pixel")
    with cuda_paths():
        assert not gaussian_blend.cooperative(cpu)
    monkeypatch.setattr(gaussian_blend, "KERNEL", "blocks")
    with pytest.raises(ValueError, match="KERNEL: expected one of"):
        gaussian_blend.cooperative(cpu)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_takes_the_cooperative_kernels():
    assert gaussian_blend.KERNEL == "auto" and gaussian_blend.cooperative(torch.device("cuda", torch.cuda.current_device()))
