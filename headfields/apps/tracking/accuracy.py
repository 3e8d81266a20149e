"""How close a tracking is to the truth, where the truth is known (the synthetic videos): the face's vertex error
after one similarity transform for the whole video (a monocular tracker cannot know the world's scale or where its
camera is), the head's rotation error, the jaw's and the eyes', medians over the frames; and what decides how an avatar trained on
the tracking renders its held-out frames: where the face lands in the image, its vertices projected by each tracking's
camera, after one scale and shift of the image for the whole video fitted on the face (a capture's crop); and the same
in each of the model's regions, where the neck and the eyes tell what the face alone does not.

    accuracy = tracking_accuracy(model, capture_tracking("captures/me"), (true_params, true_cameras))
    accuracy.vertex_mm, accuracy.rotation_deg, accuracy.jaw_deg, accuracy.gaze_deg
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from ...cameras import PinholeCameras, project_points
from ...data import TrackedParams, detect_capture_format, held_out_splits, load_insta_dataset, load_vhap_dataset
from ...fitting.photometric_term import face_region
from ...geometry.alignment import similarity_transform
from ...parametric.model import EYE_JOINTS, ParametricModel

__all__ = ["TrackingAccuracy", "capture_tracking", "face_region", "tracking_accuracy"]


@dataclass(frozen=True)
class TrackingAccuracy:
    vertex_mm: float  # the face region's vertices, median over vertices and frames
    rotation_deg: float  # the head (the neck joint's frame) in the camera, median over frames
    jaw_deg: float  # the jaw joint's axis-angle difference, median over frames
    gaze_deg: float  # the same of the eye joints (the gaze in the head), median over frames and eyes
    image_px: float  # the face region's projected vertices in the truth's pixels, median over vertices and frames
    regions_px: dict[str, float]  # the same in each region the model names: its neck (the body's turn), eyes (gaze)...
    frames: int


Tracking = tuple[TrackedParams, PinholeCameras]


def capture_tracking(root: str | Path) -> Tracking:
    """A capture's tracked parameters and cameras over its splits with frames, in the order the tracker writes them
    (train, val, test: the video's), with no pixels read (INSTA's layout; VHAP's reader reads them all the same)."""
    splits = ("train", *held_out_splits(root))
    if detect_capture_format(root) == "vhap":
        parts = [load_vhap_dataset(root, split) for split in splits]
    else:
        parts = [load_insta_dataset(root, split, pixels=False) for split in splits]
    if any(part.params is None for part in parts):
        raise ValueError(f"root: expected a capture with tracked parameters, {str(root)!r} has none")
    keys = ("expression", "pose", "translation")
    params = TrackedParams(parts[0].params.shape, *(torch.cat([getattr(part.params, k) for part in parts]) for k in keys))
    cameras = replace(parts[0].cameras, camera_to_world=torch.cat([part.cameras.camera_to_world for part in parts]))
    return params, cameras


def _in_camera(tracking: Tracking, model: ParametricModel) -> tuple[Tensor, Tensor]:
    """Posed vertices and the neck joint's rotation in each frame's camera."""
    p, cameras = tracking
    head = model(shape=p.shape, expression=p.expression, pose=p.pose, translation=p.translation)
    w2c = cameras.world_to_camera.double()
    vertices = torch.einsum("nij,nvj->nvi", w2c[:, :3, :3], head.vertices.detach().double()) + w2c[:, None, :3, 3]
    joint = model.joint_index("neck") if "neck" in model.joint_names else 0
    rotation = w2c[:, :3, :3] @ head.joint_transforms[:, joint, :3, :3].detach().double()
    return vertices, rotation


def tracking_accuracy(model: ParametricModel, tracked: Tracking, truth: Tracking) -> TrackingAccuracy:
    """``tracked`` against ``truth``, each (parameters, cameras) of the same frames in order."""
    n = truth[0].num_frames
    for name, (params, cameras) in (("tracked", tracked), ("truth", truth)):
        if params.num_frames != n or cameras.num_frames != n:
            raise ValueError(
                f"{name}: expected parameters and cameras of {n} frames, got {params.num_frames} and {cameras.num_frames}"
            )
    region = face_region(model)
    ours, our_rotation = _in_camera(tracked, model)
    true, true_rotation = _in_camera(truth, model)
    a, b = ours[:, region].reshape(-1, 3), true[:, region].reshape(-1, 3)
    rotation, scale, shift = similarity_transform(a, b)
    aligned = scale * a @ rotation.T + shift
    vertex = (aligned - b).norm(dim=-1).median()
    relative = true_rotation.transpose(1, 2) @ rotation @ our_rotation
    cosine = ((relative.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)
    distance = _image_error(_projected(ours, tracked[1]), _projected(true, truth[1]), region)
    jaw = model.joint_index("jaw")
    jaw_error = (tracked[0].pose[:, jaw] - truth[0].pose[:, jaw]).norm(dim=-1)
    eyes = [model.joint_index(name) for name in EYE_JOINTS]
    gaze_error = (tracked[0].pose[:, eyes] - truth[0].pose[:, eyes]).norm(dim=-1)
    return TrackingAccuracy(
        vertex_mm=float(vertex) * 1000,
        rotation_deg=float(torch.rad2deg(torch.acos(cosine)).median()),
        jaw_deg=float(torch.rad2deg(jaw_error).median()),
        gaze_deg=float(torch.rad2deg(gaze_error).median()),
        image_px=float(distance[:, region].median()),
        regions_px={name: float(distance[:, index].median()) for name, index in model.regions.items()},
        frames=n,
    )


def _projected(in_camera: Tensor, cameras: PinholeCameras) -> Tensor:
    """Camera-space points ``[N, K, 3]`` to their frames' pixels ``[N, K, 2]``."""
    n, k = in_camera.shape[:2]
    at_origin = replace(cameras, camera_to_world=torch.eye(4).expand(n, 4, 4))
    frame = torch.arange(n).repeat_interleave(k)
    return project_points(at_origin, in_camera.reshape(-1, 3).float(), frame).pixels.double().view(n, k, 2)


def _image_error(ours: Tensor, true: Tensor, region: Tensor) -> Tensor:
    """Each of ``ours`` pixels' distance ``[N, V]`` to ``true``'s (``[N, V, 2]``), after one least-squares ``s ours + t``
    for all frames, fitted on the face ``region`` (what a crop does; the rest of the head would pull it by its own
    errors)."""
    a, b = ours[:, region].reshape(-1, 2), true[:, region].reshape(-1, 2)
    a0, b0 = a - a.mean(0), b - b.mean(0)
    scale = (a0 * b0).sum() / a0.square().sum()
    return (scale * ours + b.mean(0) - scale * a.mean(0) - true).norm(dim=-1)
