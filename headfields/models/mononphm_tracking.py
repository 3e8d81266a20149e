"""MonoNPHM's tracking (Giebenhain et al., CVPR 2024): fit a frozen NPHM prior, inside a
:class:`~headfields.models.mononphm.MonoNphm`, to the frames of a monocular video.

:func:`track_sequence` runs the paper's two stages on the training frames: each frame in turn (the first also fits
identity, appearance and lighting; later ones start from the previous frame), then all frames jointly with temporal
smoothness. :func:`track_frames` fits the held-out frames' expressions and poses alone. The losses (MonoNPHM's
tracking code): L1 colour on the foreground with the mouth interior down-weighted, a soft-Jaccard silhouette,
landmarks (the prior's anchors carried to posed space by root finding, against the capture's tracked landmarks
projected), and the codes' regularisers.

    history = track_sequence(model, subject.train, cpu_tracking(), max_minutes=5)
    track_frames(model, subject.eval, cpu_tracking())  # a model built with held_out_frames=len(subject.eval)
    history.steps  # {"stage1": ..., "stage2": ...}
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor

from ..checks import check_count, check_float, check_positive
from ..data import FrameSet
from ..heads import tracked_head
from ..parametric import Head, SubjectModel
from ..progress import Progress
from ..renderers import image_pixels, pixel_rays, project_points

if TYPE_CHECKING:
    from .mononphm import MonoNphm, TrackedFrames
    from .nphm import Nphm

__all__ = [
    "MonoNphmTracking",
    "StageConfig",
    "TrackingHistory",
    "cpu_tracking",
    "landmark_pairs",
    "track_frames",
    "track_sequence",
]

# MonoNPHM's rendering sharpness inv_s = exp(10 v): v = min(v0 + 0.15 (step // every), 0.8); v0 0.3 on the first
# frame (every 25 steps), 0.5 after (every 50).
VARIANCE_STEP = 0.15
VARIANCE_MAX = 0.8


def landmark_pairs(prior: Nphm, parametric: SubjectModel, max_distance: float = 0.01) -> tuple[Tensor, Tensor]:
    """(anchor ids, landmark ids): each of the tracking model's landmarks on its neutral head paired with the
    prior's nearest template anchor, where that is within ``max_distance`` metres (MonoNPHM pairs 35 of its 65
    anchors with iBUG-68 landmarks by hand)."""
    landmarks = parametric().landmarks
    if landmarks is None:
        raise ValueError("parametric: expected a model with landmarks (lmk_faces_idx), got none")
    template = prior.template_anchors * prior.normalize.scale + prior.normalize.center
    distance = torch.cdist(landmarks[0].to(template), template)
    nearest = distance.min(dim=1)
    keep = nearest.values <= max_distance
    return nearest.indices[keep], torch.nonzero(keep)[:, 0]


CODE_GRADIENT_NORM = 0.1  # tracking.py clips the identity's and the appearance's gradient to this norm, each


@dataclass(frozen=True)
class StageConfig:
    """One tracking stage's weights and rates (MonoNPHM's configs/tracking; see docs/mononphm.md)."""

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
    smooth_pose: float = 0.0  # and poses (rotation + 10 x shift)
    code_rate: float = 5e-4  # identity and appearance codes
    expression_rate: float = 2e-4
    lighting_rate: float = 5e-2
    rotation_rate: float = 5e-3
    shift_rate: float = 2.5e-3
    variance_start: float = 0.5  # the sharpness schedule: v = min(start + 0.15 (step // every), 0.8)
    variance_every: int = 50

    def __post_init__(self) -> None:
        check_count("steps", self.steps, 0)
        check_count("variance_every", self.variance_every, 1)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name not in ("steps", "variance_every") and not (isinstance(value, int | float) and 0 <= value < math.inf):
                raise ValueError(f"{f.name}: expected a finite non-negative number, got {value!r}")


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
        default_factory=lambda: StageConfig(125, code_rate=4.95e-4, rotation_rate=5e-4, shift_rate=2.5e-4)
    )
    joint: StageConfig = field(
        default_factory=lambda: StageConfig(
            steps=1000, mask=10.0, landmarks=5.0, local_code=500.0, global_code=50.0, appearance_code=50.0,
            expression_code=100.0, smooth_expression=2000.0, smooth_pose=50000.0, code_rate=2e-4,
            expression_rate=1e-4, lighting_rate=1e-4, rotation_rate=3e-4, shift_rate=1e-4,
        )
    )  # fmt: skip
    rays_per_step: int = 450  # MonoNPHM: 450 rays of one frame
    foreground_fraction: float = 0.75  # of them on the mask, the rest anywhere
    frames_per_joint_step: int = 1
    landmark_distance: float = 0.01  # metres: landmark-anchor pairs (landmark_pairs)

    def __post_init__(self) -> None:
        check_count("rays_per_step", self.rays_per_step, 1)
        check_count("frames_per_joint_step", self.frames_per_joint_step, 1)
        if not 0.0 <= self.foreground_fraction <= 1.0:
            raise ValueError(f"foreground_fraction: expected a fraction in [0, 1], got {self.foreground_fraction}")
        check_positive("landmark_distance", self.landmark_distance)


def cpu_tracking(**overrides) -> MonoNphmTracking:
    """Fewer steps and rays for a CPU, the paper's weights and rates, then ``overrides``."""
    base = MonoNphmTracking()
    sizes = dict(
        first_frame=dataclasses.replace(base.first_frame, steps=200),
        per_frame=dataclasses.replace(base.per_frame, steps=20),
        joint=dataclasses.replace(base.joint, steps=300),
        rays_per_step=256,
        frames_per_joint_step=2,
    )
    return MonoNphmTracking(**{**sizes, **overrides})


@dataclass
class TrackingHistory:
    """What :func:`track_sequence` did: steps and seconds per stage, and the logged losses."""

    steps: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    logs: list[dict[str, float]] = field(default_factory=list)


class _Pixels:
    """Per-frame pixel pools of a frame set: the foreground and every pixel, with colour targets and weights."""

    def __init__(self, model: MonoNphm, frames: FrameSet):
        device = model.box.device
        self.cameras = frames.cameras.to(device)
        self.pixels = image_pixels(self.cameras)
        n = len(frames)
        self.rgb = frames.images.to(device).float().reshape(n, -1, 3) / 255.0
        self.mask = (
            frames.masks.to(device).reshape(n, -1)
            if frames.masks is not None
            else torch.ones_like(self.rgb[..., 0], dtype=torch.bool)
        )
        self.foreground = [torch.nonzero(m.cpu())[:, 0] for m in self.mask]  # pixel ids per frame, drawn from each step
        labels = frames.segmentation_labels or {}
        self.mouth = None
        if frames.segmentation is not None and "mouth_interior" in labels:
            self.mouth = frames.segmentation.to(device).reshape(n, -1) == labels["mouth_interior"]

    def draw(self, frame: int, count: int, fraction: float, generator: torch.Generator) -> Tensor:
        """Pixel ids of frame ``frame``: ``fraction`` of ``count`` on the foreground, the rest anywhere."""
        fg = self.foreground[frame]
        k = int(round(count * fraction)) if len(fg) else 0
        pick_fg = fg[torch.randint(0, max(len(fg), 1), (k,), generator=generator)] if k else fg[:0]
        pick_any = torch.randint(0, len(self.pixels), (count - k,), generator=generator)
        return torch.cat([pick_fg, pick_any]).to(self.pixels.device)


def _soft_jaccard(opacity: Tensor, mask: Tensor) -> Tensor:
    """MonoNPHM's silhouette term: (1 - J) x 5 with J = (sum y yhat + 5) / (sum (y + yhat) - sum y yhat + 5)."""
    both = (opacity * mask).sum()
    return (1 - (both + 5) / ((opacity + mask).sum() - both + 5)) * 5


def _frame_loss(
    model: MonoNphm,
    head: Head,
    data: _Pixels,
    frame: int,
    pairs: tuple[Tensor, Tensor],
    detected: Tensor | None,
    stage: StageConfig,
    config: MonoNphmTracking,
    generator: torch.Generator,
) -> tuple[Tensor, dict[str, float]]:
    """One frame's photometric, silhouette and landmark terms."""
    count = config.rays_per_step
    pick = data.draw(frame, count, config.foreground_fraction, generator)
    rays = pixel_rays(data.cameras, frame, data.pixels[pick])
    out = model.render(rays, head, generator)
    mask = data.mask[frame, pick].to(out.composite.rgb.dtype)
    weight = mask * torch.where(data.mouth[frame, pick], stage.mouth_interior, 1.0) if data.mouth is not None else mask
    rgb = ((out.composite.rgb - data.rgb[frame, pick]).abs().sum(-1) * weight).sum() / count
    silhouette = _soft_jaccard(out.composite.opacity.clamp(0, 1), mask)
    loss = stage.rgb * rgb + stage.mask * silhouette
    logs = {"rgb": float(rgb.detach()), "mask": float(silhouette.detach())}
    if detected is not None and stage.landmarks > 0 and len(pairs[0]):
        posed, converged = model.posed_anchors(head, frame, pairs[0])
        pixels = project_points(data.cameras, posed, frame).pixels
        error = ((pixels - detected[frame]) / data.cameras.width).square().sum(-1)
        landmarks = (error * converged).sum() / converged.sum().clamp(min=1)
        loss = loss + stage.landmarks * landmarks
        logs["landmarks"] = float(landmarks.detach())
    return loss, logs


def _code_terms(model: MonoNphm, track: TrackedFrames, frames: Tensor, stage: StageConfig) -> Tensor:
    c = model.prior.config
    identity = model.codes.identity[0]
    glob, local = identity[: c.global_dim], identity[c.global_dim :]
    loss = stage.global_code * glob.square().sum() + stage.appearance_code * model.codes.appearance.square().sum()
    if local.numel():
        loss = loss + stage.local_code * local.square().sum()
    symmetry = model.prior.mirror_distance(model.codes.identity)
    if symmetry is not None:
        loss = loss + stage.symmetry * symmetry
    return loss + stage.expression_code * track.codes[frames].square().sum(-1).mean()


def _smoothness(track: TrackedFrames, stage: StageConfig) -> Tensor:
    codes, rotation, shift = track.codes, track.rotation, track.shift
    if codes.shape[0] < 2:
        return codes.sum() * 0
    expression = (codes[1:] - codes[:-1]).square().sum(-1).mean()
    motion = (rotation[1:] - rotation[:-1]).square().sum(-1) + 10 * (shift[1:] - shift[:-1]).square().sum(-1)
    return stage.smooth_expression * expression + stage.smooth_pose * motion.mean()


def _optimizer(model: MonoNphm, track: TrackedFrames, stage: StageConfig, identity: bool) -> torch.optim.Adam:
    groups = [
        {"params": [track.codes], "lr": stage.expression_rate},
        {"params": [track.rotation], "lr": stage.rotation_rate},
        {"params": [track.shift], "lr": stage.shift_rate},
    ]
    if identity:
        groups += [
            {"params": [model.codes.identity, model.codes.appearance], "lr": stage.code_rate},
            {"params": [model.lighting.coefficients], "lr": stage.lighting_rate},
        ]
    return torch.optim.Adam(groups)


def _variance(stage: StageConfig, step: int) -> float:
    return min(stage.variance_start + VARIANCE_STEP * (step // stage.variance_every), VARIANCE_MAX)


@dataclass
class _Tracker:
    """What every tracking step reads: the model, the pixels, the landmark pairs and their detections."""

    model: MonoNphm
    track: TrackedFrames  # what is fitted per frame (the training frames', or the held-out frames')
    base: Head  # the frames' tracked head; the fitted codes and pose corrections ride on it
    data: _Pixels
    pairs: tuple[Tensor, Tensor]
    detected: Tensor | None
    config: MonoNphmTracking
    generator: torch.Generator
    history: TrackingHistory
    progress: Progress | None = None

    def run(self, frames: list[int], stage: StageConfig, steps: int, identity: bool, name: str, per_step: int = 1) -> None:
        """``steps`` Adam steps on ``frames`` (``per_step`` of them a step); only their rows of the per-frame codes
        and poses change, and the identity, appearance and lighting only with ``identity``. Stage 2 (``len(frames)
        > 1``) adds the temporal smoothness."""
        model, track, c = self.model, self.track, self.config
        optimizer = _optimizer(model, track, stage, identity)
        rows = torch.tensor(frames, device=model.box.device)
        keep = torch.zeros(track.count, dtype=torch.bool, device=rows.device)
        keep[rows] = True
        for step in range(steps):
            model.set_variance(_variance(stage, step))
            drawn = torch.randint(0, len(frames), (min(per_step, len(frames)),), generator=self.generator).tolist()
            head = track.attach(self.base)
            loss, logs = _code_terms(model, track, rows, stage), {}
            for i in drawn:
                term, logs = _frame_loss(model, head, self.data, frames[i], self.pairs, self.detected, stage, c, self.generator)
                loss = loss + term / len(drawn)
            if len(frames) > 1:
                loss = loss + _smoothness(track, stage)
            optimizer.zero_grad()
            loss.backward()
            for p in (track.codes, track.rotation, track.shift):  # other frames stay put
                if p.grad is not None:
                    p.grad[~keep] = 0
            for p in (model.codes.identity, model.codes.appearance):  # tracking.py: each code's gradient norm at 0.1
                if p.grad is not None:
                    torch.nn.utils.clip_grad_norm_(p, CODE_GRADIENT_NORM)
            optimizer.step()
            if step % 25 == 0 or step == steps - 1:
                self.history.logs.append({"stage": name, "step": step, "loss": float(loss.detach()), **logs})
                if self.progress is not None:
                    self.progress.set_values(stage=name, loss=float(loss.detach()))
            if self.progress is not None:
                self.progress.update(1)
        self.history.steps[name] = self.history.steps.get(name, 0) + steps


def _detected_landmarks(
    model: MonoNphm, frames: FrameSet, head: Head, landmark_ids: Tensor, landmarks: Tensor | None
) -> Tensor | None:
    """Each frame's landmarks ``landmark_ids`` in pixels ``[F, L, 2]``: of ``landmarks`` (a detector's, in the tracking
    model's landmark order), else the landmarks of ``head`` (the frames' tracked head) projected."""
    if landmarks is not None:
        count = model.parametric().landmarks.shape[1]
        check_float("landmarks", landmarks, [len(frames), count, 2])
        return landmarks.to(model.box.device, torch.float32)[:, landmark_ids]
    if head.landmarks is None or not len(landmark_ids):
        return None
    cameras = frames.cameras.to(model.box.device)
    points = head.landmarks[:, landmark_ids]
    n, count = points.shape[:2]
    frame = torch.arange(n, device=points.device).repeat_interleave(count)
    return project_points(cameras, points.reshape(-1, 3).to(cameras.camera_to_world), frame).pixels.reshape(n, count, 2)


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
    landmarks, e.g. a landmark file's), instead of the capture's tracked landmarks projected. ``max_minutes``: a
    budget for the whole tracking (one step is timed, then every stage's steps scale to fit); ``seed``: the rays'.

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
    pairs = landmark_pairs(model.prior, model.parametric, c.landmark_distance)
    base = tracked_head(model.parametric, frames)
    tracker = _Tracker(
        model, track, base, _Pixels(model, frames), pairs, _detected_landmarks(model, frames, base, pairs[1], landmarks),
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
