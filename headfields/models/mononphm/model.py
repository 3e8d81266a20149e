"""MonoNPHM (Giebenhain et al., CVPR 2024) as the paper's method: a frozen NPHM prior
(:mod:`headfields.models.mononphm.prior`) fitted by inverse rendering to a monocular video of a person it never saw.

Fitted: one identity code, one appearance code and SH lighting for the sequence; per frame an expression code and a
correction of the capture's tracked head pose (:class:`TrackedFrames`, carried on the head as ``head.codes`` and read
by :class:`CorrectedPose`), and a head scale and an affine colour transform (:class:`ColourTransform`), as MonoNPHM's
``photometric_tracking/tracking.py`` fits them. A ray sample at world ``x`` of frame ``f``:

    (tracked head pose of f) o (rotation exp(w_f), shift t_f)   undone   -> head frame (metres)
    Normalize(center, NPHM_UNIT)                                          -> the prior's head space
    prior.deform(x, [expression code f, compressed identity])            -> [x + dx, h]
    prior.canonical_sdf / prior.appearance (identity, appearance code)   -> sdf, albedo x SH shading
    NeuS: 32 stratified points steer 32 up-samples at a fixed inv_s, which alone are rendered

This module holds the model and its configuration; :mod:`~headfields.models.mononphm.tracking` fits it (the two
tracking stages, :func:`~headfields.models.mononphm.track_sequence` and
:func:`~headfields.models.mononphm.track_frames`) and :mod:`~headfields.models.mononphm.reconstruction` tracks and
measures both splits (:func:`~headfields.models.mononphm.reconstruct`). ``python -m headfields train mononphm
--mononphm.prior PRIOR`` runs it into a run folder (:mod:`~headfields.models.mononphm.method`) that ``render``,
``export`` and ``view`` open.

    model = MonoNphm(load_prior("outputs/nphm/prior.pt"), subject.parametric, len(subject.train))
    track_sequence(model, subject.train, cpu_tracking())
    rgb = render_image(model, subject.train, 0, 4096, "cpu", head=model.head(subject.train))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from ...checks import check_count
from ...data import FrameSet
from ...decoders import SHLighting
from ...deformers import Canonical, Deformer, DeformerChain, MappedDeformer
from ...fields import NeusField
from ...fitting import PosedPoints, corrected_pose, posed_points
from ...heads import tracked_head
from ...parametric import Head, SubjectModel
from ...renderers import InverseVariance, NeusSampler
from ..neus_model import NeusConfig, NeusModel
from .prior import Nphm
from .tracking import VARIANCE_MAX, MonoNphmTracking, cpu_tracking

__all__ = [
    "POSE_NUMBERS",
    "ColourTransform",
    "ColourTransformedField",
    "CorrectedPose",
    "MonoNphm",
    "MonoNphmConfig",
    "TrackedFrames",
    "cpu_config",
    "frame_codes",
    "paper_config",
]

# MonoNPHM's tracking renderer (photometric_tracking/rendering.py): 32 jittered points inside the bounding
# sphere steer 32 up-samples drawn at the fixed inv_s = exp(0.3 * 10), which replace them.
MONONPHM_COARSE = 32
MONONPHM_UPSAMPLES = 32
MONONPHM_UPSAMPLE_INV_S = math.exp(0.3 * 10)
SPLITS = ("train", "held_out")  # the frame sets a model fits: the video it tracks, and its held-out frames


@dataclass(frozen=True)
class MonoNphmConfig(NeusConfig):
    """MonoNPHM on a video: the renderer (MonoNPHM's, see the module docstring; the padding, metres around each
    frame's tracked mesh, bounds the rays as MonoNPHM's bounding sphere does), and what a run of it reads: the
    ``prior`` file, the ``tracking`` and the measures of :func:`reconstruct`.

    In a run (``python -m headfields train mononphm``) the training configuration gives the tracking's budget
    (``max_minutes``, ``budget``), its ``seed``, the held-out frames measured (``eval_frames``), the render chunk and
    the CPU tunings; its other fields (steps, rays, optimiser) belong to the NeRF-type loop and are not read: the
    tracking's own are under ``tracking``."""

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
    prior: str | None = None  # a prior saved by save_prior (train nphm_prior writes DIR/prior.pt); stored absolute
    tracking: MonoNphmTracking = MonoNphmTracking()
    geometry_frames: int = 3  # of the measured held-out frames, those whose surface is scored (true meshes needed)
    mesh_resolution: int = 128  # marching-cubes points per axis of those surfaces
    # A folder with train.npy and <held-out split>.npy: detected landmarks [frames, L, 2] in pixels, in the order of
    # the FLAME model's landmarks or iBUG-68's, NaN where none was found (None: the capture's own landmarks/ folder,
    # which our tracker writes, else the tracked landmarks projected); stored absolute.
    landmarks: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("prior", "landmarks"):
            value = getattr(self, name)
            if value is not None:
                if not isinstance(value, str):
                    raise TypeError(f"{name}: expected a path as a string, or None, got {value!r}")
                object.__setattr__(self, name, str(Path(value).expanduser().absolute()))
        if not isinstance(self.tracking, MonoNphmTracking):
            raise TypeError(f"tracking: expected a MonoNphmTracking, got {type(self.tracking).__name__}")
        check_count("geometry_frames", self.geometry_frames, 0)
        check_count("mesh_resolution", self.mesh_resolution, 2)


def paper_config(**overrides) -> MonoNphmConfig:
    """MonoNPHM's renderer and tracking (``MonoNphmConfig()``), then ``overrides``."""
    return MonoNphmConfig(**overrides)


def cpu_config(**overrides) -> MonoNphmConfig:
    """Fewer samples (16 steer 16) and the CPU's tracking (:func:`cpu_tracking`), then ``overrides``."""
    sampler = NeusSampler(coarse=16, rounds=1, per_round=16, base_inv_s=MONONPHM_UPSAMPLE_INV_S, padding=0.05, keep_coarse=False)
    return MonoNphmConfig(**{"sampler": sampler, "tracking": cpu_tracking(), **overrides})


# ------------------------------------------------------------------------ what is fitted besides the codes


POSE_NUMBERS = 6  # a frame's pose correction on head.codes: rotation w_f (3), then shift t_f (3)


class TrackedFrames(nn.Module):
    """What tracking fits per frame of a frame set: an expression code, and a correction of the tracked head pose
    (a rotation ``exp(w_f)`` in the head frame, then a world shift ``t_f``); all zero at first (the prior's mean
    expression on the capture's pose). :meth:`attach` puts them on the frames' head as its ``codes``
    ``[expression | w_f | t_f]``, which the model's field reads."""

    def __init__(self, num_frames: int, expression_dim: int):
        super().__init__()
        check_count("num_frames", num_frames, 1)
        self.codes = nn.Parameter(torch.zeros(num_frames, expression_dim))
        self.rotation = nn.Parameter(torch.zeros(num_frames, 3))
        self.shift = nn.Parameter(torch.zeros(num_frames, 3))

    @property
    def count(self) -> int:
        return self.codes.shape[0]

    def attach(self, head: Head) -> Head:
        """``head`` (of the frames these were fitted to) with them as its codes."""
        if head.num_frames != self.count:
            raise ValueError(f"head: expected the {self.count} frames these were fitted to, got {head.num_frames}")
        return head.with_codes(torch.cat([self.codes, self.rotation, self.shift], dim=1))


def frame_codes(head: Head, expression_dim: int) -> tuple[Tensor, Tensor, Tensor] | None:
    """(expression codes, rotations, shifts) per frame of ``head`` (:meth:`TrackedFrames.attach`); None for a head
    without codes (the mean expression on the tracked pose)."""
    if head.codes is None:
        return None
    if head.codes.shape[1] != expression_dim + POSE_NUMBERS:
        raise ValueError(
            f"head: expected codes of {expression_dim + POSE_NUMBERS} numbers per frame ([expression | rotation | "
            f"shift], MonoNphm.head), got {head.codes.shape[1]}"
        )
    e = expression_dim
    return head.codes[:, :e], head.codes[:, e : e + 3], head.codes[:, e + 3 : e + 6]


class CorrectedPose(Deformer):
    """World -> the head frame: the tracked transform of ``joint`` in each frame, composed with the frame's
    correction on ``head.codes`` (:class:`TrackedFrames`: a rotation ``exp(w_f)`` in the head frame, then a world
    shift ``t_f``; a head without codes has none), and the sequence's head ``scale`` (tracking.py's
    ``scale_param``: head-frame points are world offsets divided by it; 1 unless tracking fits it)."""

    def __init__(self, joint: int, expression_dim: int):
        super().__init__()
        self.joint, self.expression_dim = joint, expression_dim
        self.scale = nn.Parameter(torch.ones(()))

    def transforms(self, head: Head, frame: Int[Tensor, " N"]) -> tuple[Tensor, Tensor]:
        """(rotation ``[N, 3, 3]``, translation ``[N, 3]``) of each row's frame: head frame (times the scale) -> world."""
        tracked = head.joint_transforms[frame, self.joint]
        codes = frame_codes(head, self.expression_dim)
        if codes is None:
            return tracked[:, :3, :3], tracked[:, :3, 3]
        _, rotation, shift = codes
        return corrected_pose(tracked[:, :3, :3], tracked[:, :3, 3], rotation[frame], shift[frame])

    def canonicalize(
        self, x: Float[Tensor, "N 3"], head: Head, frame: Int[Tensor, " N"], dirs: Float[Tensor, "N 3"] | None
    ) -> Canonical:
        rotation, translation = self.transforms(head, frame)
        points = torch.einsum("nji,nj->ni", rotation, x.to(rotation.dtype) - translation) / self.scale.to(rotation.dtype)
        canonical_dirs = None if dirs is None else torch.einsum("nji,nj->ni", rotation, dirs.to(rotation.dtype))
        valid = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        return Canonical(points=points, dirs=canonical_dirs, valid=valid, face=None)


class ColourTransform(nn.Module):
    """The sequence's affine colour transform, ``rgb @ A + b`` (tracking.py's ``colorA``, ``colorb``; identity at
    first): it absorbs a camera's colour response that the prior's albedo and SH lighting cannot. Applied to each
    sample's shaded colour, which is the same as to the composited foreground (compositing is linear; the shift
    counts by opacity), never to the background. MonoNPHM's colours are in [-1, 1], ours in [0, 1]: the same family
    of maps, with the same identity start."""

    def __init__(self) -> None:
        super().__init__()
        self.matrix = nn.Parameter(torch.eye(3))
        self.shift = nn.Parameter(torch.zeros(3))

    def forward(self, rgb: Float[Tensor, "N 3"]) -> Float[Tensor, "N 3"]:
        return rgb @ self.matrix.to(rgb.dtype) + self.shift.to(rgb.dtype)


class ColourTransformedField(NeusField):
    """A NeusField whose shaded colour goes through a :class:`ColourTransform`."""

    def __init__(self, *parts: nn.Module | None, transform: ColourTransform):
        super().__init__(*parts)
        self.colour_transform = transform

    def colour(self, geometry, normals: Tensor, frame: Tensor, head: Head) -> Tensor:
        return self.colour_transform(super().colour(geometry, normals, frame, head))


# ------------------------------------------------------------------------------------------------ the model


class _Codes(nn.Module):
    """The sequence's identity and appearance codes, and the centre the tracking's regularisers pull them to (where
    they start): the prior's mean (``centre="prior_mean"``: its training identities' mean codes) or zero."""

    def __init__(self, prior: Nphm, centre: str):
        super().__init__()
        identity = prior.identity_codes.codes.detach().mean(0, keepdim=True)
        appearance = prior.appearance_codes.codes.detach().mean(0, keepdim=True)
        if centre == "zero":
            identity, appearance = torch.zeros_like(identity), torch.zeros_like(appearance)
        # Not saved: the prior's (frozen) codes give them again whenever the model is built.
        self.register_buffer("identity_centre", identity.clone(), persistent=False)
        self.register_buffer("appearance_centre", appearance.clone(), persistent=False)
        self.identity = nn.Parameter(identity.clone())
        self.appearance = nn.Parameter(appearance.clone())


class _PriorDeformer(Deformer):
    """The prior's backward deformation under each frame's expression code (on ``head.codes``; none: the mean,
    zero) and the identity."""

    def __init__(self, prior: Nphm, codes: _Codes):
        super().__init__()
        self.prior, self.codes = prior, codes

    def canonicalize(
        self, x: Float[Tensor, "N 3"], head: Head, frame: Int[Tensor, " N"], dirs: Float[Tensor, "N 3"] | None
    ) -> Canonical:
        identity = self.codes.identity.expand(head.num_frames, -1)
        codes = frame_codes(head, self.prior.config.expression_dim)
        expression = identity.new_zeros(head.num_frames, self.prior.config.expression_dim) if codes is None else codes[0]
        d = self.prior.deform(x, frame, identity, expression.to(identity.dtype))
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
    """A frozen ``prior`` fitted to ``num_frames`` frames of a video (and, with ``held_out_frames``, to that many
    held-out frames' expressions and poses); ``parametric``: the capture's tracking model (its head joint gives each
    frame's starting pose, its tracked mesh bounds the rays).

    Render a frame from the head :meth:`head` returns (the tracked head carrying the frames' fitted codes and pose
    corrections); a head without codes renders the prior's mean expression on the tracked pose (another capture
    driving the avatar)."""

    def __init__(
        self,
        prior: Nphm,
        parametric: SubjectModel,
        num_frames: int,
        config: MonoNphmConfig | None = None,
        held_out_frames: int = 0,
    ):
        c = config or MonoNphmConfig()
        super().__init__(parametric, c, prior.hyper_dim)
        self.prior = prior.requires_grad_(False)
        self.inverse_variance = InverseVariance(VARIANCE_MAX, learnable=False)  # set by the tracking schedule
        self.head_joint = parametric.joint_index(c.head_joint, "head_joint")
        self.codes = _Codes(prior, c.tracking.code_centre)
        expression = prior.config.expression_dim
        self.train_track = TrackedFrames(num_frames, expression)
        held_out = check_count("held_out_frames", held_out_frames, 0)
        self.held_out_track = TrackedFrames(held_out, expression) if held_out else None
        self.pose = CorrectedPose(self.head_joint, expression)
        deformer = DeformerChain(self.pose, MappedDeformer(prior.normalize), _PriorDeformer(prior, self.codes))
        self.colour = ColourTransform()
        parts = (deformer, _PriorSdf(prior, self.codes), _PriorAppearance(prior, self.codes), None, SHLighting())
        self.field = ColourTransformedField(*parts, transform=self.colour)
        self._register_load_state_dict_pre_hook(self._identity_defaults)

    def _identity_defaults(self, state: dict, prefix: str, *_) -> None:
        """A run saved before the colour transform and the head scale were fitted loads with both at identity."""
        fresh = {id(p) for p in (*self.colour.parameters(), self.pose.scale)}
        for name, p in self.named_parameters(remove_duplicate=False):
            if id(p) in fresh and prefix + name not in state:
                state[prefix + name] = p.detach().clone()

    @property
    def lighting(self) -> SHLighting:
        return self.field.lighting

    def track(self, split: str = "train") -> TrackedFrames:
        """What was fitted per frame of ``split``: "train" (the frames tracked: ``train_track``) or "held_out"
        (``held_out_track``, of a model built with ``held_out_frames``)."""
        track = {"train": self.train_track, "held_out": self.held_out_track}.get(split)
        if track is None:
            splits = list(SPLITS) if self.held_out_track is not None else ["train"]
            raise ValueError(f"split: expected one of {splits}, got {split!r}")
        return track

    def fitted_head(self, head: Head, split: str = "train") -> Head:
        """``head`` (the tracked head of ``split``'s frames) carrying what was fitted to them: the head the model
        renders those frames with (:func:`headfields.load_run` builds each split's this way)."""
        return self.track(split).attach(head)

    def head(self, frames: FrameSet, split: str = "train") -> Head:
        """The tracked head of ``frames`` (the frames of ``split`` this model fits) with their fitted codes."""
        return self.fitted_head(tracked_head(self.parametric, frames), split)

    def set_variance(self, v: float) -> None:
        """Rendering sharpness ``inv_s = exp(10 v)`` (MonoNPHM schedules it during tracking)."""
        self.inverse_variance.v.fill_(float(v))

    def posed_anchors(self, head: Head, frame: int, anchors: Int[Tensor, " L"]) -> PosedPoints:
        """World positions in frame ``frame`` of ``head`` (with its fitted codes) of the identity's anchors
        ``anchors`` (their canonical positions carried to posed space by root finding of ``x + dx(x) = a``,
        differentiable by implicit differentiation), and whether the root finding converged."""
        prior, identity = self.prior, self.codes.identity
        predicted = prior.anchors(identity)
        row = torch.zeros(len(anchors), dtype=torch.long, device=predicted.device)
        codes = frame_codes(head, prior.config.expression_dim)
        if codes is None:
            raise ValueError("head: expected the frames' fitted codes (MonoNphm.head), got a head without codes")
        expression = codes[0][frame : frame + 1].to(identity.dtype)
        rotation, translation = self.pose.transforms(head, torch.full_like(row, frame))
        return posed_points(
            lambda x: prior.deform(x, row, identity, expression, predicted).offset,
            predicted[0, anchors], prior.normalize, rotation, translation, self.pose.scale,
        )  # fmt: skip
