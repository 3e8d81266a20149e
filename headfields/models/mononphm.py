"""MonoNPHM (Giebenhain et al., CVPR 2024) as the paper's method: a frozen NPHM prior (:mod:`headfields.models.nphm`)
fitted by inverse rendering to a monocular video of a person it never saw.

Fitted: one identity code, one appearance code and SH lighting for the sequence; per frame an expression code and a
correction of the capture's tracked head pose. A ray sample at world ``x`` of frame ``f``:

    (tracked head pose of f) o (rotation exp(w_f), shift t_f)   undone   -> head frame (metres)
    Normalize(center, NPHM_UNIT)                                          -> the prior's head space
    prior.deform(x, [expression code f, compressed identity])            -> [x + dx, h]
    prior.canonical_sdf / prior.appearance (identity, appearance code)   -> sdf, albedo x SH shading
    NeuS: 32 stratified points steer 32 up-samples at a fixed inv_s, which alone are rendered

:func:`track_sequence` runs the paper's two stages: each frame in turn (the first also fits identity, appearance and
lighting; later ones start from the previous frame), then all frames jointly with temporal smoothness. The losses
(MonoNPHM's tracking code): L1 colour on the foreground with the mouth interior down-weighted, a soft-Jaccard
silhouette, landmarks (the prior's anchors carried to posed space by root finding, against the capture's tracked
landmarks projected), and the codes' regularisers.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from ..checks import check_count, check_float, check_positive
from ..data import FrameSet, write_obj
from ..decoders import SHLighting
from ..deformers import Canonical, Deformer, DeformerChain, MappedDeformer, find_preimage, log_quaternion_to_rotation
from ..encoders import LatentCodesConfig
from ..fields import FrameCodes, NeusField, padded_box
from ..heads import tracked_head
from ..metrics import chamfer_distance, l1, psnr, ssim, visible_faces
from ..parametric import Head, SubjectModel
from ..progress import Progress, format_seconds
from ..renderers import InverseVariance, NeusSampler, image_pixels, pixel_rays, project_points
from ..training import comparison, evenly_spread, render_image, save_png
from .neus_model import NeusConfig, NeusModel
from .nphm import Nphm

__all__ = [
    "GeometryScore",
    "MonoNphm",
    "MonoNphmConfig",
    "Reconstruction",
    "StageConfig",
    "TrackingConfig",
    "TrackingHistory",
    "cpu_config",
    "cpu_tracking",
    "geometry_score",
    "landmark_pairs",
    "paper_config",
    "reconstruct",
    "track_frames",
    "track_sequence",
]

# MonoNPHM's tracking renderer (photometric_tracking/rendering.py): 32 jittered points inside the bounding
# sphere steer 32 up-samples drawn at the fixed inv_s = exp(0.3 * 10), which replace them.
MONONPHM_COARSE = 32
MONONPHM_UPSAMPLES = 32
MONONPHM_UPSAMPLE_INV_S = math.exp(0.3 * 10)
# Its rendering sharpness inv_s = exp(10 v): v = min(v0 + 0.15 (step // every), 0.8); v0 0.3 on the first frame
# (every 25 steps), 0.5 after (every 50).
VARIANCE_STEP = 0.15
VARIANCE_MAX = 0.8


@dataclass(frozen=True)
class MonoNphmConfig(NeusConfig):
    """The tracked model's renderer: MonoNPHM's (see the module docstring); the padding (metres) around each
    frame's tracked mesh bounds the rays, as MonoNPHM's bounding sphere does."""

    sampler: NeusSampler = NeusSampler(
        coarse=MONONPHM_COARSE,
        rounds=1,
        per_round=MONONPHM_UPSAMPLES,
        base_inv_s=MONONPHM_UPSAMPLE_INV_S,
        padding=0.05,
        keep_coarse=False,
    )
    head_joint: str = "neck"  # the joint whose tracked transform is the head's pose (FLAME: global, then neck)
    eikonal_points: int = 0  # the prior is frozen: no eikonal term
    eikonal_weight: float = 0.0


def paper_config(**overrides) -> MonoNphmConfig:
    """MonoNPHM's renderer (``MonoNphmConfig()``), then ``overrides``."""
    return MonoNphmConfig(**overrides)


def cpu_config(**overrides) -> MonoNphmConfig:
    """Fewer samples for a CPU (16 steer 16), then ``overrides``."""
    sampler = NeusSampler(coarse=16, rounds=1, per_round=16, base_inv_s=MONONPHM_UPSAMPLE_INV_S, padding=0.05, keep_coarse=False)
    return MonoNphmConfig(**{"sampler": sampler, **overrides})


class _Codes(nn.Module):
    """The sequence's identity and appearance codes (start: the prior's mean, zero)."""

    def __init__(self, identity_dim: int, appearance_dim: int):
        super().__init__()
        self.identity = nn.Parameter(torch.zeros(1, identity_dim))
        self.appearance = nn.Parameter(torch.zeros(1, appearance_dim))


class CorrectedPose(Deformer):
    """World -> the head frame: the tracked transform of ``joint`` in each frame, composed with a learnt correction
    (a rotation ``exp(w_f)`` in the head frame, then a world shift ``t_f``; both start at zero)."""

    def __init__(self, joint: int, num_frames: int):
        super().__init__()
        self.joint = joint
        self.rotation = nn.Parameter(torch.zeros(num_frames, 3))
        self.shift = nn.Parameter(torch.zeros(num_frames, 3))

    def transforms(self, head: Head, frame: Int[Tensor, " N"]) -> tuple[Tensor, Tensor]:
        """(rotation ``[N, 3, 3]``, translation ``[N, 3]``) of each row's frame: head frame -> world."""
        tracked = head.joint_transforms[frame, self.joint]
        rotation = tracked[:, :3, :3] @ log_quaternion_to_rotation(self.rotation[frame]).to(tracked.dtype)
        return rotation, tracked[:, :3, 3] + self.shift[frame].to(tracked.dtype)

    def canonicalize(
        self, x: Float[Tensor, "N 3"], head: Head, frame: Int[Tensor, " N"], dirs: Float[Tensor, "N 3"] | None
    ) -> Canonical:
        rotation, translation = self.transforms(head, frame)
        points = torch.einsum("nji,nj->ni", rotation, x.to(rotation.dtype) - translation)
        canonical_dirs = None if dirs is None else torch.einsum("nji,nj->ni", rotation, dirs.to(rotation.dtype))
        valid = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        return Canonical(points=points, dirs=canonical_dirs, valid=valid, face=None)


class _PriorDeformer(Deformer):
    """The prior's backward deformation under each frame's expression code (``head.codes``) and the identity."""

    def __init__(self, prior: Nphm, codes: _Codes):
        super().__init__()
        self.prior, self.codes = prior, codes

    def canonicalize(
        self, x: Float[Tensor, "N 3"], head: Head, frame: Int[Tensor, " N"], dirs: Float[Tensor, "N 3"] | None
    ) -> Canonical:
        if head.codes is None:
            raise ValueError("head: expected per-frame expression codes (FrameCodes.attach)")
        identity = self.codes.identity.expand(head.num_frames, -1)
        d = self.prior.deform(x, frame, identity, head.codes.to(identity.dtype))
        valid = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        return Canonical(points=d.points, dirs=dirs, valid=valid, face=None, extras={"offset": d.offset, "hyper": d.hyper})


class _PriorSdf(nn.Module):
    """The prior's canonical SDF of the sequence's identity: ``sdf(points, hyper)``."""

    def __init__(self, prior: Nphm, codes: _Codes):
        super().__init__()
        self.prior, self.codes = prior, codes
        self.feature_dim = prior.sdf.feature_dim

    def forward(self, x: Float[Tensor, "N 3"], extra: Float[Tensor, "N H"] | None = None):
        hyper = extra if extra is not None else x.new_zeros(x.shape[0], 0)
        group = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return self.prior.canonical_sdf(x, hyper, group, self.codes.identity)


class _PriorAppearance(nn.Module):
    """The prior's albedo under the sequence's appearance code."""

    def __init__(self, prior: Nphm, codes: _Codes):
        super().__init__()
        self.prior, self.codes = prior, codes

    def forward(self, x: Tensor, features: Tensor, code: Tensor | None = None) -> Tensor:
        return self.prior.appearance(x, features, self.codes.appearance.expand(x.shape[0], -1))


class MonoNphm(NeusModel):
    """A frozen ``prior`` fitted to ``num_frames`` frames of a video; ``parametric``: the capture's tracking model
    (its head joint gives each frame's starting pose, its tracked mesh bounds the rays). Render a frame from the
    head :meth:`head` returns (the tracked head with the fitted expression codes)."""

    def __init__(self, prior: Nphm, parametric: SubjectModel, num_frames: int, config: MonoNphmConfig | None = None):
        c = config or MonoNphmConfig()
        super().__init__(parametric, c, prior.hyper_dim)
        self.prior = prior.requires_grad_(False)
        self.inverse_variance = InverseVariance(VARIANCE_MAX, learnable=False)  # set by the tracking schedule
        self.head_joint = parametric.joint_index(c.head_joint, "head_joint")
        self.codes = _Codes(prior.identity_dim, prior.config.appearance_dim)
        self.expression_codes = FrameCodes(
            check_count("num_frames", num_frames, 1), LatentCodesConfig(prior.config.expression_dim)
        )
        self.pose = CorrectedPose(self.head_joint, num_frames)
        deformer = DeformerChain(self.pose, MappedDeformer(prior.normalize), _PriorDeformer(prior, self.codes))
        self.field = NeusField(deformer, _PriorSdf(prior, self.codes), _PriorAppearance(prior, self.codes), None, SHLighting())

    @property
    def lighting(self) -> SHLighting:
        return self.field.lighting

    def with_frames(self, num_frames: int) -> MonoNphm:
        """A model of ``num_frames`` other frames (held-out ones) of the same person: this one's identity,
        appearance and lighting, fresh expression codes and poses, the same frozen prior."""
        other = MonoNphm(self.prior, self.parametric, num_frames, self.config).to(self.box.device)
        other.codes.load_state_dict(self.codes.state_dict())
        other.lighting.load_state_dict(self.lighting.state_dict())
        return other

    def head(self, frames: FrameSet) -> Head:
        """The tracked head of ``frames`` (the frames this model fits) carrying the fitted expression codes."""
        return self.expression_codes.attach(tracked_head(self.parametric, frames))

    def set_variance(self, v: float) -> None:
        """Rendering sharpness ``inv_s = exp(10 v)`` (MonoNPHM schedules it during tracking)."""
        self.inverse_variance.v.fill_(float(v))

    def posed_anchors(self, head: Head, frame: int, anchors: Int[Tensor, " L"]) -> tuple[Tensor, Tensor]:
        """World positions in frame ``frame`` of the identity's anchors ``anchors`` (their canonical positions carried
        to posed space by root finding of ``x + dx(x) = a``, differentiable by implicit differentiation), and
        whether the root finding converged."""
        prior, identity = self.prior, self.codes.identity
        predicted = prior.anchors(identity)
        canonical = predicted[0, anchors]
        row = torch.zeros(len(anchors), dtype=torch.long, device=canonical.device)
        expression = head.codes[frame : frame + 1].to(identity.dtype)
        solved = find_preimage(lambda x: prior.deform(x, row, identity, expression, predicted).offset, canonical, tolerance=1e-5)
        head_frame = solved.points * prior.normalize.scale + prior.normalize.center
        rotation, translation = self.pose.transforms(head, torch.full_like(row, frame))
        return torch.einsum("nij,nj->ni", rotation, head_frame) + translation, solved.converged


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


# ------------------------------------------------------------------------------------------------------ tracking


@dataclass(frozen=True)
class StageConfig:
    """One tracking stage's weights and rates (MonoNPHM's configs/tracking; see docs/mononphm.md)."""

    steps: int  # per frame (stage 1) or in all (stage 2)
    rgb: float = 100.0
    mouth_interior: float = 1 / 25  # the mouth interior's colour weight
    mask: float = 25.0  # (1 - soft Jaccard) x 5
    landmarks: float = 100.0  # of the mean squared landmark error in image widths
    local_code: float = 1000.0  # mean squared local identity codes
    global_code: float = 25.0  # squared global identity code
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
class TrackingConfig:
    """MonoNPHM's two stages. Stage 1: the first frame (identity, appearance, lighting, its expression and pose)
    with ``first_frame`` steps, then each frame (expression and pose; identity, appearance and lighting fixed),
    starting from the previous one. Stage 2: every frame jointly, with temporal smoothness."""

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
    max_minutes: float | None = None  # a budget for the whole tracking; each stage gets its share of steps
    seed: int = 0

    def __post_init__(self) -> None:
        check_count("rays_per_step", self.rays_per_step, 1)
        check_count("frames_per_joint_step", self.frames_per_joint_step, 1)
        if not 0.0 <= self.foreground_fraction <= 1.0:
            raise ValueError(f"foreground_fraction: expected a fraction in [0, 1], got {self.foreground_fraction}")
        check_positive("landmark_distance", self.landmark_distance)
        check_positive("max_minutes", self.max_minutes)


def cpu_tracking(**overrides) -> TrackingConfig:
    """Fewer steps and rays for a CPU, the paper's weights and rates, then ``overrides``."""
    base = TrackingConfig()
    sizes = dict(
        first_frame=dataclasses.replace(base.first_frame, steps=200),
        per_frame=dataclasses.replace(base.per_frame, steps=20),
        joint=dataclasses.replace(base.joint, steps=300),
        rays_per_step=256,
        frames_per_joint_step=2,
    )
    return TrackingConfig(**{**sizes, **overrides})


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
    config: TrackingConfig,
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


def _code_terms(model: MonoNphm, frames: Tensor, stage: StageConfig) -> Tensor:
    c = model.prior.config
    identity = model.codes.identity[0]
    glob, local = identity[: c.global_dim], identity[c.global_dim :]
    loss = stage.global_code * glob.square().sum() + stage.appearance_code * model.codes.appearance.square().sum()
    if local.numel():
        loss = loss + stage.local_code * local.square().mean()
    return loss + stage.expression_code * model.expression_codes.codes[frames].square().sum(-1).mean()


def _smoothness(model: MonoNphm, stage: StageConfig) -> Tensor:
    codes, pose = model.expression_codes.codes, model.pose
    if codes.shape[0] < 2:
        return codes.sum() * 0
    expression = (codes[1:] - codes[:-1]).square().sum(-1).mean()
    motion = (pose.rotation[1:] - pose.rotation[:-1]).square().sum(-1) + 10 * (pose.shift[1:] - pose.shift[:-1]).square().sum(-1)
    return stage.smooth_expression * expression + stage.smooth_pose * motion.mean()


def _optimizer(model: MonoNphm, stage: StageConfig, identity: bool) -> torch.optim.Adam:
    groups = [
        {"params": [model.expression_codes.codes], "lr": stage.expression_rate},
        {"params": [model.pose.rotation], "lr": stage.rotation_rate},
        {"params": [model.pose.shift], "lr": stage.shift_rate},
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
    base: Head  # the frames' tracked head; the fitted expression codes ride on it
    data: _Pixels
    pairs: tuple[Tensor, Tensor]
    detected: Tensor | None
    config: TrackingConfig
    generator: torch.Generator
    history: TrackingHistory
    progress: Progress | None = None

    def run(self, frames: list[int], stage: StageConfig, steps: int, identity: bool, name: str, per_step: int = 1) -> None:
        """``steps`` Adam steps on ``frames`` (``per_step`` of them a step); only their rows of the per-frame codes
        and poses change, and the identity, appearance and lighting only with ``identity``. Stage 2 (``len(frames)
        > 1``) adds the temporal smoothness."""
        model, c = self.model, self.config
        optimizer = _optimizer(model, stage, identity)
        rows = torch.tensor(frames, device=model.box.device)
        keep = torch.zeros(model.expression_codes.count, dtype=torch.bool, device=rows.device)
        keep[rows] = True
        for step in range(steps):
            model.set_variance(_variance(stage, step))
            drawn = torch.randint(0, len(frames), (min(per_step, len(frames)),), generator=self.generator).tolist()
            head = model.expression_codes.attach(self.base)
            loss, logs = _code_terms(model, rows, stage), {}
            for i in drawn:
                term, logs = _frame_loss(model, head, self.data, frames[i], self.pairs, self.detected, stage, c, self.generator)
                loss = loss + term / len(drawn)
            if len(frames) > 1:
                loss = loss + _smoothness(model, stage)
            optimizer.zero_grad()
            loss.backward()
            for p in (model.expression_codes.codes, model.pose.rotation, model.pose.shift):  # other frames stay put
                if p.grad is not None:
                    p.grad[~keep] = 0
            for p in (model.codes.identity, model.codes.appearance):  # MonoNPHM clips the codes' gradients at 0.1
                if p.grad is not None:
                    p.grad.clamp_(-0.1, 0.1)
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
    model: MonoNphm, frames: FrameSet, config: TrackingConfig | None = None, landmarks: Float[Tensor, "F L 2"] | None = None
) -> TrackingHistory:
    """Fit ``model`` (a frozen prior, fresh codes) to ``frames``: stage 1 frame by frame, then stage 2 jointly.
    ``landmarks``: detected landmarks per frame (pixels, in the order of the capture's tracking model's landmarks,
    e.g. a landmark file's), instead of the capture's tracked landmarks projected."""
    return _track(model, frames, config or TrackingConfig(), True, landmarks)


def track_frames(
    model: MonoNphm, frames: FrameSet, config: TrackingConfig | None = None, landmarks: Float[Tensor, "F L 2"] | None = None
) -> TrackingHistory:
    """Fit only the expression codes and poses of ``frames`` (stage 1 per frame, each frame from the mean code),
    with the identity, appearance and lighting as they are: held-out frames of a tracked sequence."""
    return _track(model, frames, config or TrackingConfig(), False, landmarks)


def _track(model: MonoNphm, frames: FrameSet, c: TrackingConfig, fit_identity: bool, landmarks: Tensor | None) -> TrackingHistory:
    if len(frames) != model.expression_codes.count:
        raise ValueError(f"frames: expected the {model.expression_codes.count} frames the model fits, got {len(frames)}")
    pairs = landmark_pairs(model.prior, model.parametric, c.landmark_distance)
    base = tracked_head(model.parametric, frames)
    tracker = _Tracker(
        model, base, _Pixels(model, frames), pairs, _detected_landmarks(model, frames, base, pairs[1], landmarks), c,
        torch.Generator().manual_seed(c.seed), TrackingHistory(),
    )  # fmt: skip
    n, first = len(frames), c.first_frame if fit_identity else c.per_frame
    scale = 1.0
    total = first.steps + (n - 1) * c.per_frame.steps + (c.joint.steps if fit_identity else 0)
    if c.max_minutes is not None:  # time one step, then scale every stage's steps to fit the budget
        start = time.perf_counter()
        tracker.run([0], first, 1, fit_identity, "probe")
        scale = min(1.0, 60 * c.max_minutes / max((time.perf_counter() - start) * total, 1e-9))
    steps = [max(1, round(scale * (first if f == 0 else c.per_frame).steps)) for f in range(n)]
    joint_steps = max(1, round(scale * c.joint.steps)) if fit_identity and c.joint.steps else 0
    tracker.progress = Progress(sum(steps) + joint_steps, "track" if fit_identity else "track held-out frames", "step")
    started = time.perf_counter()
    for f in range(n):
        stage = first if f == 0 else c.per_frame
        if f > 0:
            with torch.no_grad():  # start from the previous frame (a sequence) or the mean (held-out frames)
                for p in (model.expression_codes.codes, model.pose.rotation, model.pose.shift):
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


# ---------------------------------------------------------------------------------------------------- evaluation


@dataclass
class GeometryScore:
    """A surface against the truth over what the frame's camera sees, in metres and as a fraction of the truth's
    size (its box diagonal)."""

    chamfer: float  # symmetric Chamfer L1 (metres)
    chamfer_l2: float  # squared (m^2)
    normal_consistency: float
    f_score: dict[str, float]  # at MonoNPHM's thresholds, keyed by millimetres
    size: float  # the truth's box diagonal (metres)

    @property
    def relative(self) -> float:
        return self.chamfer / self.size


F_SCORE_THRESHOLDS = (0.005, 0.01, 0.015, 0.02)  # metres: MonoNPHM's utils/metrics.py eval_pointcloud
# Metres: the reconstruction is scored inside the true head's box grown by this much. The prior continues the neck
# past the capture's cut (its scans are open there), as MonoNPHM scores only the face region of its scans.
SCORE_MARGIN = 0.01


def geometry_score(
    vertices: Float[Tensor, "V 3"],
    faces: Int[Tensor, "F 3"],
    truth_vertices: Float[Tensor, "W 3"],
    truth_faces: Int[Tensor, "G 3"],
    eye: Float[Tensor, " 3"],
) -> GeometryScore:
    """Score ``vertices, faces`` against the truth over the faces a camera at ``eye`` sees of each, the former
    inside the truth's box grown by ``SCORE_MARGIN``."""
    low, high = truth_vertices.amin(0) - SCORE_MARGIN, truth_vertices.amax(0) + SCORE_MARGIN
    centroids = vertices[faces].mean(dim=1)
    faces = faces[((centroids >= low) & (centroids <= high)).all(dim=1)]
    if len(faces) == 0:
        raise ValueError("vertices: expected a surface inside the true head's box, got none there")
    seen, truth_seen = visible_faces(vertices, faces, eye), visible_faces(truth_vertices, truth_faces, eye)
    score = chamfer_distance(vertices, seen, truth_vertices, truth_seen)
    f = score.f_score(F_SCORE_THRESHOLDS).f
    size = float((truth_vertices.amax(0) - truth_vertices.amin(0)).norm())
    return GeometryScore(
        chamfer=float(score.symmetric),
        chamfer_l2=float(score.squared),
        normal_consistency=float(score.normal_consistency),
        f_score={f"{1000 * t:g}mm": float(v) for t, v in zip(F_SCORE_THRESHOLDS, f, strict=True)},
        size=size,
    )


@dataclass
class Reconstruction:
    """What :func:`reconstruct` fitted and measured."""

    model: MonoNphm  # fitted to the training frames
    held_out: MonoNphm  # the held-out frames' expressions and poses, with the model's identity
    metrics: dict
    history: TrackingHistory


def _render_frames(model: MonoNphm, frames: FrameSet, ids: list[int], chunk: int = 2048) -> list[Tensor]:
    head = model.head(frames)
    device = model.box.device
    return [render_image(model, frames, f, chunk, device, head=head) for f in ids]


def _image_scores(renders: list[Tensor], frames: FrameSet, ids: list[int]) -> dict[str, float]:
    """Mean PSNR, SSIM and L1 over the frames, of the whole image and, with masks, of the head (``_head``)."""
    truth = [frames.images[f].float() / 255 for f in ids]
    pairs = list(zip(renders, truth, strict=True))
    scores = {
        "psnr": sum(float(psnr(r, t)) for r, t in pairs) / len(ids),
        "ssim": sum(float(ssim(r, t)) for r, t in pairs) / len(ids),
        "l1": sum(float(l1(r, t)) for r, t in pairs) / len(ids),
    }
    if frames.masks is not None:
        masks = [frames.masks[f].bool() for f in ids]
        scores["psnr_head"] = sum(float(psnr(r, t, mask=m)) for (r, t), m in zip(pairs, masks, strict=True)) / len(ids)
        scores["ssim_head"] = sum(float(ssim(r, t, mask=m)) for (r, t), m in zip(pairs, masks, strict=True)) / len(ids)
        scores["l1_head"] = sum(float(l1(r, t, mask=m)) for (r, t), m in zip(pairs, masks, strict=True)) / len(ids)
    return scores


def _share_budget(
    model: MonoNphm,
    held_out: FrameSet,
    tracking: TrackingConfig,
    seconds: float,
    renders: int,
    meshes: list[int],
    resolution: int,
) -> tuple[TrackingConfig, TrackingConfig]:
    """The tracking configurations of the train and the held-out frames within ``tracking.max_minutes`` for the whole
    of :func:`reconstruct`: what the ``renders`` (timed: ``seconds``, done once already) and the ``meshes`` (one
    chunk of SDF queries timed and scaled to ``resolution``^3) will take is set aside, the rest shared by steps."""
    budget = 60.0 * tracking.max_minutes
    head = model.with_frames(len(held_out)).head(held_out)
    box = padded_box(head.vertices[0].detach(), model.config.sampler.padding)
    points = box[0] + (box[1] - box[0]) * torch.rand(MESH_PROBE_POINTS, 3, device=box.device)
    start = time.perf_counter()
    with torch.no_grad():
        model.field.geometry(points, torch.zeros(len(points), dtype=torch.long, device=box.device), head)
    mesh_seconds = (time.perf_counter() - start) * resolution**3 / MESH_PROBE_POINTS
    left = budget - 2 * seconds - mesh_seconds * len(meshes)  # the renders after tracking take what they took before
    floor = TRACKING_FLOOR * budget
    note = ""
    if left < floor:
        note = (
            f"; over the budget by about {format_seconds(floor - left)}: fewer --eval-frames or --geometry-frames, or a "
            "smaller --mesh-resolution, fit it"
        )
    left = max(left, floor)
    print(
        f"budget {format_seconds(budget)}: tracking {format_seconds(left)}, then rendering {renders} held-out frames "
        f"(about {format_seconds(seconds)}) and {len(meshes)} meshes at {resolution}^3 (about "
        f"{format_seconds(mesh_seconds * len(meshes))}){note}"
    )
    c, n = tracking, model.expression_codes.count
    train_steps = c.first_frame.steps + (n - 1) * c.per_frame.steps + c.joint.steps
    held_steps = len(held_out) * c.per_frame.steps
    share = left * train_steps / (train_steps + held_steps)
    return dataclasses.replace(c, max_minutes=share / 60), dataclasses.replace(c, max_minutes=(left - share) / 60)


MESH_PROBE_POINTS = 4096  # SDF queries timed to estimate a mesh's marching cubes
TRACKING_FLOOR = 0.1  # the share of the budget tracking keeps however long the evaluation takes


def reconstruct(
    prior: Nphm,
    train: FrameSet,
    held_out: FrameSet,
    parametric: SubjectModel,
    config: MonoNphmConfig | None = None,
    tracking: TrackingConfig | None = None,
    truth: tuple[Tensor, Tensor] | None = None,
    eval_frames: int = 5,
    geometry_frames: int = 3,
    mesh_resolution: int = 128,
    out: Path | None = None,
    landmarks: tuple[Tensor, Tensor] | None = None,
) -> Reconstruction:
    """MonoNPHM on a video: fit the frozen ``prior`` to the ``train`` frames (:func:`track_sequence`), then the
    ``held_out`` frames' expressions and poses alone (:func:`track_frames`), and measure, on ``eval_frames`` held-out
    frames spread over the split: PSNR / SSIM / L1 before tracking (the prior's mean codes on the tracked FLAME pose:
    ``*_mean_codes``) and after; and on ``geometry_frames`` of them, with ``truth`` (the held-out split's true
    vertices ``[N, V, 3]`` and faces), the Chamfer distance of the tracked surface (``chamfer``, a fraction of the
    head's size; ``chamfer_mm`` in millimetres, normal consistency, F-scores) and of the capture's tracked FLAME
    mesh (``chamfer_flame``), over the surface the frame's camera sees. ``out``: where renders and meshes go;
    ``landmarks``: detected landmarks of the train and the held-out frames (see :func:`track_sequence`).

    With ``tracking.max_minutes``, that is the budget of the whole: the renders are timed and the meshing measured
    ahead, and the tracking of both splits gets what is left (shared by their steps), said before it starts."""
    tracking = tracking or TrackingConfig()
    device = prior.template_anchors.device
    model = MonoNphm(prior, parametric, len(train), config).to(device)
    ids = evenly_spread(min(eval_frames, len(held_out)), len(held_out))
    measured = (
        [] if truth is None or held_out.mesh_vertices is None else evenly_spread(min(geometry_frames, len(ids)), len(held_out))
    )
    metrics: dict = {"train_frames": len(train), "eval_frames": ids}
    began = time.perf_counter()
    with torch.no_grad():
        before = _image_scores(_render_frames(model.with_frames(len(held_out)), held_out, ids), held_out, ids)
    metrics.update({f"{k}_mean_codes": v for k, v in before.items()})
    train_tracking = held_tracking = tracking
    if tracking.max_minutes is not None:
        seconds = time.perf_counter() - began
        train_tracking, held_tracking = _share_budget(model, held_out, tracking, seconds, len(ids), measured, mesh_resolution)
    start = time.perf_counter()
    history = track_sequence(model, train, train_tracking, None if landmarks is None else landmarks[0])
    fitted = model.with_frames(len(held_out))
    held_history = track_frames(fitted, held_out, held_tracking, None if landmarks is None else landmarks[1])
    metrics["tracking_seconds"] = time.perf_counter() - start
    metrics["tracking_steps"] = {**history.steps, "held_out": held_history.steps.get("stage1", 0)}
    with torch.no_grad():
        renders = _render_frames(fitted, held_out, ids)
    metrics.update(_image_scores(renders, held_out, ids))
    if out is not None:
        for f, image in zip(ids, renders, strict=True):
            save_png(comparison(image, held_out.images[f].float() / 255), out / "renders" / f"{f:05d}.png")
    if truth is None or held_out.mesh_vertices is None:
        metrics["chamfer"] = metrics["chamfer_flame"] = None
        metrics["chamfer_note"] = "no ground-truth geometry for this capture"
        return Reconstruction(model, fitted, metrics, history)
    head = fitted.head(held_out)
    scores, flame = [], []
    bar = Progress(len(measured), "meshes", "mesh")
    for f in measured:
        with torch.no_grad():
            surface = fitted.extract_mesh(head, f, mesh_resolution)
        bar.update(1)
        eye = held_out.cameras.camera_to_world[f, :3, 3].to(device)
        true_vertices, true_faces = truth[0][f].to(device), truth[1].to(device)
        scores.append(geometry_score(surface.vertices, surface.faces, true_vertices, true_faces, eye))
        tracked = held_out.mesh_vertices[f].to(device), held_out.mesh_faces.to(device)
        flame.append(geometry_score(*tracked, true_vertices, true_faces, eye))
        if out is not None:
            write_obj(out / f"mesh_{f:05d}.obj", surface.vertices.cpu().numpy(), surface.faces.cpu().numpy())
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    metrics["chamfer"] = mean([s.relative for s in scores])
    metrics["chamfer_flame"] = mean([s.relative for s in flame])
    metrics["chamfer_mm"] = 1000 * mean([s.chamfer for s in scores])
    metrics["chamfer_flame_mm"] = 1000 * mean([s.chamfer for s in flame])
    metrics["chamfer_l2_mm2"] = 1e6 * mean([s.chamfer_l2 for s in scores])
    metrics["chamfer_l2_flame_mm2"] = 1e6 * mean([s.chamfer_l2 for s in flame])
    metrics["normal_consistency"] = mean([s.normal_consistency for s in scores])
    metrics["normal_consistency_flame"] = mean([s.normal_consistency for s in flame])
    metrics["f_score"] = {k: mean([s.f_score[k] for s in scores]) for k in scores[0].f_score}
    metrics["f_score_flame"] = {k: mean([s.f_score[k] for s in flame]) for k in flame[0].f_score}
    metrics["head_size_m"] = mean([s.size for s in scores])
    return Reconstruction(model, fitted, metrics, history)
