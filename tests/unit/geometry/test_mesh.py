"""TriangleMesh: input checks with clear errors, per-frame BVHs refit in place."""

import math
import os
import signal

import numpy as np
import pytest
import torch
import trimesh
from hypothesis import given
from hypothesis import strategies as st

import headfields.backends.cpu.wide_bvh as wide_bvh
import headfields.geometry.mesh as mesh_module
from headfields.geometry import (
    TriangleMesh,
    box,
    closest_point,
    head_proxy,
    knn_vertices,
    ray_intersect,
    sample_near_surface,
    uv_sphere,
)

ERRORS = (ValueError, TypeError)  # ours, or the jaxtyping checker's (a TypeError) where it fires first


def test_single_frame_vertices_get_a_frame_axis():
    v, f = box()
    mesh = TriangleMesh(v, f)
    assert (mesh.num_frames, mesh.num_vertices, mesh.num_faces) == (1, 8, 12)
    assert mesh.vertices.shape == (1, 8, 3) and mesh.faces.dtype == torch.long
    assert "frames=1" in repr(mesh)


@pytest.mark.parametrize(
    "vertices, faces, match",
    [
        (torch.zeros(8, 2), box()[1], "vertices"),  # wrong shape
        (torch.zeros(8, 3, dtype=torch.int64), box()[1], "vertices"),  # wrong dtype
        (box()[0].masked_fill(torch.eye(8, 3, dtype=torch.bool), math.nan), box()[1], "vertices"),  # NaN
        (torch.zeros(1, 0, 3), torch.zeros(0, 3, dtype=torch.long), "vertices"),  # no vertex
        (box()[0], torch.zeros(0, 3, dtype=torch.long), "faces"),  # no triangle
        (box()[0], box()[1].float(), "faces"),  # wrong dtype
        (box()[0], box()[1][:, :2], "faces"),  # wrong shape
        (box()[0], box()[1] + 1, "faces"),  # index 8 out of range
        (box()[0], box()[1] - 1, "faces"),  # index -1 out of range
        (box()[0], torch.tensor([[0, 1, 1]]), "zero area"),  # degenerate: repeated vertex
        (torch.tensor([[0.0, 0, 0], [1, 0, 0], [2, 0, 0]]), torch.tensor([[0, 1, 2]]), "zero area"),  # collinear
        (box()[0], box()[1].to("meta"), "faces"),  # other device
    ],
)
def test_bad_mesh_input_raises_naming_the_argument(vertices, faces, match):
    with pytest.raises(ERRORS, match=match):
        TriangleMesh(vertices, faces)


def test_bad_query_input_raises_naming_the_argument():
    v, f = box()
    mesh = TriangleMesh(torch.stack([v, v * 2]), f)
    p = torch.zeros(4, 3)
    with pytest.raises(ERRORS, match="frame"):
        closest_point(mesh, p)  # two frames: frame is required
    with pytest.raises(ERRORS, match="frame"):
        closest_point(mesh, p, frame=2)
    with pytest.raises(ERRORS, match="frame"):
        closest_point(mesh, p, frame=torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ERRORS, match="frame"):
        closest_point(mesh, p, frame=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ERRORS, match="points"):
        closest_point(mesh, torch.tensor([[0.0, math.nan, 0.0]]), frame=0)
    with pytest.raises(ERRORS, match="points"):
        closest_point(mesh, torch.zeros(4, 3, dtype=torch.long), frame=0)
    with pytest.raises(ERRORS, match="points"):
        closest_point(mesh, torch.zeros(4, 3, device="meta"), frame=0)
    with pytest.raises(ERRORS, match="max_distance"):
        closest_point(mesh, p, frame=0, max_distance=-1.0)


def test_update_checks_its_input():
    v, f = box()
    mesh = TriangleMesh(v, f)
    with pytest.raises(ERRORS, match="vertices"):
        mesh.update(torch.zeros(2, 8, 3))  # frame count differs
    with pytest.raises(ERRORS, match="vertices"):
        mesh.update(v.masked_fill(torch.eye(8, 3, dtype=torch.bool), math.inf))
    with pytest.raises(ERRORS, match="zero area"):
        mesh.update(v * torch.tensor([1.0, 1.0, 0.0]))  # flattened box: the z-faces collapse


def test_refit_answers_like_a_fresh_build_without_rebuilding(device):
    v, f = head_proxy(device=device)
    mesh = TriangleMesh(v, f)
    p = sample_near_surface(mesh, 2000, thickness=0.4)
    dirs = torch.nn.functional.normalize(-p, dim=-1)
    closest_point(mesh, p)  # builds the BVHs on the original vertices
    knn_vertices(mesh, p, 4)
    ids = (mesh.warp_mesh_ids().numpy().tolist(), mesh.warp_vertex_bvh_ids().numpy().tolist())

    angle = torch.tensor(0.4)
    c, s = torch.cos(angle), torch.sin(angle)
    rotation = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], device=device)
    moved = (v * torch.tensor([1.1, 0.9, 1.0], device=device)) @ rotation.T + 0.2
    mesh.update(moved)
    fresh = TriangleMesh(moved, f)

    assert (mesh.warp_mesh_ids().numpy().tolist(), mesh.warp_vertex_bvh_ids().numpy().tolist()) == ids
    a, b = closest_point(mesh, p), closest_point(fresh, p)
    torch.testing.assert_close(a.distance, b.distance)
    # Points agree except where two are equally close (deep inside, near the medial axis).
    assert ((a.point - b.point).norm(dim=-1) < 1e-5).float().mean() > 0.99
    ra, rb = ray_intersect(mesh, p * 3, dirs), ray_intersect(fresh, p * 3, dirs)
    assert torch.equal(ra.hit, rb.hit)
    torch.testing.assert_close(ra.t[ra.hit], rb.t[rb.hit])
    torch.testing.assert_close(knn_vertices(mesh, p, 4).distance, knn_vertices(fresh, p, 4).distance)


def test_vertices_keep_their_autograd_graph():
    v, f = box(dtype=torch.float64)
    scale = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    mesh = TriangleMesh(v * scale, f)
    q = closest_point(mesh, torch.tensor([[0.0, 0.0, 2.0]], dtype=torch.float64))
    (grad,) = torch.autograd.grad(q.distance.sum(), scale)
    # distance = 2 - 0.5 * scale for a point above the top face
    torch.testing.assert_close(grad, torch.tensor(-0.5, dtype=torch.float64))


@given(
    scale=st.tuples(*[st.floats(0.5, 2.0)] * 3),
    jitter_seed=st.integers(0, 2**31 - 1),
    point_seed=st.integers(0, 2**31 - 1),
)
def test_refit_equals_fresh_build_for_any_deformation(scale, jitter_seed, point_seed):
    v, f = uv_sphere(8, 12)
    mesh = TriangleMesh(v, f)
    g = torch.Generator().manual_seed(point_seed)
    p = torch.randn(200, 3, generator=g) * 1.5
    closest_point(mesh, p)  # build on the original vertices
    jitter = 0.05 * torch.randn(v.shape, generator=torch.Generator().manual_seed(jitter_seed))
    moved = v * torch.tensor(scale) + jitter
    mesh.update(moved)
    refit, fresh = closest_point(mesh, p), closest_point(TriangleMesh(moved, f), p)
    torch.testing.assert_close(refit.distance, fresh.distance)
    torch.testing.assert_close(refit.sign, fresh.sign)


def test_in_place_vertex_changes_are_picked_up_by_the_next_query():
    v, f = box()
    vertices = torch.nn.Parameter(v.clone())
    mesh = TriangleMesh(vertices, f)
    p = torch.tensor([[0.0, 0.0, 0.7], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(closest_point(mesh, p).signed_distance, torch.tensor([0.2, -0.5]))
    with torch.no_grad():
        vertices.mul_(4.0)  # as an optimiser step would
    torch.testing.assert_close(closest_point(mesh, p).signed_distance, torch.tensor([-1.3, -2.0]))
    torch.testing.assert_close(knn_vertices(mesh, p[1:], 1).distance, torch.tensor([[2 * math.sqrt(3.0)]]))


def test_meshes_outside_float32_range_raise():
    v, f = box(dtype=torch.float64)
    with pytest.raises(ValueError, match="vertices: expected values within float32 range"):
        TriangleMesh(v * 1e39, f)
    with pytest.raises(ValueError, match="zero area"):
        TriangleMesh(v * 1e-40, f)  # underflows to a point in float32


def test_numpy_integers_are_accepted_for_counts_and_frames():
    v, f = box()
    mesh = TriangleMesh(torch.stack([v, 2 * v]), f)
    p = torch.zeros(2, 3)
    assert knn_vertices(mesh, p, np.int64(2), frame=np.int64(1)).index.shape == (2, 2)
    with pytest.raises(TypeError, match="k"):
        knn_vertices(mesh, p, True, frame=0)


def test_meshes_and_cameras_check_frame_arguments_alike():
    """TriangleMesh.frame_index and the camera ray functions share one check: the same frame arguments pass,
    the same bad ones fail with the same message naming the argument."""
    from headfields.cameras import PinholeCameras, look_at, pixel_rays

    v, f = box()
    mesh = TriangleMesh(torch.stack([v, 2 * v]), f)
    cams = PinholeCameras.from_fov(look_at(torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 3.0]]), torch.zeros(2, 3)), 8, 6, 1.0)
    pixels = torch.full((3, 2), 4.0)
    for good in (1, np.int64(1), torch.ones(3, dtype=torch.int32)):
        assert torch.equal(mesh.frame_index(good, 3), torch.ones(3, dtype=torch.long))
        assert torch.equal(pixel_rays(cams, good, pixels).frame, torch.ones(3, dtype=torch.long))
    bad = [2, -1, True, torch.tensor([0, 2, 0]), torch.zeros(3, dtype=torch.long, device="meta")]
    for frame in bad:
        with pytest.raises(ERRORS, match="^frame: ") as from_mesh:
            mesh.frame_index(frame, 3)
        with pytest.raises(ERRORS, match="^frame: ") as from_cameras:
            pixel_rays(cams, frame, pixels)
        assert str(from_mesh.value) == str(from_cameras.value)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_split_launches_work_in_a_forked_child():
    v, f = head_proxy()
    mesh = TriangleMesh(v, f)
    p = sample_near_surface(mesh, 40_000, thickness=0.2)  # large enough to use the thread pool
    expected = closest_point(mesh, p).distance
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child, a DataLoader worker say: it must never return into pytest
        try:
            signal.alarm(60)  # a hang kills the child, and the parent reads no answer
            torch.set_num_threads(1)  # as DataLoader workers do: torch's own OpenMP pool does not survive fork
            ok = torch.equal(closest_point(mesh, p).distance, expected)
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        answer = pipe.read()
    os.waitpid(pid, 0)
    assert answer == b"1"


def test_update_with_the_same_tensor_picks_up_writes_torch_does_not_count():
    v, f = box()
    vertices = v.clone()
    mesh = TriangleMesh(vertices, f)
    p = torch.tensor([[0.0, 0.0, 0.7]])
    assert torch.isclose(closest_point(mesh, p).distance[0], torch.tensor(0.2))
    vertices.numpy()[:] *= 4.0  # invisible to torch's version counter, like a fused optimiser step
    mesh.update(mesh.vertices)
    assert torch.isclose(closest_point(mesh, p).signed_distance[0], torch.tensor(-1.3))


def test_a_mesh_built_in_inference_mode_follows_its_vertices():
    v, f = box()
    with torch.inference_mode():
        vertices = v.clone()
        mesh = TriangleMesh(vertices, f)
        p = torch.tensor([[0.0, 0.0, 0.7]])
        assert torch.isclose(closest_point(mesh, p).distance[0], torch.tensor(0.2))
        vertices.mul_(4.0)  # inference tensors keep no version counter: every query re-copies
        assert torch.isclose(closest_point(mesh, p).signed_distance[0], torch.tensor(-1.3))
    mesh.update(v * 2)  # and it can be updated outside inference mode
    assert torch.isclose(closest_point(mesh, p).signed_distance[0], torch.tensor(-0.3))


def test_a_rejected_update_leaves_the_mesh_as_it_was():
    v, f = box()
    mesh = TriangleMesh(v, f)
    with pytest.raises(ValueError, match="zero area"):
        mesh.update(v * torch.tensor([1.0, 1.0, 0.0]))
    assert mesh.vertices.shape == (1, 8, 3) and torch.equal(mesh.vertices[0], v)
    assert torch.isclose(closest_point(mesh, torch.tensor([[0.0, 0.0, 0.7]])).distance[0], torch.tensor(0.2))


@pytest.mark.parametrize("leaf", [1, 8])
def test_bvh_leaf_size_reaches_warp_and_moves_no_distance(device, leaf, monkeypatch, availability):
    """geometry.mesh.BVH_LEAF_SIZE builds Warp's triangle BVHs with that many triangles a leaf; the tree's shape
    changes no distance (trimesh's, as the peer), only which of tied faces is found."""
    built = []
    real = mesh_module.wp.Mesh

    def recorded(*args, **kwargs):
        built.append(kwargs.get("bvh_leaf_size"))
        return real(*args, **kwargs)

    monkeypatch.setattr(mesh_module, "BVH_LEAF_SIZE", leaf)
    monkeypatch.setattr(mesh_module.wp, "Mesh", recorded)
    monkeypatch.setenv(wide_bvh.WIDE_BVH_SWITCH, "0")  # the CPU too asks Warp's BVH, not its own wide one
    v, f = head_proxy()
    points = sample_near_surface(TriangleMesh(v, f), 2000, thickness=0.1, seed=4)
    q = closest_point(TriangleMesh(v.to(device), f.to(device)), points.to(device))
    assert built == [leaf]
    _, peer, _ = trimesh.proximity.closest_point(trimesh.Trimesh(v.numpy(), f.numpy(), process=False), points.numpy())
    np.testing.assert_allclose(q.distance.cpu().numpy(), peer, atol=1e-5)


def test_a_spike_is_named_not_blamed_on_a_zero_area_triangle():
    """A box with one vertex a kilometre off makes the real triangles tiny beside the bounding box: the message says
    how small (not "zero area") and names the far vertex and its distance."""
    v, f = box(dtype=torch.float64)
    v[5] += torch.tensor([1000.0, 0.0, 0.0], dtype=torch.float64)
    v = torch.cat([v, v[:3] * 1e-4])  # a small triangle near the box
    f = torch.cat([f, torch.tensor([[8, 9, 10]])])
    with pytest.raises(ValueError, match=r"triangle 12 .* has an area of .* bounding box .* its farthest vertex, 5, lies 100\d"):
        TriangleMesh(v, f)
