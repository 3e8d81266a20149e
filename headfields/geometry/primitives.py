"""Closed triangle meshes with known geometry, for tests, benchmarks and demos. Faces are counter-clockwise
seen from outside, so geometric normals point outwards."""

from __future__ import annotations

import math

import torch
from jaxtyping import Float, Int
from torch import Tensor


def uv_sphere(
    n_lat: int = 51, n_lon: int = 100, radius: float = 1.0, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> tuple[Float[Tensor, "V 3"], Int[Tensor, "F 3"]]:
    """Latitude-longitude sphere: ``n_lat`` bands, ``n_lon`` segments; ``(n_lat-1)·n_lon + 2`` vertices and
    ``2·n_lon·(n_lat-1)`` faces (the defaults give 5002 and 10000, about FLAME's 5023 and 9976)."""
    if n_lat < 2 or n_lon < 3:
        raise ValueError(f"n_lat, n_lon: expected n_lat >= 2 and n_lon >= 3, got {n_lat}, {n_lon}")
    theta = torch.arange(1, n_lat, dtype=torch.float64) * (math.pi / n_lat)
    phi = torch.arange(n_lon, dtype=torch.float64) * (2 * math.pi / n_lon)
    theta, phi = torch.meshgrid(theta, phi, indexing="ij")
    ring = torch.stack([theta.sin() * phi.cos(), theta.sin() * phi.sin(), theta.cos()], dim=-1).reshape(-1, 3)
    poles = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]], dtype=torch.float64)
    vertices = torch.cat([ring, poles]) * radius
    top, bottom = len(ring), len(ring) + 1

    j = torch.arange(n_lon)
    j1 = (j + 1) % n_lon
    faces = [torch.stack([torch.full_like(j, top), j, j1], dim=-1)]
    for i in range(n_lat - 2):
        a, b = i * n_lon + j, i * n_lon + j1
        c, d = a + n_lon, b + n_lon
        faces += [torch.stack([a, c, d], dim=-1), torch.stack([a, d, b], dim=-1)]
    last = (n_lat - 2) * n_lon
    faces.append(torch.stack([torch.full_like(j, bottom), last + j1, last + j], dim=-1))
    return vertices.to(dtype=dtype, device=device), torch.cat(faces).to(device)


def box(
    size: tuple[float, float, float] = (1.0, 1.0, 1.0), dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> tuple[Float[Tensor, "8 3"], Int[Tensor, "12 3"]]:
    """Axis-aligned box centred at the origin with edge lengths ``size``: 8 vertices, 12 faces."""
    corners = torch.tensor([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)], dtype=torch.float64)
    # Vertex i has bits (x, y, z) = (i >> 2, i >> 1, i) & 1. Two triangles per side, outward.
    # fmt: off
    faces = torch.tensor(
        [
            [0, 1, 3], [0, 3, 2],  # x = -0.5
            [4, 6, 7], [4, 7, 5],  # x = +0.5
            [0, 4, 5], [0, 5, 1],  # y = -0.5
            [2, 3, 7], [2, 7, 6],  # y = +0.5
            [0, 2, 6], [0, 6, 4],  # z = -0.5
            [1, 5, 7], [1, 7, 3],  # z = +0.5
        ]
    )
    # fmt: on
    return (corners * torch.tensor(size, dtype=torch.float64)).to(dtype=dtype, device=device), faces.to(device)


def head_proxy(
    dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> tuple[Float[Tensor, "V 3"], Int[Tensor, "F 3"]]:
    """A closed, FLAME-size stand-in for a head (5002 vertices, 10000 faces): an egg of half-axes
    0.8 x 0.95 x 1.1 with a nose bump along +x. For benchmarks and demos before a parametric head is loaded."""
    v, f = uv_sphere(dtype=torch.float64)
    v = v * torch.tensor([0.8, 0.95, 1.1], dtype=torch.float64)
    nose = torch.exp(-((v[:, 0] - 0.8) ** 2 + v[:, 1] ** 2 + v[:, 2] ** 2) / 0.02)
    v[:, 0] += 0.15 * nose
    return v.to(dtype=dtype, device=device), f.to(device)
