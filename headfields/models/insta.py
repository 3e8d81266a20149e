"""INSTA (Zielonka, Bolkart, Thies; CVPR 2023), assembled from public headfields primitives.

Samples along camera rays are kept where an occupancy grid (the union of the head over all frames) says
something is, and near the frame's posed FLAME mesh; each is carried to canonical space through its nearest
posed triangle's frame, encoded by a hash grid, and decoded by small NeRF MLPs, the first 16 expression
coefficients entering the density MLP only near the lips. Training: Huber photometric loss with lips and
mouth up-weighted after a warm-up, and a depth prior from the posed mesh (ray cast), off on hair and background.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor, nn

from ..data import BACKGROUND_LABEL, FrameSet
from ..decoders import NerfDecoder, NerfDecoderConfig
from ..deformers import Deformer, TriangleFrameDeformer
from ..encoders import HashGrid, HashGridConfig, SphericalHarmonics
from ..losses import (
    HUBER_DELTA,
    INSTA_DEPTH_WEIGHT,
    INSTA_MOUTH_WARMUP_STEPS,
    INSTA_MOUTH_WEIGHT,
    depth_loss,
    huber_loss,
)
from ..parametric import Head, ParametricModel
from ..renderers import OccupancyGrid, composite, mesh_guided_filter
from ..renderers.cameras import Rays
from ..training import RayBatch, StepOutput
from .tracking import TrackedHeads, mesh_depth, present_regions

__all__ = ["Insta", "InstaConfig"]


@dataclass(frozen=True)
class InstaConfig:
    """INSTA's recipe (PAPERS.md); CPU-friendly sizes where noted. Departures, each a setting away:
    the deformer's eye-triangle area scaling and face-neighbour blending are off by default (pass a
    configured ``TriangleFrameDeformer``); the marching step is the box diagonal / 256 (INSTA: / 1024), and
    the grid is 64^3 (INSTA: 128^3); samples must lie within ``surface_distance`` of the posed mesh."""

    hash_grid: HashGridConfig = field(default_factory=HashGridConfig)  # 16 levels, 2^18, 16 -> 2048
    decoder: NerfDecoderConfig = field(default_factory=NerfDecoderConfig)  # 64 wide MLPs, 15 geometry features
    sh_degree: int = 4
    expression_dims: int = 16  # first FLAME expression coefficients fed near the lips
    lips_regions: tuple[str, ...] = ("lips", "teeth", "mouth_interior")  # faces whose samples see the expression
    box_inflation: float = 0.15  # render box = canonical mesh box inflated by this fraction of its diagonal
    occupancy_resolution: int = 64  # INSTA: 128 (GPU); 64 is plenty at 64-128 px on a CPU
    occupancy_decay: float = 0.95
    occupancy_threshold: float = 0.01  # on the optical thickness of one marching step, capped at the grid's mean
    occupancy_every: int = 16  # steps between occupancy refreshes; 0: no grid (every cell stays occupied)
    steps_per_diagonal: int = 256  # ray-marching step = box diagonal / this (INSTA: sqrt(3)/1024 of a unit box)
    surface_distance: float = 0.03  # metres: samples farther from the frame's posed mesh are skipped
    mouth_weight: float = INSTA_MOUTH_WEIGHT  # lips and mouth pixels weigh this much after the warm-up
    mouth_regions: tuple[str, ...] = ("lips", "teeth", "mouth_interior")
    warmup_steps: int = INSTA_MOUTH_WARMUP_STEPS
    depth_weight: float = INSTA_DEPTH_WEIGHT
    depth_off_regions: tuple[str, ...] = ("hair", "torso")  # INSTA: no depth prior on hair and cloth
    huber_delta: float = HUBER_DELTA
    learning_rate: float = 2.5e-3  # INSTA's PyTorch port
    betas: tuple[float, float] = (0.9, 0.99)
    eps: float = 1e-15
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)


class Insta(nn.Module):
    def __init__(
        self,
        parametric: ParametricModel,
        segmentation_labels: dict[str, int],
        config: InstaConfig | None = None,
        deformer: Deformer | None = None,
        encoder: nn.Module | None = None,
    ):
        """``deformer`` replaces INSTA's triangle-frame deformer (e.g. a rigid one, for an ablation); it must
        report the nearest face, which selects the samples that see the expression. ``encoder`` replaces the
        hash grid: it reads the canonical points with their first three coordinates mapped to the unit box
        (a deformer may append hyper-dimensions, passed on as they are; see
        :class:`~headfields.encoders.HyperEncoding`) and has an ``out_dim``."""
        super().__init__()
        self.config = config = config or InstaConfig()
        self.parametric = parametric.requires_grad_(False)
        self.labels = dict(segmentation_labels)
        neutral = parametric()
        canonical = neutral.canonical_vertices
        low, high = canonical.amin(0), canonical.amax(0)
        pad = config.box_inflation * (high - low).norm()
        self.register_buffer("box", torch.stack([low - pad, high + pad]))
        lips = present_regions("lips_regions", config.lips_regions, neutral.regions)
        self.register_buffer("lips_faces", neutral.face_mask(*lips))
        self.mouth_labels = [self.labels[r] for r in present_regions("mouth_regions", config.mouth_regions, self.labels)]
        # Regions a model lacks (FLAME has no torso) are skipped; the background never gets the depth prior.
        self.depth_off_labels = [self.labels[r] for r in config.depth_off_regions if r in self.labels] + [BACKGROUND_LABEL]
        self.deformer = deformer if deformer is not None else TriangleFrameDeformer()
        self.encoder = encoder if encoder is not None else HashGrid(config.hash_grid)
        if not isinstance(getattr(self.encoder, "out_dim", None), int):
            raise TypeError(f"encoder: expected a module with an int out_dim, got {type(self.encoder).__name__}")
        self.directions = SphericalHarmonics(config.sh_degree)
        self.decoder = NerfDecoder(self.encoder.out_dim, self.directions.out_dim, config.expression_dims, config.decoder)
        self.occupancy = OccupancyGrid(self.box, config.occupancy_resolution)
        self._heads = TrackedHeads()

    # --- the field ---------------------------------------------------------------------------------------
    def head(self, frames: FrameSet) -> Head:
        """The tracked head of every frame of ``frames``, evaluated once per FrameSet."""
        return self._heads.get(frames, self.parametric)

    def _encode(self, x: Float[Tensor, "S 3"], frame: Tensor, head: Head, dirs: Tensor | None):
        """Canonical hash-grid features, lips-only expression conditioning, validity, canonical directions."""
        canonical = self.deformer(x, head, frame, dirs)
        if canonical.face is None:
            raise ValueError("deformer: expected a deformer that reports each sample's nearest face (INSTA's lips conditioning)")
        points = canonical.points  # 3-D, or with hyper-dimensions after them
        unit = ((points[:, :3] - self.box[0]) / (self.box[1] - self.box[0])).clamp(0.0, 1.0)
        if points.shape[1] > 3:  # hyper-dimensions pass on as they are
            unit = torch.cat([unit, points[:, 3:].to(unit.dtype)], dim=1)
        lips = self.lips_faces[canonical.face.clamp(min=0)] & canonical.valid
        expression = head.expression[frame, : self.config.expression_dims]
        cond = torch.where(lips[:, None], expression, torch.ones_like(expression))
        return self.encoder(unit), cond, canonical.valid, canonical.dirs

    def field(self, x: Float[Tensor, "S 3"], dirs: Float[Tensor, "S 3"], frame: Tensor, head: Head):
        features, cond, valid, canonical_dirs = self._encode(x, frame, head, dirs)
        out = self.decoder(features, self.directions(canonical_dirs), cond)
        return out.density * valid, out.rgb

    def density(self, x: Float[Tensor, "S 3"], frame: Tensor, head: Head) -> Float[Tensor, " S"]:
        features, cond, valid, _ = self._encode(x, frame, head, None)
        return self.decoder.density(features, cond) * valid

    # --- rendering ---------------------------------------------------------------------------------------
    def render(self, rays: Rays, head: Head):
        samples = self.occupancy.march(rays.origins, rays.directions, step_size=self._step_size())  # within the box
        samples = mesh_guided_filter(
            samples, rays.origins, rays.directions, head.posed_mesh, rays.frame, self.config.surface_distance
        )
        x = samples.midpoints(rays.origins, rays.directions)
        frame = rays.frame[samples.ray]
        density, rgb = self.field(x, rays.directions[samples.ray], frame, head)
        background = torch.tensor(self.config.background, device=x.device)
        return composite(samples, density, rgb, background)

    def _step_size(self) -> float:
        return float((self.box[1] - self.box[0]).norm()) / self.config.steps_per_diagonal

    def render_rays(self, rays: Rays, frames: FrameSet) -> Float[Tensor, "R 3"]:
        return self.render(rays, self.head(frames)).rgb

    # --- training ----------------------------------------------------------------------------------------
    def configure_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=c.learning_rate, betas=c.betas, eps=c.eps)

    def before_step(self, step: int, frames: FrameSet) -> None:
        every = self.config.occupancy_every
        if every == 0 or step % every:
            return
        head = self.head(frames)
        # A random training frame warps the cells (INSTA): the grid holds the union of the head over frames.
        generator = torch.Generator().manual_seed(step)
        frame = int(torch.randint(head.num_frames, (1,), generator=generator))

        step_size = self._step_size()

        def thickness(x: Tensor) -> Tensor:  # optical thickness of one marching step, as instant-ngp thresholds
            with torch.no_grad():
                return self.density(x, torch.full((len(x),), frame, device=x.device), head) * step_size

        c = self.config
        self.occupancy.update(thickness, c.occupancy_decay, c.occupancy_threshold, generator=generator, cap_at_mean=True)

    def training_step(self, batch: RayBatch, step: int) -> StepOutput:
        c = self.config
        head = self.head(batch.frames)
        result = self.render(batch.rays, head)
        weight = None
        if step >= c.warmup_steps and batch.segmentation is not None:
            mouth = torch.tensor(self.mouth_labels, device=result.rgb.device)
            weight = torch.where(torch.isin(batch.segmentation, mouth), c.mouth_weight, 1.0)
        loss = huber_loss(result.rgb, batch.rgb, delta=c.huber_delta, weight=weight)
        logs = {}
        if c.depth_weight > 0:
            prior = mesh_depth(head, batch.rays)
            keep = prior > 0
            if batch.segmentation is not None:
                off = torch.tensor(self.depth_off_labels, device=prior.device)
                keep &= ~torch.isin(batch.segmentation, off)
            depth = depth_loss(result.depth, prior, keep)
            loss = loss + c.depth_weight * depth
            logs["depth"] = float(depth.detach())
        return StepOutput(loss=loss, rgb=result.rgb, logs=logs)
