"""INSTA (Zielonka, Bolkart, Thies; CVPR 2023), assembled from public headfields primitives.

sample (occupancy-grid marching in the canonical box) → deform (nearest posed FLAME triangle's frame) →
encode (hash grid in the unit box) → decode (NeRF MLPs; the first 16 expression coefficients enter the density
MLP only near the lips) → composite → Huber loss with lips and mouth up-weighted after a warm-up, and a depth
prior from the posed mesh (ray cast), off on hair and background.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..data import BACKGROUND_LABEL
from ..decoders import NerfDecoder, NerfDecoderConfig
from ..deformers import Deformer, TriangleFrameDeformer
from ..encoders import HashGrid, HashGridConfig, SphericalHarmonics
from ..fields import NerfField, RegionExpression, UnitBox, inflated_box
from ..heads import MOUTH_REGIONS, mesh_depth, present_regions
from ..losses import HUBER_DELTA, INSTA_DEPTH_WEIGHT, INSTA_MOUTH_WARMUP_STEPS, INSTA_MOUTH_WEIGHT, depth_loss, huber_loss
from ..parametric import Head, SubjectModel
from ..renderers import OccupancySampler, Rays, render_nerf
from ..training import OptimizerConfig, RayBatch, StepOutput

__all__ = ["Insta", "InstaConfig"]


@dataclass(frozen=True)
class InstaConfig:
    """INSTA's recipe (PAPERS.md); CPU-friendly sizes where noted. Departures, each a setting away: the
    deformer's eye-triangle area scaling and face-neighbour blending are off by default (pass a configured
    ``TriangleFrameDeformer``); the marching step is the box diagonal / 256 (INSTA: / 1024), and the grid is
    64^3 (INSTA: 128^3); samples farther than ``shell`` from the posed mesh are skipped (INSTA warps every
    sample in its box: ``shell=None``)."""

    hash_grid: HashGridConfig = field(default_factory=HashGridConfig)  # 16 levels, 2^18, 16 -> 2048
    decoder: NerfDecoderConfig = field(default_factory=NerfDecoderConfig)  # 64 wide MLPs, 15 geometry features
    sh_degree: int = 4
    expression_dims: int = 16  # first FLAME expression coefficients fed near the lips
    lips_regions: tuple[str, ...] = MOUTH_REGIONS  # faces whose samples see the expression
    box_inflation: float = 0.15  # render box = canonical mesh box inflated by this fraction of its diagonal
    occupancy_resolution: int = 64  # INSTA: 128 (GPU); 64 is plenty at 64-128 px on a CPU
    occupancy_decay: float = 0.95
    occupancy_threshold: float = 0.01  # on the optical thickness of one marching step, capped at the grid's mean
    occupancy_every: int = 16  # steps between occupancy refreshes; 0: no grid (every cell stays occupied)
    steps_per_diagonal: int = 256  # ray-marching step = box diagonal / this (INSTA: sqrt(3)/1024 of a unit box)
    shell: float | None = 0.03  # metres from the frame's posed mesh beyond which samples are skipped (None: off)
    mouth_weight: float = INSTA_MOUTH_WEIGHT  # lips and mouth pixels weigh this much after the warm-up
    mouth_regions: tuple[str, ...] = MOUTH_REGIONS
    warmup_steps: int = INSTA_MOUTH_WARMUP_STEPS
    depth_weight: float = INSTA_DEPTH_WEIGHT
    depth_off_regions: tuple[str, ...] = ("hair", "torso", "cloth", "hat")  # INSTA: no depth prior on hair and cloth
    huber_delta: float = HUBER_DELTA
    # INSTA's PyTorch port: Adam at 2.5e-3, betas (0.9, 0.99), eps 1e-15; evaluation with an EMA of 0.95.
    optimization: OptimizerConfig = OptimizerConfig(2.5e-3, betas=(0.9, 0.99), eps=1e-15, ema_decay=0.95)
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)


class Insta(nn.Module):
    def __init__(
        self,
        parametric: SubjectModel,
        segmentation_labels: dict[str, int],
        config: InstaConfig | None = None,
        deformer: Deformer | None = None,
        encoder: nn.Module | None = None,
    ):
        """``deformer`` replaces INSTA's triangle-frame deformer (e.g. a rigid one, for an ablation); it must
        report the nearest face, which selects the samples that see the expression. ``encoder`` replaces the
        hash grid: it reads the canonical points with their first three coordinates mapped to the unit box
        (hyper-dimensions passed on as they are, see :class:`~headfields.encoders.HyperEncoding`) and has an
        ``out_dim``."""
        super().__init__()
        self.config = c = config or InstaConfig()
        self.optimization = c.optimization
        self.parametric = parametric.requires_grad_(False)
        if c.expression_dims > parametric.num_expression:  # a capture's expression files may hold fewer
            raise ValueError(
                f"expression_dims: expected at most the subject's {parametric.num_expression} expression coefficients, "
                f"got {c.expression_dims}"
            )
        neutral = parametric()
        box = inflated_box(neutral.canonical_vertices, c.box_inflation)
        encoder = encoder if encoder is not None else HashGrid(c.hash_grid)
        if not isinstance(getattr(encoder, "out_dim", None), int):
            raise TypeError(f"encoder: expected a module with an int out_dim, got {type(encoder).__name__}")
        lips = neutral.face_mask(*present_regions("lips_regions", c.lips_regions, neutral.regions))
        directions = SphericalHarmonics(c.sh_degree)
        self.field = NerfField(
            deformer if deformer is not None else TriangleFrameDeformer(),
            encoder,
            NerfDecoder(encoder.out_dim, directions.out_dim, c.expression_dims, c.decoder),
            directions,
            UnitBox(box),
            RegionExpression(c.expression_dims, lips, outside=1.0),  # ones away from the lips, as INSTA feeds
        )
        grid = (c.occupancy_resolution, c.steps_per_diagonal, c.occupancy_every, c.occupancy_decay, c.occupancy_threshold)
        self.sampler = OccupancySampler(box, *grid, shell=c.shell)
        labels = dict(segmentation_labels)
        self.mouth_labels = [labels[r] for r in present_regions("mouth_regions", c.mouth_regions, labels)]
        # Regions a model lacks (FLAME has no torso) are skipped; the background never gets the depth prior.
        self.depth_off_labels = [labels[r] for r in c.depth_off_regions if r in labels] + [BACKGROUND_LABEL]

    def render(self, rays: Rays, head: Head, generator: torch.Generator | None = None):
        background = torch.tensor(self.config.background, device=rays.origins.device)
        return render_nerf(self.field, rays, head, self.sampler, background, generator).composite

    def render_rays(self, rays: Rays, head: Head) -> torch.Tensor:
        return self.render(rays, head).rgb

    def before_step(self, step: int, head: Head) -> None:
        self.sampler.refresh(self.field, head, step)

    def training_step(self, batch: RayBatch, step: int) -> StepOutput:
        c = self.config
        result = self.render(batch.rays, batch.head, batch.generator)
        weight = None
        if step >= c.warmup_steps and batch.segmentation is not None:
            mouth = torch.tensor(self.mouth_labels, device=result.rgb.device)
            weight = torch.where(torch.isin(batch.segmentation, mouth), c.mouth_weight, 1.0)
        loss = huber_loss(result.rgb, batch.rgb, delta=c.huber_delta, weight=weight)
        logs = {}
        if c.depth_weight > 0:
            prior = mesh_depth(batch.head, batch.rays)
            keep = prior > 0
            if batch.segmentation is not None:
                keep &= ~torch.isin(batch.segmentation, torch.tensor(self.depth_off_labels, device=prior.device))
            depth = depth_loss(result.depth, prior, keep)
            loss = loss + c.depth_weight * depth
            logs["depth"] = float(depth.detach())
        return StepOutput(loss=loss, rgb=result.rgb, logs=logs)
