"""MonoAvatar's mesh-anchored aggregation against brute force (numpy kNN over all vertices and inverse-distance
weights), its limit at a vertex, invariance to a rigid motion of the head, float64 gradcheck and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from headfields.encoders import MeshAnchoredConfig, MeshAnchoredEncoder
from headfields.geometry import TriangleMesh, box, uv_sphere

from helpers import raises_naming


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)  # the networks' initial weights


SMALL = MeshAnchoredConfig(hidden_dim=16, hidden_layers=2, out_dim=8, position_frequencies=4)


def random_rotation(generator: torch.Generator, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q.to(dtype)


def near_surface(vertices: torch.Tensor, count: int, generator: torch.Generator, spread: float = 0.15) -> torch.Tensor:
    pick = torch.randint(0, len(vertices), (count,), generator=generator)
    return vertices.cpu()[pick] + spread * torch.randn(count, 3, generator=generator, dtype=vertices.dtype)


def numpy_reference(vertices: np.ndarray, points: np.ndarray, k: int):
    """Brute-force kNN over all vertices and normalised 1/d weights, in float64: (index, distance, weights, gap)
    with ``gap`` the margin between the k-th and (k+1)-th distances (where it is small the k-th is a tie)."""
    d = np.linalg.norm(points[:, None, :] - vertices[None, :, :], axis=-1)
    order = np.argsort(d, axis=1)
    index = order[:, :k]
    dist = np.take_along_axis(d, index, axis=1)
    inv = 1.0 / dist
    weights = inv / inv.sum(axis=1, keepdims=True)
    nxt = np.take_along_axis(d, order[:, k : k + 1], axis=1)[:, 0] if k < len(vertices) else np.full(len(d), np.inf)
    return index, dist, weights, nxt - dist[:, -1]


@pytest.mark.parametrize("k", [1, 4, 7])
def test_matches_brute_force(device, k):
    g = torch.Generator().manual_seed(k)
    v, f = uv_sphere(7, 10, dtype=torch.float64)
    v = v * torch.tensor([0.8, 0.95, 1.1], dtype=torch.float64)  # an egg: no symmetric ties
    mesh = TriangleMesh(v.float().to(device), f.to(device))
    points = near_surface(v, 300, g).float()
    feats = torch.randn(1, len(v), 5, generator=g)
    enc = MeshAnchoredEncoder(5, MeshAnchoredConfig(k=k, hidden_dim=16, out_dim=8)).to(device)
    out = enc(points.to(device), mesh, feats.to(device), 0)

    index, dist, weights, gap = numpy_reference(v.numpy(), points.double().numpy(), k)
    clear = gap > 1e-4  # rows whose k-th neighbour is not a float32 tie
    assert clear.mean() > 0.9
    got_index = out.index.cpu().numpy()
    np.testing.assert_array_equal(np.sort(got_index[clear], axis=1), np.sort(index[clear], axis=1))
    # Align the reference to the returned order (both nearest first, but near-ties may swap).
    ref_w = {(i, j): w for i in range(len(index)) for j, w in zip(index[i], weights[i], strict=True)}
    got_w = out.weights.detach().cpu().double().numpy()
    expected = np.array([[ref_w[(i, j)] for j in got_index[i]] for i in np.nonzero(clear)[0]])
    np.testing.assert_allclose(got_w[clear], expected, rtol=0, atol=2e-6)
    np.testing.assert_allclose(np.sort(out.distance.detach().cpu().numpy()[clear], 1), dist[clear], rtol=0, atol=1e-5)
    w = out.weights.detach().cpu()
    assert (w > 0).all()
    torch.testing.assert_close(w.sum(dim=1), torch.ones(len(w)), rtol=0, atol=1e-6)

    # The blend: sum_j w_j MLP0(PE(v_j - q), f_j) with the brute-force neighbours and weights.
    rows = np.nonzero(clear)[0]
    nb = torch.as_tensor(index[rows])
    offset = (v[nb] - points.double()[rows, None]).float()
    enc = enc.cpu()
    with torch.no_grad():
        pe = enc.position_encoding(offset.reshape(-1, 3))
        h = enc.mlp0(torch.cat([pe, feats[0][nb].reshape(-1, 5)], dim=-1)).reshape(len(rows), k, -1)
    blend = (torch.as_tensor(weights[rows]).float()[:, :, None] * h).sum(dim=1)
    torch.testing.assert_close(out.features.detach().cpu()[rows], blend, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("hidden_layers", [0, 1, 3])
def test_without_autograd_blocks_of_points_blend_the_same_features(hidden_layers):
    """Without autograd the points run in blocks (INFERENCE_BLOCK) and MLP0's last layer runs after the blend (the
    weights sum to one): against every neighbour's MLP0 output blended by hand, with autograd on and off, across
    three blocks; and in reduced_precision (bfloat16 products) within bfloat16's rounding."""
    from headfields.encoders.mesh_anchored import INFERENCE_BLOCK
    from headfields.networks import reduced_precision

    g = torch.Generator().manual_seed(hidden_layers)
    v, f = uv_sphere(7, 10)
    mesh = TriangleMesh(v * torch.tensor([0.8, 0.95, 1.1]), f)
    points = near_surface(mesh.vertices[0], 2 * INFERENCE_BLOCK + 300, g)
    feats = torch.randn(1, len(v), 5, generator=g)
    enc = MeshAnchoredEncoder(5, MeshAnchoredConfig(hidden_dim=32, hidden_layers=hidden_layers, out_dim=8))
    with_grad = enc(points, mesh, feats, 0)
    with torch.no_grad():
        out = enc(points, mesh, feats, 0)
        offset = mesh.vertices[0][out.index] - points[:, None]
        k = out.index.shape[1]
        h = enc.mlp0(torch.cat([enc.position_encoding(offset.reshape(-1, 3)), feats[0][out.index].reshape(-1, 5)], -1))
        by_hand = (out.weights[:, :, None] * h.reshape(len(points), k, -1)).sum(dim=1)
        with reduced_precision():
            reduced = enc(points, mesh, feats, 0).features
    torch.testing.assert_close(out.features, by_hand, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(with_grad.features.detach(), out.features, rtol=1e-5, atol=1e-6)
    scale = float(by_hand.abs().max())
    assert (reduced - by_hand).abs().max() <= 0.03 * scale  # bfloat16: 8 bits of mantissa through each layer


def mlp0_output(enc: MeshAnchoredEncoder, offset: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """MLP0 of one neighbour at ``offset = v_j - q`` with features ``f_j``."""
    return enc.mlp0(torch.cat([enc.position_encoding(offset[None]), features[None]], dim=-1))[0]


@pytest.mark.parametrize("eps", [1e-6, 1e-14])
def test_query_approaching_a_vertex_takes_its_output(eps):
    g = torch.Generator().manual_seed(7)
    v, f = uv_sphere(6, 8, dtype=torch.float64)
    mesh = TriangleMesh(v, f)
    feats = torch.randn(1, len(v), 4, generator=g, dtype=torch.float64)
    config = MeshAnchoredConfig(hidden_dim=16, hidden_layers=2, out_dim=8, eps=eps)
    enc = MeshAnchoredEncoder(4, config).double()
    target_vertex = 11
    direction = torch.nn.functional.normalize(torch.randn(3, generator=g, dtype=torch.float64), dim=0)
    distances = [1e-3, 1e-5, 1e-7, 1e-9, 0.0]
    points = v[target_vertex] + torch.tensor(distances, dtype=torch.float64)[:, None] * direction
    with torch.no_grad():
        out = enc(points, mesh, feats, 0)
        # A point on the vertex: zero offset to it, and the other neighbours' outputs seen from there.
        target = mlp0_output(enc, torch.zeros(3, dtype=torch.float64), feats[0, target_vertex])
        others = torch.stack([mlp0_output(enc, v[j] - v[target_vertex], feats[0, j]) for j in out.index[-1, 1:]])
    assert (out.index[:, 0] == target_vertex).all()
    error = (out.features - target).abs().amax(dim=1)
    assert torch.isfinite(out.features).all()
    # The error shrinks with the distance, linearly (the weights and MLP0 are smooth at the vertex), down to the
    # softening: eps * sum_k 1/d_k times the spread of the neighbours' outputs.
    spread = (others - target).abs().amax()
    floor = eps * (1.0 / out.distance[-1, 1:]).sum() * spread
    for d, e in zip(distances, error.tolist(), strict=True):
        assert e <= 1e4 * d + 2 * floor + 1e-12, (d, e)
    assert error[0] > 1e-4  # the far query really is different: the test is not vacuous
    # Smooth at the vertex too: finite gradients for a point exactly on it.
    on_vertex = v[target_vertex].clone()[None].requires_grad_()
    enc(on_vertex, mesh, feats, 0).features.sum().backward()
    assert torch.isfinite(on_vertex.grad).all()


def make_posed_head(generator: torch.Generator, frames: int, dtype: torch.dtype = torch.float64):
    """Per-frame head-space vertices (an egg, slightly different per frame), rotations R_b and translations t_b,
    and the world-space vertices R_b u + t_b."""
    v, f = uv_sphere(7, 10, dtype=torch.float64)
    head = v * torch.tensor([0.8, 0.95, 1.1], dtype=torch.float64) + 0.02 * torch.randn(
        frames, len(v), 3, generator=generator, dtype=torch.float64
    )
    rotation = torch.stack([random_rotation(generator) for _ in range(frames)])
    translation = torch.randn(frames, 1, 3, generator=generator, dtype=torch.float64)
    world = head @ rotation.transpose(1, 2) + translation
    return head.to(dtype), world.to(dtype), rotation.to(dtype), translation.to(dtype), f


def test_invariant_to_a_rigid_motion_given_the_rotation():
    g = torch.Generator().manual_seed(8)
    frames = 2
    head, world, rotation, translation, faces = make_posed_head(g, frames)
    frame = torch.randint(0, frames, (60,), generator=g)
    points_head = near_surface(head[0], 60, g)
    points = torch.einsum("nij,nj->ni", rotation[frame], points_head) + translation[frame, 0]
    feats = torch.randn(frames, head.shape[1], 4, generator=g, dtype=torch.float64)
    enc = MeshAnchoredEncoder(4, SMALL).double()
    out = enc(points, TriangleMesh(world, faces), feats, frame, rotation)

    # Move the whole scene rigidly: the head's rotation becomes Q R.
    q, t = random_rotation(g), torch.randn(3, generator=g, dtype=torch.float64)
    moved = enc(points @ q.T + t, TriangleMesh(world @ q.T + t, faces), feats, frame, q @ rotation)
    assert torch.equal(moved.index, out.index)
    torch.testing.assert_close(moved.weights, out.weights, rtol=0, atol=1e-9)
    torch.testing.assert_close(moved.features, out.features, rtol=0, atol=1e-9)
    # The same query in head space (no rotation, identity pose) gives the same features too.
    canonical = enc(points_head, TriangleMesh(head, faces), feats, frame)
    torch.testing.assert_close(canonical.features, out.features, rtol=0, atol=1e-9)
    # Without the rotation the offsets stay in world axes, and the motion changes the features.
    plain = enc(points, TriangleMesh(world, faces), feats, frame)
    plain_moved = enc(points @ q.T + t, TriangleMesh(world @ q.T + t, faces), feats, frame)
    assert (plain.features - plain_moved.features).abs().amax() > 1e-3


def test_gradcheck_features_points_and_vertices():
    g = torch.Generator().manual_seed(9)
    frames = 2
    _, world, rotation, _, faces = make_posed_head(g, frames)
    frame = torch.tensor([0, 1])
    points = near_surface(world[1], 2, g).requires_grad_()
    feats = torch.randn(frames, world.shape[1], 2, generator=g, dtype=torch.float64)
    config = MeshAnchoredConfig(k=2, hidden_dim=6, hidden_layers=1, out_dim=3, position_frequencies=2)
    enc = MeshAnchoredEncoder(2, config).double()
    # Only the neighbours' rows can matter (the gradient test below checks that); perturbing just those keeps
    # the number of forward passes, each building the mesh's BVHs, small.
    used = enc(points, TriangleMesh(world, faces), feats, frame).index
    pairs = torch.stack([frame[:, None].expand_as(used), used], dim=-1).reshape(-1, 2).unique(dim=0)
    rows = (pairs[:, 0], pairs[:, 1])
    used_feats = feats[rows].clone().requires_grad_()
    used_vertices = world[rows].clone().requires_grad_()

    def run(used_feats, points, used_vertices):
        vertices = world.index_put(rows, used_vertices)
        return enc(points, TriangleMesh(vertices, faces), feats.index_put(rows, used_feats), frame, rotation).features

    assert torch.autograd.gradcheck(run, (used_feats, points, used_vertices), eps=1e-6, atol=1e-6)


def test_gradients_reach_features_points_and_vertices():
    g = torch.Generator().manual_seed(10)
    v, f = uv_sphere(6, 8)
    vertices = v.clone().requires_grad_()
    points = near_surface(v, 20, g).requires_grad_()
    feats = torch.randn(1, len(v), 3, generator=g, requires_grad=True)
    enc = MeshAnchoredEncoder(3, SMALL)
    out = enc(points, TriangleMesh(vertices, f), feats, 0)
    out.features.square().sum().backward()
    assert (points.grad.abs().sum(dim=1) > 0).all()
    used = torch.zeros(len(v), dtype=torch.bool)
    used[out.index.unique()] = True
    # Exactly the neighbours' positions and features get gradients.
    assert (vertices.grad.abs().sum(dim=1) > 0).eq(used).all()
    assert (feats.grad[0].abs().sum(dim=1) > 0).eq(used).all()


def test_multi_frame_mesh_uses_each_points_frame():
    g = torch.Generator().manual_seed(11)
    frames = 3
    _, world, _, _, faces = make_posed_head(g, frames, dtype=torch.float32)
    mesh = TriangleMesh(world, faces)
    frame = torch.randint(0, frames, (90,), generator=g)
    points = torch.cat([near_surface(world[b], 30, g) for b in range(frames)])
    feats = torch.randn(frames, world.shape[1], 4, generator=g)
    enc = MeshAnchoredEncoder(4, SMALL)
    out = enc(points, mesh, feats, frame)
    for b in range(frames):
        rows = frame == b
        single = enc(points[rows], TriangleMesh(world[b], faces), feats[b : b + 1], 0)
        assert torch.equal(out.index[rows], single.index)
        torch.testing.assert_close(out.features[rows], single.features, rtol=0, atol=1e-6)
        index, _, weights, gap = numpy_reference(world[b].double().numpy(), points[rows].double().numpy(), SMALL.k)
        clear = gap > 1e-4
        np.testing.assert_array_equal(np.sort(out.index[rows].numpy()[clear], 1), np.sort(index[clear], 1))
    # One frame number for all points is frame b for each.
    torch.testing.assert_close(enc(points, mesh, feats, 2).features, enc(points, mesh, feats, torch.full((90,), 2)).features)


def test_bad_input():
    v, f = box()
    mesh = TriangleMesh(v, f)
    two_frames = TriangleMesh(torch.stack([v, 2 * v]), f)
    enc = MeshAnchoredEncoder(3, SMALL)
    points = torch.rand(5, 3)
    feats = torch.randn(1, 8, 3)
    with raises_naming("vertex_features"):
        enc(points, mesh, torch.randn(1, 7, 3), 0)  # not one per vertex
    with raises_naming("vertex_features"):
        enc(points, two_frames, feats, 0)  # not one set per frame
    with raises_naming("vertex_features"):
        enc(points, mesh, torch.randn(1, 8, 4), 0)  # not feature_dim wide
    with raises_naming("vertex_features"):
        enc(points, mesh, feats.double(), 0)  # not the network's dtype
    with raises_naming("points"):
        enc(torch.rand(5, 2), mesh, feats, 0)
    with raises_naming("points"):
        enc(torch.full((5, 3), float("nan")), mesh, feats, 0)
    with raises_naming("frame"):
        enc(points, mesh, feats, 1)
    with raises_naming("frame"):
        enc(points, two_frames, torch.randn(2, 8, 3), torch.tensor([0, 1, 2, 0, 0]))
    with raises_naming("rotation"):
        enc(points, mesh, feats, 0, torch.eye(3))
    with raises_naming("rotation"):
        enc(points, mesh, feats, 0, 2 * torch.eye(3)[None])  # not a rotation
    with raises_naming("k"):
        MeshAnchoredEncoder(3, MeshAnchoredConfig(k=9))(points, mesh, feats, 0)  # more than the 8 vertices


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("k", lambda: MeshAnchoredConfig(k=0)),
        ("k", lambda: MeshAnchoredConfig(k=17)),
        ("position_frequencies", lambda: MeshAnchoredConfig(position_frequencies=-1)),
        ("hidden_dim", lambda: MeshAnchoredConfig(hidden_dim=0)),
        ("hidden_layers", lambda: MeshAnchoredConfig(hidden_layers=-1)),
        ("out_dim", lambda: MeshAnchoredConfig(out_dim=0)),
        ("eps", lambda: MeshAnchoredConfig(eps=0.0)),
        ("eps", lambda: MeshAnchoredConfig(eps=-1e-6)),
        ("eps", lambda: MeshAnchoredConfig(eps="small")),
        ("feature_dim", lambda: MeshAnchoredEncoder(0)),
    ],
)
def test_bad_config(name, make):
    with raises_naming(name):
        make()
