"""Mesh-guided sampling: keep the samples near the frame's posed mesh (INSTA samples only around FLAME).

The closest-point search runs in Warp on the frame's BVH, bounded by ``max_distance`` so that far samples
stop early.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..checks import IntLike, check_positive
from ..geometry import TriangleMesh, closest_point
from .samples import PackedSamples

# metres: the mesh shell of every CPU recipe (cpu_config). It skips samples far from the tracked mesh for speed,
# and with them detail off the template (benchmarks/hair.py measures the cost); the paper recipes have none.
CPU_SHELL = 0.03


def mesh_guided_filter(
    samples: PackedSamples,
    origins: Float[Tensor, "R 3"],
    dirs: Float[Tensor, "R 3"],
    mesh: TriangleMesh,
    frame: Int[Tensor, " R"] | IntLike | None,
    max_distance: float,
) -> PackedSamples:
    """The samples whose midpoint lies within ``max_distance`` of frame ``frame[ray]`` of ``mesh``."""
    if not isinstance(max_distance, (int, float)) or isinstance(max_distance, bool):
        raise TypeError(f"max_distance: expected a positive number, got {max_distance!r}")
    check_positive("max_distance", max_distance)
    frame = mesh.frame_index(frame, samples.num_rays)
    points = samples.midpoints(origins, dirs)
    with torch.no_grad():
        # Unsigned: the side of the surface does not matter here, and the search is cheaper without it.
        near = closest_point(mesh, points.detach(), frame[samples.ray], max_distance=float(max_distance), signed=False)
    return samples.select(near.hit & (near.distance <= max_distance))
