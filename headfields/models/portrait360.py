"""The 360° Volumetric Portrait Avatar (Nehvi, Kabadayi, Valentin, Thies; 2023), assembled from public headfields
primitives.

sample (stratified across each frame's posed-mesh box; rays drawn evenly from front, side and back views) →
deform (inverse SMPL-X skinning → the rest mesh's triangle frames → a personalised blend basis of displacement
fields, its coefficients from a mapping network on expression and jaw pose) → encode (hash grid in the canonical
box) → decode (NeRF MLPs) → composite → Huber loss.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Literal

import torch
from jaxtyping import Int
from torch import Tensor

from ..cameras import Rays
from ..checks import check_count, check_positive
from ..data import FrameSet
from ..decoders import NerfDecoder, NerfDecoderConfig, mlp
from ..deformers import (
    BlendFieldConfig,
    BlendFieldDeformer,
    DeformerChain,
    SkinningDeformer,
    TriangleDeformerConfig,
    TriangleFrameDeformer,
    expression_and_jaw,
    jaw_index,
)
from ..encoders import HashGrid, HashGridConfig, SphericalHarmonics
from ..fields import FrameCondition, NerfField, UnitBox, inflated_box, padded_box
from ..losses import HUBER_DELTA, huber_loss
from ..parametric import Head, SubjectModel, require_parametric_model
from ..renderers import (
    CPU_SHELL,
    EARLY_STOP_TRANSMITTANCE,
    NerfRender,
    RenderContext,
    StratifiedSampler,
    render_nerf,
    render_nerf_inference,
    view_angles,
    view_bins,
)
from ..training import AvatarModel, OptimizerConfig, RayBatch, StepOutput, TrainingConfig
from .method import CPU_SAMPLES_PER_BATCH, INFERENCE_CHUNK, Method, Recipe

__all__ = [
    "METHOD",
    "Portrait360",
    "Portrait360Config",
    "cpu_config",
    "paper_config",
    "unread_recipe_fields",
]

BlendKind = Literal["deformation", "colour"]
FACING = (0.0, 0.0, 1.0)  # SMPL-X and FLAME face +z in their rest pose


@dataclass(frozen=True)
class Portrait360Config:
    """The 360° portrait's recipe (PAPERS.md gives its structure, not its sizes: these are ours). ``blend``:
    the paper's blend basis of deformation fields, or its ablation, where the mapping network's coefficients
    condition the colour MLP alone (a learnt blend of colour fields; the density does not see them). This default
    is :func:`paper_config`: every sample in the box is kept, no weight average at evaluation (the paper names
    none); :func:`cpu_config` is the recipe a CPU run affords. Departure: no occupancy grid (docs/portrait360.md)."""

    blend: BlendKind = "deformation"
    # The fields leave samples outside their box alone (see static_regions).
    blend_fields: BlendFieldConfig = field(default_factory=lambda: BlendFieldConfig(outside="identity"))
    hash_grid: HashGridConfig = field(default_factory=HashGridConfig)
    decoder: NerfDecoderConfig = field(default_factory=NerfDecoderConfig)
    sh_degree: int = 4
    # Whose tracked rotation of FACING says where the subject looks (view bins); None: "head", or the root joint
    # of a model without one (FLAME).
    facing_joint: str | None = None
    num_samples: int = 96  # stratified samples per ray across the posed mesh's box
    padding: float = 0.03  # metres around each frame's posed-mesh box, where rays are sampled
    shell: float | None = None  # metres from the frame's posed mesh beyond which samples are skipped (None: off)
    box_inflation: float = 0.1  # canonical box = canonical mesh box inflated by this fraction of its diagonal
    # Regions expressions and the jaw do not move (those the model has): the blend fields cover the box of the rest
    # of the canonical mesh, padded by ``padding``, and skip the samples outside it (most of a bust's).
    static_regions: tuple[str, ...] = ("torso",)
    huber_delta: float = HUBER_DELTA
    # The paper names no optimiser: INSTA's (the same group's instant-ngp lineage), without INSTA's EMA.
    optimization: OptimizerConfig = OptimizerConfig(2.5e-3, betas=(0.9, 0.99), eps=1e-15)
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if self.blend not in ("deformation", "colour"):
            raise ValueError(f"blend: expected 'deformation' or 'colour', got {self.blend!r}")
        check_count("sh_degree", self.sh_degree, 1, 8)
        check_count("num_samples", self.num_samples, 1)
        for name in ("padding", "shell", "box_inflation"):
            check_positive(name, getattr(self, name))


def unread_recipe_fields(config: Portrait360Config) -> dict[str, str]:
    """The blend basis' settings the recipe leaves unread (dotted name -> why; the registry refuses a change to them):
    the basis' magnitude weight (the portrait's loss has no such term), and what its field kind, its treatment of the
    points outside its box or the colour ablation leave unused."""
    b = config.blend_fields
    unread = {"blend_fields.magnitude_weight": "(its loss is the Huber photometric term alone: the paper names no other)"}
    if config.blend != "deformation":  # the mapping network conditions the colour: no displacement fields
        basis = ("field", "hashgrid", "mlp_hidden_dim", "mlp_layers", "position_frequencies", "outside", "taper")
        why = f"with blend={config.blend!r}"
        return unread | {f"blend_fields.{name}": why for name in basis} | {"static_regions": why}
    unread[f"blend_fields.{'position_frequencies' if b.field == 'hashgrid' else 'hashgrid'}"] = f"with field={b.field!r}"
    if b.outside == "clamp":
        unread["blend_fields.taper"] = "with outside='clamp'"
    return unread


def paper_config(**overrides) -> Portrait360Config:
    """The paper's recipe (what it says, our sizes where it is silent), then ``overrides``: ``Portrait360Config()``."""
    return Portrait360Config(**overrides)


def cpu_config(**overrides) -> Portrait360Config:
    """The recipe a 20-minute run on a 2-core CPU affords, then ``overrides``: samples farther than CPU_SHELL from
    the posed mesh are skipped (fewer network evaluations per ray; detail off the template, such as a hair volume,
    is lost: benchmarks/ablations/hair.py measures the cost)."""
    return Portrait360Config(**{"shell": CPU_SHELL, **overrides})


class Portrait360(AvatarModel):
    """The 360-degree portrait (see the module docstring): ``field`` a NeRF on the neck's rigid turn and an error
    correction, its views drawn alike from the front, sides and back."""

    captures_graph = True  # (graph_phase)
    balances_views = True  # (view_bins)

    def __init__(self, parametric: SubjectModel, config: Portrait360Config | None = None):
        super().__init__()
        self.config = c = config or Portrait360Config()
        # The recipe's background as a buffer: it moves with the model, and a step copies nothing from the host.
        self.register_buffer("background", torch.tensor(c.background, dtype=torch.float32), persistent=False)
        self.optimization = c.optimization
        require_parametric_model(parametric, "Portrait360", "SMPL-X's skeleton and skinning weights")
        self.parametric = parametric.requires_grad_(False)
        names = list(parametric.joint_names)
        joint = c.facing_joint or ("head" if "head" in names else names[0])  # FLAME has no "head": its root
        if joint not in names:
            raise ValueError(f"config: facing_joint {joint!r} is not a joint of the model; its joints: {names}")
        self.facing_joint = names.index(joint)
        rest = parametric()
        condition_dim = parametric.num_expression + 3  # expression and jaw pose
        deformers = [SkinningDeformer(), TriangleFrameDeformer(TriangleDeformerConfig(source="rest"))]
        decoder, condition, b = c.decoder, None, c.blend_fields
        if c.blend == "deformation":
            deformers.append(BlendFieldDeformer(condition_dim, self._moving_box(rest), b, names))
        else:  # the ablation: the same mapping network, its coefficients condition the colour, never the density
            network = mlp(condition_dim, b.mapping_hidden_dim, b.mapping_layers, b.num_fields)
            inputs = functools.partial(expression_and_jaw, jaw_index=jaw_index(names, b))
            condition = FrameCondition(inputs, network, b.num_fields)
            decoder = dataclasses.replace(decoder, cond_to_color=True, cond_to_density=False)
        encoder, directions = HashGrid(c.hash_grid), SphericalHarmonics(c.sh_degree)
        cond_dim = 0 if condition is None else condition.dim
        self.field = NerfField(
            DeformerChain(*deformers),
            encoder,
            NerfDecoder(encoder.out_dim, directions.out_dim, cond_dim, decoder),
            directions,
            UnitBox(inflated_box(rest.canonical_vertices, c.box_inflation)),
            condition,
        )
        self.sampler = StratifiedSampler(c.num_samples, padding=c.padding, shell=c.shell)

    def _moving_box(self, rest: Head) -> Tensor:
        """The box of the canonical vertices outside ``static_regions``, padded by ``padding``."""
        moving = torch.ones(rest.canonical_vertices.shape[0], dtype=torch.bool, device=rest.faces.device)
        for name in self.config.static_regions:
            if name in rest.regions:  # FLAME has no torso: everything moves
                moving[rest.regions[name]] = False
        if not moving.any():
            raise ValueError(f"config: static_regions {self.config.static_regions} cover the whole mesh: nothing to blend")
        return padded_box(rest.canonical_vertices[moving], self.config.padding)

    def graph_phase(self, step: int) -> bool:
        """What :meth:`training_step` decides by the step number (``TrainingConfig.cuda_graph``): nothing. No loss
        switches on, no grid warms up or refreshes, the rays come balanced from the loop's view bins (drawn on the
        device) and the blend fields read the same tensors each step: one phase from the first step. The shapes
        that still settle (the rays of a sample budget, the renderer's sizes) key the graph themselves."""
        return True

    def view_bins(self, frames: FrameSet, head: Head) -> Int[Tensor, " B"]:
        """Front (0), side (1) or back (2) view of each frame: the angle between where the subject faces (the
        tracked rotation of ``facing_joint`` applied to FACING) and the direction to the camera."""
        facing = head.joint_transforms[:, self.facing_joint, :3, :3] @ head.vertices.new_tensor(FACING)
        centers = head.vertices.mean(dim=1)
        return view_bins(view_angles(frames.cameras.to(centers.device), facing, centers))

    def radiance_field(self) -> NerfField:
        return self.field

    def render(self, rays: Rays, head: Head, context: RenderContext | None = None) -> NerfRender:
        """The rays rendered as the step's ``context`` says (:func:`~headfields.renderers.render_nerf`)."""
        return render_nerf(self.field, rays, head, self.sampler, self.background, context)

    def render_rays(self, rays: Rays, head: Head, early_stop: float = EARLY_STOP_TRANSMITTANCE) -> Tensor:
        """The colours by the inference renderer (rounds over the live rays, stopped at transmittance ``early_stop``)."""
        background = self.background
        with self.sampler.frame_shells():  # an image's chunks: the frame's shell classified once
            return render_nerf_inference(self.field, rays, head, self.sampler, background, early_stop).rgb

    def training_step(self, batch: RayBatch, step: int) -> StepOutput:
        rendered = self.render(batch.rays, batch.head, batch.context)
        result = rendered.composite
        loss = huber_loss(result.rgb, batch.rgb, delta=self.config.huber_delta, weight=rendered.loss_weight)
        return StepOutput(loss=loss, rgb=result.rgb, logs={}, samples=rendered.count)


def _build(subject, config: Portrait360Config) -> Portrait360:
    return Portrait360(subject.parametric, config)


def _video():
    from ..synthetic import SyntheticVideoConfig

    return SyntheticVideoConfig.portrait360()  # the SMPL-X bust turning before the camera


METHOD = Method(
    "portrait360",
    _build,
    {"paper": Recipe(paper_config), "cpu": Recipe(cpu_config, CPU_SAMPLES_PER_BATCH)},
    Portrait360Config,
    training=TrainingConfig(
        max_minutes=20.0, rays_per_batch=2048, balance_views=True, eval_every=1000, render_chunk=INFERENCE_CHUNK
    ),
    model_type="smplx",
    video=_video,
    unread_recipe=unread_recipe_fields,
)
