"""Where MediaPipe's points lie on a parametric model's surface, derived from frames whose meshes are known: each
detected point's ray is cast onto its frame's posed mesh, the hit carried to the neutral head by its face and
barycentric weights, and each point's median over the frames kept where it is steady (a point that slides over the
surface as the head turns, the face's outline, is left out). The result, in metrical-tracker's
``mediapipe_landmark_embedding.npz`` layout, is what ``python -m headfields track --embedding`` fits with instead of the
iBUG table: MediaPipe's own points, each where it lies in depth too.

    surface = derive_mediapipe_embedding(model, frames.images, frames.cameras, frames.mesh_vertices)
    save_embedding("embedding.npz", surface)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float, UInt8
from torch import Tensor

from ...cameras import PinholeCameras, pixel_rays
from ...fitting.landmark_tracking import SurfaceLandmarks
from ...geometry import TriangleMesh, closest_point, ray_intersect
from ...parametric.model import ParametricModel

__all__ = ["derive_mediapipe_embedding", "model_embedding", "read_embedding", "save_embedding"]

HIT_SHARE = 0.95  # a point is kept if its ray meets the head in this share of the frames with a face
# The largest median distance (metres, on the neutral head) of a point's frames from its median position. On the
# synthetic video at 96 px: 1.5 mm keeps 112 of 468 points (3 mm: 337, whose fit was slower and no better: 2.30 deg
# against 2.18).
STEADY = 0.0015
# The model's own views (:func:`model_embedding`): a hundred renders of the neutral head, their points kept within
# 5 mm (on the synthetic video: 1.5 mm kept 213 points and gave 3.08 mm, 3 mm 369 and 2.35, 5 mm 407 and 1.97).
MODEL_VIEWS = 96
MODEL_STEADY = 0.005


def derive_mediapipe_embedding(
    model: ParametricModel,
    images: UInt8[Tensor, "N H W 3"],
    cameras: PinholeCameras,
    vertices: Float[Tensor, "N V 3"],
    steady: float = STEADY,
) -> SurfaceLandmarks:
    """MediaPipe's points on ``model``'s surface from ``images`` whose posed meshes ``vertices`` (the model's faces)
    and ``cameras`` are known; points whose position on the neutral head varies more than ``steady`` are left out."""
    from .mediapipe import FaceLandmarker

    n = images.shape[0]
    if vertices.shape[0] != n or cameras.num_frames != n:
        raise ValueError(
            f"vertices: expected the meshes of the {n} images, got {vertices.shape[0]} and {cameras.num_frames} cameras"
        )
    faces = FaceLandmarker()(images)
    live = torch.nonzero(faces.found)[:, 0]
    if len(live) == 0:
        raise ValueError("images: MediaPipe found no face in any of them")
    points = faces.points[live, :, :2].float()
    m = points.shape[1]
    frame = live.repeat_interleave(m)
    rays = pixel_rays(cameras, frame, points.reshape(-1, 2))
    mesh = TriangleMesh(vertices[live].detach().float(), model.faces)
    hit = ray_intersect(mesh, rays.origins, rays.directions, frame=torch.arange(len(live)).repeat_interleave(m))
    neutral = model().vertices[0].detach().float()
    corners = neutral[model.faces[hit.face.clamp(min=0)]]
    on_neutral = (corners * hit.bary[:, :, None]).sum(1).view(len(live), m, 3)
    met = hit.hit.view(len(live), m)
    on_neutral[~met] = float("nan")
    median = on_neutral.nanmedian(0).values
    spread = (on_neutral - median).norm(dim=-1).nanmedian(0).values
    keep = (met.float().mean(0) >= HIT_SHARE) & (spread <= steady)
    if not bool(keep.any()):
        raise ValueError(f"steady: no point stays within {steady} m on the head; expected a larger bound")
    nearest = closest_point(TriangleMesh(neutral[None], model.faces), median[keep], 0)
    return SurfaceLandmarks(nearest.face.cpu(), nearest.bary.float().cpu(), torch.nonzero(keep)[:, 0].cpu())


def model_embedding(model: ParametricModel, resolution: int, shape: Tensor | None = None, seed: int = 0) -> SurfaceLandmarks:
    """MediaPipe's points on ``model``'s surface derived from the model's own views
    (:func:`~headfields.synthetic.model_views.model_views`: its neutral head, identity ``shape``, turning a little,
    ``resolution`` pixels square, best at the video's own face size): no hand-made correspondence and no licensed
    file. A ``ValueError`` where the model cannot be rendered so (regions that do not cover it) or no face is found."""
    from ...synthetic.model_views import model_views

    images, cameras, vertices = model_views(model, MODEL_VIEWS, resolution, seed, shape)
    return derive_mediapipe_embedding(model, images, cameras, vertices, steady=MODEL_STEADY)


def save_embedding(path: str | Path, surface: SurfaceLandmarks) -> Path:
    """``surface`` as metrical-tracker's ``.npz``: ``lmk_face_idx``, ``lmk_b_coords``, ``landmark_indices``."""
    path = Path(path)
    np.savez(
        path,
        lmk_face_idx=surface.faces.numpy().astype(np.int64),
        lmk_b_coords=surface.bary.numpy().astype(np.float64),
        landmark_indices=surface.observed.numpy().astype(np.int64),
    )
    return path


def read_embedding(path: str | Path, model) -> SurfaceLandmarks:
    """MediaPipe's points on ``model``'s surface from an ``.npz`` in metrical-tracker's layout: ``lmk_face_idx [K]``,
    ``lmk_b_coords [K, 3]`` and ``landmark_indices [K]`` (MediaPipe ids); checked against the model's faces."""
    try:
        with np.load(path) as data:
            faces, bary, ids = (np.asarray(data[k]) for k in ("lmk_face_idx", "lmk_b_coords", "landmark_indices"))
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(
            f"embedding: cannot read {str(path)!r} as an .npz with lmk_face_idx, lmk_b_coords and landmark_indices ({error})"
        ) from None
    k = len(faces)
    if bary.shape != (k, 3) or ids.shape != (k,) or not np.isfinite(bary).all():
        raise ValueError(f"embedding: expected lmk_face_idx [K], lmk_b_coords [K, 3], landmark_indices [K] in {str(path)!r}")
    if k == 0 or faces.min() < 0 or faces.max() >= model.faces.shape[0] or ids.min() < 0 or ids.max() >= 478:
        raise ValueError(f"embedding: {str(path)!r} names faces past the model's {model.faces.shape[0]} or ids past 478")
    return SurfaceLandmarks(torch.from_numpy(faces).long(), torch.from_numpy(bary).float(), torch.from_numpy(ids).long())
