"""Mesh-guided sampling: keep the samples near the frame's posed mesh (INSTA samples only around FLAME).

The test runs in Warp on the frame's BVH (:func:`~headfields.geometry.within_distance`): a sample stops at the first
face within ``max_distance``, and a far one at the first bounding boxes out of reach.
"""

from __future__ import annotations

from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..checks import IntLike
from ..geometry import TriangleMesh, within_distance
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
    """The samples whose midpoint lies within ``max_distance`` of frame ``frame[ray]`` of ``mesh``
    (``max_distance`` is checked by :func:`~headfields.geometry.within_distance`)."""
    return samples.select(near_mesh(samples, origins, dirs, mesh, frame, max_distance))


def near_mesh(
    samples: PackedSamples,
    origins: Float[Tensor, "R 3"],
    dirs: Float[Tensor, "R 3"],
    mesh: TriangleMesh,
    frame: Int[Tensor, " R"] | IntLike | None,
    max_distance: float,
) -> Bool[Tensor, " S"]:
    """Which samples :func:`mesh_guided_filter` keeps (for samples in fixed slots, which compact instead)."""
    frame = mesh.frame_index(frame, samples.num_rays)
    points = samples.midpoints(origins, dirs)
    # Any face within reach answers: no search for the closest one (within_distance).
    return within_distance(mesh, points.detach(), max_distance, frame[samples.ray])
