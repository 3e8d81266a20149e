"""INSTA's triangle frames with MonoNPHM's NeuS SDF: an INSTA-style avatar with a clean surface (no paper built it).

INSTA carries each posed sample to canonical space through its nearest posed FLAME triangle, which needs no
learnt deformation at all; but its density field has no surface. MonoNPHM's signed-distance decoder, appearance
field and NeuS renderer give a clean zero level set (meshable, with normals) but learn their deformation. Here the
tracked mesh does the deforming and the SDF the geometry: an INSTA-style avatar with a clean surface, assembled
from public primitives only.

    python examples/mix_triangle_neus.py --out outputs/mix_triangle_neus --max-minutes 5
    torchrun --nproc_per_node=2 examples/mix_triangle_neus.py --device cpu

Measured on the 2-core CPU by ``benchmarks/compare.py`` (default synthetic video, all 50 test frames, EMA weights,
5 minutes of training each): held-out PSNR 27.83 dB, against MonoNPHM's 28.68 dB and INSTA's 27.57 dB.
"""

# No ``from __future__ import annotations``: the benchmark and the tests load this file by path, unregistered,
# where dataclasses cannot resolve string annotations.
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from headfields._checks import check_count, check_positive
from headfields.cli import rounded, training_config, training_parser
from headfields.data import FrameSet, load_subject
from headfields.decoders import AppearanceConfig, AppearanceField, SdfMlp, SdfMlpConfig, SdfOutput, SHLighting
from headfields.deformers import TriangleFrameDeformer
from headfields.distributed import destroy_distributed, init_distributed
from headfields.geometry import TriangleMesh, sample_box, sample_surface
from headfields.losses import NEUS_EIKONAL_WEIGHT, eikonal_loss, l1_loss, mask_loss
from headfields.models.tracking import TrackedHeads, present_regions
from headfields.parametric import Head, ParametricModel
from headfields.renderers import Composite, InverseVariance, composite_alpha, neus_rays, ray_aabb
from headfields.renderers.cameras import Rays
from headfields.renderers.neus import NEUS_BASE_INV_S, NEUS_INITIAL_VARIANCE
from headfields.training import DecayingAdam, RayBatch, StepOutput, train

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
    # INSTA's lips conditioning: samples whose nearest posed face is in these regions give the SDF the frame's first
    # expression coefficients (zeros elsewhere). Without it the mouth's gap, carried through the lips' frames into the
    # closed neutral mouth, could not be empty. The albedo sees them at every sample (expression_everywhere), as
    # MonoNPHM's appearance sees its expression-driven hyper coordinates: brow wrinkles are not on the mesh. In one
    # 5-minute run each (clipped gradients, 10 held-out frames): 27.10 dB without conditioning, 27.43 dB with the
    # lips conditioning of both, 27.78 dB with the albedo's everywhere.
    expression_dims: int = 16  # 0: no conditioning at all (of the SDF nor of the albedo)
    lips_regions: tuple[str, ...] = ("lips", "teeth", "mouth_interior")
    expression_everywhere: bool = True  # False: the albedo too sees the expression near the lips only
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
    # points of the canonical mesh (mean |sdf| in normalised units). Off: in one 5-minute run each (before the
    # clipping and the conditioning), weight 0.1 gave 25.60 dB held out against 26.22 dB without it.
    surface_weight: float = 0.0
    surface_points: int = 1024  # canonical mesh points per step
    learning_rate: float = 1e-3  # decays exponentially to final_learning_rate over decay_steps
    final_learning_rate: float = 1e-4
    decay_steps: int = 5_000
    # The gradients' total norm is clipped to this before each step (None: no clipping). Through the triangle frames
    # NeuS's loss spikes now and then and its sharpness stalls; in one 5-minute run each, clipping at 1.0 gave
    # 27.10 dB on 10 held-out frames against 25.73 dB without.
    max_grad_norm: float | None = 1.0
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        check_count("coarse_samples", self.coarse_samples, 2)
        check_count("expression_dims", self.expression_dims, 0)
        check_count("upsample_rounds", self.upsample_rounds, 0)
        check_count("samples_per_round", self.samples_per_round, 1)
        check_count("eikonal_points", self.eikonal_points, 0)
        check_count("surface_points", self.surface_points, 0)
        check_count("decay_steps", self.decay_steps, 1)
        for name in ("upsample_inv_s", "box_padding", "learning_rate", "final_learning_rate", "max_grad_norm"):
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
        if c.expression_dims > parametric.num_expression:
            raise ValueError(
                f"expression_dims: expected at most the model's {parametric.num_expression} coefficients, got {c.expression_dims}"
            )
        neutral = parametric()
        rest = neutral.canonical_vertices
        low, high = rest.amin(0), rest.amax(0)
        # One isotropic map world -> normalised units for posed and canonical points alike (the neutral head's
        # box spans about [-1, 1]): the triangle maps are rigid, so the SDF's gradient w.r.t. the normalised
        # posed point has the length of its canonical gradient, and NeuS's slopes and sections share its units.
        self.register_buffer("center", (low + high) / 2)
        self.register_buffer("scale", ((high - low).amax() / 2).reshape(()))  # metres per normalised unit
        self.register_buffer("box", self.normalize(torch.stack([low - c.box_padding, high + c.box_padding])))
        lips = present_regions("lips_regions", c.lips_regions, neutral.regions) if c.expression_dims else []
        self.register_buffer("lips_faces", neutral.face_mask(*lips))
        self.deformer = TriangleFrameDeformer()  # no max_distance: every sample maps
        self.sdf = SdfMlp(c.expression_dims, c.sdf)
        self.appearance = AppearanceField(3, self.sdf.feature_dim, c.expression_dims, c.appearance)
        self.lighting = SHLighting() if c.lighting else None
        self.inverse_variance = InverseVariance(c.inverse_variance)
        self._heads = TrackedHeads()
        self._adam = DecayingAdam(c.learning_rate, c.final_learning_rate, c.decay_steps, c.max_grad_norm)

    def head(self, frames: FrameSet) -> Head:
        return self._heads.get(frames, self.parametric)

    def normalize(self, x: Float[Tensor, "*N 3"]) -> Float[Tensor, "*N 3"]:
        """World (or canonical) metres -> the normalised units the SDF lives in."""
        return (x - self.center) / self.scale

    def canonical(
        self, x: Float[Tensor, "S 3"], head: Head, frame: Int[Tensor, " S"]
    ) -> tuple[Float[Tensor, "S 3"], Float[Tensor, "S E"] | None]:
        """Normalised posed points of frames ``frame`` -> normalised canonical points, through the triangle frames,
        and their condition: the frame's expression where the nearest face is a lips face, zeros elsewhere."""
        canonical = self.deformer(x * self.scale + self.center, head, frame)
        if not self.config.expression_dims:
            return self.normalize(canonical.points), None
        lips = self.lips_faces[canonical.face.clamp(min=0)]
        expression = head.expression[frame, : self.config.expression_dims].to(x.dtype)
        return self.normalize(canonical.points), expression * lips[:, None]

    def neutral_condition(self, count: int, like: Tensor) -> Float[Tensor, "N E"] | None:
        """The condition of points away from the lips (zeros), for canonical points no posed sample gave."""
        return like.new_zeros(count, self.config.expression_dims) if self.config.expression_dims else None

    def canonical_sdf(self, canonical: Float[Tensor, "S 3"], condition: Float[Tensor, "S E"] | None) -> SdfOutput:
        return self.sdf(canonical, condition)

    # --- rendering -------------------------------------------------------------------------------------
    def render(self, rays: Rays, head: Head, generator: torch.Generator | None = None) -> TriangleNeusRender:
        """NeuS between the bounds of each ray's frame's padded posed-mesh box, as MonoNPHM renders."""
        c = self.config
        origins, dirs = self.normalize(rays.origins), rays.directions
        pad = torch.tensor([-c.box_padding, c.box_padding], device=origins.device)
        near, far, _ = ray_aabb(origins, dirs, self.normalize(head.bounds[rays.frame] + pad[:, None]))

        def field_fn(x: Tensor, ray: Tensor) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor | None]]:
            canonical, condition = self.canonical(x, head, rays.frame[ray])
            out = self.canonical_sdf(canonical, condition)
            return out.sdf, canonical, (out.features, condition)

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
        samples, (features, code) = neus.samples, neus.field
        if c.expression_everywhere and c.expression_dims:
            code = head.expression[rays.frame[samples.ray], : c.expression_dims].to(features)
        rgb = self.appearance(neus.canonical, features, code)
        if self.lighting is not None:  # normalised and world axes are parallel (the map is a scale and a shift)
            rgb = rgb * self.lighting(F.normalize(neus.gradient, dim=-1))
        background = torch.tensor(c.background, device=rgb.device, dtype=rgb.dtype)
        comp = composite_alpha(samples, neus.alpha, rgb, background)
        comp.depth = comp.depth * self.scale
        return TriangleNeusRender(composite=comp, sdf_gradient=neus.canonical_gradient)

    def render_rays(self, rays: Rays, frames: FrameSet) -> Float[Tensor, "R 3"]:
        return self.render(rays, self.head(frames)).composite.rgb

    # --- training ----------------------------------------------------------------------------------------
    def configure_optimizer(self) -> torch.optim.Optimizer:
        return self._adam.build(self)

    def before_step(self, step: int, frames: FrameSet) -> None:
        self._adam.set_step(step)

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
            points = sample_box(self.box, c.eikonal_points, generator).requires_grad_(True)
            sdf = self.canonical_sdf(points, self.neutral_condition(len(points), points)).sdf
            (box_gradient,) = torch.autograd.grad(sdf.sum(), points, create_graph=True)
            gradients = torch.cat([gradients, box_gradient])
        eikonal = eikonal_loss(gradients)
        loss = loss + c.eikonal_weight * eikonal
        logs["eikonal"] = float(eikonal.detach())
        if c.surface_weight > 0 and c.surface_points > 0:
            canonical_mesh = TriangleMesh(head.canonical_vertices[None], head.faces)
            on_mesh = sample_surface(canonical_mesh, c.surface_points, seed=step).point.to(self.box)
            surface = self.canonical_sdf(self.normalize(on_mesh), self.neutral_condition(len(on_mesh), on_mesh)).sdf.abs().mean()
            loss = loss + c.surface_weight * surface
            logs["surface"] = float(surface.detach())
        return StepOutput(loss=loss, rgb=out.composite.rgb, logs=logs)


def build(parametric: ParametricModel, train_frames: FrameSet, config: TriangleNeusConfig | None = None) -> TriangleNeus:
    """The model benchmarks/compare.py trains (``train_frames`` unused: the model keeps nothing per frame)."""
    return TriangleNeus(parametric, config)


def main() -> None:
    parser = training_parser(__doc__.split("\n")[0], "outputs/mix_triangle_neus", minutes=5.0, rays=RAYS_PER_BATCH)
    args = parser.parse_args()

    device = init_distributed(args.device)  # under torchrun: this rank's device, in the process group
    subject = load_subject(args.data, args.model, args.eval_split, device=device)
    train_frames, eval_frames, parametric = subject.train, subject.eval, subject.parametric
    model = build(parametric, train_frames).to(device)
    training = training_config(args, frames_per_batch=FRAMES_PER_BATCH, eval_every=500)
    metrics = train(model, train_frames, eval_frames, args.out, training, device=device)
    print(rounded(metrics))
    destroy_distributed()


if __name__ == "__main__":
    main()
