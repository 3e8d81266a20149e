"""A capture whose tracking is noisy: the head pose and the landmarks a monocular method starts from carry the
errors a face tracker and a landmark detector make, so a method that fits a video can be measured from inputs
that are not the ground truth.

    noisy = noisy_tracking(cached_synthetic_video(nphm_held_out_video()), "/tmp/noisy", TrackingNoise())
    # python -m headfields train mononphm --data /tmp/noisy --mononphm.landmarks /tmp/noisy/landmarks ...
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..cameras import project_points
from ..checks import check_count
from ..data import SPLITS, composited_over, load_insta_dataset, save_insta_dataset
from ..data.frames import FrameSet
from ..parametric import ParametricModel, load_model
from ..parametric.tracked_meshes import compose_rotations
from .identities import GROUND_TRUTH_FILE

__all__ = ["LANDMARKS_FOLDER", "TrackingNoise", "noisy_tracking"]

LANDMARKS_FOLDER = "landmarks"  # noisy_tracking's detections: <split>.npy, [frames, L, 2] pixels


@dataclass(frozen=True)
class TrackingNoise:
    """Independent zero-mean Gaussian errors, drawn per frame from ``seed``: the head's rotation (an axis-angle of
    ``rotation_deg`` degrees s.d. per axis, about the model's root joint), its translation (``translation`` metres
    s.d. per axis) and each detected landmark (``landmarks`` pixels s.d. per coordinate).

    The defaults are a monocular tracker's and a detector's typical errors on a face a few hundred pixels
    across, scaled to our 128-pixel video: a degree and a half of rotation, 3 mm of translation (depth
    included), and a pixel (about 3 mm on the face) per landmark coordinate."""

    rotation_deg: float = 1.5
    translation: float = 0.003
    landmarks: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("rotation_deg", "translation", "landmarks"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < math.inf):
                raise ValueError(f"{name}: expected a non-negative standard deviation, got {value!r}")
        check_count("seed", self.seed, 0)


def noisy_tracking(root: str | Path, out: str | Path, noise: TrackingNoise | None = None) -> Path:
    """Copy the INSTA-layout capture ``root`` (tracked parameters needed) to the new folder ``out`` with
    ``noise`` on every timestep's tracked head pose (its parameters and meshes, and so every tracked quantity
    read from them; the frames of one timestep, a rig's cameras at one instant or a novel-view frame of a training
    timestep, share its error), and write ``out/landmarks/<split>.npy``: the true tracking's landmarks projected, plus
    ``noise.landmarks`` pixels (what MonoNPHM's ``landmarks`` option reads). The images, masks, depths, labels
    and a synthetic video's ground truth are kept as they are. Returns ``out``."""
    noise = noise or TrackingNoise()
    if not isinstance(noise, TrackingNoise):
        raise TypeError(f"noise: expected a TrackingNoise, got {type(noise).__name__}")
    root, out = Path(root), Path(out)
    if out.exists():
        raise FileExistsError(f"out: {out} exists; expected a new folder")
    splits = {split: load_insta_dataset(root, split) for split in SPLITS}
    first = next(iter(splits.values()))
    if first.params is None or first.model_path is None:
        raise ValueError(f"root: {root} has no tracked parameters and model to perturb")
    model_dir = out / "model"
    shutil.copytree(first.model_path, model_dir)
    model = load_model(model_dir, first.model_type)
    generator = torch.Generator().manual_seed(noise.seed)
    noisy, detections, errors = {}, {}, {}
    for split, frames in splits.items():
        noisy[split], detections[split] = _perturbed(model, frames, noise, generator, errors)
        noisy[split].model_path = model_dir
    save_insta_dataset(out, noisy, composited_over=composited_over(root))
    (out / LANDMARKS_FOLDER).mkdir()
    for split, pixels in detections.items():
        np.save(out / LANDMARKS_FOLDER / f"{split}.npy", pixels)
    if (root / GROUND_TRUTH_FILE).is_file():
        shutil.copy2(root / GROUND_TRUTH_FILE, out / GROUND_TRUTH_FILE)
    return out


def _perturbed(
    model: ParametricModel, frames: FrameSet, noise: TrackingNoise, generator: torch.Generator, errors: dict[bytes, Tensor]
) -> tuple[FrameSet, np.ndarray]:
    """The frames with noise on their head pose, and the true landmarks projected plus detector noise. ``errors``
    holds each timestep's pose error by its true tracked row: a frame of a timestep already drawn (another camera at
    the same instant, in this split or an earlier one) takes that timestep's, as a tracker fits an instant once."""
    p, n = frames.params, frames.num_frames
    with torch.no_grad():
        true = model(shape=p.shape, expression=p.expression, pose=p.pose, translation=p.translation)
        rotation = torch.randn(n, 3, generator=generator, dtype=torch.float64) * math.radians(noise.rotation_deg)
        shift = torch.randn(n, 3, generator=generator, dtype=torch.float64) * noise.translation
        drawn = torch.cat([rotation, shift], dim=1)  # drawn for every frame, so that the draws after stay as they were
        rows = torch.cat([p.expression.reshape(n, -1), p.pose.reshape(n, -1), p.translation.reshape(n, -1)], dim=1)
        for frame, row in enumerate(np.ascontiguousarray(rows.cpu().numpy())):
            drawn[frame] = errors.setdefault(row.tobytes(), drawn[frame].clone())
        rotation, shift = drawn[:, :3], drawn[:, 3:]
        pose = p.pose.clone()
        pose[:, 0] = compose_rotations(rotation.to(pose.dtype), pose[:, 0])  # a world rotation about the root joint
        translation = p.translation + shift.to(p.translation.dtype)
        head = model(shape=p.shape, expression=p.expression, pose=pose, translation=translation)
    detections = np.zeros((n, 0, 2), np.float32)
    if true.landmarks is not None:
        count = true.landmarks.shape[1]
        points = true.landmarks.reshape(-1, 3).to(frames.cameras.camera_to_world)
        pixels = project_points(frames.cameras, points, torch.arange(n).repeat_interleave(count)).pixels.reshape(n, count, 2)
        pixels = pixels + torch.randn(n, count, 2, generator=generator, dtype=torch.float64).to(pixels) * noise.landmarks
        detections = pixels.float().numpy()
    vertices = None if frames.mesh_vertices is None else head.vertices.to(frames.mesh_vertices.dtype)
    return replace(frames, params=replace(p, pose=pose, translation=translation), mesh_vertices=vertices), detections
