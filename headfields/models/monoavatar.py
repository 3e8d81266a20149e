"""MonoAvatar (Bai et al., CVPR 2023), assembled from public headfields primitives.

Features ride the tracked FLAME mesh: a CNN in UV space turns each frame's vertex displacements (variant D),
or its expression and pose codes (variant C), into a 64-d feature per vertex. A sample along a camera ray
reads its 4 nearest posed vertices: per neighbour an MLP of the encoded offset and that vertex's feature,
blended with inverse-distance weights, then NeRF MLPs give density and colour. Rendering is NeRF's coarse
and fine passes; during training an SE(3) error-correction warp with a per-frame latent absorbs tracking
errors, and is off at test time.

Everything runs in the head's frame (the tracked transform of ``head_joint``): rays, samples, the mesh that
anchors the features and the view directions, so head motion does not have to be learnt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from .._checks import check_count, check_positive
from ..data import FrameSet
from ..decoders import NerfDecoder, NerfDecoderConfig
from ..deformers import ErrorCorrectionConfig, ErrorCorrectionWarp
from ..encoders import (
    CodeVertexFeatures,
    DisplacementVertexFeatures,
    FrequencyEncoding,
    MeshAnchoredConfig,
    MeshAnchoredEncoder,
    StaticVertexFeatures,
    UVCodeDecoderConfig,
    UVUNetConfig,
)
from ..geometry import TriangleMesh
from ..losses import mse_loss
from ..parametric import Head, ParametricModel
from ..renderers import Composite, composite, importance_samples, mesh_guided_filter, ray_aabb, stratified_samples
from ..renderers.cameras import Rays
from ..renderers.samples import PackedSamples
from ..training import DecayingAdam, RayBatch, StepOutput
from .tracking import TrackedHeads

__all__ = ["MonoAvatar", "MonoAvatarConfig", "MonoAvatarRender", "cpu_config"]

VertexFeatureKind = Literal["displacement", "code", "static"]


@dataclass(frozen=True)
class MonoAvatarConfig:
    """MonoAvatar's recipe (PAPERS.md). Departures: one network serves the coarse and the fine pass (NeRF
    trains two) and only the fine pass is rendered and supervised, from its own intervals (not the union with
    the coarse ones); samples farther than ``surface_distance`` from the mesh are skipped (the features live
    on the mesh); the elastic loss keeps its weight all along (the paper lowers it late) and is not weighted
    by the rendering weights."""

    features: VertexFeatureKind = "displacement"  # D (paper's best), C ("code"), or the static ablation
    feature_dim: int = 64
    uv_resolution: int = 256
    unet: UVUNetConfig = field(default_factory=UVUNetConfig)  # 6 levels, 8..256 channels, LeakyReLU 0.2
    code_decoder: UVCodeDecoderConfig = field(default_factory=UVCodeDecoderConfig)
    anchored: MeshAnchoredConfig = field(default_factory=MeshAnchoredConfig)  # k = 4, PE 10 bands, MLP0 3 x 128
    decoder: NerfDecoderConfig = field(
        default_factory=lambda: NerfDecoderConfig(
            hidden_dim=128,
            density_layers=3,
            color_layers=1,
            color_hidden_dim=64,
            geometry_dim=64,
            density_activation="softplus",
        )
    )  # MLP1 3 x 128 -> density, MLP2 64 wide with the encoded view direction. softplus, not trunc_exp: with
    # the warp on from the start at lr 2e-3, trunc_exp overflowed within 7 steps (trunc_exp was 1 dB ahead
    # after 3 minutes without the warp)
    direction_frequencies: int = 4  # PE bands of the view direction
    head_joint: str = "neck"  # the joint whose tracked transform is the head's frame (FLAME: global then neck)
    coarse_samples: int = 64
    fine_samples: int = 64
    surface_distance: float = 0.03  # metres from the frame's mesh beyond which there is nothing
    box_inflation: float = 0.15  # sampling box = canonical mesh box inflated by this fraction of its diagonal
    warp: ErrorCorrectionConfig | None = field(default_factory=ErrorCorrectionConfig)  # None: no correction
    warp_samples: int = 1024  # samples per step whose warp Jacobian enters the elastic loss
    learning_rate: float = 1e-3  # decays exponentially to final_learning_rate over decay_steps (PAPERS.md)
    final_learning_rate: float = 1e-4
    decay_steps: int = 400_000
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if self.features not in ("displacement", "code", "static"):
            raise ValueError(f"features: expected 'displacement', 'code' or 'static', got {self.features!r}")
        for name in ("feature_dim", "uv_resolution", "direction_frequencies", "coarse_samples", "fine_samples"):
            check_count(name, getattr(self, name), 1)
        check_count("warp_samples", self.warp_samples, 0)
        if self.code_decoder.resolution != self.uv_resolution:
            got = self.code_decoder.resolution
            raise ValueError(f"code_decoder: expected resolution = uv_resolution = {self.uv_resolution}, got {got}")
        for name, channels in (("unet", self.unet.out_channels), ("code_decoder", self.code_decoder.out_channels)):
            if channels != self.feature_dim:
                raise ValueError(f"{name}: expected out_channels = feature_dim = {self.feature_dim}, got {channels}")
        check_count("decay_steps", self.decay_steps, 1)
        for name in ("surface_distance", "box_inflation", "learning_rate", "final_learning_rate"):
            check_positive(name, getattr(self, name))


def cpu_config(**overrides) -> MonoAvatarConfig:
    """The sizes a 15-minute run on a 2-core CPU affords (benchmarks/monoavatar.py), then ``overrides``:
    128 x 128 UV maps, 48 coarse and 32 fine samples per ray, the learning rate decaying over 5,000 steps,
    and the error-correction warp's warm-up and coarse-to-fine window shortened in proportion to the ~1,000
    iterations (the paper: decay over 400k steps; warp after 5k, window over 80k)."""
    sizes = dict(
        uv_resolution=128,
        code_decoder=UVCodeDecoderConfig(resolution=128),
        coarse_samples=48,
        fine_samples=32,
        warp=ErrorCorrectionConfig(start_step=300, window_steps=2_000),
        decay_steps=5_000,
    )
    return MonoAvatarConfig(**{**sizes, **overrides})


@dataclass
class MonoAvatarRender:
    """What :meth:`MonoAvatar.render` returns: the composite of the fine samples, and those samples."""

    composite: Composite  # rgb, depth, opacity per ray; weights per sample
    samples: PackedSamples  # the fine intervals
    points: Float[Tensor, "S 3"]  # their midpoints in the head's frame (before any error correction)
    frame: Int[Tensor, " S"]  # their frame in the FrameSet


@dataclass
class _Frames:
    """The frames one render call touches, in the head's frame: U distinct frames."""

    frames: Int[Tensor, " U"]  # indices into the FrameSet
    local: Int[Tensor, " R"]  # each ray's row in ``frames``
    rotation: Float[Tensor, "U 3 3"]  # head frame -> world
    translation: Float[Tensor, "U 3"]
    mesh: TriangleMesh  # posed vertices in the head's frame, U frames
    features: Float[Tensor, "U V F"]
    correct: bool  # apply the error-correction warp (training frames, in training only)


class MonoAvatar(nn.Module):
    def __init__(
        self,
        parametric: ParametricModel,
        num_frames: int,
        config: MonoAvatarConfig | None = None,
        point_encoder: nn.Module | None = None,
    ):
        """``num_frames``: training frames (one error-correction latent each). ``point_encoder`` (none in the
        paper): an encoder of the sample's head-frame position, mapped to the unit box (e.g. a
        :class:`~headfields.encoders.HashGrid`, with an ``out_dim``), whose features join the mesh-anchored ones
        at the decoder's input."""
        super().__init__()
        self.config = c = config or MonoAvatarConfig()
        self.parametric = parametric.requires_grad_(False)
        if c.head_joint not in parametric.joint_names:
            raise ValueError(f"head_joint: expected one of {list(parametric.joint_names)}, got {c.head_joint!r}")
        self.head_joint = parametric.joint_names.index(c.head_joint)
        neutral = parametric()
        low, high = neutral.canonical_vertices.amin(0), neutral.canonical_vertices.amax(0)
        pad = c.box_inflation * (high - low).norm()
        self.register_buffer("box", torch.stack([low - pad, high + pad]))
        if c.features == "displacement":
            self.vertex_features = DisplacementVertexFeatures(
                neutral.faces, neutral.uvs, neutral.uv_faces, parametric.num_vertices, c.uv_resolution, c.unet
            )
        elif c.features == "code":
            code_dim = parametric.num_expression + 3 * (parametric.num_joints - 1)  # expression, every joint but the root
            self.vertex_features = CodeVertexFeatures(
                neutral.faces, neutral.uvs, neutral.uv_faces, parametric.num_vertices, code_dim, c.code_decoder
            )
        else:
            self.vertex_features = StaticVertexFeatures(parametric.num_vertices, c.feature_dim)
        self.anchored = MeshAnchoredEncoder(self.vertex_features.out_dim, c.anchored)
        if point_encoder is not None and not isinstance(getattr(point_encoder, "out_dim", None), int):
            raise TypeError(f"point_encoder: expected a module with an int out_dim, got {type(point_encoder).__name__}")
        self.point_encoder = point_encoder
        feature_dim = self.anchored.out_dim + (0 if point_encoder is None else point_encoder.out_dim)
        self.directions = FrequencyEncoding(3, c.direction_frequencies)
        self.decoder = NerfDecoder(feature_dim, self.directions.out_dim, 0, c.decoder)
        self.warp = None if c.warp is None else ErrorCorrectionWarp(check_count("num_frames", num_frames, 1), c.warp)
        self._heads = TrackedHeads()
        self._adam = DecayingAdam(c.learning_rate, c.final_learning_rate, c.decay_steps)

    def head(self, frames: FrameSet) -> Head:
        return self._heads.get(frames, self.parametric)

    # --- per-frame state: the head's frame, its mesh there, its vertex features ------------------------
    def _frames(self, head: Head, frame: Int[Tensor, " R"], correct: bool = False) -> _Frames:
        frames, local = torch.unique(frame, return_inverse=True)
        transform = head.joint_transforms[frames, self.head_joint]
        rotation, translation = transform[:, :3, :3], transform[:, :3, 3]
        vertices = torch.einsum("uji,uvj->uvi", rotation, head.vertices[frames] - translation[:, None])
        low, high = vertices.amin(dim=(0, 1)), vertices.amax(dim=(0, 1))
        if (low < self.box[0]).any() or (high > self.box[1]).any():
            raise ValueError(
                f"frames: expected the head, in its frame, inside the sampling box {self.box.tolist()}; it spans "
                f"{[low.tolist(), high.tolist()]} (a capture with tracked meshes but no head pose puts it elsewhere)"
            )
        if self.config.features == "displacement":  # V(expression, pose) - V(0, 0) of this subject (PAPERS.md)
            features = self.vertex_features(vertices - head.canonical_vertices)
        elif self.config.features == "code":
            codes = torch.cat([head.expression[frames], head.pose[frames, 1:].flatten(1)], dim=1)
            features = self.vertex_features(codes)
        else:
            features = self.vertex_features(len(frames))
        correct = correct and self.warp is not None and self.warp.active
        return _Frames(frames, local, rotation, translation, TriangleMesh(vertices, head.faces), features, correct)

    # --- the field ---------------------------------------------------------------------------------------
    def _warp(self, x: Tensor, local: Tensor, ctx: _Frames, head: Head, dirs: Tensor | None):
        if not ctx.correct:
            return x, dirs
        out = self.warp(x, head, ctx.frames[local], dirs)
        return out.points, out.dirs

    def _features(self, x: Float[Tensor, "S 3"], local: Int[Tensor, " S"], ctx: _Frames) -> Float[Tensor, "S F"]:
        features = self.anchored(x, ctx.mesh, ctx.features, local).features
        if self.point_encoder is None:
            return features
        unit = ((x - self.box[0]) / (self.box[1] - self.box[0])).clamp(0.0, 1.0)
        return torch.cat([features, self.point_encoder(unit).to(features.dtype)], dim=1)

    def density(self, x: Float[Tensor, "S 3"], local: Int[Tensor, " S"], ctx: _Frames, head: Head) -> Float[Tensor, " S"]:
        x, _ = self._warp(x, local, ctx, head, None)
        return self.decoder.density(self._features(x, local, ctx))

    def field(self, x: Float[Tensor, "S 3"], dirs: Float[Tensor, "S 3"], local: Int[Tensor, " S"], ctx: _Frames, head: Head):
        x, dirs = self._warp(x, local, ctx, head, dirs)
        out = self.decoder(self._features(x, local, ctx), self.directions(dirs))
        return out.density, out.rgb

    # --- rendering ---------------------------------------------------------------------------------------
    def render(self, rays: Rays, head: Head, generator: torch.Generator | None = None, correct: bool = False) -> MonoAvatarRender:
        """Coarse samples near the mesh, then fine samples drawn from the coarse weights (NeRF). ``correct``:
        apply the error-correction warp (``rays.frame`` must then index the training frames)."""
        c = self.config
        ctx = self._frames(head, rays.frame, correct)
        rotation, translation = ctx.rotation[ctx.local], ctx.translation[ctx.local]
        origins = torch.einsum("rji,rj->ri", rotation, rays.origins - translation)  # world -> head frame
        dirs = torch.einsum("rji,rj->ri", rotation, rays.directions)
        near, far, _ = ray_aabb(origins, dirs, self.box)
        coarse = stratified_samples((origins, dirs), near, far, c.coarse_samples, generator)
        coarse = mesh_guided_filter(coarse, origins, dirs, ctx.mesh, ctx.local, c.surface_distance)
        with torch.no_grad():
            x = coarse.midpoints(origins, dirs)
            density = self.density(x, ctx.local[coarse.ray], ctx, head)
            weights = composite(coarse, density, torch.zeros_like(x)).weights
        fine = importance_samples(coarse, weights, c.fine_samples, generator)
        fine = mesh_guided_filter(fine, origins, dirs, ctx.mesh, ctx.local, c.surface_distance)
        x = fine.midpoints(origins, dirs)
        density, rgb = self.field(x, dirs[fine.ray], ctx.local[fine.ray], ctx, head)
        background = torch.tensor(c.background, device=x.device)
        return MonoAvatarRender(composite(fine, density, rgb, background), fine, x, ctx.frames[ctx.local[fine.ray]])

    def render_rays(self, rays: Rays, frames: FrameSet) -> Float[Tensor, "R 3"]:
        return self.render(rays, self.head(frames)).composite.rgb

    # --- training ----------------------------------------------------------------------------------------
    def configure_optimizer(self) -> torch.optim.Optimizer:
        return self._adam.build(self)

    def before_step(self, step: int, frames: FrameSet) -> None:
        self._adam.set_step(step)
        if self.warp is not None:
            self.warp.set_step(step)

    def training_step(self, batch: RayBatch, step: int) -> StepOutput:
        c = self.config
        head = self.head(batch.frames)
        generator = torch.Generator(batch.rgb.device).manual_seed(step)  # jitter repeats on resume
        out = self.render(batch.rays, head, generator, correct=True)
        loss = mse_loss(out.composite.rgb, batch.rgb)
        logs = {}
        if self.warp is not None and self.warp.active and len(out.points):
            n = len(out.points)
            some = torch.randperm(n, generator=generator, device=generator.device)[: c.warp_samples].to(out.points.device)
            terms = self.warp.regularizers(out.points[some].detach(), out.frame[some])
            loss = loss + terms.total
            logs.update(elastic=float(terms.elastic.detach()), magnitude=float(terms.magnitude.detach()))
        return StepOutput(loss=loss, rgb=out.composite.rgb, logs=logs)
