"""MonoAvatar (Bai et al., CVPR 2023), assembled from public headfields primitives.

sample (NeRF's coarse then fine passes, one network) → deform (the tracked head's motion undone, then, in
training only, an SE(3) error-correction field with a per-frame latent) → encode (a UV-space CNN turns each
frame's vertex displacements (variant D) or codes (C) into 64-d vertex features; a sample blends its 4
nearest posed vertices' per-neighbour MLP outputs) → decode (NeRF MLPs) → composite → MSE + the correction's
elastic and magnitude terms.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..checks import check_count, check_positive
from ..decoders import NerfDecoder, NerfDecoderConfig
from ..deformers import DeformerChain, ErrorCorrectionConfig, ErrorCorrectionField, RigidDeformer, RigidDeformerConfig
from ..encoders import (
    ConcatEncoder,
    FrequencyEncoding,
    MeshAnchoredConfig,
    MeshFeatureEncoder,
    UVCodeDecoderConfig,
    UVUNetConfig,
    VertexFeatureKind,
)
from ..fields import NerfField, UnitBox, inflated_box
from ..losses import mse_loss
from ..parametric import Head, SubjectModel
from ..renderers import HierarchicalSampler, NerfRender, Rays, StratifiedSampler, render_nerf
from ..training import OptimizerConfig, RayBatch, StepOutput

__all__ = ["MonoAvatar", "MonoAvatarConfig", "cpu_config"]


@dataclass(frozen=True)
class MonoAvatarConfig:
    """MonoAvatar's recipe (PAPERS.md). Departures: one network serves the coarse and the fine pass (NeRF
    trains two) and only the fine pass is rendered and supervised; samples farther than ``shell`` from the
    mesh are skipped (the paper keeps them: ``shell=None``); the elastic loss keeps its weight all along."""

    features: VertexFeatureKind = "displacement"  # D (paper's best), C ("code"), or the static ablation
    feature_dim: int = 64
    uv_resolution: int = 256
    unet: UVUNetConfig = field(default_factory=UVUNetConfig)  # 6 levels, 8..256 channels, LeakyReLU 0.2
    code_decoder: UVCodeDecoderConfig = field(default_factory=UVCodeDecoderConfig)
    anchored: MeshAnchoredConfig = field(default_factory=MeshAnchoredConfig)  # k = 4, PE 10 bands, MLP0 3 x 128
    # MLP1 3 x 128 -> density, MLP2 64 wide with the encoded view direction. softplus, not trunc_exp: with the
    # correction on from the start at lr 2e-3, trunc_exp overflowed within 7 steps.
    decoder: NerfDecoderConfig = field(
        default_factory=lambda: NerfDecoderConfig(
            hidden_dim=128, density_layers=3, color_layers=1, color_hidden_dim=64, geometry_dim=64, density_activation="softplus"
        )
    )
    direction_frequencies: int = 4  # PE bands of the view direction
    head_joint: str = "neck"  # the joint whose tracked transform is the head's frame (FLAME: global then neck)
    coarse_samples: int = 64
    fine_samples: int = 64
    padding: float = 0.03  # metres around each frame's posed-mesh box, where rays are sampled
    shell: float | None = 0.03  # metres from the frame's mesh beyond which samples are skipped (None: off)
    box_inflation: float = 0.15  # the point encoder's box: canonical mesh box inflated by this fraction of its diagonal
    error_correction: ErrorCorrectionConfig | None = field(default_factory=ErrorCorrectionConfig)  # None: none
    correction_samples: int = 1024  # samples per step whose correction Jacobian enters the elastic loss
    optimization: OptimizerConfig = OptimizerConfig(1e-3, 1e-4, 400_000, ema_decay=0.95)  # decays over 400k steps

    def __post_init__(self) -> None:
        if self.features not in ("displacement", "code", "static"):
            raise ValueError(f"features: expected 'displacement', 'code' or 'static', got {self.features!r}")
        for name in ("feature_dim", "uv_resolution", "direction_frequencies", "coarse_samples", "fine_samples"):
            check_count(name, getattr(self, name), 1)
        check_count("correction_samples", self.correction_samples, 0)
        if self.code_decoder.resolution != self.uv_resolution:
            got = self.code_decoder.resolution
            raise ValueError(f"code_decoder: expected resolution = uv_resolution = {self.uv_resolution}, got {got}")
        for name, channels in (("unet", self.unet.out_channels), ("code_decoder", self.code_decoder.out_channels)):
            if channels != self.feature_dim:
                raise ValueError(f"{name}: expected out_channels = feature_dim = {self.feature_dim}, got {channels}")
        for name in ("padding", "shell", "box_inflation"):
            check_positive(name, getattr(self, name))


def cpu_config(**overrides) -> MonoAvatarConfig:
    """The sizes a 15-minute run on a 2-core CPU affords (benchmarks/monoavatar.py), then ``overrides``: 128 x 128
    UV maps, 48 coarse and 32 fine samples per ray, the learning rate decaying over 5,000 steps, and the error
    correction's warm-up and coarse-to-fine window shortened in proportion to the ~1,000 iterations."""
    sizes = dict(
        uv_resolution=128,
        code_decoder=UVCodeDecoderConfig(resolution=128),
        coarse_samples=48,
        fine_samples=32,
        error_correction=ErrorCorrectionConfig(start_step=300, window_steps=2_000),
        optimization=OptimizerConfig(1e-3, 1e-4, 5_000, ema_decay=0.95),
    )
    return MonoAvatarConfig(**{**sizes, **overrides})


class MonoAvatar(nn.Module):
    def __init__(self, parametric: SubjectModel, num_frames: int, config: MonoAvatarConfig | None = None, point_encoder=None):
        """``num_frames``: training frames (one error-correction latent each). ``point_encoder`` (none in the
        paper): an encoder of the sample's head-frame position in the unit box (e.g. a hash grid, with an
        ``out_dim``), whose features join the mesh-anchored ones at the decoder's input."""
        super().__init__()
        self.config = c = config or MonoAvatarConfig()
        self.optimization, self.parametric = c.optimization, parametric.requires_grad_(False)
        joint = parametric.joint_index(c.head_joint, "head_joint")
        n, sizes = parametric(), (c.feature_dim, c.uv_resolution, c.unet, c.code_decoder)
        encoder = MeshFeatureEncoder.build(c.features, n, joint, c.anchored, *sizes)
        if point_encoder is not None:  # both read the head-frame point: the grid's in the unit box
            if not isinstance(getattr(point_encoder, "out_dim", None), int):
                raise TypeError(f"point_encoder: expected a module with an int out_dim, got {type(point_encoder).__name__}")
            box = UnitBox(inflated_box(n.canonical_vertices, c.box_inflation))
            encoder = ConcatEncoder((encoder, None), (point_encoder, box))
        self.correction, deformers = None, [RigidDeformer(RigidDeformerConfig(joint=joint))]
        if c.error_correction is not None:
            self.correction = ErrorCorrectionField(check_count("num_frames", num_frames, 1), c.error_correction)
            deformers.append(self.correction)  # the identity outside training and before its start step
        directions = FrequencyEncoding(3, c.direction_frequencies)
        decoder = NerfDecoder(encoder.out_dim, directions.out_dim, 0, c.decoder)
        self.field = NerfField(DeformerChain(*deformers), encoder, decoder, directions)
        coarse = StratifiedSampler(c.coarse_samples, padding=c.padding, shell=c.shell)
        self.sampler = HierarchicalSampler(coarse, c.fine_samples)

    def render(self, rays: Rays, head: Head, generator: torch.Generator | None = None) -> NerfRender:
        return render_nerf(self.field, rays, head, self.sampler, torch.ones(3, device=rays.origins.device), generator)

    def render_rays(self, rays: Rays, head: Head) -> Tensor:
        return self.render(rays, head).composite.rgb

    def before_step(self, step: int, head: Head) -> None:
        if self.correction is not None:
            self.correction.set_step(step)

    def training_step(self, batch: RayBatch, step: int) -> StepOutput:
        out = self.render(batch.rays, batch.head, batch.generator)
        loss, logs = mse_loss(out.composite.rgb, batch.rgb), {}
        if self.correction is not None and self.correction.active and len(out.points):
            g = batch.generator or torch.Generator().manual_seed(step)
            some = torch.randperm(len(out.points), generator=g, device=g.device)[: self.config.correction_samples]
            some = some.to(out.points.device)
            frame = batch.rays.frame[out.samples.ray[some]]
            in_head = self.field.deformer.deformers[0](out.points[some].detach(), batch.head, frame).points
            terms = self.correction.regularizers(in_head, frame)
            loss = loss + terms.total
            logs.update(elastic=float(terms.elastic.detach()), magnitude=float(terms.magnitude.detach()))
        return StepOutput(loss=loss, rgb=out.composite.rgb, logs=logs)
