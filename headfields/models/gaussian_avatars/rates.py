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

__all__ = ["SPREAD_SHARE", "camera_extent", "learning_rates", "position_learning_rate"]


# Where the training cameras barely spread (a fixed monocular camera), 3DGS's extent (their spread about their own
# mean) would shrink the position rate and the densification cuts to nothing: below this share of the head-centred
# extent, that one is taken instead.
SPREAD_SHARE = 0.1


def camera_extent(frames: FrameSet, head_center: torch.Tensor) -> tuple[float, str]:
    """The scale 3DGS calls ``cameras_extent`` (``getNerfppNorm``: 1.1 times the largest distance of a training camera
    from the cameras' mean centre; GaussianAvatars' multi-view rigs), and which rule gave it. For a capture whose
    cameras barely spread (under ``SPREAD_SHARE`` of the other: INSTA's fixed monocular camera, where 3DGS's is 0), 1.1
    times the largest distance of a training camera from the head's centre instead."""
    eyes = frames.cameras.camera_to_world[:, :3, 3].to(head_center)
    spread = 1.1 * float((eyes - eyes.mean(dim=0)).norm(dim=-1).max())
    from_head = 1.1 * float((eyes - head_center).norm(dim=-1).max())
    if spread >= SPREAD_SHARE * from_head:
        return spread, "3DGS's: the training cameras about their mean centre"
    return from_head, "the training cameras about the head's centre (they barely spread: 3DGS's would be near 0)"


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
    ``extent``) over ``position_lr_max_steps``; with ``position_lr_delay_steps``, scaled by ``position_lr_delay_mult``
    rising to 1 along a quarter sine over those steps (none by default, as GaussianAvatars trains)."""
    t = min(max(step / config.position_lr_max_steps, 0.0), 1.0)
    init, final = config.position_lr_init * extent, config.position_lr_final * extent
    delay = 1.0
    if config.position_lr_delay_steps > 0:
        rise = min(max(step / config.position_lr_delay_steps, 0.0), 1.0)
        delay = config.position_lr_delay_mult + (1 - config.position_lr_delay_mult) * math.sin(0.5 * math.pi * rise)
    return delay * math.exp((1 - t) * math.log(init) + t * math.log(final))
