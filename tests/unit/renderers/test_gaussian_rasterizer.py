"""rasterize_gaussians against a brute-force per-pixel torch reference (values and gradients), gradcheck in float64,
analytic cases (one Gaussian's footprint, the transmittance stop, the 1/255 skip, the alpha clamp), and bad input.

The reference shares nothing with the rasteriser but the camera: its 2D covariance comes from the pinhole's Jacobian
by autograd, its colours from the SH written out, its blending a sort of every Gaussian by depth and a cumulative
product over them at every pixel (no tiles, no lists), keeping only the rule of which Gaussians reach a pixel (the
16x16 tiles their 3σ square touches), which is part of 3D Gaussian Splatting's definition."""

from __future__ import annotations

import ast
import math
import sys
import types
from pathlib import Path

import pytest
import torch

import headfields
from headfields.cameras import PinholeCameras, look_at
from headfields.renderers.gaussians import BLUR, _means2d, project_gaussians, rasterize_gaussians

TILE = 16


def _cameras(width: int, height: int, device, dtype=torch.float64, eye=(0.05, -0.03, 1.0)) -> PinholeCameras:
    c2w = look_at(torch.tensor([eye], dtype=dtype), torch.zeros(1, 3, dtype=dtype)).to(device)
    return PinholeCameras(fx=1.1 * width, fy=1.05 * width, cx=0.48 * width, cy=0.52 * height, width=width, height=height,
                          camera_to_world=c2w)  # fmt: skip


def _scene(n: int, seed: int, device, dtype=torch.float64, k: int = 4, size: float = 0.03):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=dtype)

    means = (rand(n, 3) - 0.5) * torch.tensor([0.3, 0.3, 0.2], dtype=dtype)
    quats = rand(n, 4) - 0.5
    scales = size * (0.2 + rand(n, 3))
    opacities = 0.2 + 0.75 * rand(n)
    sh = (rand(n, k, 3) - 0.5) * 0.6
    return [t.to(device) for t in (means, quats, scales, opacities, sh)]


def _sh(sh: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """Degree ≤ 1 real SH written out (3DGS's SH_C0, SH_C1 and signs)."""
    x, y, z = dirs.unbind(-1)
    basis = [torch.full_like(x, 0.28209479177387814)]
    if sh.shape[1] > 1:
        basis += [-0.4886025119029199 * y, 0.4886025119029199 * z, -0.4886025119029199 * x]
    return (torch.stack(basis, -1)[:, :, None] * sh).sum(1)


def reference(means, quats, scales, opacities, sh, cameras: PinholeCameras, background):
    """Brute force: every pixel blends every Gaussian whose 3σ tiles cover it, near to far."""
    c2w = cameras.camera_to_world[0]
    rot, eye = c2w[:3, :3], c2w[:3, 3]
    cam = (means - eye) @ rot  # world to camera: Rᵀ (x - eye)

    def pixel(p):
        return torch.stack([cameras.fx * p[0] / p[2] + cameras.cx, cameras.fy * p[1] / p[2] + cameras.cy])

    jac = torch.stack([torch.func.jacrev(pixel)(p) for p in cam])  # [N, 2, 3]: autograd's Jacobian of the pinhole
    q = quats / quats.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    r = torch.stack([
        torch.stack([w * w + x * x - y * y - z * z, 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        torch.stack([2 * (x * y + w * z), w * w - x * x + y * y - z * z, 2 * (y * z - w * x)], -1),
        torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), w * w - x * x - y * y + z * z], -1),
    ], -2)  # fmt: skip
    cov3 = r @ torch.diag_embed(scales**2) @ r.transpose(1, 2)
    cov2 = jac @ rot.T @ cov3 @ rot @ jac.transpose(1, 2) + BLUR * torch.eye(2, dtype=means.dtype, device=means.device)
    center = torch.stack([pixel(p) for p in cam])
    color = torch.clamp(_sh(sh, torch.nn.functional.normalize(means - eye, dim=-1)) + 0.5, min=0)
    order = torch.argsort(cam[:, 2])
    # Which tiles each Gaussian reaches: its square of half-side ⌈3 √λ_max⌉ pixels.
    radius = torch.ceil(3 * torch.sqrt(torch.linalg.eigvalsh(cov2.detach())[:, 1]))
    lo = torch.floor((center.detach() - radius[:, None]) / TILE)
    hi = torch.floor((center.detach() + radius[:, None]) / TILE)
    rows, cols = torch.meshgrid(torch.arange(cameras.height), torch.arange(cameras.width), indexing="ij")
    p = torch.stack([cols, rows], -1).reshape(-1, 2).to(means)  # [P, 2]
    tile = torch.div(p, TILE, rounding_mode="floor")
    reach = ((tile[:, None] >= lo[None]) & (tile[:, None] <= hi[None])).all(-1)  # [P, N]
    d = center[None] - (p[:, None] + 0.5)  # [P, N, 2]
    inverse = torch.linalg.inv(cov2)
    power = -0.5 * torch.einsum("pni,nij,pnj->pn", d, inverse, d)
    raw = opacities[None] * torch.exp(power)
    alpha = torch.clamp(raw, max=0.99)
    alpha = torch.where(reach & (power <= 0) & (alpha >= 1 / 255), alpha, 0.0)[:, order]
    survive = torch.cumprod(1 - alpha, dim=1)  # transmittance after each Gaussian
    alpha = torch.where(survive >= 1e-4, alpha, 0.0)  # the stop: it and everything behind it dropped
    before = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha[:, :-1]], 1), dim=1)
    weight = alpha * before
    image = weight @ color[order] + (1 - weight.sum(1, keepdim=True)) * background
    depth = weight @ cam[order, 2]
    shape = (cameras.height, cameras.width)
    return image.reshape(*shape, 3), weight.sum(1).reshape(shape), depth.reshape(shape)


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_brute_force_values_and_gradients(device, seed):
    cameras = _cameras(37, 29, device)  # partial tiles on both axes
    scene = [t.requires_grad_() for t in _scene(24, seed, device)]
    background = torch.tensor([0.2, 0.4, 0.9], dtype=torch.float64, device=device)
    out = rasterize_gaussians(*scene, cameras, background=background)
    truth = reference(*[t.cpu() for t in scene], cameras.to("cpu"), background.cpu())
    for got, want in zip((out.image, out.alpha, out.depth), truth, strict=True):
        torch.testing.assert_close(got.cpu(), want, atol=1e-10, rtol=1e-9)
    assert float(out.alpha.detach().max()) > 0.5  # the scene covers the image
    g = torch.Generator().manual_seed(seed + 10)
    weights = [torch.randn(t.shape, generator=g, dtype=torch.float64) for t in truth]
    ours = torch.autograd.grad(
        sum((o * w.to(device)).sum() for o, w in zip((out.image, out.alpha, out.depth), weights, strict=True)), scene
    )
    leaves = [t.detach().cpu().requires_grad_() for t in scene]
    theirs = torch.autograd.grad(
        sum((o * w).sum() for o, w in zip(reference(*leaves, cameras.to("cpu"), background.cpu()), weights, strict=True)), leaves
    )
    for name, a, b in zip(("means", "quats", "scales", "opacities", "sh"), ours, theirs, strict=True):
        torch.testing.assert_close(a.cpu(), b, atol=1e-8, rtol=1e-6, msg=name)


def test_float32_matches_float64(device):
    cameras = _cameras(48, 40, device)
    scene = _scene(200, 3, device, k=16, size=0.01)
    out64 = rasterize_gaussians(*scene, cameras)
    out32 = rasterize_gaussians(*[t.float() for t in scene], _cameras(48, 40, device, torch.float32))
    assert out32.image.dtype == torch.float32
    torch.testing.assert_close(out32.image.double(), out64.image, atol=2e-4, rtol=0)
    torch.testing.assert_close(out32.depth.double(), out64.depth, atol=2e-4, rtol=0)


def test_gradcheck(device):
    cameras = _cameras(20, 18, device)
    scene = [t.requires_grad_() for t in _scene(5, 7, device, size=0.05)]

    def render(means, quats, scales, opacities, sh):
        out = rasterize_gaussians(
            means, quats, scales, opacities, sh, cameras, background=torch.full((3,), 0.5, dtype=torch.float64, device=device)
        )
        return out.image, out.alpha, out.depth

    # The backward sums the pixels' shares with atomic adds, on CUDA in another order each call: gradcheck's
    # reentrancy check allows float64 summation error there.
    nondet_tol = 1e-10 if device.type == "cuda" else 0.0
    assert torch.autograd.gradcheck(render, tuple(scene), eps=1e-6, atol=1e-5, fast_mode=True, nondet_tol=nondet_tol)


def test_one_gaussian_footprint_is_the_projected_gaussian():
    # An isotropic Gaussian of s.d. σ at depth z on the optical axis projects to s.d.² (fσ/z)² + 0.3 pixels²; its
    # mean on a pixel centre gives that pixel its opacity.
    f, z, sigma, opacity = 80.0, 2.0, 0.05, 0.7
    c2w = torch.eye(4, dtype=torch.float64)[None]
    cameras = PinholeCameras(fx=f, fy=f, cx=32.5, cy=32.5, width=64, height=64, camera_to_world=c2w)
    one = torch.ones(1, dtype=torch.float64)
    out = rasterize_gaussians(
        torch.tensor([[0.0, 0.0, z]], dtype=torch.float64), torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64),
        torch.full((1, 3), sigma, dtype=torch.float64), opacity * one, torch.tensor([[0.2, 0.4, 0.6]], dtype=torch.float64),
        cameras,
    )  # fmt: skip
    var = (f * sigma / z) ** 2 + BLUR
    dx = torch.arange(64, dtype=torch.float64) - 32  # pixel centres minus the mean's pixel (32.5)
    expected = opacity * torch.exp(-0.5 * dx**2 / var)
    expected = torch.where(expected >= 1 / 255, expected, 0.0)
    reach = dx.abs() <= math.ceil(3 * math.sqrt(var)) + TILE  # within the tiles of its 3σ square
    torch.testing.assert_close(out.alpha[32][reach], expected[reach], atol=1e-12, rtol=0)
    torch.testing.assert_close(out.image[32, 32], torch.tensor([0.2, 0.4, 0.6], dtype=torch.float64) * opacity)
    torch.testing.assert_close(out.depth[32, 32], torch.tensor(opacity * z, dtype=torch.float64))
    assert int(out.radii[0]) == math.ceil(3 * math.sqrt(var))


def test_off_image_gaussians_use_the_clamped_jacobian_and_are_not_drawn():
    # 3DGS's computeCov2D: the Jacobian is taken at the mean clamped to 1.3x the half field of view, i.e. x/z within
    # [-(cx/fx + 0.3 tan), (W - cx)/fx + 0.3 tan] with tan = W / (2 fx); a square touching no tile has radius 0.
    f, z, sigma = 50.0, 2.0, 0.05
    c2w = torch.eye(4, dtype=torch.float64)[None]
    cameras = PinholeCameras(fx=f, fy=f, cx=32.0, cy=32.0, width=64, height=64, camera_to_world=c2w)
    means = torch.tensor([[2.0 * z, 0.0, z], [0.1 * z, 0.0, z]], dtype=torch.float64)  # x/z = 2 (far right), 0.1
    proj = project_gaussians(
        means, torch.tensor([[1.0, 0, 0, 0]] * 2, dtype=torch.float64), torch.full((2, 3), sigma, dtype=torch.float64), cameras
    )
    limit = (64 - 32) / f + 0.3 * 64 / (2 * f)
    for row, ratio in ((0, limit), (1, 0.1)):
        a = sigma**2 * ((f / z) ** 2 + (f * ratio / z) ** 2) + BLUR  # J Jᵀ σ² + 0.3 I with tx = ratio z, ty = 0
        c = sigma**2 * (f / z) ** 2 + BLUR
        torch.testing.assert_close(proj.conics[row], torch.tensor([1 / a, 0.0, 1 / c], dtype=torch.float64))
    assert int(proj.radii[0]) == 0 and int(proj.radii[1]) > 0


def test_bad_near_and_sh_degree_without_sh_are_named():
    scene = _scene(3, 1, "cpu")
    with pytest.raises(ValueError, match="near"):
        rasterize_gaussians(*scene, _cameras(16, 16, "cpu"), near=0.0)
    with pytest.raises(ValueError, match="sh_degree"):
        rasterize_gaussians(*scene[:4], scene[4][:, 0], _cameras(16, 16, "cpu"), sh_degree=0)


def test_an_image_too_large_for_memory_or_warp_is_refused_before_allocating(monkeypatch):
    """100000² pixels ended in the allocator after the projection: the image's buffers are checked first, naming
    the cameras' size; where memory is plenty, Warp's 32-bit indexing still bounds the image."""
    from headfields import checks

    scene = _scene(3, 1, "cpu")
    with pytest.raises(
        ValueError, match=r"^cameras: 100000 x 100000 pixels needs [0-9.]+ [KMGTP]?B for the rasteriser's image buffers"
    ):
        rasterize_gaussians(*scene, _cameras(100000, 100000, "cpu"))
    monkeypatch.setattr(checks, "available_memory", lambda device: 2**50)
    with pytest.raises(ValueError, match=r"^cameras: 100000 x 100000 pixels is more than the rasteriser indexes"):
        rasterize_gaussians(*scene, _cameras(100000, 100000, "cpu"))
    monkeypatch.setattr(checks, "available_memory", lambda device: 10**6)  # 1 MB: a 512² image needs more
    with pytest.raises(ValueError, match=r"^cameras: 512 x 512 pixels needs .* MB .* more than the 1 MB available"):
        rasterize_gaussians(*scene, _cameras(512, 512, "cpu"))
    assert rasterize_gaussians(*scene, _cameras(16, 16, "cpu")).image.shape == (16, 16, 3)


def _layers(opacity: float, depths: list[float]):
    n = len(depths)
    means = torch.tensor([[0.0, 0.0, d] for d in depths], dtype=torch.float64)
    quats = torch.tensor([[1.0, 0, 0, 0]] * n, dtype=torch.float64)
    scales = torch.tensor([[d, d, 0.01] for d in depths], dtype=torch.float64)  # wide: flat over the centre
    colors = torch.eye(3, dtype=torch.float64)[:n]
    cameras = PinholeCameras(
        fx=20.0, fy=20.0, cx=8.0, cy=8.0, width=16, height=16, camera_to_world=torch.eye(4, dtype=torch.float64)[None]
    )
    return means, quats, scales, torch.full((n,), opacity, dtype=torch.float64), colors, cameras


def test_transmittance_stop_and_alpha_clamp():
    # Three opaque layers: alpha clamps at 0.99; after two the transmittance is 1e-4 (kept), a third would take it to
    # 1e-6, so the pixel stops before it: 3DGS's renderCUDA.
    out = rasterize_gaussians(*_layers(1.0, [1.0, 2.0, 3.0]))
    pixel = out.image[7, 7]
    torch.testing.assert_close(pixel, torch.tensor([0.99, 0.0099, 0.0], dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.depth[7, 7], torch.tensor(0.99 * 1 + 0.0099 * 2, dtype=torch.float64), atol=1e-6, rtol=0)
    # A clamped alpha (the centre pixel's: opacity 1 times G = 0.9994) passes no gradient to opacity or position.
    args = list(_layers(1.0, [1.0]))
    args[0], args[3] = args[0].clone().requires_grad_(), args[3].clone().requires_grad_()
    rasterize_gaussians(*args).alpha[7, 7].backward()
    assert float(args[3].grad.abs().max()) == 0.0 and float(args[0].grad.abs().max()) == 0.0


def test_faint_gaussians_are_skipped():
    out = rasterize_gaussians(*_layers(0.003, [1.0]))  # below 1/255 everywhere
    assert float(out.alpha.abs().max()) == 0.0
    out = rasterize_gaussians(*_layers(0.005, [1.0]))
    assert 0.004 < float(out.alpha.max()) <= 0.005


def test_behind_the_camera_and_empty_draw_background(device):
    cameras = _cameras(24, 24, device)
    scene = _scene(4, 2, device)
    scene[0] = scene[0] + 3.0 * torch.tensor([0.05, -0.03, 1.0], dtype=torch.float64, device=device)  # behind the eye
    scene = [t.requires_grad_() for t in scene]
    background = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64, device=device)
    out = rasterize_gaussians(*scene, cameras, background=background)
    assert int(out.radii.max()) == 0
    torch.testing.assert_close(out.image, background.expand(24, 24, 3))
    out.image.sum().backward()
    assert all(torch.isfinite(t.grad).all() and float(t.grad.abs().max()) == 0 for t in scene)
    empty = rasterize_gaussians(*[t[:0].detach() for t in scene], cameras, background=background)
    torch.testing.assert_close(empty.image, background.expand(24, 24, 3))


def test_huge_gaussian_and_unnormalised_quaternions(device):
    cameras = _cameras(40, 32, device)
    means, quats, scales, opacities, sh = _scene(3, 5, device)
    scales = scales.clone()
    scales[0] = 50.0  # covers the whole image
    out = rasterize_gaussians(means, quats, scales, opacities, sh, cameras)
    scaled = rasterize_gaussians(means, 7.0 * quats, scales, opacities, sh, cameras)  # quaternions are normalised
    torch.testing.assert_close(scaled.image, out.image)
    params = [t.clone().requires_grad_() for t in (means, quats, scales, opacities, sh)]
    rasterize_gaussians(*params, cameras).image.sum().backward()
    assert all(bool(torch.isfinite(t.grad).all()) for t in params)


@pytest.mark.parametrize("scale", [1e10, 1e20, 1e30])
def test_a_footprint_past_float32_covers_every_pixel_as_the_dense_reference_does(scale):
    """In float32 a Gaussian of scales 1e10 (its 2D covariance's determinant past float32) or 1e20 (the covariance
    itself) got a NaN radius and vanished; 3DGS's math draws it flat over the whole image, its opacity at every pixel,
    and so does the rasteriser (the covariance in units of its scale, the radius capped): what the dense reference
    computes in float64, behind a small Gaussian in front, whose pixels keep their values."""
    cameras = _cameras(40, 32, "cpu", torch.float32)
    means, quats, scales, opacities, sh = (t.float() for t in _scene(2, 6, "cpu", k=1))
    means[1] = torch.tensor([0.0, 0.0, -0.5])  # behind the small one, seen from the eye at z = 1
    scales[1], opacities[1] = scale, 0.6
    background = torch.tensor([0.2, 0.4, 0.9])
    out = rasterize_gaussians(means, quats, scales, opacities, sh, cameras, background=background)
    assert int(out.radii[1]) > max(cameras.width, cameras.height)
    truth = reference(*(t.double() for t in (means, quats, scales, opacities, sh)), _cameras(40, 32, "cpu"), background.double())
    assert bool((truth[1] >= 0.6 - 1e-9).all())  # the reference: the huge one over every pixel
    for got, want in zip((out.image, out.alpha, out.depth), truth, strict=True):
        torch.testing.assert_close(got.double(), want, atol=2e-4, rtol=0)  # as float32 against float64 above


@pytest.mark.parametrize("factor", [1e30, 1e-30])
def test_quaternions_of_extreme_length_draw_as_their_unit_ones(factor):
    """In float32 a quaternion of 1e30s squared to inf (a NaN rotation: the Gaussian vanished) and one of 1e-30s to 0
    (refused as a zero quaternion); 3DGS normalises them to the same rotation, and so does the rasteriser."""
    cameras = _cameras(24, 24, "cpu", torch.float32)
    means, quats, scales, opacities, sh = (t.float() for t in _scene(3, 2, "cpu"))
    unit = rasterize_gaussians(means, quats, scales, opacities, sh, cameras)
    extreme = rasterize_gaussians(means, quats * factor, scales, opacities, sh, cameras)
    assert bool(torch.isfinite(extreme.image).all()) and bool((extreme.radii == unit.radii).all())
    torch.testing.assert_close(extreme.image, unit.image)


@pytest.mark.parametrize(
    ("index", "change", "message"),
    [
        (0, lambda t: t.index_fill(0, torch.tensor([1]), float("nan")), "means: expected finite"),
        (2, lambda t: t.index_fill(0, torch.tensor([0]), 0.0), "scales: expected positive"),
        (2, lambda t: -t, "scales: expected positive"),
        (1, lambda t: t.index_fill(0, torch.tensor([2]), 0.0), "quats: expected non-zero"),
        (3, lambda t: t + 1.0, "opacities: expected values in"),
        (4, lambda t: t[:, :3], "colors: expected"),
        (4, lambda t: t.index_fill(0, torch.tensor([0]), float("inf")), "colors: expected finite"),
    ],
)
def test_bad_input_is_named(index, change, message):
    scene = _scene(4, 1, "cpu")
    scene[index] = change(scene[index])
    with pytest.raises(ValueError, match=message):
        rasterize_gaussians(*scene, _cameras(16, 16, "cpu"))


def test_bad_options_are_named():
    scene = _scene(4, 1, "cpu")
    with pytest.raises((TypeError, ValueError), match="quats"):  # the shape: jaxtyping's checker in tests, ours without it
        rasterize_gaussians(scene[0], scene[1][:, :3], *scene[2:], _cameras(16, 16, "cpu"))
    with pytest.raises(TypeError, match="one dtype"):
        rasterize_gaussians(scene[0].float(), *scene[1:], _cameras(16, 16, "cpu"))
    with pytest.raises(ValueError, match="sh_degree"):
        rasterize_gaussians(*scene, _cameras(16, 16, "cpu"), sh_degree=2)
    with pytest.raises(ValueError, match="frame"):
        rasterize_gaussians(*scene, _cameras(16, 16, "cpu"), frame=1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="gsplat is a CUDA peer")
def test_matches_gsplat_on_cuda():
    """The same scene through gsplat's rasterization (the optional [gsplat] extra) where a device and gsplat are
    there: images and the means' and opacities' gradients agree."""
    gsplat = pytest.importorskip("gsplat")
    device = torch.device("cuda")
    cameras = _cameras(64, 48, device, torch.float32)
    scene = [t.float().requires_grad_() for t in _scene(200, 4, device, k=16, size=0.01)]
    ours = rasterize_gaussians(*scene, cameras)
    k = torch.tensor([[cameras.fx, 0, cameras.cx], [0, cameras.fy, cameras.cy], [0, 0, 1.0]], device=device)
    theirs, alphas, _ = gsplat.rasterization(
        *scene, cameras.world_to_camera, k[None], cameras.width, cameras.height, near_plane=0.01, sh_degree=3, eps2d=0.3
    )
    torch.testing.assert_close(ours.image, theirs[0], atol=2e-3, rtol=0)
    torch.testing.assert_close(ours.alpha, alphas[0, ..., 0], atol=2e-3, rtol=0)
    weights = torch.rand(48, 64, 3, device=device, generator=torch.Generator(device).manual_seed(0))
    mine = torch.autograd.grad((ours.image * weights).sum(), scene[::3])
    peer = torch.autograd.grad((theirs[0] * weights).sum(), scene[::3])
    for a, b in zip(mine, peer, strict=True):
        cosine = torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0)
        assert float(cosine) > 0.99


def test_gsplat_backend_without_gsplat_is_refused(monkeypatch):
    monkeypatch.setitem(sys.modules, "gsplat", None)  # `import gsplat` raises ImportError
    scene = [t.float() for t in _scene(4, 1, "cpu")]
    with pytest.raises(ImportError, match=r"backend: 'gsplat' needs the gsplat package.*headfields\[gsplat\]"):
        rasterize_gaussians(*scene, _cameras(16, 16, "cpu", torch.float32), backend="gsplat")


def test_gsplat_backend_refuses_the_cpu_and_float64(monkeypatch):
    """gsplat draws on CUDA in float32: anything else is refused, naming ``backend``, before gsplat is called."""

    def rasterization(*args, **kwargs):
        raise AssertionError("gsplat called")

    monkeypatch.setitem(sys.modules, "gsplat", types.SimpleNamespace(rasterization=rasterization))
    scene = _scene(4, 1, "cpu")
    with pytest.raises(TypeError, match="backend: 'gsplat' draws float32 only"):
        rasterize_gaussians(*scene, _cameras(16, 16, "cpu"), backend="gsplat")
    with pytest.raises(ValueError, match="backend: 'gsplat' draws on CUDA only"):
        rasterize_gaussians(*[t.float() for t in scene], _cameras(16, 16, "cpu", torch.float32), backend="gsplat")
    with pytest.raises((TypeError, ValueError), match="backend"):  # jaxtyping's checker in tests, ours without it
        rasterize_gaussians(*scene, _cameras(16, 16, "cpu"), backend="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="gsplat draws on CUDA")
def test_gsplat_backend_matches_ours_on_cuda():
    """``backend="gsplat"`` against ours on one scene: image over a background, alpha, depth, the drawn Gaussians, and
    the gradients of every input and of the projected centres (retain_grad, as density control reads them)."""
    pytest.importorskip("gsplat")
    device = torch.device("cuda")
    cameras = _cameras(64, 48, device, torch.float32)
    background = torch.tensor([0.2, 0.4, 0.9], device=device)
    weights = [torch.rand(48, 64, c, device=device, generator=torch.Generator(device).manual_seed(c)) for c in (3, 1, 1)]
    renders, grads = [], []
    for backend in ("warp", "gsplat"):
        scene = [t.float().requires_grad_() for t in _scene(200, 4, device, k=16, size=0.01)]
        out = rasterize_gaussians(*scene, cameras, background=background, backend=backend)
        out.means2d.retain_grad()
        outputs = (out.image, out.alpha[..., None], out.depth[..., None])
        sum((o * w).sum() for o, w in zip(outputs, weights, strict=True)).backward()
        renders.append(out)
        grads.append([t.grad for t in scene] + [out.means2d.grad])
    ours, theirs = renders
    assert theirs.image.shape == (48, 64, 3) and theirs.radii.shape == (200,) and theirs.radii.dtype == torch.long
    # The tile rules differ (the module docstring): pixels past 3σ of the opaque Gaussians, by up to 0.011 x opacity.
    torch.testing.assert_close(ours.image, theirs.image, atol=2e-3, rtol=0)
    torch.testing.assert_close(ours.alpha, theirs.alpha, atol=2e-3, rtol=0)
    torch.testing.assert_close(ours.depth, theirs.depth, atol=3e-3, rtol=0)  # alpha's difference times depths up to 1.1
    drawn = (ours.radii > 0) & (theirs.radii > 0)  # gsplat leaves the centres of those it does not draw at 0
    assert float(((ours.radii > 0) == (theirs.radii > 0)).float().mean()) > 0.95
    torch.testing.assert_close(ours.means2d[drawn], theirs.means2d[drawn], atol=1e-3, rtol=0)
    for name, a, b in zip(("means", "quats", "scales", "opacities", "sh", "means2d"), *grads, strict=True):
        assert b is not None, name
        cosine = torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0)
        assert float(cosine) > 0.99, name


def test_gsplat_centres_carry_their_gradient():
    """gsplat's centres come batched ``[1, N, 2]``; the ``[N, 2]`` row the render returns gets their gradient once the
    caller asks for it (``retain_grad()``), though the loss does not pass through it."""
    points = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    batched = (2 * points)[None]  # stands in for gsplat's meta["means2d"]
    asked, unasked = _means2d(batched), _means2d(batched)
    asked.retain_grad()
    (batched**2).sum().backward()
    torch.testing.assert_close(asked.grad, 2 * batched[0].detach())
    with pytest.warns(UserWarning, match="not a leaf"):  # torch's warning: the row not asked for has none
        assert unasked.grad is None


def test_gsplat_is_imported_only_at_the_call():
    """gsplat is an optional extra: no module of headfields imports it outside a function (``import headfields``
    never needs it; ``backend="gsplat"`` imports it when asked)."""

    def outside_functions(node: ast.AST):
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                yield child
                yield from outside_functions(child)

    found = []
    for path in sorted(Path(headfields.__file__).parent.rglob("*.py")):
        for node in outside_functions(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [f"{path.name}: {name}" for name in names if name.split(".")[0] == "gsplat"]
    assert not found, found


def test_the_image_memory_is_checked_once_by_a_caller_that_renders_without_validation(monkeypatch):
    """A driver call a render on CUDA (cudaMemGetInfo): a render checks its image's memory and its pairs', one
    with ``validate=False`` its pairs' alone (their count changes every frame; the image's size does not), and
    ``check_image_memory`` refuses the image as the render would."""
    from headfields import checks
    from headfields.renderers.gaussians import check_image_memory

    asked = []
    monkeypatch.setattr(checks, "available_memory", lambda device: asked.append(device) or 2**50)
    scene, cameras = _scene(3, 1, "cpu"), _cameras(16, 16, "cpu")
    rasterize_gaussians(*scene, cameras)
    assert len(asked) == 2
    for _ in range(3):
        rasterize_gaussians(*scene, cameras, validate=False)
    assert len(asked) == 5
    monkeypatch.setattr(checks, "available_memory", lambda device: 10**6)
    with pytest.raises(ValueError, match=r"^cameras: 512 x 512 pixels needs .* MB .* more than the 1 MB available"):
        check_image_memory(_cameras(512, 512, "cpu"), torch.float64, torch.device("cpu"))
