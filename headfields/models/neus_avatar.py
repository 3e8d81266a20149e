"""A NeuS head avatar with any deformer: the SDF, appearance, lighting and renderer of MonoNPHM (Giebenhain et al.,
CVPR 2024) behind a deformer of your choice. With INSTA's triangle frames it is an INSTA-style avatar with a clean
surface (``examples/mix_triangle_neus.py``), a model none of the papers built.

sample (NeuS: stratified in each frame's padded posed-mesh box, then up-sampling near the zero level) → deform →
normalise (the neutral head spans about [-1, 1]) → SDF MLP (the frame's expression near the lips) → albedo (the
expression everywhere) × SH lighting of the world normal → NeuS compositing → L1 + silhouette + eikonal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..checks import check_count
from ..decoders import AppearanceConfig, AppearanceField, SdfMlp, SdfMlpConfig, SHLighting
from ..deformers import Deformer
from ..fields import NeusField, Normalize, RegionExpression, padded_box
from ..geometry import sample_box
from ..heads import present_regions
from ..losses import NEUS_EIKONAL_WEIGHT, eikonal_loss, l1_loss, mask_loss
from ..parametric import Head, ParametricModel
from ..renderers import NEUS_INITIAL_VARIANCE, InverseVariance, NeusRender, NeusSampler, Rays, render_neus
from ..training import OptimizerConfig, RayBatch, StepOutput

__all__ = ["NeusAvatar", "NeusAvatarConfig"]


@dataclass(frozen=True)
class NeusAvatarConfig:
    """CPU-sized defaults (a 5-minute run on 2 cores), those of MonoNPHM's ``cpu_config`` where they meet."""

    sdf: SdfMlpConfig = field(default_factory=lambda: SdfMlpConfig(hidden_dim=96, hidden_layers=4, position_frequencies=4))
    appearance: AppearanceConfig = field(
        default_factory=lambda: AppearanceConfig(hidden_dim=64, hidden_layers=3, position_frequencies=4)
    )
    lighting: bool = True  # albedo x SH lighting of the world normal (False: the albedo is the colour)
    # INSTA's lips conditioning: samples whose nearest posed face is in these regions give the SDF the frame's first
    # expression coefficients (zeros elsewhere); the albedo sees them at every sample (expression_everywhere): brow
    # wrinkles are not on the mesh. In one 5-minute run each with triangle frames (10 held-out frames): 27.10 dB
    # without conditioning, 27.43 dB with the lips conditioning of both, 27.78 dB with the albedo's everywhere.
    expression_dims: int = 16  # 0: no conditioning at all (of the SDF nor of the albedo)
    lips_regions: tuple[str, ...] = ("lips", "teeth", "mouth_interior")
    expression_everywhere: bool = True  # False: the albedo too sees the expression near the lips only
    sampler: NeusSampler = NeusSampler(coarse=24, rounds=2, per_round=8, padding=0.03)  # padding: metres
    inverse_variance: float = NEUS_INITIAL_VARIANCE
    eikonal_weight: float = NEUS_EIKONAL_WEIGHT
    eikonal_points: int = 1024  # uniform points in the canonical box per step, besides the render samples
    silhouette_weight: float = 0.1
    # Clipping: through the triangle frames NeuS's loss spikes now and then and its sharpness stalls; in one 5-minute
    # run each, clipping at 1.0 gave 27.10 dB on 10 held-out frames against 25.73 dB without.
    optimization: OptimizerConfig = OptimizerConfig(1e-3, 1e-4, 5_000, max_grad_norm=1.0, ema_decay=0.95)
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        check_count("expression_dims", self.expression_dims, 0)
        check_count("eikonal_points", self.eikonal_points, 0)
        for name in ("eikonal_weight", "silhouette_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}: expected a non-negative weight, got {getattr(self, name)}")


class NeusAvatar(nn.Module):
    """posed sample → ``deformer`` → :class:`~headfields.fields.NeusField` → NeuS. ``hyper_dim``: the
    hyper-dimensions the deformer appends to the canonical points (0 for mesh-driven deformers)."""

    def __init__(self, parametric: ParametricModel, deformer: Deformer, config: NeusAvatarConfig | None = None, hyper_dim=0):
        super().__init__()
        self.config = c = config or NeusAvatarConfig()
        self.optimization = c.optimization
        self.parametric = parametric.requires_grad_(False)
        if c.expression_dims > parametric.num_expression:
            raise ValueError(
                f"expression_dims: expected at most the model's {parametric.num_expression} coefficients, got {c.expression_dims}"
            )
        neutral = parametric()
        normalize = Normalize.of_box(neutral.canonical_vertices)
        self.register_buffer("box", normalize(padded_box(neutral.canonical_vertices, c.sampler.padding)))
        sdf_condition = colour_condition = None
        if c.expression_dims:
            lips = neutral.face_mask(*present_regions("lips_regions", c.lips_regions, neutral.regions))
            sdf_condition = RegionExpression(c.expression_dims, lips, outside=0.0)
            colour_condition = RegionExpression(c.expression_dims, None if c.expression_everywhere else lips)
        sdf = SdfMlp(hyper_dim + c.expression_dims, c.sdf)
        self.field = NeusField(
            deformer,
            sdf,
            AppearanceField(3 + hyper_dim, sdf.feature_dim, c.expression_dims, c.appearance),
            normalize,
            SHLighting() if c.lighting else None,
            sdf_condition,
            colour_condition,
        )
        self.inverse_variance = InverseVariance(c.inverse_variance)

    def render(self, rays: Rays, head: Head, generator: torch.Generator | None = None) -> NeusRender:
        background = torch.tensor(self.config.background, device=rays.origins.device)
        return render_neus(self.field, rays, head, self.config.sampler, self.inverse_variance(), background, generator)

    def render_rays(self, rays: Rays, head: Head) -> Tensor:
        return self.render(rays, head).composite.rgb

    def training_step(self, batch: RayBatch, step: int) -> StepOutput:
        c = self.config
        out = self.render(batch.rays, batch.head, batch.generator)
        rgb = l1_loss(out.composite.rgb, batch.rgb)
        loss, logs = rgb, {"rgb": float(rgb.detach()), "inv_s": float(self.inverse_variance().detach())}
        if batch.mask is not None and c.silhouette_weight > 0:
            opacity = out.composite.opacity.clamp(0, 1)
            silhouette = mask_loss(opacity, batch.mask.to(opacity.dtype))
            loss = loss + c.silhouette_weight * silhouette
            logs["silhouette"] = float(silhouette.detach())
        gradients = out.sdf_gradient
        if c.eikonal_points:  # the eikonal term away from the surface too, at the canonical slice h = 0
            points = sample_box(self.box, c.eikonal_points, batch.generator).requires_grad_(True)
            mapped = torch.cat([points, points.new_zeros(len(points), self.field.appearance.in_dim - 3)], dim=1)
            sdf = self.field.canonical_sdf(mapped, points.new_zeros(len(points), c.expression_dims)).sdf
            (box_gradient,) = torch.autograd.grad(sdf.sum(), points, create_graph=True)
            gradients = torch.cat([gradients, box_gradient])
        eikonal = eikonal_loss(gradients)
        logs["eikonal"] = float(eikonal.detach())
        return StepOutput(loss=loss + c.eikonal_weight * eikonal, rgb=out.composite.rgb, logs=logs)
