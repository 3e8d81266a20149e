"""Per-triangle math: INSTA frames, adjacency, and the torch point-triangle projection against trimesh."""

import math

import numpy as np
import pytest
import torch
import trimesh
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from headfields.geometry import (
    closest_point_on_triangle,
    face_adjacency,
    face_areas,
    face_normals,
    gather_vertex_rows,
    head_proxy,
    triangle_frames,
    uv_sphere,
    vertex_normals,
)


def random_rigid(seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=dtype))
    q = q * torch.sign(torch.det(q))  # a rotation, not a reflection
    return q, torch.randn(3, generator=g, dtype=dtype)


def test_triangle_frames_are_right_handed_orthonormal_with_the_face_normal():
    v, f = head_proxy(dtype=torch.float64)
    frames = triangle_frames(v, f)
    r = frames.rotation
    torch.testing.assert_close(r.transpose(-1, -2) @ r, torch.eye(3, dtype=torch.float64).expand_as(r))
    torch.testing.assert_close(torch.det(r), torch.ones(len(f), dtype=torch.float64))
    torch.testing.assert_close(r[..., 2], face_normals(v, f))
    torch.testing.assert_close(frames.origin, v[f[:, 0]])
    # INSTA's construction makes the tangent anti-parallel to the first edge: t = -(b - a)/|b - a|.
    e1 = v[f[:, 1]] - v[f[:, 0]]
    torch.testing.assert_close(r[..., 0], -e1 / e1.norm(dim=-1, keepdim=True))


def test_local_coordinates_are_invariant_under_rigid_motion():
    v, f = head_proxy(dtype=torch.float64)
    rot, shift = random_rigid(0)
    x = torch.randn(len(f), 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    local = triangle_frames(v, f).to_local(x)
    moved = triangle_frames(v @ rot.T + shift, f)
    torch.testing.assert_close(moved.to_local(x @ rot.T + shift), local)
    torch.testing.assert_close(moved.to_world(local), x @ rot.T + shift)


def test_frames_batch_over_leading_dims():
    v, f = uv_sphere(5, 8, dtype=torch.float64)
    batch = torch.stack([v, 2 * v])
    frames = triangle_frames(batch, f)
    assert frames.rotation.shape == (2, len(f), 3, 3)
    torch.testing.assert_close(frames.rotation[1], triangle_frames(2 * v, f).rotation)


def brute_force_adjacency(faces: torch.Tensor) -> list[list[int]]:
    owners: dict[tuple[int, int], list[int]] = {}
    for i, face in enumerate(faces.tolist()):
        for j in range(3):
            owners.setdefault(tuple(sorted((face[j], face[(j + 1) % 3]))), []).append(i)
    return [
        [next((o for o in owners[tuple(sorted((face[j], face[(j + 1) % 3])))] if o != i), -1) for j in range(3)]
        for i, face in enumerate(faces.tolist())
    ]


def test_face_adjacency_matches_brute_force_on_closed_and_open_meshes():
    _, f = uv_sphere(7, 9)
    adjacency = face_adjacency(f)
    assert adjacency.tolist() == brute_force_adjacency(f)
    assert (adjacency >= 0).all()  # closed
    open_faces = f[: 9 + 2 * 9 * 2]  # the top cap and two bands: a cup
    open_adjacency = face_adjacency(open_faces)
    assert open_adjacency.tolist() == brute_force_adjacency(open_faces)
    assert (open_adjacency == -1).sum() == 9  # the cut runs along one ring of 9 edges


def test_face_adjacency_is_symmetric():
    _, f = head_proxy()
    adjacency = face_adjacency(f)
    faces = torch.arange(len(f))[:, None].expand(-1, 3)
    back = adjacency[adjacency]  # neighbours of the neighbour
    assert (back == faces[:, :, None]).any(dim=-1).all()


def test_face_areas_of_a_sphere_approach_four_pi():
    v, f = uv_sphere(128, 256, dtype=torch.float64)
    # An inscribed polyhedron: a little less than the sphere's area.
    assert 0 < 4 * math.pi - face_areas(v, f).sum().item() < 2e-3


coords = st.floats(-1, 1, width=32)


@given(arrays(np.float64, st.tuples(st.integers(1, 30), st.just(4), st.just(3)), elements=coords))
def test_closest_point_on_triangle_matches_trimesh(data):
    tri, p = data[:, :3], data[:, 3]
    e = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    tri, p = tri[np.linalg.norm(e, axis=-1) > 1e-3], p[np.linalg.norm(e, axis=-1) > 1e-3]
    t = torch.tensor(tri)
    point, bary = closest_point_on_triangle(torch.tensor(p), t[:, 0], t[:, 1], t[:, 2])
    expected = trimesh.triangles.closest_point(tri, p)
    np.testing.assert_allclose(point.numpy(), expected, atol=1e-9)
    np.testing.assert_allclose(bary.sum(-1).numpy(), 1.0, atol=1e-12)
    assert (bary >= -1e-12).all()


def test_vertex_normals_match_trimesh_area_weighting():
    vertices, faces = head_proxy()
    ours = vertex_normals(vertices.double(), faces)
    mesh = trimesh.Trimesh(vertices.numpy(), faces.numpy(), process=False)
    # trimesh's mean of the face normals around a vertex, each scaled by its face's area first.
    area_weighted = trimesh.geometry.mean_vertex_normals(len(vertices), mesh.faces, mesh.face_normals * mesh.area_faces[:, None])
    assert np.allclose(ours.numpy(), area_weighted, atol=1e-6)


def test_vertex_normals_of_a_sphere_are_radial_and_batch():
    vertices, faces = uv_sphere()
    normals = vertex_normals(torch.stack([vertices, 2 * vertices]), faces)
    radial = torch.nn.functional.normalize(vertices, dim=-1)
    assert torch.allclose(normals[1], normals[0], atol=1e-6)  # scale-invariant
    assert (normals[0] * radial).sum(-1).min() > 0.999


@pytest.mark.parametrize("fn", [triangle_frames, face_adjacency])
def test_bad_faces_raise(fn):
    v, f = uv_sphere(4, 6)
    with pytest.raises((ValueError, TypeError), match="faces"):
        fn(v, f.float()) if fn is triangle_frames else fn(f.float())


def test_triangle_frames_refuse_degenerate_triangles():
    v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [2, 0, 0]])
    with pytest.raises(ValueError, match="zero area"):
        triangle_frames(v, torch.tensor([[0, 1, 2], [0, 1, 3]]))  # the second is collinear


def test_face_adjacency_refuses_negative_indices():
    with pytest.raises(ValueError, match="faces"):
        face_adjacency(torch.tensor([[0, 1, 2], [-1, 2, 1]]))


@pytest.mark.parametrize("fn", [face_normals, face_areas])
def test_face_normals_and_areas_check_their_input(fn):
    v, f = uv_sphere(4, 6)
    with pytest.raises((ValueError, TypeError), match="faces"):
        fn(v, f + len(v))
    with pytest.raises((ValueError, TypeError), match="vertices"):
        fn(v[:, :2], f)


def test_gather_vertex_rows_is_advanced_indexing_with_its_gradient():
    """``gather_vertex_rows(values, frame, index)`` equals ``values[frame[:, None], index]``, and so do the
    gradients it sends back (repeated rows included), in float64."""
    g = torch.Generator().manual_seed(0)
    values = torch.randn(3, 7, 5, dtype=torch.float64, generator=g, requires_grad=True)
    frame, index = torch.tensor([2, 0, 2, 1]), torch.tensor([[6, 0], [3, 3], [6, 1], [0, 6]])
    upstream = torch.randn(4, 2, 5, dtype=torch.float64, generator=g)
    (ours,) = torch.autograd.grad((gather_vertex_rows(values, frame, index) * upstream).sum(), values)
    (theirs,) = torch.autograd.grad((values[frame[:, None], index] * upstream).sum(), values)
    torch.testing.assert_close(gather_vertex_rows(values, frame, index), values[frame[:, None], index], rtol=0, atol=0)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-15)
    assert torch.autograd.gradgradcheck(lambda v: gather_vertex_rows(v, frame, index), (values,))
