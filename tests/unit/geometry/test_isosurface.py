"""extract_isosurface against analytic SDFs: vertices on the known surface, watertight and outward (trimesh),
the grid's points against numpy's, chunking invisible, planes exact, bad input named."""

import math

import numpy as np
import pytest
import torch
import trimesh
from hypothesis import given, settings
from hypothesis import strategies as st

from headfields.geometry import IsoSurface, TriangleMesh, extract_isosurface, face_normals

from helpers import raises_naming

CUBE = [[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]


def sphere_sdf(centre, radius):
    return lambda p: torch.linalg.vector_norm(p - torch.as_tensor(centre, dtype=torch.float64).to(p), dim=-1) - radius


def box_sdf(half):
    def sdf(p):
        q = p.abs() - torch.as_tensor(half, dtype=torch.float64).to(p)
        return torch.linalg.vector_norm(q.clamp(min=0), dim=-1) + q.amax(dim=-1).clamp(max=0)

    return sdf


def as_trimesh(surface: IsoSurface) -> trimesh.Trimesh:
    # process=False: watertightness must hold for our indices, not after trimesh merges vertices.
    return trimesh.Trimesh(surface.vertices.cpu().double().numpy(), surface.faces.cpu().numpy(), process=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sphere_is_on_the_surface_watertight_and_outward(device, dtype):
    centre, radius, res = (0.1, -0.05, 0.2), 0.6, 40
    bounds = torch.tensor(CUBE, dtype=dtype, device=device)
    s = extract_isosurface(sphere_sdf(centre, radius), bounds, res)
    assert s.vertices.dtype == dtype and s.vertices.device.type == device.type and s.faces.device.type == device.type
    voxel = 2 / (res - 1)
    offset = s.vertices.cpu().double() - torch.tensor(centre, dtype=torch.float64)
    assert (offset.norm(dim=-1) - radius).abs().max() < 0.05 * voxel
    m = as_trimesh(s)
    assert m.is_watertight and m.is_winding_consistent
    assert math.isclose(m.volume, 4 / 3 * math.pi * radius**3, rel_tol=0.01)  # positive: faces point outwards
    # Outward face by face: the geometric normal follows the analytic SDF gradient at the face centre.
    normals = face_normals(s.vertices.cpu().double(), s.faces.cpu())
    centres = s.vertices.cpu().double()[s.faces.cpu()].mean(dim=1) - torch.tensor(centre, dtype=torch.float64)
    assert ((normals * torch.nn.functional.normalize(centres, dim=-1)).sum(-1) > 0.9).all()
    assert isinstance(s.mesh(), TriangleMesh) and s.mesh().num_faces == s.faces.shape[0]


def test_negated_sdf_flips_the_faces():
    # Normals point towards growing SDF: for an SDF positive inside, the sphere's faces point inwards.
    bounds = torch.tensor(CUBE, dtype=torch.float64)
    out = extract_isosurface(sphere_sdf((0, 0, 0), 0.55), bounds, 20)
    inward = extract_isosurface(lambda p: -sphere_sdf((0, 0, 0), 0.55)(p), bounds, 20)
    assert as_trimesh(out).volume > 0 > as_trimesh(inward).volume
    assert math.isclose(as_trimesh(out).volume, -as_trimesh(inward).volume, rel_tol=1e-9)


def test_box_sdf():
    half = (0.43, 0.31, 0.57)
    res = (23, 31, 27)
    s = extract_isosurface(box_sdf(half), torch.tensor(CUBE, dtype=torch.float64), res)
    voxel = min(2 / (r - 1) for r in res)
    # Exact box distance of every vertex: on the faces linear interpolation is exact; edges and corners cut by
    # less than a voxel.
    assert box_sdf(half)(s.vertices).abs().max() < 0.5 * voxel
    flat = (s.vertices.abs() - torch.tensor(half, dtype=torch.float64)).abs().amin(dim=-1) < 1e-12
    assert flat.float().mean() > 0.5  # most vertices sit exactly on a side
    m = as_trimesh(s)
    assert m.is_watertight
    assert math.isclose(m.volume, 8 * math.prod(half), rel_tol=0.05)
    np.testing.assert_allclose(m.bounds, [[-h for h in half], half], atol=1e-12)


def test_off_centre_grid_with_non_cubic_resolution():
    bounds = torch.tensor([[0.2, -0.5, -1.3], [1.9, 0.7, 0.4]], dtype=torch.float64)
    res = (17, 29, 23)
    centre, radius = (1.0, 0.1, -0.4), 0.45
    seen = []

    def sdf(p):
        seen.append(p.clone())
        return sphere_sdf(centre, radius)(p)

    s = extract_isosurface(sdf, bounds, res)
    # The SDF was evaluated on exactly the grid: each axis from min to max corner inclusive.
    axes = [np.linspace(lo, hi, r) for lo, hi, r in zip(bounds[0].tolist(), bounds[1].tolist(), res, strict=True)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    np.testing.assert_allclose(torch.cat(seen).numpy(), grid, atol=1e-12)
    voxel = max((hi - lo) / (r - 1) for lo, hi, r in zip(bounds[0].tolist(), bounds[1].tolist(), res, strict=True))
    err = (s.vertices - torch.tensor(centre, dtype=torch.float64)).norm(dim=-1) - radius
    assert err.abs().max() < 0.05 * voxel
    m = as_trimesh(s)
    assert m.is_watertight and math.isclose(m.volume, 4 / 3 * math.pi * radius**3, rel_tol=0.02)


def test_chunking_gives_the_same_mesh():
    bounds = torch.tensor(CUBE)
    sizes = []

    def sdf(p):
        sizes.append(p.shape[0])
        return sphere_sdf((0.05, 0.0, -0.1), 0.7)(p)

    one = extract_isosurface(sdf, bounds, (21, 18, 19), chunk=10**6)
    assert sizes == [21 * 18 * 19]
    sizes.clear()
    many = extract_isosurface(sdf, bounds, (21, 18, 19), chunk=997)
    assert max(sizes) == 997 and sum(sizes) == 21 * 18 * 19
    assert torch.equal(one.vertices, many.vertices) and torch.equal(one.faces, many.faces)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-6), (torch.float64, 1e-13)])
def test_plane_vertices_are_exact(dtype, tol):
    # Linear interpolation of a linear SDF is exact: vertices on the plane to the grid's precision.
    normal = torch.tensor([0.3, 0.5, -0.2], dtype=dtype)
    s = extract_isosurface(lambda p: p @ normal - 0.1, torch.tensor(CUBE, dtype=dtype), (7, 9, 11))
    assert (s.vertices @ normal - 0.1).abs().max() < tol
    assert ((face_normals(s.vertices, s.faces) @ (normal / normal.norm())) > 1 - 1e-5).all()


def test_level_offsets_the_surface():
    s = extract_isosurface(sphere_sdf((0, 0, 0), 0.4), torch.tensor(CUBE, dtype=torch.float64), 30, level=0.15)
    assert (s.vertices.norm(dim=-1) - 0.55).abs().max() < 0.05 * 2 / 29


def test_zeros_on_grid_points_stay_watertight():
    # The sphere and the box pass exactly through grid points: coincident vertices are merged, no zero-area faces.
    bounds = torch.tensor(CUBE, dtype=torch.float64)
    for sdf in (sphere_sdf((0, 0, 0), 0.5), box_sdf((0.5, 0.5, 0.5)), sphere_sdf((0, 0, 0), 0.5 + 1e-9)):
        s = extract_isosurface(sdf, bounds, 9)
        assert as_trimesh(s).is_watertight and as_trimesh(s).volume > 0
        s.mesh()  # TriangleMesh refuses degenerate triangles


@settings(max_examples=10)
@given(
    st.tuples(*[st.floats(-0.3, 0.3)] * 3),
    st.floats(0.2, 0.6),
    st.tuples(*[st.integers(12, 24)] * 3),
)
def test_random_spheres_are_closed_and_accurate(centre, radius, res):
    s = extract_isosurface(sphere_sdf(centre, radius), torch.tensor(CUBE, dtype=torch.float64), res)
    voxel = max(2 / (r - 1) for r in res)
    # Linear interpolation along a voxel edge misses a circle of radius r by at most the sagitta h^2 / (8 r).
    bound = 0.1 * voxel + voxel**2 / (8 * radius)
    assert ((s.vertices - torch.tensor(centre, dtype=torch.float64)).norm(dim=-1) - radius).abs().max() < bound
    m = as_trimesh(s)
    assert m.is_watertight and m.volume > 0


def test_bad_inputs_are_named():
    sdf = sphere_sdf((0, 0, 0), 0.5)
    bounds = torch.tensor(CUBE)
    with raises_naming("bounds"):
        extract_isosurface(sdf, bounds.flip(0), 8)  # max corner first
    with raises_naming("bounds"):
        extract_isosurface(sdf, torch.tensor([[-1.0, 0.0, -1.0], [1.0, 0.0, 1.0]]), 8)  # flat
    with raises_naming("bounds"):
        extract_isosurface(sdf, bounds[:, :2], 8)
    with raises_naming("bounds"):
        extract_isosurface(sdf, torch.tensor([[-1.0, -1.0, math.nan], [1.0, 1.0, 1.0]]), 8)
    for res in (1, (8, 1, 8), (8, 8), 8.0, True):
        with raises_naming("resolution"):
            extract_isosurface(sdf, bounds, res)
    with raises_naming("chunk"):
        extract_isosurface(sdf, bounds, 8, chunk=0)
    with raises_naming("level"):
        extract_isosurface(sdf, bounds, 8, level=math.nan)
    with raises_naming("sdf_fn"):
        extract_isosurface(lambda p: p, bounds, 8)  # [N, 3], not [N]
    with raises_naming("sdf_fn"):
        extract_isosurface(lambda p: torch.where(p[:, 0] > 0.5, math.nan, sdf(p)), bounds, 8)
    with pytest.raises(ValueError, match=r"^sdf_fn: .*level 0\.0.*got values in \[0\.7") as error:
        extract_isosurface(lambda p: sdf(p) + 1.0, bounds, 8)  # no crossing
    assert "no surface" in str(error.value)
    with pytest.raises(ValueError, match=r"^sdf_fn: .*level 5\.0"):
        extract_isosurface(sdf, bounds, 8, level=5.0)
