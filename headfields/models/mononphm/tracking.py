"""MonoNPHM's tracking (Giebenhain et al., CVPR 2024; ``photometric_tracking/tracking.py`` and
``scripts/configs/tracking/stage1_kinect.yaml``, ``stage2_kinect.yaml``): fit a frozen NPHM prior, inside a
:class:`~headfields.models.mononphm.MonoNphm`, to the frames of a monocular video, with the parts every NeuS
avatar's tracking shares (:mod:`headfields.fitting`).

The stages' settings: each stage's loss weights, learning rates and their schedules (:class:`StageConfig`), the two
stages together (:class:`MonoNphmTracking`) and a CPU's sizes (:func:`cpu_tracking`). :func:`track_sequence` runs
the paper's two stages on the training frames: each frame in turn (the first also fits identity, appearance and
lighting; later ones start from the previous frame), then all frames jointly with temporal smoothness.
:func:`track_frames` fits the held-out frames' expressions and poses alone. The losses (MonoNPHM's tracking code):
L1 colour on the foreground with the mouth interior down-weighted, a soft-Jaccard silhouette, landmarks (the
prior's anchors carried to posed space by root finding, against the capture's tracked landmarks projected), and
the codes' regularisers.

    config = cpu_tracking(joint=dataclasses.replace(cpu_tracking().joint, steps=100))
    history = track_sequence(model, subject.train, config, max_minutes=5)
    track_frames(model, subject.eval, config)  # a model built with held_out_frames=len(subject.eval)
    history.steps  # {"stage1": ..., "stage2": ...}
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from ...checks import check_count, check_positive
from ...data import FrameSet
from ...data.ibug import ANCHOR_LANDMARK_PAIRS, ANCHOR_PAIR_WEIGHTS, model_landmark
from ...fitting import (
    FramePixels,
    Schedule,
    check_schedule,
    detected_landmarks,
    landmark_error,
    run_stage,
    scheduled,
    soft_jaccard,
)
from ...heads import tracked_head
from ...parametric import Head, SubjectModel
from ...progress import Progress
from ...renderers import RenderContext
from .prior import NPHM_UNIT

if TYPE_CHECKING:
    from .model import MonoNphm, TrackedFrames
    from .prior import Nphm

__all__ = [
    "CODE_GRADIENT_NORM",
    "COLOUR_RANGE",
    "CPU_ANCHOR_WEIGHTS",
    "MonoNphmTracking",
    "STAGE1_SCHEDULE",
    "STAGE2_SCHEDULE",
    "StageConfig",
    "TRAVELLING_RATES",
    "TrackingHistory",
    "VARIANCE_MAX",
    "cpu_tracking",
    "landmark_pairs",
    "shortened",
    "track_frames",
    "track_sequence",
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


COLOUR_RANGE = 2.0  # MonoNPHM's colours span [-1, 1]: its colour L1 is this times ours, in [0, 1]


def landmark_pairs(
    prior: Nphm, parametric: SubjectModel, max_distance: float = 0.01, weights: tuple[float, ...] = ANCHOR_PAIR_WEIGHTS
) -> tuple[Tensor, Tensor, Tensor]:
    """(anchor ids, landmark ids, weights): the pairs of :data:`~headfields.data.ibug.ANCHOR_LANDMARK_PAIRS` (MonoNPHM's
    anchor <-> iBUG-68 pairs, with their residual ``weights``) whose landmark the tracking model has and whose template
    anchor lies within ``max_distance`` metres of it on the neutral head: all of them for a prior whose anchors
    :func:`~headfields.synthetic.anchor_vertices` placed; a warning where fewer than half of them fit."""
    landmarks = parametric().landmarks
    if landmarks is None:
        raise ValueError("parametric: expected a model with landmarks (lmk_faces_idx), got none")
    template = prior.template_anchors * prior.normalize.scale + prior.normalize.center
    rows, candidates = [], 0
    for (anchor, ibug), weight in zip(ANCHOR_LANDMARK_PAIRS, weights, strict=True):
        index = model_landmark(ibug, landmarks.shape[1])
        if index is not None and anchor < len(template):
            candidates += 1
            if float((landmarks[0, index].to(template) - template[anchor]).norm()) <= max_distance:
                rows.append((anchor, index, weight))
    if 2 * len(rows) < candidates:  # a prior whose anchors anchor_vertices did not place at the landmarks
        warnings.warn(f"landmark_pairs: only {len(rows)} of the {candidates} anchor <-> landmark pairs the model has "
                      f"lie within {max_distance} m; the landmark term steers only those", stacklevel=2)  # fmt: skip
    anchors, ids, weights = zip(*rows, strict=True) if rows else ((), (), ())
    as_long = dict(dtype=torch.long, device=template.device)
    return torch.tensor(anchors, **as_long), torch.tensor(ids, **as_long), torch.tensor(weights, device=template.device)


def _frame_loss(
    tracker: _Tracker, head: Head, frame: int, stage: StageConfig, landmark_weight: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """One frame's photometric, silhouette and landmark terms (and each, detached: read only when logged)."""
    model, data, c = tracker.model, tracker.data, tracker.config
    pick = data.draw(frame, c.rays_per_step, c.foreground_fraction, tracker.generator)
    out = model.render(data.rays(frame, pick), head, RenderContext(tracker.generator))
    mask = data.mask[frame, pick].to(out.composite.rgb.dtype)
    weight = mask * torch.where(data.mouth[frame, pick], stage.mouth_interior, 1.0) if data.mouth is not None else mask
    # On MonoNPHM's colour scale: its frames are in [-1, 1] (data_loading.py), ours in [0, 1], so its L1 is twice ours
    # and the paper's weights (colour against silhouette, landmarks and codes) hold only on its scale.
    error = (out.composite.rgb - data.rgb[frame, pick]).abs().sum(-1) * COLOUR_RANGE
    rgb = (error * weight).sum() / c.rays_per_step
    silhouette = soft_jaccard(out.composite.opacity.clamp(0, 1), mask)
    loss = stage.rgb * rgb + stage.mask * silhouette
    logs = {"rgb": rgb.detach(), "mask": silhouette.detach()}
    anchors, _, weights = tracker.pairs
    if tracker.detected is not None and landmark_weight > 0 and len(anchors):
        posed = model.posed_anchors(head, frame, anchors)
        landmarks = landmark_error(data.cameras, posed, frame, tracker.detected[frame], weights)
        loss = loss + landmark_weight * landmarks
        logs["landmarks"] = landmarks.detach()
    return loss, logs


def _code_terms(model: MonoNphm, track: TrackedFrames, frames: Tensor, stage: StageConfig) -> Tensor:
    """The codes' regularisers: the identity's and the appearance's squared distances from their centre
    (``MonoNphmTracking.code_centre``), the mirrored local codes' distance, the expressions' squared norms."""
    c, codes = model.prior.config, model.codes
    identity = (codes.identity - codes.identity_centre)[0]
    glob, local = identity[: c.global_dim], identity[c.global_dim :]
    appearance = codes.appearance - codes.appearance_centre
    loss = stage.global_code * glob.square().sum() + stage.appearance_code * appearance.square().sum()
    if local.numel():
        loss = loss + stage.local_code * local.square().sum()
    symmetry = model.prior.mirror_distance(model.codes.identity)
    if symmetry is not None:
        loss = loss + stage.symmetry * symmetry
    return loss + stage.expression_code * track.codes[frames].square().sum(-1).mean()


def _smoothness(track: TrackedFrames, stage: StageConfig, step: int = 0, steps: int = 1) -> Tensor:
    codes, rotation, shift = track.codes, track.rotation, track.shift
    if codes.shape[0] < 2:
        return codes.sum() * 0
    expression = (codes[1:] - codes[:-1]).square().sum(-1).mean()
    # tracking.py's translation is in its head units (FLAME's metres x 4): ours, in metres, divided by NPHM_UNIT
    motion = (rotation[1:] - rotation[:-1]).square().sum(-1) + 10 * ((shift[1:] - shift[:-1]) / NPHM_UNIT).square().sum(-1)
    weights = [getattr(stage, n) * scheduled(stage.schedule, n, step, steps) for n in ("smooth_expression", "smooth_pose")]
    return weights[0] * expression + weights[1] * motion.mean()


def _groups(model: MonoNphm, track: TrackedFrames, stage: StageConfig, identity: bool) -> list[tuple[str, list[Tensor], float]]:
    """(schedule name, parameters, rate) of what a stage fits: the frames' expressions and poses, and with
    ``identity`` the person's codes, colour transform, lighting and head scale."""
    groups = [
        ("expression", [track.codes], stage.expression_rate),
        ("pose", [track.rotation], stage.rotation_rate),
        ("pose", [track.shift], stage.shift_rate),
    ]
    if identity:
        groups += [
            ("codes", [model.codes.identity, model.codes.appearance], stage.code_rate),
            ("codes", list(model.colour.parameters()), stage.colour_rate),
            ("lighting", [model.lighting.coefficients], stage.lighting_rate),
            ("pose", [model.pose.scale], stage.scale_rate),
        ]
    return groups


@dataclass
class _Tracker:
    """What every tracking step reads: the model, the pixels, the landmark pairs and their detections."""

    model: MonoNphm
    track: TrackedFrames  # what is fitted per frame (the training frames', or the held-out frames')
    base: Head  # the frames' tracked head; the fitted codes and pose corrections ride on it
    data: FramePixels
    pairs: tuple[Tensor, Tensor, Tensor]  # anchor ids, landmark ids, weights (landmark_pairs)
    detected: Tensor | None  # [F, pairs, 2] pixels
    config: MonoNphmTracking
    generator: torch.Generator
    history: TrackingHistory
    progress: Progress | None = None

    def run(self, frames: list[int], stage: StageConfig, steps: int, identity: bool, name: str, per_step: int = 1) -> None:
        """``steps`` Adam steps on ``frames`` (``per_step`` of them a step); only their rows of the per-frame codes
        and poses change, and the identity, appearance, colour, lighting and scale only with ``identity``. Stage 2
        (``len(frames) > 1``) adds the temporal smoothness."""
        model, track = self.model, self.track
        rows = torch.tensor(frames, device=model.box.device)
        keep = torch.zeros(track.count, dtype=torch.bool, device=rows.device)
        keep[rows] = True

        def loss(step: int) -> Tensor:
            model.set_variance(stage.variance(step))
            drawn = torch.randint(0, len(frames), (min(per_step, len(frames)),), generator=self.generator).tolist()
            head = track.attach(self.base)
            value, logs = _code_terms(model, track, rows, stage), {}
            landmark_weight = stage.landmarks * scheduled(stage.schedule, "landmarks", step, steps)
            for i in drawn:
                term, logs = _frame_loss(self, head, frames[i], stage, landmark_weight)
                value = value + term / len(drawn)
            if len(frames) > 1:
                value = value + _smoothness(track, stage, step, steps)
            if step % 25 == 0 or step == steps - 1:  # the only host reads: every 25 steps
                total = float(value.detach())
                self.history.logs.append({"stage": name, "step": step, "loss": total, **{k: float(v) for k, v in logs.items()}})
                if self.progress is not None:
                    self.progress.set_values(stage=name, loss=total)
            if self.progress is not None:
                self.progress.update(1)
            return value

        def after_backward() -> None:
            for p in (track.codes, track.rotation, track.shift):  # other frames stay put
                if p.grad is not None:
                    p.grad[~keep] = 0
            for p in (model.codes.identity, model.codes.appearance):  # tracking.py: each code's gradient norm at 0.1
                if p.grad is not None:
                    torch.nn.utils.clip_grad_norm_(p, self.config.code_gradient_norm)

        run_stage(_groups(model, track, stage, identity), steps, loss, stage.schedule, after_backward)
        self.history.steps[name] = self.history.steps.get(name, 0) + steps


def track_sequence(
    model: MonoNphm,
    frames: FrameSet,
    config: MonoNphmTracking | None = None,
    landmarks: Float[Tensor, "F L 2"] | None = None,
    max_minutes: float | None = None,
    seed: int = 0,
) -> TrackingHistory:
    """Fit ``model`` (a frozen prior, fresh codes) to its training ``frames``: stage 1 frame by frame, then stage 2
    jointly. ``landmarks``: detected landmarks per frame (pixels, in the order of the capture's tracking model's
    landmarks or all 68 iBUG points, e.g. a landmark file's), instead of the capture's tracked landmarks projected.
    ``max_minutes``: a budget for the whole tracking (one step is timed, then every stage's steps scale to fit);
    ``seed``: the rays'.

        history = track_sequence(model, subject.train, cpu_tracking(), max_minutes=5)
        history.steps["stage1"], history.seconds["stage2"]
    """
    return _track(model, frames, config or MonoNphmTracking(), "train", landmarks, max_minutes, seed)


def track_frames(
    model: MonoNphm,
    frames: FrameSet,
    config: MonoNphmTracking | None = None,
    landmarks: Float[Tensor, "F L 2"] | None = None,
    max_minutes: float | None = None,
    seed: int = 0,
    split: str = "held_out",
) -> TrackingHistory:
    """Fit only the expression codes and poses of ``frames`` (stage 1 per frame, each frame from the mean code),
    with the identity, appearance and lighting as they are: the held-out frames of a tracked sequence (``split``:
    which of the model's per-frame tables, see :class:`~headfields.models.mononphm.MonoNphm`). The other
    arguments as in :func:`track_sequence`.

        model = MonoNphm(prior, subject.parametric, len(subject.train), held_out_frames=len(subject.eval))
        track_sequence(model, subject.train)
        track_frames(model, subject.eval)
    """
    return _track(model, frames, config or MonoNphmTracking(), split, landmarks, max_minutes, seed, fit_identity=False)


def _track(
    model: MonoNphm,
    frames: FrameSet,
    c: MonoNphmTracking,
    split: str,
    landmarks: Tensor | None,
    max_minutes: float | None,
    seed: int,
    fit_identity: bool = True,
) -> TrackingHistory:
    check_positive("max_minutes", max_minutes)
    check_count("seed", seed, 0)
    track = model.track(split)
    if len(frames) != track.count:
        raise ValueError(f"frames: expected the {track.count} frames the model fits as {split!r}, got {len(frames)}")
    pairs = landmark_pairs(model.prior, model.parametric, c.landmark_distance, c.anchor_weights)
    base = tracked_head(model.parametric, frames)
    tracker = _Tracker(
        model, track, base, FramePixels(frames, model.box.device), pairs,
        detected_landmarks(model.parametric, frames, base, pairs[1], landmarks, model.box.device),
        c, torch.Generator().manual_seed(seed), TrackingHistory(),
    )  # fmt: skip
    n, first = len(frames), c.first_frame if fit_identity else c.per_frame
    scale = 1.0
    total = first.steps + (n - 1) * c.per_frame.steps + (c.joint.steps if fit_identity else 0)
    if max_minutes is not None:  # time one step, then scale every stage's steps to fit the budget
        start = time.perf_counter()
        tracker.run([0], first, 1, fit_identity, "probe")
        scale = min(1.0, 60 * max_minutes / max((time.perf_counter() - start) * total, 1e-9))
    steps = [max(1, round(scale * (first if f == 0 else c.per_frame).steps)) for f in range(n)]
    joint_steps = max(1, round(scale * c.joint.steps)) if fit_identity and c.joint.steps else 0
    tracker.progress = Progress(sum(steps) + joint_steps, "track" if fit_identity else "track held-out frames", "step")
    started = time.perf_counter()
    for f in range(n):
        stage = first if f == 0 else c.per_frame
        if f > 0:
            with torch.no_grad():  # start from the previous frame (a sequence) or the mean (held-out frames)
                for p in (track.codes, track.rotation, track.shift):
                    p[f] = p[f - 1] if fit_identity else 0.0
        tracker.run([f], stage, steps[f], fit_identity and f == 0, "stage1")
    tracker.history.seconds["stage1"] = time.perf_counter() - started
    if joint_steps:
        started = time.perf_counter()
        tracker.run(list(range(n)), c.joint, joint_steps, True, "stage2", c.frames_per_joint_step)
        tracker.history.seconds["stage2"] = time.perf_counter() - started
    tracker.progress.close()
    model.set_variance(VARIANCE_MAX)
    return tracker.history
