"""A parametric head model seen as a face detector sees a face: the identity's neutral head turning a little before
a camera, with the synthetic head's appearance (skin, lips, eyes, lit). What a detector's points on a model's own
surface are derived from (:func:`~headfields.apps.tracking.embedding.model_embedding`), so a tracker needs no hand-made
correspondence for the model it fits.

    images, cameras, vertices = model_views(model, count=96, resolution=96)
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float, UInt8
from torch import Tensor

from ..cameras import PinholeCameras, look_at
from ..checks import check_count
from ..parametric.head import Head
from ..parametric.model import ParametricModel
from ._appearance import head_appearance
from ._render import render_frames

__all__ = ["VIEW_FOV", "model_views", "views_resolution"]

# The head's turns (radians, either way, uniform): what a clip facing the camera shows. Tracking the built-in video
# (96 px) with the points these views place: 2.02 mm, 1.04 degrees (benchmarks/tracking.py); in trials, views with
# expressions (0.15 s.d.) gave 2.51 mm, views at 192 px instead of the video's 96 gave 2.61 mm.
VIEW_YAW, VIEW_PITCH = 0.3, 0.1
VIEW_FOV = math.radians(30.0)
VIEW_MARGIN = 1.1  # the head's box spans the image up to this margin
VIEW_SUPERSAMPLING = 2
VIEW_BACKGROUND = (1.0, 1.0, 1.0)


def _framing(model: ParametricModel, shape: Tensor | None) -> tuple[Tensor, float, Head]:
    """The neutral head's box centre, the camera's distance from it, and the head (for its landmarks)."""
    device = model.v_template.device
    with torch.no_grad():
        head = model(shape=None if shape is None else shape.to(device, torch.float32))
    rest = head.canonical_vertices.detach()
    low, high = rest.amin(0), rest.amax(0)
    centre, half = (low + high) / 2, (high - low) / 2
    distance = VIEW_MARGIN * float(max(half[0], half[1])) / math.tan(VIEW_FOV / 2) + float(half[2])
    return centre, distance, head


def views_resolution(
    model: ParametricModel, face_pixels: float, columns: list[int] | None = None, shape: Float[Tensor, " S"] | None = None
) -> int:
    """The :func:`model_views` resolution at which the model's landmarks (those ``columns``, default all) span
    ``face_pixels`` (the larger of their width and height, facing the camera): views of a video's own face scale."""
    centre, distance, head = _framing(model, shape)
    if head.landmarks is None:
        raise ValueError("model: expected a landmark embedding to frame the views by, got none")
    points = head.landmarks[0].detach()
    points = points if columns is None else points[columns]
    span = float((points[:, :2].amax(0) - points[:, :2].amin(0)).max())
    depth = distance - float(points[:, 2].mean() - centre[2])
    return round(face_pixels * 2 * math.tan(VIEW_FOV / 2) * depth / span)


def model_views(
    model: ParametricModel,
    count: int = 96,
    resolution: int = 96,
    seed: int = 0,
    shape: Float[Tensor, " S"] | None = None,
) -> tuple[UInt8[Tensor, "N R R 3"], PinholeCameras, Float[Tensor, "N V 3"]]:
    """``count`` views of ``model``'s head (identity ``shape``, default the mean; neutral expression) turned at
    random by the neck, ``resolution`` pixels square, the head's box filling the frame: the images, their cameras and
    the posed vertices. Needs a model whose regions cover every vertex (the synthetic FLAME's and SMPL-X's do)."""
    check_count("count", count, 1)
    check_count("resolution", resolution, 16)
    generator = torch.Generator().manual_seed(seed)
    pose = torch.zeros(count, model.num_joints, 3)
    joint = model.joint_index("neck") if "neck" in model.joint_names else 0
    pose[:, joint, 0] = (2 * torch.rand(count, generator=generator) - 1) * VIEW_PITCH
    pose[:, joint, 1] = (2 * torch.rand(count, generator=generator) - 1) * VIEW_YAW
    device = model.v_template.device
    centre, distance, _ = _framing(model, shape)
    with torch.no_grad():
        head = model(shape=None if shape is None else shape.to(device, torch.float32), pose=pose.to(device))
    eye = centre + torch.tensor([0.0, 0.0, distance], device=device)
    up = torch.tensor([0.0, 1.0, 0.0], device=device)
    camera_to_world = look_at(eye.expand(count, 3), centre.expand(count, 3), up)
    cameras = PinholeCameras.from_fov(camera_to_world, resolution, resolution, VIEW_FOV)
    appearance = head_appearance(model, seed)
    brow = torch.zeros(count, device=device)
    images = render_frames(head, cameras, appearance, brow, resolution, VIEW_SUPERSAMPLING, VIEW_BACKGROUND)[0]
    return images.cpu(), cameras.to("cpu"), head.vertices.detach().cpu()
