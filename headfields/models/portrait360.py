"""The 360° Volumetric Portrait Avatar (Nehvi, Kabadayi, Valentin, Thies; 2023), assembled from public headfields
primitives.

A head and torso seen from all sides. A sample on a camera ray near the frame's posed SMPL-X mesh is carried to
canonical space by inverse linear blend skinning (weights of the nearest posed triangle), then by the triangle
frames of the rest mesh (the coarse 3DMM-driven deformation: expression and pose correctives), then by a
personalised blend basis of displacement fields whose coefficients a mapping network predicts from expression and
jaw pose. A hash grid in canonical space and NeRF MLPs give density and colour. Training draws rays evenly from
front, side and back views.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from .._checks import check_count, check_positive
from ..data import FrameSet
from ..decoders import NerfDecoder, NerfDecoderConfig, mlp
from ..deformers import (
    BlendFieldConfig,
    BlendFieldDeformer,
    DeformerChain,
    SkinningDeformer,
    TriangleDeformerConfig,
    TriangleFrameDeformer,
)
from ..encoders import HashGrid, HashGridConfig, SphericalHarmonics
from ..losses import HUBER_DELTA, huber_loss
from ..parametric import Head, ParametricModel
from ..renderers import Composite, composite, mesh_guided_filter, ray_aabb, stratified_samples, view_angles, view_bins
from ..renderers.cameras import Rays
from ..training import RayBatch, StepOutput
from .tracking import TrackedHeads

__all__ = ["Portrait360", "Portrait360Config"]

BlendKind = Literal["deformation", "colour"]
FACING = (0.0, 0.0, 1.0)  # SMPL-X and FLAME face +z in their rest pose


@dataclass(frozen=True)
class Portrait360Config:
    """The 360° portrait's recipe (PAPERS.md gives its structure, not its sizes: these are ours). ``blend``:
    the paper's blend basis of deformation fields, or its ablation, where the mapping network's coefficients
    condition the colour MLP alone instead (a learnt blend of colour fields; the density does not see them).
    Departures: no occupancy grid (on the CPU the mesh-guided filter already keeps samples within
    ``surface_distance`` of the posed mesh, see the INSTA benchmark); stratified samples between the bounds of
    each ray's frame's posed-mesh box."""

    blend: BlendKind = "deformation"
    # The fields leave samples outside their box alone (see static_regions).
    blend_fields: BlendFieldConfig = field(default_factory=lambda: BlendFieldConfig(outside="identity"))
    hash_grid: HashGridConfig = field(default_factory=HashGridConfig)
    decoder: NerfDecoderConfig = field(default_factory=NerfDecoderConfig)
    sh_degree: int = 4
    # Whose tracked rotation of FACING says where the subject looks (view bins); None: "head", or the root joint
    # of a model without one (FLAME).
    facing_joint: str | None = None
    num_samples: int = 96  # stratified samples per ray across the posed mesh's box, before the mesh filter
    surface_distance: float = 0.03  # metres: samples farther from the frame's posed mesh are skipped
    box_inflation: float = 0.1  # canonical box = canonical mesh box inflated by this fraction of its diagonal
    # Regions expressions and the jaw do not move (those the model has): the blend fields cover the box of the rest
    # of the canonical mesh, padded by surface_distance, and skip the samples outside it (most of a bust's).
    static_regions: tuple[str, ...] = ("torso",)
    huber_delta: float = HUBER_DELTA
    learning_rate: float = 2.5e-3
    betas: tuple[float, float] = (0.9, 0.99)
    eps: float = 1e-15
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if self.blend not in ("deformation", "colour"):
            raise ValueError(f"blend: expected 'deformation' or 'colour', got {self.blend!r}")
        check_count("sh_degree", self.sh_degree, 1, 8)
        check_count("num_samples", self.num_samples, 1)
        for name in ("surface_distance", "box_inflation", "learning_rate"):
            check_positive(name, getattr(self, name))


class Portrait360(nn.Module):
    def __init__(self, parametric: ParametricModel, config: Portrait360Config | None = None):
        super().__init__()
        self.config = c = config or Portrait360Config()
        self.parametric = parametric.requires_grad_(False)
        names = list(parametric.joint_names)
        joint = c.facing_joint or ("head" if "head" in names else names[0])  # FLAME has no "head": its root
        if joint not in names:
            raise ValueError(f"config: facing_joint {joint!r} is not a joint of the model; its joints: {names}")
        self.facing_joint = names.index(joint)
        rest = parametric()
        canonical = rest.canonical_vertices
        low, high = canonical.amin(0), canonical.amax(0)
        pad = c.box_inflation * (high - low).norm()
        self.register_buffer("box", torch.stack([low - pad, high + pad]))
        condition_dim = parametric.num_expression + 3  # expression and jaw pose
        blend = BlendFieldDeformer(condition_dim, self._moving_box(rest), c.blend_fields, names)
        rigid = (SkinningDeformer(), TriangleFrameDeformer(TriangleDeformerConfig(source="rest")))
        if c.blend == "deformation":
            self.deformer = DeformerChain(*rigid, blend)
            self.mapping, cond_dim = None, 0
        else:  # the ablation: the same mapping network, its coefficients condition the colour
            self.deformer = DeformerChain(*rigid)
            b = c.blend_fields
            self.mapping, cond_dim = mlp(condition_dim, b.mapping_hidden_dim, b.mapping_layers, b.num_fields), b.num_fields
        self._condition = blend.head_condition
        self.encoder = HashGrid(c.hash_grid)
        self.directions = SphericalHarmonics(c.sh_degree)
        decoder = c.decoder
        if self.mapping is not None:  # the ablation's coefficients condition the colour, never the density
            decoder = dataclasses.replace(decoder, cond_to_color=True, cond_to_density=False)
        self.decoder = NerfDecoder(self.encoder.out_dim, self.directions.out_dim, cond_dim, decoder)
        self._heads = TrackedHeads()

    def _moving_box(self, rest: Head) -> Float[Tensor, "2 3"]:
        """The box of the canonical vertices outside ``static_regions``, padded by ``surface_distance``."""
        moving = torch.ones(rest.canonical_vertices.shape[0], dtype=torch.bool, device=rest.faces.device)
        for name in self.config.static_regions:
            if name in rest.regions:  # FLAME has no torso: everything moves
                moving[rest.regions[name]] = False
        if not moving.any():
            raise ValueError(f"config: static_regions {self.config.static_regions} cover the whole mesh: nothing to blend")
        vertices = rest.canonical_vertices[moving]
        pad = self.config.surface_distance
        return torch.stack([vertices.amin(0) - pad, vertices.amax(0) + pad])

    def head(self, frames: FrameSet) -> Head:
        return self._heads.get(frames, self.parametric)

    def view_bins(self, frames: FrameSet) -> Int[Tensor, " B"]:
        """Front (0), side (1) or back (2) view of each frame: the angle between where the subject faces (the
        tracked rotation of ``facing_joint`` applied to FACING) and the direction to the camera."""
        head = self.head(frames)
        facing = head.joint_transforms[:, self.facing_joint, :3, :3] @ head.vertices.new_tensor(FACING)
        centers = head.vertices.mean(dim=1)
        return view_bins(view_angles(frames.cameras.to(centers.device), facing, centers))

    # --- the field ---------------------------------------------------------------------------------------
    def field(self, x: Float[Tensor, "S 3"], dirs: Float[Tensor, "S 3"], frame: Int[Tensor, " S"], head: Head):
        canonical = self.deformer(x, head, frame, dirs)
        unit = ((canonical.points - self.box[0]) / (self.box[1] - self.box[0])).clamp(0.0, 1.0)
        cond = None
        if self.mapping is not None:  # the coefficients once per frame, then per sample
            frames, inverse = torch.unique(frame, return_inverse=True)
            cond = self.mapping(self._condition(head, frames).to(x.dtype))[inverse]
        out = self.decoder(self.encoder(unit), self.directions(canonical.dirs), cond)
        return out.density * canonical.valid, out.rgb

    # --- rendering ---------------------------------------------------------------------------------------
    def render(self, rays: Rays, head: Head, generator: torch.Generator | None = None) -> Composite:
        """Stratified samples across the box of each ray's frame's posed mesh, kept within ``surface_distance``
        of that mesh, composited over the background."""
        c = self.config
        pad = torch.tensor([-c.surface_distance, c.surface_distance], device=rays.origins.device)
        boxes = head.bounds[rays.frame] + pad[:, None]
        near, far, _ = ray_aabb(rays.origins, rays.directions, boxes)
        samples = stratified_samples(rays, near, far, c.num_samples, generator)
        samples = mesh_guided_filter(samples, rays.origins, rays.directions, head.posed_mesh, rays.frame, c.surface_distance)
        x = samples.midpoints(rays.origins, rays.directions)
        density, rgb = self.field(x, rays.directions[samples.ray], rays.frame[samples.ray], head)
        return composite(samples, density, rgb, torch.tensor(c.background, device=x.device))

    def render_rays(self, rays: Rays, frames: FrameSet) -> Float[Tensor, "R 3"]:
        return self.render(rays, self.head(frames)).rgb

    # --- training ----------------------------------------------------------------------------------------
    def configure_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=c.learning_rate, betas=c.betas, eps=c.eps)

    def before_step(self, step: int, frames: FrameSet) -> None:
        pass

    def training_step(self, batch: RayBatch, step: int) -> StepOutput:
        generator = torch.Generator(batch.rgb.device).manual_seed(step)  # jitter repeats on resume
        result = self.render(batch.rays, self.head(batch.frames), generator)
        loss = huber_loss(result.rgb, batch.rgb, delta=self.config.huber_delta)
        return StepOutput(loss=loss, rgb=result.rgb, logs={})
