"""MonoNPHM (Giebenhain et al., CVPR 2024), assembled from public headfields primitives.

A signed-distance head in a canonical space, an appearance field tied to the SDF's features and lit by
second-order spherical harmonics, and a backward deformation with hyper-dimensions that carries each posed
sample into that space given the frame's expression condition. Rendering is NeuS: stratified samples, then
importance up-sampling from the SDF, then the logistic-CDF opacity of each interval. Held-out frames are
rendered from their tracked expression with the neutral (zero) latent code, or tracked
(:mod:`headfields.models.mononphm_tracking`) with the networks frozen.

Everything runs in the head's frame (the tracked transform of ``head_joint``), scaled so the neutral head's
box spans about [-1, 1]: the SDF lives in those units (its gradient is a unit vector there as in metres).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from ..checks import check_count, check_positive
from ..data import FrameSet
from ..decoders import AnchorSdf, AnchorSdfConfig, AppearanceConfig, AppearanceField, SdfMlp, SdfMlpConfig, SHLighting
from ..deformers import HyperDeformation, HyperDeformer, HyperDeformerConfig
from ..encoders import LatentCodes, LatentCodesConfig
from ..geometry import IsoSurface, extract_isosurface, farthest_points, sample_box
from ..heads import tracked_head
from ..losses import NEUS_EIKONAL_WEIGHT, eikonal_loss, l1_loss, mask_loss
from ..parametric import Head, ParametricModel
from ..renderers import (
    NEUS_BASE_INV_S,
    NEUS_INITIAL_VARIANCE,
    Composite,
    InverseVariance,
    PackedSamples,
    Rays,
    accumulate,
    composite_alpha,
    neus_rays,
    ray_aabb,
)
from ..training import OptimizerConfig, RayBatch, StepOutput, render_image

__all__ = ["FrameState", "MonoNphm", "MonoNphmConfig", "MonoNphmRender", "cpu_config"]

CanonicalKind = Literal["anchors", "global"]


@dataclass(frozen=True)
class MonoNphmConfig:
    """MonoNPHM's recipe (PAPERS.md). Departures, for a single subject learnt from one video with no prior:
    the deformation's condition also carries the tracked FLAME expression and jaw pose (MonoNPHM's codes come
    from a prior trained on registered scans; here the tracked mesh plays that part); a correspondence loss
    asks the backward field to carry the tracked mesh's posed vertices to its neutral ones (NPHM's training
    supervises its deformations with registered scans the same way); anchors are farthest-point samples of
    the neutral mesh (MonoNPHM predicts them from the identity code), with no per-anchor codes and the same
    identity code for every member (MonoNPHM: 64 global + 32 per anchor); one appearance MLP, not an ensemble;
    the inverse variance is learnt (NeuS), not scheduled."""

    deformer: HyperDeformerConfig = field(default_factory=HyperDeformerConfig)  # 6 x 400, Softplus(100), H = 2
    canonical: CanonicalKind = "anchors"  # the anchor ensemble, or one global SDF MLP
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
    coarse_samples: int = 32  # MonoNPHM: 32 stratified + 32 importance samples
    upsample_rounds: int = 1
    samples_per_round: int = 32
    upsample_inv_s: float = NEUS_BASE_INV_S  # NeuS: round i up-samples at 64 * 2^i
    inverse_variance: float = NEUS_INITIAL_VARIANCE  # NeuS: inv_s = exp(10 v), v learnt from 0.3
    box_inflation: float = 0.1  # the sampling box: the neutral mesh's box inflated by this fraction of its diagonal
    eikonal_weight: float = NEUS_EIKONAL_WEIGHT
    eikonal_points: int = 1024  # uniform points in the box per step, besides the render samples
    silhouette_weight: float = 0.1
    correspondence_weight: float = 1.0  # in the normalised units (see the departures)
    correspondence_vertices: int = 512  # tracked vertices per step
    optimization: OptimizerConfig = OptimizerConfig(5e-4, 5e-5, 100_000, ema_decay=0.95)  # exponential decay
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if self.canonical not in ("anchors", "global"):
            raise ValueError(f"canonical: expected 'anchors' or 'global', got {self.canonical!r}")
        check_count("num_anchors", self.num_anchors, 1)
        check_count("coarse_samples", self.coarse_samples, 2)
        check_count("upsample_rounds", self.upsample_rounds, 0)
        check_count("samples_per_round", self.samples_per_round, 1)
        check_count("eikonal_points", self.eikonal_points, 0)
        check_count("correspondence_vertices", self.correspondence_vertices, 0)
        for name in ("upsample_inv_s", "box_inflation"):
            check_positive(name, getattr(self, name))
        for name in ("eikonal_weight", "silhouette_weight", "correspondence_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected a non-negative weight, got {getattr(self, name)}")


def cpu_config(**overrides) -> MonoNphmConfig:
    """The sizes a 20-minute run on a 2-core CPU affords (benchmarks/mononphm.py), then ``overrides``: a
    4 x 96 deformation and one global 4 x 96 SDF MLP (the ensemble evaluates 13 MLPs per sample), a 3 x 64
    appearance MLP, 16-d expression codes, 24 stratified samples and two rounds of 8 up-samples, the
    learning rate decaying over 5,000 steps (the paper's sizes: MonoNphmConfig())."""
    sizes = dict(
        deformer=HyperDeformerConfig(hidden_dim=96, hidden_layers=4, skip_layer=2),
        canonical="global",
        global_sdf=SdfMlpConfig(hidden_dim=96, hidden_layers=4, position_frequencies=4),
        appearance=AppearanceConfig(hidden_dim=64, hidden_layers=3, position_frequencies=4),
        expression_code=LatentCodesConfig(dim=16, weight=1e-2),
        coarse_samples=24,
        upsample_rounds=2,
        samples_per_round=8,
        optimization=OptimizerConfig(1e-3, 1e-4, 5_000, ema_decay=0.95),
    )
    return MonoNphmConfig(**{**sizes, **overrides})


@dataclass
class FrameState:
    """What a render needs of U frames: the head's pose and the codes. Tracking optimises these."""

    rotation: Float[Tensor, "U 3 3"]  # head frame -> world
    translation: Float[Tensor, "U 3"]
    condition: Float[Tensor, "U C"]  # the deformation's condition: tracked expression, expression code, identity
    appearance: Float[Tensor, "U A"]  # the appearance field's code


@dataclass
class MonoNphmRender:
    """What :meth:`MonoNphm.render` returns. Depth is in metres along the (unit) world ray; normals are
    world-space unit SDF normals composited with the weights (not renormalised: their length is the opacity)."""

    composite: Composite
    normals: Float[Tensor, "R 3"]
    samples: PackedSamples  # in normalised head-frame units
    sdf_gradient: Float[Tensor, "S 3"]  # of the canonical SDF at the samples' canonical points (eikonal)
    deformation: HyperDeformation  # of the samples


class MonoNphm(nn.Module):
    def __init__(self, parametric: ParametricModel, num_frames: int, config: MonoNphmConfig | None = None):
        """``num_frames``: training frames (one expression code each)."""
        super().__init__()
        self.config = c = config or MonoNphmConfig()
        self.optimization = c.optimization
        self.parametric = parametric.requires_grad_(False)
        for name in ("head_joint", "jaw_joint"):
            joint = getattr(c, name)
            if joint is not None and joint not in parametric.joint_names:
                raise ValueError(f"{name}: expected one of {list(parametric.joint_names)}, got {joint!r}")
        self.head_joint = parametric.joint_names.index(c.head_joint)
        self.jaw_joint = None if c.jaw_joint is None else parametric.joint_names.index(c.jaw_joint)
        self.num_frames = check_count("num_frames", num_frames, 1)

        neutral = parametric()
        rest = neutral.canonical_vertices
        low, high = rest.amin(0), rest.amax(0)
        self.register_buffer("center", (low + high) / 2)
        self.register_buffer("scale", ((high - low).amax() / 2).reshape(()))  # metres per normalised unit
        pad = c.box_inflation * (high - low).norm() / self.scale
        half = (high - low) / 2 / self.scale
        self.register_buffer("box", torch.stack([-half - pad, half + pad]))  # normalised head frame

        tracked_dim = (parametric.num_expression + (3 if self.jaw_joint is not None else 0)) if c.tracked_expression else 0
        self.identity_codes = LatentCodes(1, c.identity_code)
        self.expression_codes = LatentCodes(num_frames, c.expression_code)
        self.appearance_codes = LatentCodes(1, c.appearance_code)
        condition_dim = tracked_dim + c.expression_code.dim + c.identity_code.dim
        self.deformer = HyperDeformer(condition_dim, c.deformer)
        hyper = c.deformer.hyper_dim
        if c.canonical == "anchors":
            anchors = self.normalize(rest[farthest_points(rest, c.num_anchors)])
            self.sdf = AnchorSdf(anchors, hyper + c.identity_code.dim, c.anchor_sdf, center=torch.zeros(3))
        else:
            self.sdf = SdfMlp(hyper + c.identity_code.dim, c.global_sdf)
        self.appearance = AppearanceField(3 + hyper, self.sdf.feature_dim, c.appearance_code.dim, c.appearance)
        self.lighting = SHLighting()
        self.inverse_variance = InverseVariance(c.inverse_variance)

    # --- frames, coordinates ---------------------------------------------------------------------------

    def normalize(self, x: Float[Tensor, "N 3"]) -> Float[Tensor, "N 3"]:
        """Head-frame metres -> the normalised units the fields live in."""
        return (x - self.center) / self.scale

    def tracked_condition(self, head: Head, frames: Int[Tensor, " U"]) -> Float[Tensor, "U T"]:
        if not self.config.tracked_expression:
            return head.expression.new_zeros(len(frames), 0)
        parts = [head.expression[frames]]
        if self.jaw_joint is not None:
            parts.append(head.pose[frames, self.jaw_joint])
        return torch.cat(parts, dim=1)

    def frame_state(self, head: Head, index: Int[Tensor, " U"], learnt: bool = False) -> FrameState:
        """The tracked pose and codes of frames ``index`` of ``head``. With ``learnt`` (``head`` is the training
        frames') they read their learnt expression codes; otherwise zero, the mean code (tracking refines it)."""
        transform = head.joint_transforms[index, self.head_joint]
        u = len(index)
        if learnt:
            if head.num_frames != self.num_frames:
                raise ValueError(f"head: expected the {self.num_frames} training frames, got {head.num_frames}")
            expression = self.expression_codes(index)
        else:
            expression = self.expression_codes.codes.new_zeros(u, self.expression_codes.dim)
        identity = self.identity_codes(index.new_zeros(u))
        condition = torch.cat([self.tracked_condition(head, index).to(expression), expression, identity], dim=1)
        return FrameState(transform[:, :3, :3], transform[:, :3, 3], condition, self.appearance_codes(index.new_zeros(u)))

    # --- the fields ------------------------------------------------------------------------------------
    def canonical_sdf(self, canonical: Float[Tensor, "S 3"], hyper: Float[Tensor, "S H"], condition: Float[Tensor, "S C"]):
        identity = condition[:, condition.shape[1] - self.identity_codes.dim :]
        return self.sdf(canonical, torch.cat([hyper, identity], dim=1))

    def posed_field(
        self, x: Float[Tensor, "S 3"], condition: Float[Tensor, "S C"]
    ) -> tuple[Float[Tensor, " S"], Float[Tensor, "S 3"], tuple[HyperDeformation, Float[Tensor, "S F"]]]:
        """At posed points ``x`` (normalised head frame) given each point's condition: the SDF, the canonical
        points it read, and the deformation with the SDF's features (the field function of :func:`neus_rays`)."""
        d = self.deformer.deform(x, condition)
        canonical = x + d.offset
        out = self.canonical_sdf(canonical, d.hyper, condition)
        return out.sdf, canonical, (d, out.features)

    def posed_sdf(self, x: Float[Tensor, "S 3"], condition: Float[Tensor, "S C"]) -> Float[Tensor, " S"]:
        """The SDF at posed points ``x`` (normalised head frame) given each point's condition."""
        return self.posed_field(x, condition)[0]

    # --- rendering -------------------------------------------------------------------------------------
    def render(
        self, rays: Rays, state: FrameState, local: Int[Tensor, " R"], generator: torch.Generator | None = None
    ) -> MonoNphmRender:
        """NeuS rendering of ``rays``; ``local[r]`` is ray r's row in ``state``. Differentiable in the
        networks and in ``state`` (tracking) when grad mode is on; the SDF's normals are computed either way."""
        c = self.config
        rotation, translation = state.rotation[local], state.translation[local]
        origins = self.normalize(torch.einsum("rji,rj->ri", rotation, rays.origins - translation))
        dirs = torch.einsum("rji,rj->ri", rotation, rays.directions)
        near, far, _ = ray_aabb(origins, dirs, self.box)
        condition = state.condition[local]

        def field_fn(x: Tensor, ray: Tensor) -> tuple[Tensor, Tensor, tuple[HyperDeformation, Tensor]]:
            return self.posed_field(x, condition[ray])

        neus = neus_rays(
            origins,
            dirs,
            near,
            far,
            field_fn,
            self.inverse_variance(),
            c.coarse_samples,
            c.upsample_rounds,
            c.samples_per_round,
            c.upsample_inv_s,
            generator,
        )
        samples, (d, features) = neus.samples, neus.field
        normals = F.normalize(neus.gradient, dim=-1)
        albedo = self.appearance(torch.cat([neus.canonical, d.hyper], dim=1), features, state.appearance[local][samples.ray])
        world_normals = torch.einsum("sij,sj->si", rotation[samples.ray], normals)
        rgb = albedo * self.lighting(world_normals)
        background = torch.tensor(c.background, device=rgb.device, dtype=rgb.dtype)
        comp = composite_alpha(samples, neus.alpha, rgb, background)  # rgb unclamped: a clamp would cut the lighting's gradient
        comp.depth = comp.depth * self.scale
        return MonoNphmRender(
            composite=comp,
            normals=accumulate(samples, comp.weights, world_normals),
            samples=samples,
            sdf_gradient=neus.canonical_gradient,
            deformation=d,
        )

    def render_rays(self, rays: Rays, head: Head) -> Float[Tensor, "R 3"]:
        """Held-out rendering: the frames' tracked expression with the neutral (zero) expression code."""
        index, local = torch.unique(rays.frame, return_inverse=True)
        return self.render(rays, self.frame_state(head, index), local).composite.rgb

    def render_frame(
        self, frames: FrameSet, frame: int, state: FrameState | None = None, chunk: int = 4096
    ) -> Float[Tensor, "H W 3"]:
        """The whole image of frame ``frame`` of ``frames`` (on the CPU, in [0, 1]) from ``state`` (one row;
        default: the frame's tracked pose and expression with the neutral (zero) code, see :meth:`frame_state`)."""
        device = self.center.device
        if state is None:
            state = self.frame_state(tracked_head(self.parametric, frames), torch.tensor([frame], device=device))

        def render(rays: Rays) -> Tensor:
            return self.render(rays, state, torch.zeros_like(rays.frame)).composite.rgb

        return render_image(self, frames, frame, chunk, device, render)

    # --- geometry ----------------------------------------------------------------------------------------
    def extract_mesh(self, state: FrameState, resolution: int = 128) -> IsoSurface:
        """The zero level set of frame ``state`` (one frame) by marching cubes over the sampling box, in world
        coordinates."""
        if state.condition.shape[0] != 1:
            raise ValueError(f"state: expected the state of one frame, got {state.condition.shape[0]}")

        def sdf_fn(points: Tensor) -> Tensor:
            return self.posed_sdf(points, state.condition.expand(len(points), -1))

        surface = extract_isosurface(sdf_fn, self.box, resolution)
        head_frame = surface.vertices * self.scale + self.center
        surface.vertices = head_frame @ state.rotation[0].T + state.translation[0]
        return surface

    # --- training ----------------------------------------------------------------------------------------
    def correspondence_loss(
        self, head: Head, index: Int[Tensor, " U"], state: FrameState, generator: torch.Generator
    ) -> Float[Tensor, ""]:
        """Mean squared distance (normalised units) between the backward field's image of tracked posed vertices
        and the same vertices on the neutral mesh (see the config's departures)."""
        c = self.config
        v = self.parametric.num_vertices
        count = min(c.correspondence_vertices, v)
        pick = torch.randint(0, v, (len(index), count), generator=generator, device=generator.device).to(index.device)
        rotation, translation = state.rotation, state.translation
        posed = head.vertices[index[:, None], pick]  # [U, K, 3] world
        in_head = torch.einsum("uji,ukj->uki", rotation, posed - translation[:, None])
        x = self.normalize(in_head.reshape(-1, 3))
        target = self.normalize(head.canonical_vertices[pick].reshape(-1, 3))
        condition = state.condition[:, None].expand(-1, count, -1).reshape(-1, state.condition.shape[1])
        d = self.deformer.deform(x, condition)
        return (x + d.offset - target).square().sum(-1).mean()

    def training_step(self, batch: RayBatch, step: int) -> StepOutput:
        c = self.config
        generator = batch.generator or torch.Generator(batch.rgb.device).manual_seed(step)
        index, local = torch.unique(batch.rays.frame, return_inverse=True)
        state = self.frame_state(batch.head, index, learnt=True)
        out = self.render(batch.rays, state, local, generator)
        rgb = l1_loss(out.composite.rgb, batch.rgb)
        loss = rgb
        logs = {"rgb": float(rgb.detach()), "inv_s": float(self.inverse_variance().detach())}
        if batch.mask is not None and c.silhouette_weight > 0:
            silhouette = mask_loss(out.composite.opacity.clamp(0, 1), batch.mask.to(out.composite.opacity.dtype))
            loss = loss + c.silhouette_weight * silhouette
            logs["silhouette"] = float(silhouette.detach())
        gradients = out.sdf_gradient
        if c.eikonal_points:
            gradients = torch.cat([gradients, self._box_gradients(state, generator)])
        eikonal = eikonal_loss(gradients)
        deformation = self.deformer.regularizers(out.deformation)
        codes = (
            self.expression_codes.regularizer(self.expression_codes(index))
            + self.identity_codes.regularizer()
            + self.appearance_codes.regularizer()
        )
        loss = loss + c.eikonal_weight * eikonal + deformation.total + codes
        logs.update(eikonal=float(eikonal.detach()), offset=float(deformation.offset.detach()))
        if c.correspondence_weight > 0 and c.correspondence_vertices > 0:
            corr = self.correspondence_loss(batch.head, index, state, generator)
            loss = loss + c.correspondence_weight * corr
            logs["correspondence"] = float(corr.detach())
        return StepOutput(loss=loss, rgb=out.composite.rgb, logs=logs)

    def _box_gradients(self, state: FrameState, generator: torch.Generator) -> Float[Tensor, "P 3"]:
        """The canonical SDF's gradient at uniform points of the box (the eikonal term away from the surface)."""
        c = self.config
        points = sample_box(self.box, c.eikonal_points, generator).requires_grad_(True)
        condition = state.condition[:1].expand(c.eikonal_points, -1)  # only the identity part is read
        hyper = points.new_zeros(c.eikonal_points, self.deformer.hyper_dim)  # the canonical slice h = 0
        sdf = self.canonical_sdf(points, hyper, condition).sdf
        (gradient,) = torch.autograd.grad(sdf.sum(), points, create_graph=True)
        return gradient
