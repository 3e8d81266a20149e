"""Random points: area-weighted on a mesh surface (seeded and reproducible on any device), uniform in a box."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..checks import IntLike, check_count, check_float, checking_values
from .mesh import TriangleMesh
from .triangles import face_areas, face_normals


@dataclass
class SurfaceSamples:
    point: Float[Tensor, "N 3"]  # differentiable w.r.t. mesh.vertices
    face: Int[Tensor, " N"]
    bary: Float[Tensor, "N 3"]
    normal: Float[Tensor, "N 3"]  # unit geometric normal of the face
    frame: Int[Tensor, " N"]


def _sample_surface(mesh: TriangleMesh, n: IntLike, frame: IntLike | None, generator: torch.Generator) -> SurfaceSamples:
    n = check_count("n", n, 0)
    frame_id = int(mesh.frame_index(frame, 1)[0])
    vertices = mesh.vertices[frame_id]
    areas = face_areas(vertices.detach().double(), mesh.faces).cpu()
    face = torch.multinomial(areas, n, replacement=True, generator=generator) if n > 0 else torch.zeros(0, dtype=torch.long)
    # Uniform barycentrics: sqrt warping of the first coordinate (Osada et al. 2002, shape distributions).
    r1, r2 = torch.rand(2, n, generator=generator, dtype=torch.float64)
    s = r1.sqrt()
    bary = torch.stack([1 - s, s * (1 - r2), s * r2], dim=-1).to(device=mesh.device, dtype=vertices.dtype)
    face = face.to(mesh.device)
    corners = vertices[mesh.faces[face]]  # [N, 3, 3]
    return SurfaceSamples(
        point=(bary[:, :, None] * corners).sum(dim=1),
        face=face,
        bary=bary,
        normal=face_normals(vertices, mesh.faces)[face],
        frame=torch.full((n,), frame_id, dtype=torch.long, device=mesh.device),
    )


def sample_surface(mesh: TriangleMesh, n: IntLike, frame: IntLike | None = None, seed: int = 0) -> SurfaceSamples:
    """``n`` points uniformly distributed over the area of frame ``frame`` of ``mesh``.

    The same ``seed`` gives the same samples on every device (random numbers are drawn on the CPU).
    """
    return _sample_surface(mesh, n, frame, torch.Generator(device="cpu").manual_seed(seed))


def sample_near_surface(
    mesh: TriangleMesh, n: IntLike, thickness: float, frame: IntLike | None = None, seed: int = 0
) -> Float[Tensor, "N 3"]:
    """``n`` points within ``±thickness`` of the surface: area-weighted surface samples moved along their
    face normal by a uniform offset. Seeded like :func:`sample_surface`."""
    if not (math.isfinite(thickness) and thickness >= 0):
        raise ValueError(f"thickness: expected a finite non-negative number, got {thickness}")
    generator = torch.Generator(device="cpu").manual_seed(seed)
    s = _sample_surface(mesh, n, frame, generator)
    offset = (torch.rand(s.point.shape[0], 1, generator=generator, dtype=torch.float64) * 2 - 1) * thickness
    return s.point + offset.to(s.point) * s.normal


def sample_box(box: Float[Tensor, "2 3"], n: IntLike, generator: torch.Generator | None = None) -> Float[Tensor, "N 3"]:
    """``n`` points uniform in the axis-aligned ``box`` (its low and high corners), drawn by ``generator`` on its
    device and returned on the box's (the eikonal term's points away from the surface)."""
    check_float("box", box, [2, 3])
    if checking_values() and not bool((box[1] >= box[0]).all()):
        raise ValueError(f"box: expected the low corner, then the high one, got {box.tolist()}")
    n = check_count("n", n, 0)
    device = generator.device if generator is not None else box.device
    u = torch.rand(n, 3, generator=generator, device=device).to(box)
    return box[0] + u * (box[1] - box[0])


def farthest_points(points: Float[Tensor, "N 3"], count: int) -> Int[Tensor, " K"]:
    """Indices of ``count`` points spread by farthest-point sampling, from the one nearest the centroid
    (deterministic)."""
    check_float("points", points, [None, 3])
    count = check_count("count", count, 1, points.shape[0])
    chosen = [int((points - points.mean(0)).norm(dim=1).argmin())]
    distance = (points - points[chosen[0]]).norm(dim=1)
    for _ in range(count - 1):
        chosen.append(int(distance.argmax()))
        distance = torch.minimum(distance, (points - points[chosen[-1]]).norm(dim=1))
    return torch.tensor(chosen, device=points.device)
