"""A personal template's appearance: one colour per vertex, the median of the frames that see it, and which of a
surface's points a camera sees. The dynamic tracker (:mod:`.template_tracking`) compares these colours with a frame's
pixels where the template's points land: the photometric term that holds the turn from behind, where no landmark
exists and a silhouette changes little with the yaw (a back is nearly symmetric), but the hair's strands move.

    colours = vertex_colours(posed, model.faces, images, cameras)  # posed [N, V, 3]: the turn's template, tracked
    colours.colours  # [V, 3] in [0, 1]; colours.seen [V]: a vertex no frame saw keeps black and is never compared
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..cameras import PinholeCameras
from ..checks import check_float, check_shape
from ..geometry import TriangleMesh
from ..geometry.queries import ray_intersect
from ..geometry.triangles import vertex_normals
from .rigid_motion import project

__all__ = [
    "FACING",
    "SEEN_TOLERANCE",
    "VertexColours",
    "sample_pixels",
    "seen_points",
    "seen_vertices",
    "unit_colours",
    "vertex_colours",
]

SEEN_TOLERANCE = 2e-3  # metres: a surface point is seen when nothing lies more than this before it on its ray
# The least cosine between a vertex's normal and its ray back to the camera for its colour to count: grazing views
# smear the neighbouring pixels (the background's, past the silhouette) into it.
FACING = 0.3


@dataclass
class VertexColours:
    """A template's colour per vertex (``colours [V, 3]``, linear in [0, 1]) and whether any frame saw it
    (``seen [V]``; an unseen vertex's colour is 0)."""

    colours: Float[Tensor, "V 3"]
    seen: Bool[Tensor, " V"]


def seen_points(
    mesh: TriangleMesh, points: Float[Tensor, "B P 3"], eyes: Float[Tensor, "B 3"], frames: Int[Tensor, " B"] | None = None
) -> Bool[Tensor, "B P"]:
    """Which ``points`` (on the surface of ``mesh``'s frame ``frames[b]``, all frame 0 by default) the eye
    ``eyes[b]`` sees: nothing on the mesh lies on the ray from the eye more than ``SEEN_TOLERANCE`` before the point
    (Warp's ray casting)."""
    b, p = points.shape[:2]
    ray = (points - eyes[:, None]).reshape(-1, 3)
    length = ray.norm(dim=-1).clamp(min=1e-9)
    frame = torch.zeros(b, dtype=torch.long) if frames is None else frames
    hit = ray_intersect(mesh, eyes.repeat_interleave(p, 0), ray / length[:, None], frame.repeat_interleave(p), validate=False)
    return (hit.t >= length - SEEN_TOLERANCE).reshape(b, p)


def seen_vertices(vertices: Float[Tensor, "B V 3"], faces: Int[Tensor, "F 3"]) -> Bool[Tensor, "B V"]:
    """Which of each frame's ``vertices`` (the tracker's world) the camera at the origin sees, facing it
    (:data:`FACING`) with nothing before them (:func:`seen_points`)."""
    b = len(vertices)
    facing = -(vertex_normals(vertices, faces) * F.normalize(vertices, dim=-1)).sum(-1) > FACING
    return facing & seen_points(TriangleMesh(vertices, faces), vertices, torch.zeros(b, 3), torch.arange(b))


def unit_colours(images: Tensor) -> Float[Tensor, "N H W 3"]:
    """Frames as floats in [0, 1]: uint8 ones scaled, float ones as they are."""
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()


def sample_pixels(images: Float[Tensor, "B H W 3"], pixels: Float[Tensor, "B P 2"]) -> Float[Tensor, "B P 3"]:
    """Bilinear samples of ``images`` at ``pixels`` (x right, y down; a pixel's centre at +0.5), the border's colour
    past the border."""
    h, w = images.shape[1:3]
    grid = torch.stack([pixels[..., 0] * (2.0 / w) - 1.0, pixels[..., 1] * (2.0 / h) - 1.0], -1)[:, :, None]
    sampled = F.grid_sample(images.permute(0, 3, 1, 2), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return sampled[..., 0].permute(0, 2, 1)


def vertex_colours(
    vertices: Float[Tensor, "N V 3"], faces: Int[Tensor, "F 3"], images: Tensor, cameras: PinholeCameras
) -> VertexColours:
    """Each vertex's colour: the median over the frames whose fixed camera (at the origin, ``cameras``' intrinsics)
    sees it facing (:data:`FACING`) of ``images [N, H, W, 3]`` (uint8, or floats in [0, 1]) at its projection, the
    template posed by each frame as ``vertices``."""
    check_float("vertices", vertices, [None, None, 3])
    n = len(vertices)
    check_shape("images", images, [n, cameras.height, cameras.width, 3])
    vertices = vertices.detach().float()
    seen = seen_vertices(vertices, faces)
    sampled = torch.where(seen[..., None], sample_pixels(unit_colours(images), project(cameras, vertices)), torch.nan)
    any_seen = seen.any(0)
    colours = sampled.nanmedian(0).values.nan_to_num(0.0)  # an unseen vertex's median is NaN: 0, flagged unseen
    return VertexColours(colours, any_seen)
