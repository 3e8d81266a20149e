"""The scales and rates of a GaussianAvatars run (``scene/gaussian_model.py`` ``training_setup``, 3DGS's
``get_expon_lr_func``): the extent the positions' rate and density control's sizes are measured by, each parameter's
learning rate, and the positions' rate decayed log-linearly over the recipe's steps."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ...data import FrameSet
    from .model import GaussianAvatarConfig

__all__ = ["camera_extent", "learning_rates", "position_learning_rate"]


def camera_extent(frames: FrameSet, head_center: torch.Tensor) -> float:
    """The scale 3DGS calls ``cameras_extent``, for a capture whose one camera may not move: 1.1 times the largest
    distance of a training camera from the head's centre. (3DGS measures the cameras' spread about their own
    mean, which is 0 for INSTA's fixed monocular camera; on a multi-view rig around a head the two agree.)"""
    eyes = frames.cameras.camera_to_world[:, :3, 3].to(head_center)
    return 1.1 * float((eyes - head_center).norm(dim=-1).max())


def learning_rates(config: GaussianAvatarConfig, extent: float) -> dict[str, float]:
    """Each Gaussian parameter's rate at the first step (:func:`~headfields.models.gaussian_avatars.density.gaussian_param_groups`
    takes them)."""
    return {
        "local_means": position_learning_rate(config, 0, extent),
        "local_quats": config.rotation_lr,
        "local_log_scales": config.scaling_lr,
        "opacity_logits": config.opacity_lr,
        "sh_dc": config.feature_lr,
        "sh_rest": config.feature_lr / 20,  # training_setup: f_rest at feature_lr / 20
    }


def position_learning_rate(config: GaussianAvatarConfig, step: int, extent: float) -> float:
    """3DGS's ``get_expon_lr_func`` for the positions at ``step``: log-linear from ``init`` to ``final`` (both times
    ``extent``) over ``position_lr_max_steps``, no delay steps."""
    t = min(max(step / config.position_lr_max_steps, 0.0), 1.0)
    init, final = config.position_lr_init * extent, config.position_lr_final * extent
    return math.exp((1 - t) * math.log(init) + t * math.log(final))
