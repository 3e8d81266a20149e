"""UV rasterisation against independent truth: planar meshes whose UVs are their positions (interpolated
positions are the texel centres), an exact numpy point-in-triangle test over every texel centre, linear
attributes through the vertex -> UV -> vertex round trip (exact away from borders, a closed-form error at
them), the synthetic FLAME's seams at MonoAvatar's 256×256, gradcheck and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from headfields.geometry import UVMisses, UVRaster, interpolate_uv, rasterize_uv, sample_uv, uv_misses, vertex_uvs
from headfields.parametric import load_model
from headfields.synthetic import write_synthetic_flame

from helpers import raises_naming

DT = torch.float64
SNAP = 64  # test corners lie on a 1/64 grid: with power-of-two resolutions every orientation test is exact


def planar_grid(n: int, seed: int, lo: float = 0.0, size: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """A jittered n×n grid of triangles on the square [lo, lo + size]², as (uvs [V,2] float64, faces [F,3]).

    Interior vertices move by up to a quarter cell on the 1/64 grid, each cell is cut along a random
    diagonal, and half the triangles are wound clockwise, so shared edges run in every direction."""
    rng = np.random.default_rng(seed)
    step = SNAP // n
    ij = np.stack(np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="xy"), -1).reshape(-1, 2) * step
    interior = ((ij > 0) & (ij < SNAP)).all(-1)
    ij[interior] += rng.integers(-(step // 4), step // 4 + 1, size=(int(interior.sum()), 2))
    faces = []
    for r in range(n):
        for c in range(n):
            a, b, d, e = r * (n + 1) + c, r * (n + 1) + c + 1, (r + 1) * (n + 1) + c, (r + 1) * (n + 1) + c + 1
            faces += [[a, b, e], [a, e, d]] if rng.random() < 0.5 else [[a, b, d], [b, e, d]]
    faces = np.array(faces)
    flip = rng.random(len(faces)) < 0.5
    faces[flip] = faces[flip][:, [0, 2, 1]]
    uvs = torch.tensor(lo + size * ij / SNAP, dtype=DT)
    return uvs, torch.tensor(faces)


def texel_centres(height: int, width: int) -> np.ndarray:
    """[H*W, 2] (u, v) of every texel centre, row-major."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.stack([(cols.ravel() + 0.5) / width, (rows.ravel() + 0.5) / height], -1)


def point_in_triangles(points: np.ndarray, corners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Brute force: (strictly inside, inside or on the boundary) ``[N, F]`` for points ``[N,2]`` and
    triangles ``[F,3,2]`` of either winding (degenerate triangles contain nothing)."""
    p = points[:, None, None, :]
    a, b = corners[None], np.roll(corners, -1, axis=1)[None]
    side = (b[..., 0] - a[..., 0]) * (p[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (p[..., 0] - a[..., 0])
    e1, e2 = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    orient = np.sign(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])[None, :, None]
    side = side * orient
    nondegenerate = orient[..., 0] != 0
    return (side > 0).all(-1) & nondegenerate, (side >= 0).all(-1) & nondegenerate


@pytest.fixture(scope="module")
def flame():
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        return load_model(write_synthetic_flame(folder, seed=0), "flame", num_shape=0, num_expression=0, dtype=DT)


# ---------------------------------------------------------------------------------------------------------
# coverage


@pytest.mark.parametrize("resolution", [16, (12, 20)])
def test_planar_mesh_covers_every_texel_and_interpolates_the_centre(device, resolution):
    uvs, faces = planar_grid(8, seed=0)
    raster = rasterize_uv(uvs.to(device), faces.to(device), resolution)
    h, w = raster.resolution
    assert (h, w) == ((resolution, resolution) if isinstance(resolution, int) else resolution)
    assert raster.face.dtype == torch.int64 and raster.bary.dtype == DT
    assert raster.mask.all()
    # The UVs are the positions: interpolating them gives each texel's own centre.
    centre = interpolate_uv(raster, uvs.to(device), faces.to(device))
    expected = torch.tensor(texel_centres(h, w), dtype=DT).T.reshape(2, h, w)
    torch.testing.assert_close(centre.cpu(), expected, rtol=0, atol=1e-12)


def test_shared_edges_against_brute_force(device):
    """Every texel centre goes to a triangle that contains it (boundary included); a centre strictly inside
    one triangle goes to that one. Many centres lie exactly on shared edges and vertices."""
    uvs, faces = planar_grid(8, seed=1)
    raster = rasterize_uv(uvs.to(device), faces.to(device), 32)
    inside, closed = point_in_triangles(texel_centres(32, 32), uvs[faces].numpy())
    assert (closed & ~inside).any(axis=1).sum() > 50  # the tie rule is exercised
    face = raster.face.reshape(-1).cpu().numpy()
    assert (face >= 0).all()
    assert closed[np.arange(len(face)), face].all()
    strict = inside.sum(axis=1) == 1
    np.testing.assert_array_equal(face[strict], inside[strict].argmax(axis=1))
    bary = raster.bary.reshape(-1, 3).cpu()
    assert (bary >= 0).all() and torch.allclose(bary.sum(-1), torch.ones(len(bary), dtype=DT))


@settings(max_examples=30)
@given(
    corners=st.lists(st.integers(-16, SNAP + 16), min_size=6, max_size=6),
    height=st.sampled_from([4, 16, 32]),
    width=st.sampled_from([4, 16, 32]),
)
def test_single_triangle_against_brute_force(corners, height, width):
    uvs = torch.tensor(corners, dtype=DT).reshape(3, 2) / SNAP  # may reach outside the map; may be degenerate
    raster = rasterize_uv(uvs, torch.tensor([[0, 1, 2]]), (height, width))
    inside, closed = point_in_triangles(texel_centres(height, width), uvs[None].numpy())
    covered = raster.mask.reshape(-1).numpy()
    assert (covered >= inside[:, 0]).all() and (covered <= closed[:, 0]).all()
    assert (raster.face[raster.mask] == 0).all() and (raster.face[~raster.mask] == -1).all()
    assert (raster.bary[~raster.mask] == 0).all()


def test_degenerate_and_overlapping_triangles():
    uvs = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.25, 0.25]], dtype=DT)
    # Face 0 is degenerate (collinear in UV), faces 1 and 2 are the same triangle in either winding.
    uv_faces = torch.tensor([[0, 3, 4], [2, 1, 0], [0, 1, 2]])
    raster = rasterize_uv(uvs, uv_faces, 8)
    inside, _ = point_in_triangles(texel_centres(8, 8), uvs[uv_faces[1:2]].numpy())
    np.testing.assert_array_equal(raster.mask.reshape(-1).numpy(), inside[:, 0])  # no centre on the hypotenuse
    assert (raster.face[raster.mask] == 1).all()  # overlap: the lowest face index wins
    empty = rasterize_uv(uvs, uv_faces[:1], 8)
    assert not empty.mask.any() and (empty.bary == 0).all()


# ---------------------------------------------------------------------------------------------------------
# vertex -> UV -> vertex


def linear(uv: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """``[B, V, C]`` attributes a u + b v + c with ``coeffs [B, C, 3]``."""
    return torch.einsum("vk,bck->bvc", torch.cat([uv, torch.ones_like(uv[:, :1])], -1), coeffs)


def test_linear_round_trip_on_the_unit_square(device):
    """Away from the map's edge the four taps are covered and bilinear sampling of a linear map is exact.
    A vertex on the edge has no texel centre beyond it, so it reads the attribute half a texel inwards: at
    the point moved by (du, dv) = (±1/2W on the left/right edge, ±1/2H on the top/bottom edge), an error of
    exactly |a du + b dv|."""
    h, w = 32, 64
    uvs, faces = planar_grid(8, seed=2)
    uvs, faces = uvs.float().to(device), faces.to(device)
    coeffs = torch.tensor([[[0.7, -1.3, 0.2], [-2.0, 0.5, 1.0]], [[1.5, 1.1, -0.4], [0.3, -0.9, 0.0]]], device=device)
    values = linear(uvs, coeffs)
    raster = rasterize_uv(uvs, faces, (h, w))
    at = vertex_uvs(faces, faces, uvs, len(uvs))
    back = sample_uv(interpolate_uv(raster, values, faces), at, raster.mask)
    assert back.shape == values.shape
    error = (back - values).abs().cpu()
    at = at.cpu()
    inwards = ((at == 0).double() - (at == 1).double()) / torch.tensor([2 * w, 2 * h])  # (du, dv) per vertex
    expected = torch.einsum("vk,bck->bvc", inwards, coeffs[..., :2].cpu().double()).abs().float()
    torch.testing.assert_close(error, expected, rtol=0, atol=1e-5)
    on_edge = (inwards != 0).any(-1)
    assert on_edge.sum() == 32 and error[:, ~on_edge].max() < 1e-5


def test_mask_keeps_chart_borders_clean():
    """A chart in the middle of the map: mask-normalised samples at its border vertices blend only covered
    taps, each within one texel, so the error is at most |a|/W + |b|/H; unmasked ones average in zeros."""
    size = 64
    uvs, faces = planar_grid(4, seed=3, lo=0.25, size=0.5)
    coeffs = torch.tensor([[[1.0, 2.0, 3.0]]], dtype=DT)
    values = linear(uvs, coeffs)
    raster = rasterize_uv(uvs, faces, size)
    uv_map = interpolate_uv(raster, values, faces)
    masked = (sample_uv(uv_map, uvs, raster.mask) - values).abs()
    unmasked = (sample_uv(uv_map, uvs) - values).abs()
    bound = (1.0 + 2.0) / size
    assert masked.max() <= bound
    assert unmasked.max() > 1.0  # the chart's corners are 3/4 empty taps


def test_flame_round_trip_at_256(flame):
    """A smooth attribute on the synthetic FLAME (several UV charts with seams) survives vertex -> 256² UV
    map -> vertex. Bilinear sampling and the texel grid are exact for linear attributes; what is left is the
    attribute's curvature within a texel and, at chart borders, reading up to a texel inwards, so the error
    is O(1/resolution): it halves at 512², and the median sits far below the attribute's range."""
    x = flame.v_template
    x = 2 * (x - x.mean(0)) / (x.amax(0) - x.amin(0))  # about [-1, 1] per axis
    values = torch.stack([torch.sin(2 * x[:, 0]) + x[:, 1] * x[:, 2], torch.cos(2 * x[:, 1]) + x[:, 0], x[:, 2]], -1)
    spread = (values.amax(0) - values.amin(0)).min()
    at = vertex_uvs(flame.faces, flame.uv_faces, flame.uvs, len(x))
    errors = {}
    for size in (256, 512):
        raster = rasterize_uv(flame.uvs, flame.uv_faces, size)
        back = sample_uv(interpolate_uv(raster, values, flame.faces), at, raster.mask)
        errors[size] = (back - values).abs().amax(-1)
    # Measured: median 6.2e-4 and max 0.051 at 256² for ranges of 2.0-3.1 (max 0.025 at 512²).
    assert errors[256].median() < 1e-3 * spread
    assert errors[256].max() < 0.04 * spread
    assert errors[512].max() < 0.6 * errors[256].max()


def test_vertex_uvs_take_the_first_corner(flame):
    faces, uv_faces = flame.faces.numpy(), flame.uv_faces.numpy()
    expected = np.full(len(flame.v_template), -1)
    for f in range(len(faces)):
        for k in range(3):
            if expected[faces[f, k]] < 0:
                expected[faces[f, k]] = uv_faces[f, k]
    got = vertex_uvs(flame.faces, flame.uv_faces, flame.uvs, len(expected))
    torch.testing.assert_close(got, flame.uvs[expected], rtol=0, atol=0)
    seams = np.zeros(len(expected), dtype=bool)
    seams[faces[uv_faces != expected[faces]]] = True
    assert seams.sum() > 10  # the synthetic FLAME has seams, so the first-corner rule matters


def test_sample_uv_bilinear_and_fallback():
    """Unmasked: a bilinear numpy loop with edge clamping. Masked with no covered tap: the nearest covered
    texel's value."""
    gen = torch.Generator().manual_seed(0)
    h, w = 5, 7
    uv_map = torch.randn(2, 3, h, w, generator=gen, dtype=DT)
    uv = torch.rand(20, 2, generator=gen, dtype=DT) * 1.2 - 0.1
    expected = np.zeros((2, 20, 3))
    for i, (u, v) in enumerate(uv.numpy()):
        x, y = u * w - 0.5, v * h - 0.5
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        for dy, dx in [(0, 0), (0, 1), (1, 0), (1, 1)]:
            weight = (1 - abs(x - x0 - dx)) * (1 - abs(y - y0 - dy))
            r, c = min(max(y0 + dy, 0), h - 1), min(max(x0 + dx, 0), w - 1)
            expected[:, i] += weight * uv_map[:, :, r, c].numpy()
    np.testing.assert_allclose(sample_uv(uv_map, uv).numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(sample_uv(uv_map[0], uv).numpy(), expected[0], atol=1e-12)

    mask = torch.zeros(h, w, dtype=torch.bool)
    mask[0, 0] = mask[4, 6] = True
    far = torch.tensor([[0.5, 0.5], [0.05, 0.3], [0.9, 0.7]], dtype=DT)  # texels (2, 3), (1, 0), (3, 6)
    got = sample_uv(uv_map, far, mask)
    torch.testing.assert_close(got[:, 1], uv_map[:, :, 0, 0])
    torch.testing.assert_close(got[:, 2], uv_map[:, :, 4, 6])
    torch.testing.assert_close(got[:, 0], uv_map[:, :, 0, 0])  # equidistant: the lower texel index


def test_a_layout_s_misses_and_covered_texels_found_once_serve_every_map(host_sync_spy):
    """uv_misses: the points without a covered tap and their nearest covered texels, by hand; sample_uv and
    interpolate_uv given them (and the covered texels) read nothing back in a trusted step and give what they give
    without."""
    from headfields.checks import trusted_values
    from headfields.device_paths import cuda_paths

    h, w = 5, 7
    mask = torch.zeros(h, w, dtype=torch.bool)
    mask[0, 0] = mask[4, 6] = True
    # texels (2, 3) (equidistant: the lower index), (1, 0), (3, 6); then one on (0, 0)'s centre and one beside (4, 6)
    uv = torch.tensor([[0.5, 0.5], [0.05, 0.3], [0.9, 0.7], [0.5 / w, 0.5 / h], [6.2 / w, 4.4 / h]], dtype=DT)
    misses = uv_misses(uv, mask, DT)
    assert misses.point.tolist() == [0, 1, 2] and misses.texel.tolist() == [0, 0, 4 * w + 6]
    uv_map = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(3), dtype=DT)
    with cuda_paths(), trusted_values(), host_sync_spy() as spy:
        given = sample_uv(uv_map, uv, mask, misses)
    assert not spy.reads, spy.report()
    assert torch.equal(given, sample_uv(uv_map, uv, mask))
    full = uv_misses(uv, torch.ones(h, w, dtype=torch.bool), DT)  # every tap covered: none
    assert full.point.numel() == 0 and full.texel.numel() == 0

    uvs, faces = planar_grid(4, seed=6)
    raster = rasterize_uv(uvs, faces, 8)
    assert torch.equal(raster.covered(), torch.arange(64))  # the unit square's mesh covers every centre
    values = torch.randn(len(uvs), 2, dtype=DT, generator=torch.Generator().manual_seed(4))
    covered = raster.covered()
    with cuda_paths(), trusted_values(), host_sync_spy() as spy:
        filled = interpolate_uv(raster, values, faces, covered)
    assert not spy.reads, spy.report()
    assert torch.equal(filled, interpolate_uv(raster, values, faces))
    with raises_naming("mask"):
        uv_misses(uv, torch.zeros(h, w, dtype=torch.bool))
    with raises_naming("mask"):
        uv_misses(uv, torch.ones(h, w))
    with raises_naming("uv"):
        uv_misses(uv[:, :1], mask)
    assert isinstance(misses, UVMisses)


# ---------------------------------------------------------------------------------------------------------
# gradients


def test_gradcheck_interpolate_uv():
    uvs, faces = planar_grid(2, seed=4)
    raster = rasterize_uv(uvs, faces, 4)
    values = torch.randn(2, len(uvs), 2, dtype=DT, generator=torch.Generator().manual_seed(1), requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: interpolate_uv(raster, x, faces), (values,))
    assert torch.autograd.gradcheck(lambda x: interpolate_uv(raster, x, faces), (values[0].detach().requires_grad_(),))


def test_gradcheck_sample_uv():
    gen = torch.Generator().manual_seed(2)
    uv_map = torch.randn(2, 2, 4, 5, generator=gen, dtype=DT, requires_grad=True)
    uv = torch.rand(6, 2, generator=gen, dtype=DT, requires_grad=True)
    mask = torch.rand(4, 5, generator=gen) < 0.5
    mask[:2] = False  # some points have no covered tap and fall back to the nearest texel
    mask[3, 4] = True
    assert torch.autograd.gradcheck(lambda m: sample_uv(m, uv.detach(), mask), (uv_map,))
    assert torch.autograd.gradcheck(lambda m, p: sample_uv(m, p), (uv_map, uv))


# ---------------------------------------------------------------------------------------------------------
# bad input


def test_bad_input_names_the_argument():
    uvs, faces = planar_grid(2, seed=5)
    raster = rasterize_uv(uvs, faces, 4)
    values = torch.zeros(len(uvs), 2, dtype=DT)
    with raises_naming("uvs"):
        rasterize_uv(uvs[:, :1], faces, 4)
    with raises_naming("uvs"):
        rasterize_uv(torch.full_like(uvs, float("nan")), faces, 4)
    with raises_naming("uvs"):
        rasterize_uv(uvs * 1e4, faces, 256)  # beyond exact fixed point
    with raises_naming("uv_faces"):
        rasterize_uv(uvs, faces + len(uvs), 4)
    with raises_naming("uv_faces"):
        rasterize_uv(uvs, faces.double(), 4)
    for resolution in (0, (4, 0), (4, 4, 4), 2.5, 100_000):
        with raises_naming("resolution"):
            rasterize_uv(uvs, faces, resolution)
    with raises_naming("raster"):
        interpolate_uv(raster.face, values, faces)
    with raises_naming("values"):
        interpolate_uv(raster, values[:, 0], faces)
    with raises_naming("values"):
        interpolate_uv(raster, values.fill_(float("inf")), faces)
    with raises_naming("faces"):
        interpolate_uv(raster, torch.zeros(len(uvs), 2), faces[:-1])
    with raises_naming("faces"):
        interpolate_uv(raster, torch.zeros(len(uvs) - 1, 2), faces)
    with raises_naming("faces"):
        vertex_uvs(faces, faces, uvs, len(uvs) + 1)  # one vertex in no face
    with raises_naming("uv_faces"):
        vertex_uvs(faces, faces[:-1], uvs, len(uvs))
    with raises_naming("num_vertices"):
        vertex_uvs(faces, faces, uvs, 0)
    uv_map = torch.zeros(1, 2, 4, 4)
    with raises_naming("uv_map"):
        sample_uv(uv_map[0, 0], uvs.float())
    with raises_naming("uv"):
        sample_uv(uv_map, uvs.float()[:, :1])
    with raises_naming("mask"):
        sample_uv(uv_map, uvs.float(), torch.ones(4, 5, dtype=torch.bool))
    with raises_naming("mask"):
        sample_uv(uv_map, uvs.float(), torch.ones(4, 4))
    with raises_naming("mask"):
        sample_uv(uv_map, uvs.float(), torch.zeros(4, 4, dtype=torch.bool))
    assert isinstance(raster, UVRaster)
