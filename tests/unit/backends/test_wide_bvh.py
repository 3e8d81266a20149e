"""The CPU's 8-wide BVH (headfields.backends.cpu.wide_bvh: first ray hits, nearest faces, faces within reach) against
independent truth: its tree against a walk in Python over the faces under each node, its answers against brute force
over every triangle (float64, trimesh), against Warp's own queries, and against itself refit, chunked or bypassed;
what its native code takes from Warp (fails when Warp changes it), and Warp's queries when the walk is unavailable."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import warp as wp
from hypothesis import given, settings
from hypothesis import strategies as st
from mesh_cases import brute_closest_distance, lumpy_sphere, remeshed_blob

from headfields.backends.cpu import wide_bvh
from headfields.backends.cpu.wide_bvh import LEAF_WIDTH, NODE_WIDTH, WideBvh, build_topology
from headfields.geometry import (
    TriangleMesh,
    closest_point,
    closest_point_on_triangle,
    head_proxy,
    ray_intersect,
    sample_near_surface,
    uv_sphere,
    within_distance,
)
from headfields.geometry import mesh as mesh_module
from headfields.geometry.triangles import ray_triangle

EPS32 = torch.finfo(torch.float32).eps
REAL_THRESHOLD = mesh_module.WIDE_BUILD_QUERIES_PER_FACE


@pytest.fixture(autouse=True)
def build_at_first_query(monkeypatch):
    """Every mesh here builds its wide BVH at its first query (it would wait for 32 queries a face)."""
    monkeypatch.setattr(mesh_module, "WIDE_BUILD_QUERIES_PER_FACE", 0)


MESHES = {"head proxy": head_proxy, "lumpy sphere": lumpy_sphere, "re-meshed blob": remeshed_blob}


def faces_under(topology, node: int) -> list[int]:
    """Every face in the subtree of ``node``, by walking it in Python."""
    out = []
    for code, filled in zip(topology.child[node].tolist(), topology.filled[node].tolist(), strict=True):
        if filled:
            out += faces_under(topology, code) if code >= 0 else [f for f in topology.leaf_faces[-code - 1].tolist() if f >= 0]
    return out


BRUTE_CHUNK = 8  # rays a brute-force pass: the [rays, faces] temporaries stay in cache (3x faster than 64), same answers


def brute_first_hits(vertices: torch.Tensor, faces: torch.Tensor, origins: torch.Tensor, dirs: torch.Tensor, grows=(0.0,)):
    """Every ray against every triangle (Moller-Trumbore in float64): for each of ``grows``, the nearest t >= 0 and its
    face with each triangle grown (or, below 0, shrunk) by that much in barycentric units. One pass computes u, v, t
    for every grow (the grows differ only in the test of the barycentrics), coordinate by coordinate: no [rays, faces,
    3] temporaries."""
    tri = vertices.double()[faces]
    ax, ay, az = tri[:, 0].unbind(-1)
    e1x, e1y, e1z = (tri[:, 1] - tri[:, 0]).unbind(-1)
    e2x, e2y, e2z = (tri[:, 2] - tri[:, 0]).unbind(-1)
    parts: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in grows]
    for chunk_o, chunk_d in zip(origins.split(BRUTE_CHUNK), dirs.split(BRUTE_CHUNK), strict=True):
        ox, oy, oz = chunk_o.double()[:, None].unbind(-1)  # [rays, 1] each, against [faces]
        dx, dy, dz = chunk_d.double()[:, None].unbind(-1)
        px, py, pz = dy * e2z - dz * e2y, dz * e2x - dx * e2z, dx * e2y - dy * e2x  # p = d x e2
        det = e1x * px + e1y * py + e1z * pz
        sx, sy, sz = ox - ax, oy - ay, oz - az
        u = (sx * px + sy * py + sz * pz) / det
        qx, qy, qz = sy * e1z - sz * e1y, sz * e1x - sx * e1z, sx * e1y - sy * e1x  # q = s x e1
        v = (dx * qx + dy * qy + dz * qz) / det
        t = (e2x * qx + e2y * qy + e2z * qz) / det
        for part, grow in zip(parts, grows, strict=True):
            ok = (det != 0) & (u >= -grow) & (v >= -grow) & (1 - u - v >= -grow) & (t >= 0)
            part.append(torch.where(ok, t, torch.inf).min(dim=1))
    return [(torch.cat([t for t, _ in part]), torch.cat([f for _, f in part])) for part in parts]


def brute_first_hit(vertices: torch.Tensor, faces: torch.Tensor, origins: torch.Tensor, dirs: torch.Tensor):
    """Every ray's nearest t >= 0 against every triangle as it is, and its face (:func:`brute_first_hits`)."""
    return brute_first_hits(vertices, faces, origins, dirs)[0]


def clear_first_hits(vertices: torch.Tensor, faces: torch.Tensor, origins: torch.Tensor, dirs: torch.Tensor):
    """The float64 first hit (t, face) and which rays have one that no 1e-4 change of the triangles' borders alters:
    the others pass too close to an edge for float32 to be sure of the face, or of a hit at all."""
    (t, face), (t_grown, face_grown), (t_shrunk, face_shrunk) = brute_first_hits(
        vertices, faces, origins, dirs, (0.0, 1e-4, -1e-4)
    )
    misses = torch.isinf(t_grown) & torch.isinf(t_shrunk)
    clear = misses | ((face_grown == face) & (face_shrunk == face) & torch.isfinite(t_shrunk))
    return t, face, clear


def rays_at(mesh: TriangleMesh, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays from a sphere around the mesh aimed at points near its surface (most hit, some graze or miss)."""
    g = torch.Generator().manual_seed(seed)
    v = mesh.vertices[0]
    centre, radius = (v.amin(0) + v.amax(0)) / 2, float((v.amax(0) - v.amin(0)).norm())
    targets = sample_near_surface(mesh, n, thickness=0.05 * radius, seed=seed)
    origins = centre + 1.5 * radius * torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    return origins, targets - origins  # directions of every length


@pytest.mark.parametrize("name", list(MESHES))
def test_tree_holds_every_face_once_and_boxes_are_the_faces_bounds(name):
    vertices, faces = MESHES[name]()
    frames = torch.stack([vertices, vertices * 1.5 + 0.25])  # a second frame, moved: refit, not rebuilt
    mesh = TriangleMesh(frames, faces)
    bvh = mesh.wide_bvh()
    t = bvh.topology
    leaf_faces = t.leaf_faces[t.leaf_faces >= 0]
    assert sorted(leaf_faces.tolist()) == list(range(len(faces)))  # every face in exactly one leaf
    assert t.leaf_faces.shape[1] == LEAF_WIDTH and t.child.shape[1] == NODE_WIDTH
    assert torch.equal(torch.cat(t.levels).sort().values, torch.arange(t.child.shape[0]))
    for frame in range(2):
        points = mesh.warp_points()[frame].double()
        for node in range(t.child.shape[0]):
            for j in range(NODE_WIDTH):
                code = int(t.child[node, j])
                box = bvh.boxes[frame, node, :, j].double()
                if not t.filled[node, j]:
                    assert torch.all(box[:3] == math.inf) and torch.all(box[3:] == -math.inf)
                    continue
                if code >= 0:
                    assert code > node  # parents before children
                under = faces_under(t, code) if code >= 0 else [f for f in t.leaf_faces[-code - 1].tolist() if f >= 0]
                corners = points[faces[under]].reshape(-1, 3)
                assert torch.equal(box[:3], corners.amin(0)) and torch.equal(box[3:], corners.amax(0))
        # Leaf packs: corner a and edges b - a, c - a of each lane's face, by coordinate.
        packs = bvh.packs[frame][:, :9].reshape(-1, 3, 3, LEAF_WIDTH).permute(0, 3, 1, 2)  # [P, lane, a/e1/e2, xyz]
        tri = mesh.warp_points()[frame][faces[t.leaf_faces.long().clamp(min=0)]]
        real = t.leaf_faces >= 0
        assert torch.equal(packs[..., 0, :][real], tri[..., 0, :][real])
        assert torch.equal(packs[..., 1, :][real], (tri[..., 1, :] - tri[..., 0, :])[real])
        assert torch.all(packs[..., 1:, :][~real] == 0)  # padding lanes never hit
        lengths = (tri[..., 1:, :] - tri[..., :1, :]).abs().sum(-1)  # L1 lengths of the two edges
        scales = bvh.packs[frame][:, 9:].transpose(1, 2)  # [P, lane, sum / product]
        torch.testing.assert_close(scales[real], torch.stack([lengths.sum(-1), lengths.prod(-1)], -1)[real])


@pytest.mark.parametrize("name", list(MESHES))
def test_first_hits_match_brute_force(name):
    vertices, faces = MESHES[name]()
    mesh = TriangleMesh(vertices, faces)
    origins, dirs = rays_at(mesh, 600, seed=1)
    hit = ray_intersect(mesh, origins, dirs)
    t, face, clear = clear_first_hits(vertices, faces, origins, dirs)
    # Every ray hits or misses as float64 says (near an edge float64 decides), at float32's rounding of its t.
    assert torch.equal(hit.hit, torch.isfinite(t)) and hit.hit.sum() > 300
    torch.testing.assert_close(hit.t[hit.hit].double(), t[hit.hit], rtol=2 * EPS32, atol=0)
    # Rays this clear of every edge have one answer: the face, its barycentrics and normal.
    both = clear & hit.hit
    assert clear.float().mean() > 0.95
    assert torch.equal(hit.face[both], face[both])
    tri = vertices.double()[faces[face[both]]]
    _, bary = ray_triangle(origins[both].double(), dirs[both].double(), tri[:, 0], tri[:, 1], tri[:, 2])
    torch.testing.assert_close(hit.bary[both].double(), bary, rtol=0, atol=2 * EPS32)
    normal = torch.nn.functional.normalize(torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), dim=-1)
    torch.testing.assert_close(hit.normal[both].double(), normal, rtol=0, atol=4 * EPS32)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 200), scale=st.floats(1e-3, 1e3), shift=st.floats(-1e3, 1e3))
def test_first_hits_match_brute_force_at_any_scale_and_place(seed, n, scale, shift):
    vertices, faces = lumpy_sphere(12, 24, seed=seed % 7)
    vertices = vertices * scale + shift
    mesh = TriangleMesh(vertices, faces)
    origins, dirs = rays_at(mesh, n, seed=seed)
    hit = ray_intersect(mesh, origins, dirs)
    t, face, clear = clear_first_hits(vertices, faces, origins, dirs)
    assert torch.equal(hit.hit[clear], torch.isfinite(t)[clear])
    both = clear & torch.isfinite(t)
    assert torch.equal(hit.face[both], face[both])
    # Corners are rounded to float32 once more when moved next to the mesh's centre (TriangleMesh.to_warp_frame): an
    # ulp of the shifted mesh, over the ray's length, amplified by grazing (measured at worst: 1.2e-6).
    torch.testing.assert_close(hit.t[both].double(), t[both], rtol=1e-5, atol=0)


@pytest.mark.parametrize("name", list(MESHES))
def test_rays_aimed_at_edges_and_vertices_answer_as_float64_does(name):
    # Through a shared edge or vertex, float32 alone may miss every face there by a rounding (a crack) or find one
    # the ray passes by; lanes that close to an edge are decided in float64, so hits and misses are float64's
    # (measured: Warp's watertight float32 test differs from float64 on 6-8 of these 3,000 rays).
    vertices, faces = MESHES[name]()
    mesh = TriangleMesh(vertices, faces)
    g = torch.Generator().manual_seed(6)
    pick = torch.randint(0, len(faces), (3000,), generator=g)
    corner = torch.randint(0, 3, (3000,), generator=g)
    a, b = vertices.double()[faces[pick, corner]], vertices.double()[faces[pick, (corner + 1) % 3]]
    along = torch.rand(3000, 1, generator=g, dtype=torch.float64)
    along[:500] = 0.0  # at vertices
    targets = a + along * (b - a)
    centre = (vertices.amin(0) + vertices.amax(0)).double() / 2
    origins = centre + 4.0 * torch.nn.functional.normalize(torch.randn(3000, 3, generator=g, dtype=torch.float64), dim=-1)
    origins, dirs = origins.float(), (targets - origins).float()
    hit = ray_intersect(mesh, origins, dirs)
    t, _ = brute_first_hit(vertices, faces, origins, dirs)
    assert torch.equal(hit.hit, torch.isfinite(t)) and hit.hit.float().mean() > 0.95
    torch.testing.assert_close(hit.t.double()[hit.hit], t[hit.hit], rtol=2 * EPS32, atol=0)


def warp_query(monkeypatch, mesh: TriangleMesh, *args, **kwargs):
    """``ray_intersect`` through Warp's own BVH query (the CUDA path, and the CPU's for trees too deep)."""
    with monkeypatch.context() as m:
        m.setattr(TriangleMesh, "wide_bvh", lambda self, queries=None: None)
        return ray_intersect(mesh, *args, **kwargs)


@pytest.mark.parametrize("name", list(MESHES))
def test_first_hits_agree_with_warps_query(monkeypatch, name):
    vertices, faces = MESHES[name]()
    mesh = TriangleMesh(vertices, faces)
    origins, dirs = rays_at(mesh, 20_000, seed=2)
    ours, warps = ray_intersect(mesh, origins, dirs), warp_query(monkeypatch, mesh, origins, dirs)
    assert (ours.hit != warps.hit).sum() <= 2  # grazing rays at a silhouette (measured: 0 of 1M on three meshes)
    same = ours.hit & warps.hit & (ours.face == warps.face)
    assert same.sum() >= 0.999 * (ours.hit & warps.hit).sum()
    # Warp's answers carry its float32 arithmetic (measured against float64: relative t errors up to 2.5e-5, bary
    # up to 2e-3 on grazing hits); ours are float32's rounding of the float64 answer (test above).
    torch.testing.assert_close(ours.t[same], warps.t[same], rtol=1e-4, atol=0)
    bary_difference = (ours.bary - warps.bary).abs().amax(dim=1)[same]
    assert bary_difference.quantile(0.999) < 1e-4 and bary_difference.max() < 1e-2
    torch.testing.assert_close(ours.normal[same], warps.normal[same], rtol=0, atol=1e-5)
    assert torch.all(ours.t[~ours.hit] == math.inf) and torch.all(ours.bary[~ours.hit] == 0)


def test_multi_frame_mesh_refit_in_chunks_answers_as_each_frame_alone(monkeypatch):
    vertices, faces = lumpy_sphere(12, 24)
    g = torch.Generator().manual_seed(3)
    frames = torch.stack([vertices * (0.5 + i) + torch.randn(3, generator=g) for i in range(5)])
    monkeypatch.setattr(wide_bvh, "REFIT_FRAMES", 2)  # three refit chunks
    mesh = TriangleMesh(frames, faces)
    rays = [rays_at(TriangleMesh(frames[f], faces), 100, seed=f) for f in range(5)]
    origins, dirs = (torch.cat(r) for r in zip(*rays, strict=True))
    frame = torch.arange(5).repeat_interleave(100)
    hit = ray_intersect(mesh, origins, dirs, frame)
    for f in range(5):
        alone = ray_intersect(TriangleMesh(frames[f], faces), origins[frame == f], dirs[frame == f])
        assert torch.equal(hit.face[frame == f], alone.face)
        assert torch.equal(hit.t[frame == f], alone.t)
    assert hit.hit.float().mean() > 0.5
    mesh.update(frames.flip(0))  # moved vertices: the same tree, refit
    moved = ray_intersect(mesh, origins, dirs, frame)
    fresh = ray_intersect(TriangleMesh(frames.flip(0), faces), origins, dirs, frame)
    assert torch.equal(moved.face, fresh.face) and torch.equal(moved.t, fresh.t)


def test_a_tree_too_deep_for_the_stack_falls_back_to_warps_query(monkeypatch):
    vertices, faces = head_proxy()
    origins, dirs = rays_at(TriangleMesh(vertices, faces), 2_000, seed=5)
    expected = ray_intersect(TriangleMesh(vertices, faces), origins, dirs)
    monkeypatch.setattr(mesh_module, "MAX_DEPTH", 1)
    mesh = TriangleMesh(vertices, faces)
    assert mesh.wide_bvh() is None
    hit = ray_intersect(mesh, origins, dirs)
    assert (hit.hit != expected.hit).sum() == 0
    same = hit.face == expected.face
    assert same.float().mean() > 0.999
    torch.testing.assert_close(hit.t[same & hit.hit], expected.t[same & expected.hit], rtol=1e-5, atol=1e-6)


def test_tiny_and_signed_zero_direction_components():
    vertices, faces = uv_sphere(16, 32)
    mesh = TriangleMesh(vertices, faces)
    dirs = torch.tensor([[0.0, 0.0, -1.0], [-0.0, 1e-30, -1.0], [1e-25, -0.0, 1.0], [-1.0, -0.0, 0.0]])
    origins = torch.tensor([[0.01, 0.02, 3.0], [0.01, 0.02, 3.0], [0.01, 0.02, -3.0], [3.0, 0.01, 0.02]])
    hit = ray_intersect(mesh, origins, dirs)
    t, face = brute_first_hit(vertices, faces, origins, dirs)
    assert hit.hit.all()
    assert torch.equal(hit.face, face)
    torch.testing.assert_close(hit.t.double(), t, rtol=2 * EPS32, atol=0)


def test_a_single_triangle_and_a_handful():
    for count in (1, 5, 9):
        angles = torch.arange(count, dtype=torch.float32) * 0.3
        a = torch.stack([angles, torch.zeros(count), torch.zeros(count)], -1)
        vertices = torch.cat([a, a + torch.tensor([0.2, 0.0, 0.0]), a + torch.tensor([0.0, 1.0, 0.0])])
        faces = torch.arange(3 * count).reshape(3, count).T.contiguous()
        mesh = TriangleMesh(vertices, faces)
        origins = a + torch.tensor([0.05, 0.1, 1.0])
        hit = ray_intersect(mesh, origins, torch.tensor([[0.0, 0.0, -2.0]]).expand(count, 3))
        assert torch.equal(hit.face, torch.arange(count)) and torch.allclose(hit.t, torch.full((count,), 0.5))
        torch.testing.assert_close(hit.bary, torch.tensor([[0.65, 0.25, 0.1]]).expand(count, 3), rtol=0, atol=1e-6)


def test_topology_is_built_once_for_every_frame():
    vertices, faces = head_proxy()
    mesh = TriangleMesh(torch.stack([vertices, vertices * 2]), faces)
    first = mesh.wide_bvh()
    mesh.update(mesh.vertices * 0.5)
    assert mesh.wide_bvh() is first  # refit in place
    assert isinstance(first, WideBvh) and first.boxes.shape[0] == 2


def test_topology_of_a_mesh_whose_centroids_coincide():
    # Four triangles around one centre (two crossing pairs): no split separates their centroids, so halves do.
    tri = torch.tensor(
        [
            [[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [0.0, 2.0, 0.0]],
            [[-1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, -2.0, 0.0]],
            [[0.0, -1.0, -1.0], [0.0, -1.0, 1.0], [0.0, 2.0, 0.0]],
            [[0.0, 1.0, -1.0], [0.0, 1.0, 1.0], [0.0, -2.0, 0.0]],
        ]
    ).repeat(3, 1, 1)
    topology = build_topology(tri)
    assert sorted(topology.leaf_faces[topology.leaf_faces >= 0].tolist()) == list(range(12))
    assert np.all((topology.leaf_faces >= 0).sum(1).numpy() <= LEAF_WIDTH)


def shell_points(mesh: TriangleMesh, n: int, seed: int) -> torch.Tensor:
    """Points near the surface, in a wide shell and far off, shuffled."""
    g = torch.Generator().manual_seed(seed)
    v = mesh.vertices[0]
    size = float((v.amax(0) - v.amin(0)).norm())
    near = sample_near_surface(mesh, n // 2, thickness=0.02 * size, seed=seed)
    wide = sample_near_surface(mesh, n // 4, thickness=0.5 * size, seed=seed + 1)
    far = torch.nn.functional.normalize(torch.randn(n - n // 2 - n // 4, 3, generator=g), dim=-1) * 10 * size
    points = torch.cat([near, wide, far])
    return points[torch.randperm(n, generator=g)]


@pytest.mark.parametrize("name", list(MESHES))
def test_nearest_faces_match_brute_force(name):
    vertices, faces = MESHES[name]()
    mesh = TriangleMesh(vertices, faces)
    points = shell_points(mesh, 400, seed=7)
    q = closest_point(mesh, points, signed=False)
    truth = torch.from_numpy(brute_closest_distance(vertices, faces, points))
    assert q.hit.all() and torch.all(q.sign == 0)
    torch.testing.assert_close(q.distance.double(), truth, rtol=4 * EPS32, atol=4 * EPS32 * float(truth.max()))
    # The answer is the reported face's own closest point (float64, then rounded), and its distance.
    corners = vertices.double()[faces[q.face]]
    point, bary = closest_point_on_triangle(points.double(), corners[:, 0], corners[:, 1], corners[:, 2])
    torch.testing.assert_close(q.point.double(), point, rtol=0, atol=2 * EPS32 * float(vertices.abs().max()))
    torch.testing.assert_close(q.bary.double(), bary, rtol=0, atol=1e-6)
    torch.testing.assert_close(q.distance, (points - q.point).norm(dim=-1))


@pytest.mark.parametrize("name", list(MESHES))
def test_nearest_faces_within_a_radius_and_within_distance_agree_with_brute_force(name):
    vertices, faces = MESHES[name]()
    mesh = TriangleMesh(vertices, faces)
    points = shell_points(mesh, 400, seed=8)
    truth = torch.from_numpy(brute_closest_distance(vertices, faces, points))
    radius = float(truth.median())
    q = closest_point(mesh, points, signed=False, max_distance=radius)
    near = within_distance(mesh, points, radius)
    clear = (truth - radius).abs() > 1e-6 * radius  # float32 decides points this close to the radius either way
    assert torch.equal(q.hit[clear], (truth <= radius)[clear]) and torch.equal(near[clear], (truth <= radius)[clear])
    assert torch.all(q.distance[q.hit] <= radius) and torch.all(q.face[~q.hit] == -1)
    assert torch.all(torch.isinf(q.distance[~q.hit])) and torch.all(q.point[~q.hit] == 0)
    assert 100 < int(q.hit.sum()) < 300


@pytest.mark.parametrize("name", list(MESHES))
def test_nearest_faces_agree_with_warps_query(monkeypatch, name):
    vertices, faces = MESHES[name]()
    mesh = TriangleMesh(torch.stack([vertices, 1.3 * vertices + 0.1]), faces)
    points = shell_points(TriangleMesh(vertices, faces), 20_000, seed=9)
    frame = torch.randint(0, 2, (20_000,), generator=torch.Generator().manual_seed(9))
    points = torch.where(frame[:, None] == 1, 1.3 * points + 0.1, points)
    ours = closest_point(mesh, points, frame, signed=False)
    near = within_distance(mesh, points, 0.05, frame)
    with monkeypatch.context() as m:
        m.setattr(TriangleMesh, "wide_bvh", lambda self, queries=None: None)
        warps = closest_point(mesh, points, frame, signed=False)
        warps_near = within_distance(mesh, points, 0.05, frame)
    torch.testing.assert_close(ours.distance, warps.distance, rtol=1e-6, atol=1e-6)
    # Faces, and points, may differ where the closest point is an edge or vertex several faces share, or where two
    # points lie at one distance (across a concave crease, or across the head from far away): the distance is one.
    # Each answer is its own face's closest point (test above).
    assert (ours.face == warps.face).float().mean() > 0.5
    assert (near != warps_near).sum() <= 2 and near.any() and not near.all()


def test_built_or_refit_under_inference_mode_then_used_outside_it():
    # As load_run's renders do: the tree built under torch.inference_mode, the mesh moved outside it (and back).
    vertices, faces = head_proxy()
    origins, dirs = torch.full((4, 3), 3.0), -torch.ones(4, 3)
    mesh = TriangleMesh(vertices, faces)
    with torch.inference_mode():
        ray_intersect(mesh, origins, dirs)
    mesh.update(vertices * 1.1)
    with torch.inference_mode():
        mesh.update(vertices * 1.2)
        inside = ray_intersect(mesh, origins, dirs)
    outside = ray_intersect(mesh, origins, dirs)
    fresh = ray_intersect(TriangleMesh(vertices * 1.2, faces), origins, dirs)
    assert torch.equal(inside.t, fresh.t) and torch.equal(outside.t, fresh.t) and fresh.hit.all()


def test_the_wide_bvh_is_built_once_queries_add_up_to_32_a_face(monkeypatch):
    monkeypatch.setattr(mesh_module, "WIDE_BUILD_QUERIES_PER_FACE", REAL_THRESHOLD)
    vertices, faces = lumpy_sphere(12, 24)  # 528 faces: built at 16,896 queries
    mesh = TriangleMesh(vertices, faces)
    origins, dirs = rays_at(mesh, 8000, seed=10)
    first = ray_intersect(mesh, origins, dirs)  # 8,000: Warp's BVH answers
    assert mesh._wide_bvh is None
    closest_point(mesh, origins, signed=False)  # 16,000
    assert mesh._wide_bvh is None
    again = ray_intersect(mesh, origins, dirs)  # 24,000: built, and it answers
    assert isinstance(mesh._wide_bvh, WideBvh)
    assert torch.equal(first.hit, again.hit) and (first.face == again.face).float().mean() > 0.99
    torch.testing.assert_close(first.t, again.t, rtol=1e-4, atol=0)
    assert mesh.wide_bvh() is mesh._wide_bvh  # an explicit call builds (or returns) it at once


# ---------------------------------------------------------------- what the walk takes from Warp, and its fallback


def test_warp_builds_the_native_walk_for_the_cpu(availability):
    """Fails, not skips, when a Warp release no longer builds the snippet: its CPU compiler (clang's vector extensions
    and builtins), its runtime's C++ names (wp::vec3, an array's .data, a struct's fields) or wp.func_native changed.
    The library would still answer, through Warp's queries at half the speed, with a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert wide_bvh.available(), f"Warp {wp.__version__} no longer builds headfields.backends.cpu.wide_bvh for the CPU"


def test_warp_compiles_cpu_code_for_this_cpu_by_default():
    """The walk tests 8 boxes at once in AVX registers because Warp compiles for the host CPU (-march=native) unless a
    user chooses otherwise: a Warp whose default targets a generic CPU would halve it (SSE2 lanes) without an error."""
    default = wp.config.cpu_compiler_flags
    assert default is None or "-march=native" in default.split(), f"Warp {wp.__version__}'s CPU flags: {default!r}"


def test_a_failed_build_warns_and_leaves_the_queries_to_warp(availability, monkeypatch):
    def failing(*args, **kwargs):
        raise Exception("CPU kernel build failed with error code -1")  # what Warp 1.19 raises

    monkeypatch.setattr(wp, "load_module", failing)
    with pytest.warns(RuntimeWarning, match="could not build the wide BVH's CPU walk"):
        assert not wide_bvh.available()


def test_the_switch_leaves_the_queries_to_warp_without_a_word(availability, monkeypatch):
    monkeypatch.setenv(wide_bvh.WIDE_BVH_SWITCH, "0")
    monkeypatch.setattr(wp, "load_module", lambda *args, **kwargs: pytest.fail("built although switched off"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not wide_bvh.available()


def test_without_the_walk_meshes_answer_through_warps_queries(availability, monkeypatch):
    """TriangleMesh.wide_bvh asks wide_bvh.available(): none where it is False, and the same answers from Warp."""
    vertices, faces = head_proxy()
    origins, dirs = rays_at(TriangleMesh(vertices, faces), 2_000, seed=6)
    expected = ray_intersect(TriangleMesh(vertices, faces), origins, dirs)
    monkeypatch.setenv(wide_bvh.WIDE_BVH_SWITCH, "0")
    wide_bvh.available.cache_clear()
    mesh = TriangleMesh(vertices, faces)
    assert mesh.wide_bvh() is None
    hit = ray_intersect(mesh, origins, dirs)
    assert (hit.hit != expected.hit).sum() == 0 and (hit.face == expected.face).float().mean() > 0.999


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 40), seed=st.integers(0, 2**16), grid=st.booleans())
def test_the_sah_split_is_the_cheapest_of_every_split_by_brute_force(n, seed, grid):
    """Every split position of every axis's stable centroid order, costed box by box: the split the sweep returns
    is the first cheapest (first axis, then first position), with its halves' box areas; ties on a coarse grid of
    centroids, too."""
    from headfields.backends.cpu.wide_bvh import _sah_split

    rng = np.random.default_rng(seed)
    tri = rng.random((n, 3, 3))
    if grid:  # many equal centroids, equal costs
        tri = np.round(tri * 2) / 2
    low, high = tri.min(axis=1), tri.max(axis=1)
    centre = (low + high) / 2
    ids = rng.permutation(n)

    def area(part):
        d = np.maximum(high[part].max(0) - low[part].min(0), 0.0)
        return float(d[0] * d[1] + d[1] * d[2] + d[2] * d[0])

    best = None
    for axis in range(3):
        order = ids[np.argsort(centre[ids, axis], kind="stable")]
        for k in range(1, n):
            cost = area(order[:k]) * k + area(order[k:]) * (n - k)
            if best is None or cost < best[0]:
                best = (cost, order[:k], order[k:])
    (left, left_area), (right, right_area) = _sah_split(ids, low, high, centre)
    assert np.array_equal(left, best[1]) and np.array_equal(right, best[2])
    assert left_area == pytest.approx(area(left), rel=1e-12) and right_area == pytest.approx(area(right), rel=1e-12)
