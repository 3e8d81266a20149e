"""The hyper NeuS avatar, a mix: MonoNPHM's networks fitted per subject, without a prior. MonoNPHM's deformation,
SDF and appearance networks (Giebenhain et al., CVPR 2024) are learnt for one subject from one video, with the
tracked FLAME expression as the deformation's condition and a correspondence loss, instead of the paper's
parametric head prior learnt from scans (that is :mod:`headfields.models.mononphm`).

Posed sample → head frame, normalised (the SDF's units) → backward deformation with hyper-dimensions under
[tracked expression and jaw, expression code, identity code] → SDF (with the identity code) → albedo (SDF features,
appearance code) × SH lighting → NeuS. Held-out frames: their tracked expression with the neutral (zero) code, or
tracked (:mod:`headfields.models.hyper_neus_tracking`)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..checks import check_count
from ..decoders import AnchorSdf, AnchorSdfConfig, AppearanceConfig, AppearanceField, SdfMlp, SdfMlpConfig, SHLighting
from ..deformers import (
    DeformerChain,
    HyperDeformer,
    HyperDeformerConfig,
    MappedDeformer,
    RigidDeformer,
    RigidDeformerConfig,
)
from ..encoders import LatentCodesConfig
from ..fields import ConcatCondition, FrameCodes, NeusField, Normalize, SharedCode, TrackedCondition
from ..geometry import farthest_points
from ..parametric import Head, SubjectModel, require_parametric_model
from ..renderers import NeusSampler
from ..training import OptimizerConfig, RayBatch, StepOutput, TrainingConfig
from .method import Method, Recipe
from .neus_model import NEUS_UNREAD_TRAINING_FIELDS, NeusConfig, NeusModel

__all__ = [
    "HyperNeusAvatar",
    "HyperNeusConfig",
    "METHOD",
    "cpu_config",
    "paper_config",
    "unread_recipe_fields",
]


@dataclass(frozen=True)
class HyperNeusConfig(NeusConfig):
    """MonoNPHM's network sizes and schedule (PAPERS.md), for a single subject learnt from one video with no prior.
    Where this mix departs from the paper:
    the deformation's condition also carries the tracked FLAME expression and jaw pose (MonoNPHM's codes come
    from a prior trained on registered scans; here the tracked mesh plays that part); a correspondence loss
    asks the backward field to carry the tracked mesh's posed vertices to its neutral ones (NPHM's training
    supervises its deformations with registered scans the same way); anchors are farthest-point samples of
    the neutral mesh (MonoNPHM predicts them from the identity code), with no per-anchor codes and the same
    identity code for every member (MonoNPHM: 64 global + 32 per anchor); one appearance MLP, not an ensemble;
    the inverse variance is learnt (NeuS), not scheduled; samples in each frame's posed-mesh box, padded."""

    deformer: HyperDeformerConfig = field(default_factory=HyperDeformerConfig)  # 6 x 400, Softplus(100), H = 2
    canonical: Literal["anchors", "global"] = "anchors"  # the anchor ensemble, or one global SDF MLP
    num_anchors: int = 65  # MonoNPHM: 65 (30 mirror pairs and 5 on the midplane)
    anchor_sdf: AnchorSdfConfig = field(default_factory=AnchorSdfConfig)  # local 4 x 200, 12 neighbours
    global_sdf: SdfMlpConfig = field(default_factory=SdfMlpConfig)  # when canonical == "global"
    appearance: AppearanceConfig = field(default_factory=AppearanceConfig)  # 4 x 200 ReLU, 16-d SDF features
    identity_code: LatentCodesConfig = field(default_factory=lambda: LatentCodesConfig(dim=16, weight=1e-2))
    expression_code: LatentCodesConfig = field(default_factory=lambda: LatentCodesConfig(dim=100, weight=1e-2))
    appearance_code: LatentCodesConfig = field(default_factory=lambda: LatentCodesConfig(dim=16, weight=1e-2))
    tracked_expression: bool = True  # the condition also carries the tracked expression and jaw pose
    head_joint: str = "neck"  # the joint whose tracked transform is the head's frame (FLAME: global then neck)
    jaw_joint: str | None = "jaw"  # its pose joins the tracked condition (None: expression only)
    # MonoNPHM: 32 stratified + 32 importance samples; padding (metres): 10% of a FLAME head's 0.4 m diagonal.
    sampler: NeusSampler = NeusSampler(coarse=32, rounds=1, per_round=32, padding=0.04)
    correspondence_weight: float = 1.0  # in the normalised units (see the departures)
    correspondence_vertices: int = 512  # tracked vertices per step
    optimization: OptimizerConfig = OptimizerConfig(5e-4, 5e-5, 100_000)  # exponential decay; no EMA (none in MonoNPHM)

    WEIGHTS = (*NeusConfig.WEIGHTS, "correspondence_weight")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.canonical not in ("anchors", "global"):
            raise ValueError(f"canonical: expected 'anchors' or 'global', got {self.canonical!r}")
        check_count("num_anchors", self.num_anchors, 1)
        check_count("correspondence_vertices", self.correspondence_vertices, 0)


def unread_recipe_fields(config: HyperNeusConfig) -> dict[str, str]:
    """The canonical SDF the recipe does not build (dotted name -> why; the registry refuses a change to it)."""
    why = f"with canonical={config.canonical!r}"
    if config.canonical != "anchors":
        return {"num_anchors": why, "anchor_sdf": why}
    unread = {"global_sdf": why}
    if config.anchor_sdf.global_distance is not None:  # the global member's weight: a Gaussian's at that distance
        unread["anchor_sdf.global_weight"] = f"with anchor_sdf.global_distance={config.anchor_sdf.global_distance}"
    return unread


def cpu_config(**overrides) -> HyperNeusConfig:
    """The sizes a 20-minute run on a 2-core CPU affords (benchmarks/ablations/hyper_neus.py), then ``overrides``: one global
    SDF MLP (the ensemble evaluates 13 per sample), smaller networks, codes and samples (paper: HyperNeusConfig());
    and a moving average of the weights (0.95) for evaluation, which MonoNPHM does not name: a run of minutes ends at
    a learning rate still above 5e-4, and the average was 3.97 dB ahead of the raw weights after 1,324 steps
    (29.94 against 25.97 dB held-out, one 5-minute compare.py run evaluated both ways; docs/hyper_neus.md)."""
    sizes = dict(
        deformer=HyperDeformerConfig(hidden_dim=96, hidden_layers=4, skip_layer=2),
        canonical="global",
        global_sdf=SdfMlpConfig(hidden_dim=96, hidden_layers=4, position_frequencies=4),
        appearance=AppearanceConfig(hidden_dim=64, hidden_layers=3, position_frequencies=4),
        expression_code=LatentCodesConfig(dim=16, weight=1e-2),
        sampler=NeusSampler(coarse=24, rounds=2, per_round=8, padding=0.04),
        optimization=OptimizerConfig(1e-3, 1e-4, 5_000, ema_decay=0.95),
    )
    return HyperNeusConfig(**{**sizes, **overrides})


def paper_config(**overrides) -> HyperNeusConfig:
    """MonoNPHM's network sizes and schedule (``HyperNeusConfig()``), then ``overrides``."""
    return HyperNeusConfig(**overrides)


class HyperNeusAvatar(NeusModel):
    """MonoNPHM's networks fitted per subject, without a prior: a hyper-dimensional NeuS avatar driven by the
    tracked FLAME expression (a mix; the paper's method is :mod:`headfields.models.mononphm`).

    ``num_frames``: training frames (one expression code each). The field's deformer is
    ``DeformerChain(RigidDeformer(head joint), MappedDeformer(normalise), HyperDeformer)``.

    Its renderer can keep the rays that miss its box, of no length, and the anchor ensemble runs in tiles on a GPU:
    a step's shapes can follow from its rays alone, read nothing back, and ``cuda_graph`` takes it."""

    renders_every_ray = True  # render_neus keeps the rays that miss the box when the shapes are fixed
    steps_on_frames = True  # the codes and correspondences of the batch's drawn frames (RayBatch.drawn_frames)
    captures_graph = True  # (graph_phase)

    def __init__(self, parametric: SubjectModel, num_frames: int, config: HyperNeusConfig | None = None):
        c = config or HyperNeusConfig()
        require_parametric_model(parametric, "HyperNeusAvatar", "FLAME's jaw joint and landmarks")
        super().__init__(parametric, c, c.deformer.hyper_dim)
        self.head_joint = parametric.joint_index(c.head_joint, "head_joint")
        self.jaw_joint = None if c.jaw_joint is None else parametric.joint_index(c.jaw_joint, "jaw_joint")
        rest = parametric().canonical_vertices
        self.expression_codes = FrameCodes(check_count("num_frames", num_frames, 1), c.expression_code)
        identity, appearance = SharedCode(c.identity_code), SharedCode(c.appearance_code)
        jaw = (self.jaw_joint,) if self.jaw_joint is not None and c.tracked_expression else ()
        tracked = TrackedCondition(parametric.num_expression if c.tracked_expression else 0, jaw, c.expression_code.dim)
        condition = ConcatCondition(tracked, identity)  # the identity code: the SDF's condition too (tied)
        normalize = Normalize.of_box(rest)
        hyper = HyperDeformer(condition.dim, c.deformer, condition)
        deformer = DeformerChain(RigidDeformer(RigidDeformerConfig(joint=self.head_joint)), MappedDeformer(normalize), hyper)
        if c.canonical == "anchors":
            anchors = normalize(rest[farthest_points(rest, c.num_anchors)])
            sdf = AnchorSdf(anchors, self.hyper_dim + identity.dim, c.anchor_sdf, center=torch.zeros(3))
        else:
            sdf = SdfMlp(self.hyper_dim + identity.dim, c.global_sdf)
        colour = AppearanceField(3 + self.hyper_dim, sdf.feature_dim, appearance.dim, c.appearance)
        self.field = NeusField(deformer, sdf, colour, None, SHLighting(), identity, appearance)

    @property
    def hyper(self) -> HyperDeformer:
        """The backward deformation; its condition is [tracked expression and jaw pose, ``head.codes``, identity]."""
        return self.field.deformer.part(HyperDeformer)

    @property
    def normalize(self) -> Normalize:
        """Head-frame metres -> the normalised units the deformation and the SDF live in."""
        return self.field.deformer.part(MappedDeformer).mapping

    def correspondence_loss(self, head: Head, frames: Int[Tensor, " U"], generator: torch.Generator) -> Float[Tensor, ""]:
        """Mean squared distance (normalised units) between the backward field's image of tracked posed vertices
        and the same vertices on the neutral mesh (see the config's departures)."""
        count = min(self.config.correspondence_vertices, self.parametric.num_vertices)
        pick = torch.randint(0, self.parametric.num_vertices, (len(frames), count), generator=generator, device=generator.device)
        pick, frame = pick.to(frames.device), frames[:, None].expand(-1, count).reshape(-1)
        canonical = self.field.deformer.canonicalize(head.vertices[frames[:, None], pick].reshape(-1, 3), head, frame, None)
        return (canonical.points[:, :3] - self.normalize(head.canonical_vertices[pick].reshape(-1, 3))).square().sum(-1).mean()

    def graph_phase(self, step: int) -> bool:
        """What :meth:`training_step` decides by the step number (``TrainingConfig.cuda_graph``): nothing. Its
        sharpness is learnt and its loss weights are constants: one phase throughout."""
        return True

    def training_step(self, batch: RayBatch, step: int) -> StepOutput:
        c = self.config
        generator = batch.context.generator or torch.Generator(batch.rgb.device).manual_seed(step)
        frames = batch.drawn_frames()  # (the codes and correspondences regularised)
        head = self.expression_codes.attach(batch.head)
        out = self.render(batch.rays, head, replace(batch.context, generator=generator))
        loss, logs = self.neus_loss(out, batch, generator)
        deformation = self.hyper.regularizers(out.geometry.canonical, out.real)
        codes = [self.expression_codes.regularizer(self.expression_codes.codes[frames])]
        codes += [self.field.sdf_condition.codes.regularizer(), self.field.colour_condition.codes.regularizer()]
        loss, logs["offset"] = loss + deformation.total + sum(codes), deformation.offset.detach()
        if c.correspondence_weight > 0 and c.correspondence_vertices > 0:
            correspondence = self.correspondence_loss(head, frames, generator)
            loss, logs["correspondence"] = loss + c.correspondence_weight * correspondence, correspondence.detach()
        return StepOutput(loss=loss, rgb=out.composite.rgb, logs=logs)


# The paper recipe renders 1,024 rays a call: NeuS's inference up-samples every ray of a call at once, each sample
# through 13 MLPs with the SDF's graph for its normal; TrainingConfig's 8,192 held 47 GiB on an H100 (docs/results.md),
# 1,024 about 5.6 GiB (counted on the CPU: tools/step_memory.py --render-rays).
PAPER_TRAINING = {"render_chunk": 1024}


def _build(subject, config: HyperNeusConfig) -> HyperNeusAvatar:
    return HyperNeusAvatar(subject.parametric, len(subject.train), config)


METHOD = Method(
    "hyper_neus",
    _build,
    {"paper": Recipe(paper_config, PAPER_TRAINING), "cpu": Recipe(cpu_config)},
    HyperNeusConfig,
    training=TrainingConfig(max_minutes=20.0, rays_per_batch=512, frames_per_batch=4, eval_every=500),
    unread_training=NEUS_UNREAD_TRAINING_FIELDS,
    unread_recipe=unread_recipe_fields,
)
