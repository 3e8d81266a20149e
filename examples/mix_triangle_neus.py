"""INSTA's triangle frames with MonoNPHM's NeuS SDF: an INSTA-style avatar with a clean surface (no paper built it).

INSTA carries each posed sample to canonical space through its nearest posed FLAME triangle, which needs no
learnt deformation at all; but its density field has no surface. MonoNPHM's signed-distance decoder, appearance
field and NeuS renderer give a clean zero level set (meshable, with normals) but learn their deformation. Here the
tracked mesh does the deforming and the SDF the geometry: an INSTA-style avatar with a clean surface, assembled
from public primitives only.

    python examples/mix_triangle_neus.py --out outputs/mix_triangle_neus --max-minutes 5
    torchrun --nproc_per_node=2 examples/mix_triangle_neus.py --device cpu

Measured on the 2-core CPU by ``benchmarks/compare.py`` (default synthetic video, all 50 test frames, EMA weights,
5 minutes of training each): held-out PSNR 25.86 dB, against INSTA's 27.79 dB and MonoNPHM's 28.27 dB.
"""

# No ``from __future__ import annotations``: the benchmark and the tests load this file by path, unregistered,
# where dataclasses cannot resolve string annotations.
import argparse
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from headfields._checks import check_count, check_positive
from headfields.data import FrameSet, load_subject
from headfields.decoders import AppearanceConfig, AppearanceField, SdfMlp, SdfMlpConfig, SdfOutput, SHLighting
from headfields.deformers import TriangleFrameDeformer
from headfields.distributed import destroy_distributed, init_distributed
from headfields.geometry import TriangleMesh, sample_surface
from headfields.losses import NEUS_EIKONAL_WEIGHT, eikonal_loss, l1_loss, mask_loss
from headfields.models.tracking import TrackedHeads
from headfields.parametric import Head, ParametricModel
from headfields.renderers import Composite, InverseVariance, composite_alpha, neus_alpha, neus_samples, ray_aabb
from headfields.renderers.cameras import Rays
from headfields.renderers.neus import NEUS_BASE_INV_S, NEUS_INITIAL_VARIANCE
from headfields.training import RayBatch, StepOutput, TrainingConfig, exponential_learning_rate, train

RAYS_PER_BATCH = 512
FRAMES_PER_BATCH = None  # nothing is computed per frame: every batch draws from all training frames


@dataclass(frozen=True)
class TriangleNeusConfig:
    """CPU-sized defaults (a 5-minute run on 2 cores), those of MonoNPHM's ``cpu_config`` where they meet."""

    sdf: SdfMlpConfig = field(default_factory=lambda: SdfMlpConfig(hidden_dim=96, hidden_layers=4, position_frequencies=4))
    appearance: AppearanceConfig = field(
        default_factory=lambda: AppearanceConfig(hidden_dim=64, hidden_layers=3, position_frequencies=4)
    )
    lighting: bool = True  # albedo x SH lighting of the world normal (False: the albedo is the colour)
    coarse_samples: int = 24
    upsample_rounds: int = 2
    samples_per_round: int = 8
    upsample_inv_s: float = NEUS_BASE_INV_S
    inverse_variance: float = NEUS_INITIAL_VARIANCE
    box_padding: float = 0.03  # metres around each frame's posed-mesh box (rays are sampled inside it)
    eikonal_weight: float = NEUS_EIKONAL_WEIGHT
    eikonal_points: int = 1024  # uniform points in the canonical box per step, besides the render samples
    silhouette_weight: float = 0.1
    # The tracked mesh guides the geometry, as INSTA's depth prior does: the canonical SDF is asked to vanish at
    # points of the canonical mesh (mean |sdf| in normalised units). Off: in one 5-minute run each, weight 0.1 gave
    # 25.60 dB held out against 26.22 dB without it.
    surface_weight: float = 0.0
    surface_points: int = 1024  # canonical mesh points per step
    learning_rate: float = 1e-3  # decays exponentially to final_learning_rate over decay_steps
    final_learning_rate: float = 1e-4
    decay_steps: int = 5_000
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        check_count("coarse_samples", self.coarse_samples, 2)
        check_count("upsample_rounds", self.upsample_rounds, 0)
        check_count("samples_per_round", self.samples_per_round, 1)
        check_count("eikonal_points", self.eikonal_points, 0)
        check_count("surface_points", self.surface_points, 0)
        check_count("decay_steps", self.decay_steps, 1)
        for name in ("upsample_inv_s", "box_padding", "learning_rate", "final_learning_rate"):
            check_positive(name, getattr(self, name))
        for name in ("eikonal_weight", "silhouette_weight", "surface_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}: expected a non-negative weight, got {getattr(self, name)}")


@dataclass
class TriangleNeusRender:
    composite: Composite  # depth in metres
    sdf_gradient: Float[Tensor, "S 3"]  # of the canonical SDF at the samples' canonical points (eikonal)


class TriangleNeus(nn.Module):
    """Posed sample -> ``TriangleFrameDeformer`` -> canonical point -> ``SdfMlp`` -> sdf and features ->
    ``AppearanceField`` albedo x ``SHLighting`` -> NeuS. See the module docstring."""

    def __init__(self, parametric: ParametricModel, config: TriangleNeusConfig | None = None):
        super().__init__()
        self.config = c = config or TriangleNeusConfig()
        self.parametric = parametric.requires_grad_(False)
        rest = parametric().canonical_vertices
        low, high = rest.amin(0), rest.amax(0)
        # One isotropic map world -> normalised units for posed and canonical points alike (the neutral head's
        # box spans about [-1, 1]): the triangle maps are rigid, so the SDF's gradient w.r.t. the normalised
        # posed point has the length of its canonical gradient, and NeuS's slopes and sections share its units.
        self.register_buffer("center", (low + high) / 2)
        self.register_buffer("scale", ((high - low).amax() / 2).reshape(()))  # metres per normalised unit
        self.register_buffer("box", self.normalize(torch.stack([low - c.box_padding, high + c.box_padding])))
        self.deformer = TriangleFrameDeformer()  # no max_distance: every sample maps
        self.sdf = SdfMlp(0, c.sdf)
        self.appearance = AppearanceField(3, self.sdf.feature_dim, 0, c.appearance)
        self.lighting = SHLighting() if c.lighting else None
        self.inverse_variance = InverseVariance(c.inverse_variance)
        self._heads = TrackedHeads()
        self._optimizer: torch.optim.Optimizer | None = None

    def head(self, frames: FrameSet) -> Head:
        return self._heads.get(frames, self.parametric)

    def normalize(self, x: Float[Tensor, "*N 3"]) -> Float[Tensor, "*N 3"]:
        """World (or canonical) metres -> the normalised units the SDF lives in."""
        return (x - self.center) / self.scale

    def canonical(self, x: Float[Tensor, "S 3"], head: Head, frame: Int[Tensor, " S"]) -> Float[Tensor, "S 3"]:
        """Normalised posed points of frames ``frame`` -> normalised canonical points, through the triangle frames."""
        return self.normalize(self.deformer(x * self.scale + self.center, head, frame).points)

    def canonical_sdf(self, canonical: Float[Tensor, "S 3"]) -> SdfOutput:
        return self.sdf(canonical)

    # --- rendering -------------------------------------------------------------------------------------
    def render(self, rays: Rays, head: Head, generator: torch.Generator | None = None) -> TriangleNeusRender:
        """NeuS between the bounds of each ray's frame's padded posed-mesh box, as MonoNPHM renders."""
        c = self.config
        origins, dirs = self.normalize(rays.origins), rays.directions
        pad = torch.tensor([-c.box_padding, c.box_padding], device=origins.device)
        near, far, _ = ray_aabb(origins, dirs, self.normalize(head.bounds[rays.frame] + pad[:, None]))

        def sdf_fn(points: Tensor, ray: Tensor) -> Tensor:
            return self.canonical_sdf(self.canonical(points, head, rays.frame[ray])).sdf

        samples = neus_samples(
            origins,
            dirs,
            near,
            far,
            sdf_fn,
            c.coarse_samples,
            c.upsample_rounds,
            c.samples_per_round,
            c.upsample_inv_s,
            generator,
        )
        train = torch.is_grad_enabled()
        with torch.enable_grad():  # normals and slopes need the SDF's gradient at evaluation too
            x = samples.midpoints(origins, dirs).detach().requires_grad_(True)
            canonical = self.canonical(x, head, rays.frame[samples.ray])
            out = self.canonical_sdf(canonical)
            grad_posed, grad_canonical = torch.autograd.grad(
                out.sdf.sum(), [x, canonical], create_graph=train, retain_graph=train
            )
        sdf = out.sdf if train else out.sdf.detach()
        slope = (grad_posed * dirs[samples.ray]).sum(-1)
        alpha = neus_alpha(sdf, slope, samples.deltas, self.inverse_variance())
        rgb = self.appearance(canonical, out.features)
        if self.lighting is not None:  # normalised and world axes are parallel (the map is a scale and a shift)
            rgb = rgb * self.lighting(F.normalize(grad_posed, dim=-1))
        background = torch.tensor(c.background, device=x.device, dtype=rgb.dtype)
        comp = composite_alpha(samples, alpha, rgb, background)
        comp.depth = comp.depth * self.scale
        return TriangleNeusRender(composite=comp, sdf_gradient=grad_canonical)

    def render_rays(self, rays: Rays, frames: FrameSet) -> Float[Tensor, "R 3"]:
        return self.render(rays, self.head(frames)).composite.rgb

    # --- training ----------------------------------------------------------------------------------------
    def configure_optimizer(self) -> torch.optim.Optimizer:
        params = [p for p in self.parameters() if p.requires_grad]
        self._optimizer = torch.optim.Adam(params, lr=self.config.learning_rate)
        return self._optimizer

    def before_step(self, step: int, frames: FrameSet) -> None:
        c = self.config
        if self._optimizer is not None:
            exponential_learning_rate(self._optimizer, step, c.learning_rate, c.final_learning_rate, c.decay_steps)

    def training_step(self, batch: RayBatch, step: int) -> StepOutput:
        c = self.config
        generator = torch.Generator(batch.rgb.device).manual_seed(step)  # jitter repeats on resume
        head = self.head(batch.frames)
        out = self.render(batch.rays, head, generator)
        rgb = l1_loss(out.composite.rgb, batch.rgb)
        loss = rgb
        logs = {"rgb": float(rgb.detach()), "inv_s": float(self.inverse_variance().detach())}
        if batch.mask is not None and c.silhouette_weight > 0:
            opacity = out.composite.opacity.clamp(0, 1)
            silhouette = mask_loss(opacity, batch.mask.to(opacity.dtype))
            loss = loss + c.silhouette_weight * silhouette
            logs["silhouette"] = float(silhouette.detach())
        gradients = out.sdf_gradient
        if c.eikonal_points:  # the eikonal term away from the surface too
            u = torch.rand(c.eikonal_points, 3, generator=generator, device=generator.device).to(self.box)
            points = (self.box[0] + u * (self.box[1] - self.box[0])).requires_grad_(True)
            (box_gradient,) = torch.autograd.grad(self.canonical_sdf(points).sdf.sum(), points, create_graph=True)
            gradients = torch.cat([gradients, box_gradient])
        eikonal = eikonal_loss(gradients)
        loss = loss + c.eikonal_weight * eikonal
        logs["eikonal"] = float(eikonal.detach())
        if c.surface_weight > 0 and c.surface_points > 0:
            canonical_mesh = TriangleMesh(head.canonical_vertices[None], head.faces)
            on_mesh = sample_surface(canonical_mesh, c.surface_points, seed=step).point.to(self.box)
            surface = self.canonical_sdf(self.normalize(on_mesh)).sdf.abs().mean()
            loss = loss + c.surface_weight * surface
            logs["surface"] = float(surface.detach())
        return StepOutput(loss=loss, rgb=out.composite.rgb, logs=logs)


def build(parametric: ParametricModel, train_frames: FrameSet, config: TriangleNeusConfig | None = None) -> TriangleNeus:
    """The model benchmarks/compare.py trains (``train_frames`` unused: the model keeps nothing per frame)."""
    return TriangleNeus(parametric, config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="an INSTA-format folder (default: the synthetic video)")
    parser.add_argument("--model", type=Path, default=None, help="FLAME model folder (default: the dataset's own)")
    parser.add_argument("--out", type=Path, default=Path("outputs/mix_triangle_neus"))
    parser.add_argument("--max-minutes", type=float, default=5.0, help="training time budget")
    parser.add_argument("--iterations", type=int, default=TrainingConfig.max_iterations)
    parser.add_argument("--rays", type=int, default=RAYS_PER_BATCH, help="rays per batch")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--eval-split", default="test", choices=("val", "test"))
    args = parser.parse_args()

    device = init_distributed(args.device)  # under torchrun: this rank's device, in the process group
    subject = load_subject(args.data, args.model, args.eval_split, device=device)
    train_frames, eval_frames, parametric = subject.train, subject.eval, subject.parametric
    model = build(parametric, train_frames).to(device)
    training = TrainingConfig(
        max_iterations=args.iterations,
        max_minutes=args.max_minutes,
        rays_per_batch=args.rays,
        frames_per_batch=FRAMES_PER_BATCH,
        eval_every=500,
    )
    metrics = train(model, train_frames, eval_frames, args.out, training, device=device)
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})
    destroy_distributed()


if __name__ == "__main__":
    main()
