"""The tracking made consistent through an avatar of the video itself: Gaussians bound to the tracked FLAME
(GaussianAvatars' binding, :class:`~headfields.models.gaussian_avatars.GaussianAvatar`) trained on every frame, then
each frame's head turn (FLAME's global and neck joints) and position re-fitted to the frame's pixels through that
avatar, the avatar held.

Why: the landmark stages leave each frame's head turned about a degree off, differently frame to frame (a detector's
bias moves with the pose). An avatar trained on some frames learns the neck and hair where those frames put them,
and misplaces them on the others: on the built-in video's held-out frames GaussianAvatars lost 3.85 dB and INSTA
5.02 dB against the true tracking. The face's landmarks barely see the neck and hair; the avatar's pixels do. This is
VHAP's and metrical-tracker's photometric stage with an appearance that has hair and a neck, which a texture on FLAME
has not. The turn is re-fitted, not the expression: with expressions and the avatar free together, the face drifts
(1 px on the built-in video, where the rigid refit keeps it at 0.23 px).

    refined = refine_tracking(frames, model, work / "avatar", AvatarRefinementConfig())  # TrackedParams
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from ...cameras.paths import resized_cameras
from ...checks import check_count, check_positive
from ...data import FrameSet, TrackedParams
from ...fitting.stages import run_stage
from ...models.gaussian_avatars import GaussianAvatar, GaussianAvatarConfig, cpu_config
from ...parametric import ParametricModel
from ...progress import Progress, TextSink
from ...training import TrainingConfig, seed_everything, train
from .ingest import resize_images

__all__ = ["AvatarRefinementConfig", "avatar_recipe", "refine_tracking"]

REFIT_JOINTS = ("global", "neck")  # the head's turn: FLAME's root and the head above the neck
MATTE_CHUNK = 64  # frames matted and resized at once: 2,000 frames of 512 px whole take 6 GB of int32
EVAL_FRAMES = 4  # the avatar's own score (frames spread over the video): a check that it learned, not a result


@dataclass(frozen=True)
class AvatarRefinementConfig:
    """Steps and rates of :func:`refine_tracking`. On the built-in video (300 frames, 96 px), MediaPipe's tracking
    then 3,000 avatar steps and 25 refit steps a frame: GaussianAvatars' 4,650 steps (5 CPU minutes) on the held-out
    frames 28.51 dB without the refinement, 33.02 with 10 refit steps, 33.39 with 25 (two seeds each; the true
    tracking on the same pixels 34.54); 10 steps leave the turn short of its fit (0.67 -> 0.64 degrees, the neck
    1.14 -> 1.12 px at 25). 3,000 avatar steps gain 0.6 dB over 1,500. docs/bring_your_own_video.md."""

    avatar_steps: int = 3000  # the avatar's training steps, a frame each (0: no refinement)
    size: int = 256  # pixels a side, at most, the avatar and the refit see (a 512 crop rendered at a quarter the cost)
    refit_steps: int = 25  # Adam steps a frame
    rotation_rate: float = 3e-3  # radians a step, Adam's rate for the turn's axis-angle change
    translation_rate: float = 7.5e-4  # metres a step
    # The rates at the last refit step, times the first: Adam at a fixed rate stops anywhere within a step (0.75 mm)
    # of the optimum (true landmarks + 1.5 px, every 10th frame: 1.167 -> 1.106 mm; 50 steps gain nothing more).
    refit_decay: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        check_count("avatar_steps", self.avatar_steps, 0)
        check_count("refit_steps", self.refit_steps, 1)
        check_count("size", self.size, 16)
        check_positive("rotation_rate", self.rotation_rate, finite=True)
        check_positive("translation_rate", self.translation_rate, finite=True)
        check_positive("refit_decay", self.refit_decay, finite=True)
        check_count("seed", self.seed, 0)


def refine_tracking(
    frames: FrameSet, model: ParametricModel, work: str | Path, config: AvatarRefinementConfig, log: TextSink = sys.stdout
) -> TrackedParams:
    """``frames``' tracked parameters with each frame's head turn and position re-fitted through an avatar of all of
    them (see the module docstring), the avatar trained in the folder ``work`` (resumed from its checkpoint there), its
    lines written to ``log``. ``frames`` holds every frame of the video: parameters, cameras and foreground masks."""
    if frames.params is None or frames.masks is None:
        raise ValueError("frames: expected tracked parameters and foreground masks to refine the tracking with")
    recipe = avatar_recipe(config.avatar_steps)
    frames = _matted(frames, recipe.background, config.size)
    shown = torch.linspace(0, len(frames) - 1, min(EVAL_FRAMES, len(frames))).round().long().unique()
    held = replace(frames.select(shown), split="test")
    seed_everything(config.seed)
    avatar = GaussianAvatar(model, recipe)
    training = TrainingConfig(max_iterations=config.avatar_steps, eval_every=0, seed=config.seed)
    train(avatar, frames, held, work, training, device="cpu", log=log)
    return _refit(avatar, frames, config)


def avatar_recipe(steps: int) -> GaussianAvatarConfig:
    """The CPU recipe, with no periodic opacity reset within ``steps``: a reset leaves every Gaussian nearly
    transparent, and a refit through such an avatar goes astray (3,000 steps, ending on the CPU recipe's reset at
    3,000: the face 0.96 px off in the image, 5 dB lost)."""
    recipe = cpu_config()
    interval = max(recipe.density.opacity_reset_interval, steps + 1)
    return replace(recipe, density=replace(recipe.density, opacity_reset_interval=interval))


def _matted(frames: FrameSet, background: tuple[float, float, float], size: int) -> FrameSet:
    """The frames over ``background`` outside their masks (GaussianAvatars trains on matted frames), at most ``size``
    pixels a side, with nothing but their cameras and parameters."""
    cameras = frames.cameras
    scale = min(1.0, size / max(cameras.width, cameras.height))
    width, height = max(1, round(cameras.width * scale)), max(1, round(cameras.height * scale))
    parts = []
    for chunk in torch.arange(len(frames)).split(MATTE_CHUNK):  # int32 and float copies of a chunk, not of the video
        images = frames.select(chunk).over_background(background).images
        parts.append(images if scale == 1.0 else resize_images(images, height, width))
    if scale < 1.0:
        cameras = resized_cameras(cameras, width, height)
    return FrameSet(split="train", cameras=cameras, images=torch.cat(parts), params=frames.params)


def _refit(avatar: GaussianAvatar, frames: FrameSet, config: AvatarRefinementConfig) -> TrackedParams:
    """Each frame's turn and translation fitted to its pixels through ``avatar`` (held), from the tracking."""
    for weight in avatar.parameters():
        weight.requires_grad_(False)
    p = frames.params
    joints = [avatar.parametric.joint_index(name) for name in REFIT_JOINTS]
    pose, translation = p.pose.clone(), p.translation.clone()
    targets = frames.images.float() / 255
    with Progress(len(frames), "track: refit through the avatar", "frame") as bar:
        for i in range(len(frames)):
            turn = torch.zeros(len(joints), 3, dtype=pose.dtype, requires_grad=True)
            shift = torch.zeros(3, dtype=translation.dtype, requires_grad=True)

            def loss(step: int, i=i, turn=turn, shift=shift) -> Tensor:
                image = _render(avatar, frames, p, i, _turned(pose[i], joints, turn), translation[i] + shift)
                return (image - targets[i]).abs().mean()  # GaussianAvatars' L1

            groups = [("turn", [turn], config.rotation_rate), ("shift", [shift], config.translation_rate)]
            run_stage(groups, config.refit_steps, loss, decay=config.refit_decay)
            pose[i] = _turned(pose[i], joints, turn.detach())
            translation[i] += shift.detach()
            bar.update(1)
    return TrackedParams(p.shape, p.expression, pose, translation)


def _turned(pose: Tensor, joints: list[int], turn: Tensor) -> Tensor:
    """``pose [J, 3]`` with ``turn`` added to the axis-angles of ``joints`` (small: added, not composed)."""
    change = torch.zeros_like(pose).index_put((torch.tensor(joints),), turn.to(pose.dtype))
    return pose + change


def _render(avatar: GaussianAvatar, frames: FrameSet, p: TrackedParams, i: int, pose: Tensor, translation: Tensor) -> Tensor:
    head = avatar.parametric(
        shape=p.shape, expression=p.expression[i : i + 1], pose=pose[None], translation=translation[None]
    )  # fmt: skip
    return avatar.rasterize(avatar.posed(head, 0), frames.cameras, i, validate=False).image
