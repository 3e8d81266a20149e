"""Equally near faces (geometry/ties.py): where a point's closest point on a mesh is a vertex or an edge, every search
(Warp's signed and unsigned queries, the CPU's wide BVH, the triangle-frame deformer's kernel and its torch reference)
reports the face of the lowest id among those that share it. Truth: points built to have a vertex or an edge as
their closest feature on a convex mesh, and the faces that share it listed from the faces alone."""

import pytest
import torch
import torch.nn.functional as F

from headfields.deformers import TriangleDeformerConfig, TriangleFrameDeformer, triangle_kernels
from headfields.geometry import TriangleMesh, closest_point, uv_sphere
from headfields.geometry import mesh as mesh_module
from headfields.geometry.ties import tie_tables

from hand_heads import make_head


def test_tie_tables_list_the_lowest_face_at_each_vertex_and_edge():
    g = torch.Generator().manual_seed(0)
    faces = torch.randint(0, 12, (40, 3), generator=g)
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    tables = tie_tables(faces, 14)  # vertices 12 and 13 in no face
    for v in range(14):
        having = [i for i, f in enumerate(faces.tolist()) if v in f]
        assert tables.vertex_face[v] == (min(having) if having else torch.iinfo(torch.int32).max)
    for i, f in enumerate(faces.tolist()):
        for k in range(3):
            edge = {f[(k + 1) % 3], f[(k + 2) % 3]}
            assert tables.edge_face[i, k] == min(j for j, h in enumerate(faces.tolist()) if edge <= set(h))
    assert tie_tables(faces, 14) is tables  # kept for the tensor


def tied_points(dtype, device):
    """A UV sphere (convex, its vertices on the sphere) and points off it whose closest feature is a vertex (along
    the vertex's radius, which its normal cone holds) or an edge's midpoint (along the bisector of its two faces'
    normals), with the lowest id of the faces that share the feature."""
    v, f = uv_sphere(8, 12, dtype=dtype)
    tri = v[f]
    normals = F.normalize(torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), dim=-1)
    faces = f.tolist()
    points, expected = [], []
    for vertex in range(v.shape[0]):
        having = [i for i, face in enumerate(faces) if vertex in face]
        for t in (0.01, 0.2):
            points.append(v[vertex] * (1 + t))
            expected.append(min(having))
    seen = set()
    for face in faces:
        for k in range(3):
            a, b = sorted((face[(k + 1) % 3], face[(k + 2) % 3]))
            if (a, b) in seen:
                continue
            seen.add((a, b))
            sharing = [j for j, h in enumerate(faces) if a in h and b in h]
            if len(sharing) != 2 or torch.allclose(normals[sharing[0]], normals[sharing[1]]):
                continue  # (a flat pair: no single closest feature along the bisector)
            direction = F.normalize(normals[sharing[0]] + normals[sharing[1]], dim=-1)
            points.append((v[a] + v[b]) / 2 + 0.05 * direction)
            expected.append(min(sharing))
    return v.to(device), f.to(device), torch.stack(points).to(device), torch.tensor(expected, device=device)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("wide", [False, True])
def test_every_search_reports_the_lowest_of_equally_near_faces(device, monkeypatch, dtype, wide):
    monkeypatch.setattr(mesh_module, "WIDE_BUILD_QUERIES_PER_FACE", 0 if wide else 10**9)  # the CPU's two searches
    v, f, x, expected = tied_points(dtype, device)
    assert len(x) > 150
    mesh = TriangleMesh(v[None], f)
    for signed in (False, True):
        q = closest_point(mesh, x, signed=signed)
        assert torch.equal(q.face, expected), signed
        tri = v[f[expected]]
        torch.testing.assert_close(q.point, (q.bary[:, :, None] * tri).sum(dim=1), atol=1e-6, rtol=0)
    head = make_head(v[None], v, f)
    dirs = F.normalize(x, dim=-1)
    for backend in ("warp", "torch"):
        out = TriangleFrameDeformer(TriangleDeformerConfig(backend=backend))(x, head, 0, dirs)
        assert torch.equal(out.face, expected), backend


def test_a_rendered_frame_is_the_same_before_and_after_the_wide_bvh(monkeypatch):
    """A mesh answers with Warp's search until it has been queried enough, then with the wide BVH's: the deformer's
    faces, and so the image, are the same either way (they differed wherever the closest point was a shared edge or
    vertex)."""
    v, f, x, expected = tied_points(torch.float32, "cpu")
    g = torch.Generator().manual_seed(1)
    x = torch.cat([x, v[torch.randint(v.shape[0], (2000,), generator=g)] * (1 + 0.3 * torch.rand(2000, 1, generator=g))])
    walks = []
    nearest_faces = triangle_kernels.nearest_faces
    monkeypatch.setattr(triangle_kernels, "nearest_faces", lambda *a: (walks.append(len(a[1])), nearest_faces(*a)))
    faces = []
    for threshold in (10**9, 0):
        monkeypatch.setattr(mesh_module, "WIDE_BUILD_QUERIES_PER_FACE", threshold)
        faces.append(TriangleFrameDeformer()(x, make_head(v[None], v, f), 0, None).face)
    assert walks == [len(x)]  # Warp's search first, then the wide BVH's walk
    assert torch.equal(faces[0], faces[1]) and torch.equal(faces[0][: len(expected)], expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_point_a_hair_inside_a_face_keeps_it(device, dtype):
    """A point on the mesh 1e-6 of an edge inside a face, or just off it: the face across the edge is farther than
    the tie's tolerance, so the face it lies on is reported (the nearest by far, at a distance of 0 or about 0)."""
    v, f = uv_sphere(8, 12, dtype=dtype)
    tri = v[f]
    weights = torch.tensor([0.5 - 5e-7, 0.5 - 5e-7, 1e-6], dtype=dtype)  # next to the edge opposite corner 2
    on = (weights[None, :, None] * tri).sum(dim=1)
    normals = F.normalize(torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), dim=-1)
    for lift in (0.0, 1e-9):
        x = (on + lift * normals).to(device)
        q = closest_point(TriangleMesh(v[None].to(device), f.to(device)), x, signed=False)
        assert torch.equal(q.face.cpu(), torch.arange(f.shape[0])) and (q.distance < 1e-6).all()
