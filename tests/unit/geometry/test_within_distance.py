"""within_distance against brute force over every triangle (trimesh), an analytic box, per-frame meshes and the
closest-point query it stands in for."""

import numpy as np
import pytest
import torch
import trimesh
from hypothesis import given
from hypothesis import strategies as st
from mesh_cases import lumpy_sphere, query_points, triangle_soups

from headfields.device_paths import cuda_paths
from headfields.geometry import TriangleMesh, box, closest_point, head_proxy, sample_near_surface, within_distance

from helpers import raises_naming

TIE = 1e-5  # points this close to the radius may go either way (float32 arithmetic)


@given(tris=triangle_soups(), points=query_points, radius=st.floats(0.01, 1.5))
def test_matches_brute_force_over_every_triangle(tris, points, radius):
    mesh = TriangleMesh(torch.tensor(tris.reshape(-1, 3), dtype=torch.float32), torch.arange(3 * len(tris)).reshape(-1, 3))
    got = within_distance(mesh, torch.tensor(points, dtype=torch.float32), radius).numpy()
    # trimesh's point-triangle distance, from every point to every triangle.
    pairs_p = np.repeat(points, len(tris), axis=0)
    pairs_t = np.tile(tris, (len(points), 1, 1))
    every = np.linalg.norm(trimesh.triangles.closest_point(pairs_t, pairs_p) - pairs_p, axis=-1).reshape(len(points), len(tris))
    nearest = every.min(axis=1)
    clear = np.abs(nearest - radius) > TIE
    np.testing.assert_array_equal(got[clear], (nearest <= radius)[clear])


def test_box_distances_are_exact(device):
    v, f = box(device=device)  # the unit cube around the origin
    p = torch.tensor([[0.0, 0.0, 0.7], [0.0, 0.0, 2.0], [0.0, 0.0, 0.0], [0.9, 0.9, 0.5]], device=device)
    # distances 0.2, 1.5, 0.5 (from inside) and sqrt(0.4² + 0.4²) = 0.566 from the edge
    assert within_distance(TriangleMesh(v, f), p, 0.55).tolist() == [True, False, True, False]
    assert within_distance(TriangleMesh(v, f), p, 0.6).tolist() == [True, False, True, True]


def test_frames_answer_like_separate_meshes(device):
    v, f = head_proxy(device=device)
    frames = torch.stack([v, v * 1.2, v + torch.tensor([0.3, 0.0, 0.0], device=device)])
    p = sample_near_surface(TriangleMesh(v, f), 900, thickness=0.3)
    frame = torch.arange(900, device=device) % 3
    got = within_distance(TriangleMesh(frames, f), p, 0.05, frame)
    for b in range(3):
        assert torch.equal(got[frame == b], within_distance(TriangleMesh(frames[b], f), p[frame == b], 0.05))
    assert 0.1 < got.float().mean() < 0.9  # both answers occur


@pytest.mark.parametrize("radius", [0.01, 0.03, 0.1])
def test_agrees_with_the_closest_point_distance(device, radius):
    """The shell's former test, closest_point(...).distance <= radius, on a head-sized smooth surface."""
    v, f = lumpy_sphere()
    mesh = TriangleMesh(v.to(device), f.to(device))
    p = sample_near_surface(mesh, 20_000, thickness=4 * radius, seed=5)
    distance = closest_point(mesh, p, signed=False).distance
    got = within_distance(mesh, p, radius)
    clear = (distance - radius).abs() > TIE
    assert torch.equal(got[clear], (distance <= radius)[clear])
    assert clear.float().mean() > 0.99


def test_validate_false_reads_nothing_back(host_sync_spy):
    v, f = lumpy_sphere()
    mesh = TriangleMesh(torch.stack([v, v * 1.2]), f)
    g = torch.Generator().manual_seed(3)
    points, frame = torch.randn(2000, 3, generator=g), torch.randint(0, 2, (2000,), generator=g)
    want = within_distance(mesh, points, 0.2, frame)  # also builds the BVHs and compiles outside the watch

    with cuda_paths(), host_sync_spy() as spy:
        got = within_distance(mesh, points, 0.2, frame, validate=False)
    assert not spy.reads and not spy.copies, spy.report()
    with cuda_paths(), host_sync_spy() as checked:
        within_distance(mesh, points, 0.2, frame)
    assert checked.reads, "validate=True reads the frame indices"
    assert torch.equal(got, want)


def test_no_points_give_no_answers(box_mesh):
    assert within_distance(box_mesh, torch.zeros(0, 3, device=box_mesh.device), 0.1).shape == (0,)


def test_bad_input_is_named(box_mesh):
    p = torch.zeros(4, 3, device=box_mesh.device)
    for radius in (0.0, -1.0, float("nan")):
        with raises_naming("max_distance"):
            within_distance(box_mesh, p, radius)
    with raises_naming("max_distance"):
        within_distance(box_mesh, p, True)
    with raises_naming("points"):
        within_distance(box_mesh, torch.zeros(4, 2, device=box_mesh.device), 0.1)
    with raises_naming("frame"):
        within_distance(box_mesh, p, 0.1, 3)
    with raises_naming("mesh"):
        within_distance((p, p), p, 0.1)
