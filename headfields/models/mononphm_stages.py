"""MonoNPHM's tracking stages (Giebenhain et al., CVPR 2024; ``photometric_tracking/tracking.py`` and
``scripts/configs/tracking/stage1_kinect.yaml``, ``stage2_kinect.yaml``): each stage's loss weights, learning rates
and their schedules (:class:`StageConfig`), the two stages together (:class:`MonoNphmTracking`) and a CPU's sizes
(:func:`cpu_tracking`). :mod:`~headfields.models.mononphm_tracking` runs them.

    config = cpu_tracking(joint=dataclasses.replace(cpu_tracking().joint, steps=100))
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal

from ..checks import check_count, check_positive
from ..data.ibug import ANCHOR_LANDMARK_PAIRS, ANCHOR_PAIR_WEIGHTS
from ..fitting import Schedule, check_schedule
from .nphm import NPHM_UNIT

__all__ = [
    "CODE_GRADIENT_NORM",
    "CPU_ANCHOR_WEIGHTS",
    "STAGE1_SCHEDULE",
    "STAGE2_SCHEDULE",
    "VARIANCE_MAX",
    "MonoNphmTracking",
    "TRAVELLING_RATES",
    "StageConfig",
    "TrackingHistory",
    "cpu_tracking",
    "shortened",
]

# MonoNPHM's rendering sharpness inv_s = exp(10 v): v = min(v0 + 0.15 (step // every), 0.8); v0 0.3 on the first
# frame (every 25 steps), 0.5 after (every 50).
VARIANCE_STEP = 0.15
VARIANCE_MAX = 0.8


CODE_GRADIENT_NORM = 0.1  # tracking.py clips the identity's and the appearance's gradient to this norm, each


# tracking.py's update_lrs and landmark weights over stage 1's 251 epochs (each frame's, by its steps), and stage 2's
# halvings: (share of the stage's steps, what, factor). Rates: "codes" (identity, appearance, colour), "expression",
# "lighting", "pose" (rotation, shift, scale); weights: "landmarks", "smooth_expression", "smooth_pose".
STAGE1_SCHEDULE: Schedule = (
    (32 / 251, "pose", 0.5),
    (150 / 251, "expression", 2.5), (150 / 251, "lighting", 0.5),  # the expression's rate set to the codes' (5e-4)
    (200 / 251, "codes", 0.5), (200 / 251, "expression", 0.5), (200 / 251, "pose", 0.5),
    (225 / 251, "codes", 0.5), (225 / 251, "expression", 0.5), (225 / 251, "lighting", 0.5),
    (25 / 251, "landmarks", 0.5), (50 / 251, "landmarks", 0.4), (100 / 251, "landmarks", 0.5),  # 100, 50, 20, 10
)  # fmt: skip
STAGE2_SCHEDULE: Schedule = tuple(
    (share, name, 0.5) for share in (0.5, 0.75) for name in ("codes", "expression", "lighting", "pose")
) + ((0.5, "smooth_expression", 0.5), (0.5, "smooth_pose", 0.5))
SCHEDULED = ("codes", "expression", "lighting", "pose", "landmarks", "smooth_expression", "smooth_pose")


@dataclass(frozen=True)
class StageConfig:
    """One tracking stage's weights and rates (MonoNPHM's configs/tracking and tracking.py; see docs/mononphm.md)."""

    steps: int  # per frame (stage 1) or in all (stage 2)
    rgb: float = 100.0
    mouth_interior: float = 1 / 25  # the mouth interior's colour weight
    mask: float = 25.0  # (1 - soft Jaccard) x 5
    landmarks: float = 100.0  # of the mean squared landmark error in image widths
    local_code: float = 1000.0  # squared norm of all the local identity codes (a sum, as tracking.py's reg_loc_geo)
    global_code: float = 25.0  # squared global identity code
    symmetry: float = 1.0  # mean distance between mirrored anchors' local codes (symm_dist_geo)
    appearance_code: float = 50.0
    expression_code: float = 150.0
    smooth_expression: float = 0.0  # squared difference of neighbouring frames' expression codes
    smooth_pose: float = 0.0  # and poses (rotation + 10 x shift, the shift in MonoNPHM's head units)
    code_rate: float = 5e-4  # identity and appearance codes
    colour_rate: float = 5e-4  # the affine colour transform (fitted with the identity; tracking.py's colorA, colorb)
    expression_rate: float = 2e-4
    lighting_rate: float = 5e-2
    rotation_rate: float = 5e-3
    shift_rate: float = 2.5e-3 * NPHM_UNIT  # metres: tracking.py's 2.5e-3 is in its head units (FLAME's x 4, 0.25 m)
    scale_rate: float = 0.0  # the head scale: tracking.py gives scale_param an Adam (5e-3) but requires_grad False
    schedule: Schedule = STAGE1_SCHEDULE
    variance_start: float = 0.5  # the sharpness schedule: v = min(start + 0.15 (step // every), 0.8)
    variance_every: int = 50

    def __post_init__(self) -> None:
        check_count("steps", self.steps, 0)
        check_count("variance_every", self.variance_every, 1)
        check_schedule("schedule", self.schedule, SCHEDULED)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("steps", "variance_every", "schedule"):
                continue
            if not (isinstance(value, int | float) and 0 <= value < math.inf):
                raise ValueError(f"{f.name}: expected a finite non-negative number, got {value!r}")

    def variance(self, step: int) -> float:
        """The rendering sharpness v at ``step`` (``inv_s = exp(10 v)``)."""
        return min(self.variance_start + VARIANCE_STEP * (step // self.variance_every), VARIANCE_MAX)


@dataclass(frozen=True)
class MonoNphmTracking:
    """MonoNPHM's two stages. Stage 1: the first frame (identity, appearance, lighting, its expression and pose)
    with ``first_frame`` steps, then each frame (expression and pose; identity, appearance and lighting fixed),
    starting from the previous one. Stage 2: every frame jointly, with temporal smoothness. The budget and the
    seed are the tracking functions' arguments (a run's: its training configuration's ``max_minutes`` and ``seed``)."""

    first_frame: StageConfig = field(
        default_factory=lambda: StageConfig(500, expression_code=1000.0, variance_start=0.3, variance_every=25)
    )
    per_frame: StageConfig = field(
        default_factory=lambda: StageConfig(125, code_rate=4.95e-4, rotation_rate=5e-4, shift_rate=2.5e-4 * NPHM_UNIT)
    )
    joint: StageConfig = field(
        default_factory=lambda: StageConfig(
            steps=1000, mask=10.0, landmarks=5.0, local_code=500.0, global_code=50.0, appearance_code=50.0,
            expression_code=100.0, smooth_expression=2000.0, smooth_pose=50000.0, code_rate=2e-4, colour_rate=0.0,
            expression_rate=1e-4, lighting_rate=1e-4, rotation_rate=3e-4, shift_rate=1e-4 * NPHM_UNIT,
            schedule=STAGE2_SCHEDULE,
        )
    )  # fmt: skip
    rays_per_step: int = 450  # MonoNPHM: 450 rays of one frame
    foreground_fraction: float = 0.75  # of them on the mask, the rest anywhere
    frames_per_joint_step: int = 1
    landmark_distance: float = 0.01  # metres: landmark-anchor pairs (landmark_pairs)
    # Each anchor <-> iBUG-68 pair's residual weight, in ANCHOR_LANDMARK_PAIRS' order (tracking.py: chin, lips, eyelids 100)
    anchor_weights: tuple[float, ...] = ANCHOR_PAIR_WEIGHTS
    code_gradient_norm: float = CODE_GRADIENT_NORM  # the identity's and the appearance's gradients clipped to this norm
    # Where the identity and appearance codes start and their regularisers pull: "prior_mean", the prior's training
    # identities' mean codes, or "zero" (tracking.py's torch.zeros; its prior's mean codes are near zero, NPHM's 0.03).
    code_centre: Literal["prior_mean", "zero"] = "prior_mean"

    def __post_init__(self) -> None:
        if len(self.anchor_weights) != len(ANCHOR_LANDMARK_PAIRS) or not all(
            math.isfinite(w) and w >= 0 for w in self.anchor_weights
        ):
            raise ValueError(
                f"anchor_weights: expected {len(ANCHOR_LANDMARK_PAIRS)} finite non-negative weights (one a pair of "
                f"ANCHOR_LANDMARK_PAIRS), got {self.anchor_weights!r}"
            )
        check_positive("code_gradient_norm", self.code_gradient_norm)
        check_count("rays_per_step", self.rays_per_step, 1)
        check_count("frames_per_joint_step", self.frames_per_joint_step, 1)
        if not 0.0 <= self.foreground_fraction <= 1.0:
            raise ValueError(f"foreground_fraction: expected a fraction in [0, 1], got {self.foreground_fraction}")
        check_positive("landmark_distance", self.landmark_distance)
        if self.code_centre not in ("prior_mean", "zero"):
            raise ValueError(f"code_centre: expected 'prior_mean' or 'zero', got {self.code_centre!r}")


# The rates cpu_tracking() scales with its shorter stages: what a person is (the identity and appearance codes, the
# colour transform) and each frame's expression, which start at zero and must travel as far in fewer steps.
TRAVELLING_RATES = ("code_rate", "colour_rate", "expression_rate")


def shortened(stage: StageConfig, steps: int) -> StageConfig:
    """``stage`` in ``steps`` steps, its :data:`TRAVELLING_RATES` times its steps over ``steps``: Adam moves a parameter
    at most about its rate a step, so the codes can travel as far as in the paper's stage (its schedule is by share of
    the steps already). The pose and the lighting keep their rates: they start near their answer."""
    k = stage.steps / check_count("steps", steps, 1)
    return dataclasses.replace(stage, steps=steps, **{name: getattr(stage, name) * k for name in TRAVELLING_RATES})


# cpu_tracking()'s landmark pairs, each weighed 1: the paper's x 100 on chin, lips and eyelids trusts its prior,
# trained for days, with those anchors. On a prior of minutes x 100 pulled the identity off the face: 1.39 against
# 1.66 mm face L1 when the prior's anchors missed their scans by 6-11 mm, 1.19 against 1.40 mm with them within
# 1-1.6 mm (cpu_prior_training; docs/mononphm.md, "Results").
CPU_ANCHOR_WEIGHTS: tuple[float, ...] = (1.0,) * len(ANCHOR_LANDMARK_PAIRS)


def cpu_tracking(**overrides) -> MonoNphmTracking:
    """Fewer steps and rays for a CPU (:func:`shortened` stages: the codes' rates scaled to the steps), the paper's
    weights but every landmark pair's weight 1 (:data:`CPU_ANCHOR_WEIGHTS`: a CPU prior's anchors), then
    ``overrides``."""
    base = MonoNphmTracking()
    sizes = dict(
        first_frame=shortened(base.first_frame, 200),
        per_frame=shortened(base.per_frame, 20),
        joint=shortened(base.joint, 300),
        rays_per_step=256,
        frames_per_joint_step=2,
        anchor_weights=CPU_ANCHOR_WEIGHTS,
    )
    return MonoNphmTracking(**{**sizes, **overrides})


@dataclass
class TrackingHistory:
    """What :func:`track_sequence` did: steps and seconds per stage, and the logged losses."""

    steps: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    logs: list[dict[str, float]] = field(default_factory=list)
