"""Meshes and points the geometry tests of several tiers share (the CPU backend's wide BVH is checked on the same
meshes as the Warp queries): irregular meshes, brute-force distances, random triangle soups."""

from __future__ import annotations

import math

import numpy as np
import torch
import trimesh
from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from headfields.geometry import extract_isosurface, uv_sphere


def lumpy_sphere(n_lat: int = 24, n_lon: int = 48, seed: int = 0, dtype: torch.dtype = torch.float32):
    """A sphere displaced by five smooth Gaussian bumps: closed, smooth, with regions of high curvature."""
    v, f = uv_sphere(n_lat, n_lon, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(5, 3, generator=g, dtype=torch.float64), dim=-1)
    height = 0.1 + 0.3 * torch.rand(5, generator=g, dtype=torch.float64)
    r = 1 + (height * torch.exp(-((v[:, None] - centres) ** 2).sum(-1) / 0.06)).sum(-1)
    return (v * r[:, None]).to(dtype), f


def remeshed_blob(resolution: int = 20):
    """Marching cubes of a lumpy SDF: irregular triangles of many sizes."""

    def sdf(p: torch.Tensor) -> torch.Tensor:
        return p.norm(dim=-1) - 0.8 - 0.15 * torch.sin(3 * p[:, 0]) * torch.cos(2 * p[:, 1])

    surface = extract_isosurface(sdf, torch.tensor([[-1.2] * 3, [1.2] * 3]), resolution)
    return surface.vertices.float(), surface.faces


# Point-triangle pairs a brute-force pass: a few points against every triangle keep trimesh's temporaries in cache (the
# head proxy's 400 points at once, 4M pairs, took 2.5x as long); each point's answer is the same either way.
BRUTE_PAIRS = 1 << 16


def brute_closest_distance(vertices: torch.Tensor, faces: torch.Tensor, points: torch.Tensor) -> np.ndarray:
    """Distance from every point to every triangle (trimesh's point-triangle routine), the minimum per point."""
    tris = vertices.double().cpu().numpy()[faces.cpu().numpy()]
    every_point = points.double().cpu().numpy()
    step = max(1, BRUTE_PAIRS // len(tris))
    nearest = []
    for p in (every_point[i : i + step] for i in range(0, len(every_point), step)):
        pairs_p = np.repeat(p, len(tris), axis=0)
        pairs_t = np.tile(tris, (len(p), 1, 1))
        every = np.linalg.norm(trimesh.triangles.closest_point(pairs_t, pairs_p) - pairs_p, axis=-1)
        nearest.append(every.reshape(len(p), len(tris)).min(axis=1))
    return np.concatenate(nearest) if nearest else np.zeros(0)


@st.composite
def triangle_soups(draw) -> np.ndarray:
    """1-12 well-shaped triangles anywhere in [-1, 1]^3: an anchor corner, two edge lengths, the angle
    between them (away from 0 and pi, so no slivers) and a random orientation."""
    unit = st.floats(-1, 1, width=32)
    tris = []
    for _ in range(draw(st.integers(1, 12))):
        anchor = np.array(draw(st.tuples(unit, unit, unit)))
        l1, l2 = draw(st.floats(0.05, 1.0)), draw(st.floats(0.05, 1.0))
        angle = draw(st.floats(0.3, math.pi - 0.3))
        quat = np.array(draw(st.tuples(unit, unit, unit, unit)))
        assume(np.linalg.norm(quat) > 0.1)
        rot = trimesh.transformations.quaternion_matrix(quat / np.linalg.norm(quat))[:3, :3]
        local = np.array([[0, 0, 0], [l1, 0, 0], [l2 * math.cos(angle), l2 * math.sin(angle), 0]])
        tris.append(anchor + local @ rot.T)
    return np.stack(tris)


query_points = arrays(np.float64, st.tuples(st.integers(1, 20), st.just(3)), elements=st.floats(-2, 2, width=32))
