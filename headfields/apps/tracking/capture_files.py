"""A tracked video written as a capture, for both trackers (the FLAME video tracker's and the template's SMPL-X):
every frame as one split in a world with the subject at its origin, then the splits saved with the detections.

The fit's world has the camera at its origin; a capture's has the head there (as metrical-tracker's and VHAP's: models
put their boxes, grids and scene extent about the origin). Both shift by the mean translation, exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from ...cameras import PinholeCameras
from ...data import LANDMARKS_FOLDER, FrameSet, TrackedParams, save_detected_landmarks, save_insta_dataset, save_vhap_dataset
from ...data.labels import INSTA_FACE_PARSING
from ...fitting.landmark_tracking import OPENCV_FROM_WORLD

__all__ = ["MOUTH_LABELS", "capture_frames", "save_capture"]

MOUTH_LABELS = {name: INSTA_FACE_PARSING[name] for name in ("upper_lip", "lower_lip", "mouth_interior")}


def capture_frames(
    cues: dict,
    params: TrackedParams,
    focal: float,
    posed: Callable[[TrackedParams], Tensor],
    faces: Tensor,
    model_type: str,
    model_path: Path | None,
) -> tuple[FrameSet, Tensor]:
    """Every frame of the video (``cues``: its images, masks and mouth labels) as one split, tracked by ``params`` in
    the fit's world, its meshes ``posed(params)`` (the shifted parameters) with ``faces``; the model named where
    ``model_path`` is given. Returns the frames and the fit's mean translation, which their world is shifted by."""
    n, size = len(cues["found"]), cues["images"].shape[1]
    centre = params.translation.mean(0)
    params = replace(params, translation=params.translation - centre)
    camera_to_world = OPENCV_FROM_WORLD.float().expand(n, 4, 4).clone()
    camera_to_world[:, :3, 3] = -centre
    video = FrameSet(
        split="train",
        cameras=PinholeCameras(focal, focal, size / 2, size / 2, size, size, camera_to_world),
        images=cues["images"],
        masks=cues["masks"],
        segmentation=cues["labels"],
        expression=params.expression,
        params=params,
        mesh_vertices=posed(params).detach(),
        mesh_faces=faces,
        model_type=None if model_path is None else model_type,
        model_path=model_path,
        segmentation_labels=dict(MOUTH_LABELS),
    )
    return video, centre


def save_capture(root: Path, video: FrameSet, cues: dict, splits: dict[str, Tensor], layout: str = "insta") -> None:
    """``video``'s ``splits`` saved at ``root`` in INSTA's layout (headfields') or VHAP's, with the detections."""
    sets = {split: replace(video.select(index), split=split) for split, index in splits.items()}
    if layout == "vhap":
        save_vhap_dataset(root, sets)
    else:
        save_insta_dataset(root, sets)
    # The detections themselves, beside the fit: MonoNPHM fits its anchors to a detector's points, as its own code does.
    detected = torch.where(cues["found"][:, None, None], cues["points"].float(), float("nan"))
    for split, index in splits.items():
        save_detected_landmarks(root / LANDMARKS_FOLDER, split, detected[index])
