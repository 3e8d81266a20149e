"""The part every NeuS avatar shares (the triangle-frame NeuS mix, MonoNPHM): a :class:`~headfields.fields.NeusField`
rendered by :func:`~headfields.renderers.render_neus`, the NeuS losses, and mesh extraction.

A subclass builds ``self.field``; its config extends :class:`NeusConfig` (the sampler, the initial sharpness, the
loss weights, the optimiser and the background).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..cameras import Rays
from ..checks import check_count
from ..fields import NeusField, Normalize, SharedCode, padded_box
from ..geometry import IsoSurface, extract_isosurface, sample_box
from ..losses import NEUS_EIKONAL_WEIGHT, eikonal_loss, l1_loss, mask_loss
from ..parametric import Head, SubjectModel
from ..renderers import (
    EARLY_STOP_TRANSMITTANCE,
    NEUS_INITIAL_VARIANCE,
    InverseVariance,
    NeusRender,
    NeusSampler,
    RenderContext,
    render_neus,
    render_neus_inference,
)
from ..training import AvatarModel, OptimizerConfig, RayBatch, StepOutput

__all__ = ["NEUS_UNREAD_TRAINING_FIELDS", "NeusConfig", "NeusModel"]

# TrainingConfig's fields a NeuS step has no use for (refused when set, not ignored): it trains every sample of its
# rays (no early termination), counts none for a sample budget, and its SDF and colour networks run in float32.
NEUS_UNREAD_TRAINING_FIELDS = ("early_stop", "samples_per_batch", "precision")


@dataclass(frozen=True)
class NeusConfig:
    """What every NeuS avatar reads; defaults CPU-sized (a 5-minute run on 2 cores)."""

    sampler: NeusSampler = NeusSampler(coarse=24, rounds=2, per_round=8, padding=0.03)  # padding: metres
    inverse_variance: float = NEUS_INITIAL_VARIANCE  # NeuS: inv_s = exp(10 v), v learnt from 0.3
    eikonal_weight: float = NEUS_EIKONAL_WEIGHT
    eikonal_points: int = 1024  # uniform points in the canonical box per step, besides the render samples
    silhouette_weight: float = 0.1
    optimization: OptimizerConfig = OptimizerConfig(1e-3, 1e-4, 5_000, ema_decay=0.95)
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)

    WEIGHTS = ("eikonal_weight", "silhouette_weight")  # the loss weights, each checked to be >= 0

    def __post_init__(self) -> None:
        check_count("eikonal_points", self.eikonal_points, 0)
        for name in self.WEIGHTS:
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}: expected a non-negative weight, got {getattr(self, name)}")


class NeusModel(AvatarModel):
    """What every NeuS avatar shares: ``self.field`` (a :class:`~headfields.fields.NeusField`, which a subclass
    builds) rendered by :func:`~headfields.renderers.render_neus` with the config's sampler, a learnt sharpness,
    the image losses (L1, silhouette) and the eikonal term at the render samples and in the canonical ``box``.
    ``config``: a :class:`NeusConfig` (or an extension of it)."""

    field: NeusField

    def __init__(self, parametric: SubjectModel, config: NeusConfig, hyper_dim: int = 0):
        super().__init__()
        self.config, self.optimization, self.hyper_dim = config, config.optimization, hyper_dim
        self.parametric = parametric.requires_grad_(False)
        neutral = parametric().canonical_vertices
        # The canonical box in the SDF's units: where the eikonal term draws its points away from the surface.
        self.register_buffer("box", Normalize.of_box(neutral)(padded_box(neutral, config.sampler.padding)))
        self.inverse_variance = InverseVariance(config.inverse_variance)
        # The recipe's background as a buffer: it moves with the model, and a step copies nothing from the host.
        self.register_buffer("background", torch.tensor(config.background, dtype=torch.float32), persistent=False)
        box = None if config.sampler.box is None else torch.tensor(config.sampler.box, dtype=torch.float32)
        self.register_buffer("sampler_box", box, persistent=False)  # the sampler's fixed box (None: each frame's)

    def radiance_field(self) -> NeusField:
        return self.field

    def render(self, rays: Rays, head: Head, context: RenderContext | None = None) -> NeusRender:
        """The rays rendered as the step's ``context`` says (:func:`~headfields.renderers.render_neus`)."""
        sampler, inv_s = self.config.sampler, self.inverse_variance()
        return render_neus(self.field, rays, head, sampler, inv_s, self.background, context, self.sampler_box)

    def render_rays(self, rays: Rays, head: Head, early_stop: float = EARLY_STOP_TRANSMITTANCE) -> Tensor:
        """The colours by the inference renderer (rounds over the live rays, stopped at transmittance ``early_stop``)."""
        background = self.background
        sampler, inv_s = self.config.sampler, self.inverse_variance()
        return render_neus_inference(self.field, rays, head, sampler, inv_s, background, early_stop).rgb

    def box_condition(self, count: int) -> Tensor | None:
        """What the SDF reads besides the points at the eikonal term's box points: a shared code as it is, else
        zeros (no expression)."""
        cond = self.field.sdf_condition
        if isinstance(cond, SharedCode):
            return cond.code.expand(count, -1)
        return None if cond is None else self.box.new_zeros(count, cond.dim)

    def neus_loss(self, out: NeusRender, batch: RayBatch, generator: torch.Generator | None) -> tuple[Tensor, dict]:
        """L1 colour + silhouette (where the batch has masks) + eikonal, and their logs."""
        c = self.config
        rgb = l1_loss(out.composite.rgb, batch.rgb)
        loss, logs = rgb, {"rgb": rgb.detach(), "inv_s": self.inverse_variance().detach()}  # read when the loop logs
        if batch.mask is not None and c.silhouette_weight > 0:
            opacity = out.composite.opacity.clamp(0, 1)
            silhouette = mask_loss(opacity, batch.mask.to(opacity.dtype))
            loss = loss + c.silhouette_weight * silhouette
            logs["silhouette"] = silhouette.detach()
        gradients, real = out.sdf_gradient, out.real
        if c.eikonal_points:  # the eikonal term away from the surface too, at the canonical slice h = 0
            points = sample_box(self.box, c.eikonal_points, generator).requires_grad_(True)
            mapped = torch.cat([points, points.new_zeros(len(points), self.hyper_dim)], dim=1)
            sdf = self.field.canonical_sdf(mapped, self.box_condition(len(points))).sdf
            (box_gradient,) = torch.autograd.grad(sdf.sum(), points, create_graph=True)
            gradients = torch.cat([gradients, box_gradient])
            real = None if real is None else torch.cat([real, real.new_ones(len(points))])
        weight = None
        if real is not None:  # the mean over the samples of rays that cross the box, and the box's points
            weight = real.to(gradients.dtype) * (len(real) / real.sum().clamp(min=1))
        eikonal = eikonal_loss(gradients, weight)
        logs["eikonal"] = eikonal.detach()
        return loss + c.eikonal_weight * eikonal, logs

    def training_step(self, batch: RayBatch, step: int) -> StepOutput:
        out = self.render(batch.rays, batch.head, batch.context)
        loss, logs = self.neus_loss(out, batch, batch.context.generator)
        return StepOutput(loss=loss, rgb=out.composite.rgb, logs=logs)

    def extract_mesh(self, head: Head, frame: int, resolution: int = 128) -> IsoSurface:
        """The zero level set of frame ``frame`` of ``head``, in world coordinates: marching cubes over the box the
        sampler uses for that frame (its posed mesh's, padded; or the sampler's fixed box)."""
        frame = check_count("frame", frame, 0, head.num_frames - 1)
        sampler = self.config.sampler
        box = torch.tensor(sampler.box) if sampler.box is not None else padded_box(head.vertices[frame].detach(), sampler.padding)

        def sdf(points: Tensor) -> Tensor:
            return self.field.geometry(points, torch.full_like(points[:, 0], frame, dtype=torch.long), head).sdf

        return extract_isosurface(sdf, box.to(head.vertices), resolution)
