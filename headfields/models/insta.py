"""INSTA (Zielonka, Bolkart, Thies; CVPR 2023), assembled from public headfields primitives.

sample (occupancy-grid marching through INSTA's box) → deform (nearest posed FLAME triangle's frame; the
eye-region triangles scaled by their area change, the face triangles blending their neighbours' frames) → encode
(hash grid in the unit box) → decode (NeRF MLPs; the first 16 expression coefficients enter the density MLP only
near the lips) → composite → instant-ngp's Huber loss with lips and mouth up-weighted after a warm-up, and a depth
prior from the posed mesh (ray cast) on INSTA's allow-list of face-parsing labels.

Two recipes: :func:`paper_config`, equal to ``InstaConfig()``, is INSTA's code (``configs/nerf/main.json``, ``src/``
and the instant-ngp it ships); :func:`cpu_config` has the sizes a 15-minute run on a 2-core CPU affords.
docs/insta.md tabulates them with their sources.

    model = Insta(parametric, frames.segmentation_labels, cpu_config())  # or paper_config() on a GPU
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from ..cameras import Rays
from ..checks import check_count, check_positive
from ..data import INSTA_FACE_PARSING
from ..decoders import NerfDecoder, NerfDecoderConfig
from ..deformers import Deformer, TriangleFrameDeformer
from ..encoders import HashGrid, HashGridConfig, SphericalHarmonics
from ..fields import NerfField, RegionExpression, UnitBox, inflated_box
from ..heads import MOUTH_REGIONS, mesh_depth, present_regions
from ..losses import (
    HUBER_DELTA,
    INSTA_DEPTH_WEIGHT,
    INSTA_MOUTH_WARMUP_STEPS,
    INSTA_MOUTH_WEIGHT,
    depth_loss,
    ngp_huber_loss,
)
from ..parametric import Head, SubjectModel
from ..renderers import (
    CPU_SHELL,
    EARLY_STOP_TRANSMITTANCE,
    NerfRender,
    OccupancySampler,
    RenderContext,
    render_nerf,
    render_nerf_inference,
)
from ..renderers.occupancy import CONE_ANGLE, GRID_WARMUP_STEPS, INSTA_CONE_ANGLE
from ..training import AvatarModel, OptimizerConfig, RayBatch, StepOutput, TrainingConfig, random_backgrounds
from .method import CPU_SAMPLES_PER_BATCH, INFERENCE_CHUNK, Method, Recipe

__all__ = [
    "INSTA_HASH_GRID",
    "Insta",
    "InstaConfig",
    "InstaFaceMasks",
    "METHOD",
    "PAPER_TRAINING",
    "cpu_config",
    "insta_deformer",
    "insta_face_masks",
    "paper_config",
    "unread_recipe_fields",
]

# INSTA's hash grid (configs/nerf/main.json "encoding": 16 levels of 8 features, 2^18 rows, base resolution 16).
# The finest level has 2048 cells over the unit cube: instant-ngp's testbed.cu sets per_level_scale from its
# `desired_resolution` 2048 x aabb_scale 1, i.e. (2048 / 16)^(1/15) ~ 1.382.
INSTA_HASH_GRID = HashGridConfig(levels=16, features_per_level=8, log2_table_size=18, base_resolution=16, finest_resolution=2048)
# INSTA's box: instant-ngp's unit cube (aabb_scale 1; NERF_SCALE = MESH_SCALE = 1, nerf_loader.h) with the meshes and
# cameras shifted by +0.5 (tiny_mesh.cu load, nerf_loader.h mica_matrix_to_ngp): a 1 m cube centred on the
# tracking frame's origin. The hash grid, the occupancy grid and the marching all live in it.
INSTA_BOX_SIZE = 1.0
INSTA_OCCUPANCY_RESOLUTION = 128  # NERF_GRIDSIZE() (instant-ngp's nerf.h)
INSTA_STEPS_PER_DIAGONAL = 1024  # NERF_STEPS(): steps of sqrt(3)/1024 of the unit cube (testbed_nerf.cu)
INSTA_RENDER_BOX_INFLATION = 0.15  # tiny_mesh.cu: a mesh's box grown by 0.15 of its diagonal (the CPU recipe's box)
# INSTA's optimiser (main.json "optimizer"): an EMA (decay 0.95) of Adam at 1.75e-3, betas 0.9 / 0.99, eps 1e-15,
# l2_reg 1e-6, which tiny-cuda-nn's Adam applies to the MLP weights only ("No L2 reg for non-matrix params": not
# to the hash grid; Insta.param_groups).
INSTA_OPTIMIZATION = OptimizerConfig(1.75e-3, betas=(0.9, 0.99), eps=1e-15, weight_decay=1e-6, ema_decay=0.95)
# INSTA's PyTorch port (Zielon/INSTA-pytorch main_insta.py) trains at 2.5e-3: the CPU recipe's rate.
INSTA_PYTORCH_LEARNING_RATE = 2.5e-3
# INSTA's depth prior applies only where the face parser's code is in (90, 250] (compute_loss_kernel_train_nerf in
# the instant-ngp INSTA ships: `if (mask_id <= 90 || mask_id > 250) depth_supervision_lambda = 0`): the face,
# ears, eyes, mouth and neck, not cloth (90), hair (80), hat (70) or the background. headfields' synthetic head
# names three of those regions its own way: lips, teeth (the mouth's inside) and eyes.
INSTA_DEPTH_CODES = (90, 250)  # exclusive, inclusive
INSTA_DEPTH_REGIONS = tuple(n for n, code in INSTA_FACE_PARSING.items() if INSTA_DEPTH_CODES[0] < code <= INSTA_DEPTH_CODES[1])
INSTA_DEPTH_REGIONS += ("lips", "teeth", "eyes")
# INSTA's triangle masks (src/masking.cpp, include/rta/masking.h): a triangle takes the LAST mask, in the enum's
# order (boundary 0, eye region 1, face 2, left ear 4, lips 7, right ear 10), that ANY of its vertices lies in.
# Eye region: area scaling (affine.cuh tri2projection: mask_id == 1); face: neighbour blending (core.cu warp:
# mask_id == 2); lips: the expression (core.cu warp: ones where mask_id != 7). The boundary mask ranks below the
# others, so it changes none of the three. Our region names for each mask: FLAME_masks.pkl's, then stand-ins of
# the synthetic head (skin, eyes) and of the face parser (headfields.data.INSTA_FACE_PARSING).
INSTA_SCALE_REGIONS = ("eye_region", "eyes", "left_eye", "right_eye")
INSTA_BLEND_REGIONS = ("face", "skin", "nose", "left_brow", "right_brow")
INSTA_LEFT_EAR_REGIONS, INSTA_RIGHT_EAR_REGIONS = ("left_ear",), ("right_ear",)


@dataclass(frozen=True)
class InstaConfig:
    """INSTA's recipe as its code trains (configs/nerf/main.json, src/, its instant-ngp; docs/insta.md has the
    table with the source of each number). ``InstaConfig() == paper_config()``; :func:`cpu_config` is the CPU-sized
    recipe. Region names are alternatives: those a model has are used (``()`` turns an option off). What INSTA's
    code does that no field here controls (its occupancy-refresh schedule, random training backgrounds) is listed
    in docs/insta.md."""

    hash_grid: HashGridConfig = INSTA_HASH_GRID  # 16 levels x 8 features, 2^18 rows, 16 -> 2048
    decoder: NerfDecoderConfig = field(default_factory=NerfDecoderConfig)  # 64 wide MLPs, 15 geometry features
    sh_degree: int = 4
    expression_dims: int = 16  # first FLAME expression coefficients fed near the lips (main.json exp_params)
    lips_regions: tuple[str, ...] = MOUTH_REGIONS  # INSTA's lips mask: its triangles' samples see the expression
    scale_regions: tuple[str, ...] = INSTA_SCALE_REGIONS  # eye-region mask: frames scaled by the area change
    blend_regions: tuple[str, ...] = INSTA_BLEND_REGIONS  # face mask: neighbour blending
    left_ear_regions: tuple[str, ...] = INSTA_LEFT_EAR_REGIONS  # ear masks outrank the face mask: not blended
    right_ear_regions: tuple[str, ...] = INSTA_RIGHT_EAR_REGIONS  # ... and the right ear outranks the lips too
    box_size: float | None = INSTA_BOX_SIZE  # cube of this side (metres) around the origin; None: the mesh's box
    box_inflation: float = INSTA_RENDER_BOX_INFLATION  # box_size None: the canonical mesh's box grown by this x diagonal
    occupancy_resolution: int = INSTA_OCCUPANCY_RESOLUTION
    occupancy_decay: float = 0.95  # instant-ngp's density_grid_decay
    occupancy_threshold: float = 0.01  # NERF_MIN_OPTICAL_THICKNESS of one step, capped at the grid's mean
    occupancy_every: int = 16  # steps between refreshes (instant-ngp: every step at first, every 16 from step 256)
    # Refreshes evaluate every cell until this step, then a quarter uniformly and a quarter among the occupied
    # cells (instant-ngp); None: every cell at every refresh.
    occupancy_warmup: int | None = GRID_WARMUP_STEPS
    steps_per_diagonal: int = INSTA_STEPS_PER_DIAGONAL  # the (smallest) marching step: box diagonal / this
    cone_angle: float = INSTA_CONE_ANGLE  # step growth with distance; 0: constant steps (INSTA's aabb_scale 1)
    shell: float | None = None  # metres from the frame's posed mesh beyond which samples are skipped (None: off)
    mouth_weight: float = INSTA_MOUTH_WEIGHT  # lips and mouth pixels weigh this much after the warm-up
    mouth_regions: tuple[str, ...] = MOUTH_REGIONS  # INSTA: codes 120, 130, 140 (lower lip, upper lip, mouth)
    warmup_steps: int = INSTA_MOUTH_WARMUP_STEPS
    depth_weight: float = INSTA_DEPTH_WEIGHT
    depth_regions: tuple[str, ...] = INSTA_DEPTH_REGIONS  # segmentation labels that get the depth prior
    huber_delta: float = HUBER_DELTA
    optimization: OptimizerConfig = INSTA_OPTIMIZATION
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)  # INSTA renders over white (testbed.h)
    # Training composites the rays of pixels that saw only the background over random colours, their targets
    # (instant-ngp's random_bg_color, testbed_nerf.cu; headfields.training.random_backgrounds): empty space cannot
    # pass for the background's colour, so it learns no density and the occupancy grid empties around the head (a
    # white fog over white costs no loss, and its samples the renderer's time). Frames without masks: ``background``.
    random_background: bool = True

    def __post_init__(self) -> None:
        check_positive("box_size", self.box_size)
        if self.occupancy_warmup is not None:
            check_count("occupancy_warmup", self.occupancy_warmup, 0)
        if not (isinstance(self.cone_angle, int | float) and math.isfinite(self.cone_angle) and self.cone_angle >= 0):
            raise ValueError(f"cone_angle: expected a finite non-negative number, got {self.cone_angle!r}")


def paper_config(**overrides) -> InstaConfig:
    """INSTA's recipe (``InstaConfig()``), then ``overrides``."""
    return InstaConfig(**overrides)


def cpu_config(**overrides) -> InstaConfig:
    """The sizes a 15-minute run on a 2-core CPU affords (benchmarks/ablations/insta.py), then ``overrides``; the rest is the
    paper's. 2 features a level instead of 8 (a quarter of the grid's reads, writes and table); the box of the
    canonical mesh grown by 0.15 of its diagonal instead of a 1 m cube, with a 64^3 grid and steps of its diagonal /
    256 growing with distance (1/256): the cells and samples land on the head; the 3 cm mesh shell (it skips the
    empty space the young grid still marks occupied); INSTA's PyTorch port's learning rate, 2.5e-3, for the short
    run."""
    sizes = dict(
        hash_grid=HashGridConfig(),
        box_size=None,
        occupancy_resolution=64,
        steps_per_diagonal=256,
        cone_angle=CONE_ANGLE,
        shell=CPU_SHELL,
        optimization=dataclasses.replace(INSTA_OPTIMIZATION, learning_rate=INSTA_PYTORCH_LEARNING_RATE),
    )
    return InstaConfig(**{**sizes, **overrides})


@dataclass
class InstaFaceMasks:
    """INSTA's per-triangle options over a head's faces (None: the option is off)."""

    scale: Bool[Tensor, " F"] | None  # eye region: the posed frame scaled by the area change
    blend: Bool[Tensor, " F"] | None  # face: the posed and canonical frames blended with the neighbours'
    lips: Bool[Tensor, " F"]  # lips: the samples see the expression


def insta_deformer(masks: InstaFaceMasks) -> TriangleFrameDeformer:
    """INSTA's triangle-frame deformer: eye triangles scaled by their area ratio, face triangles blended with their
    neighbours (``masks``: :func:`insta_face_masks` of the subject's neutral head)."""
    return TriangleFrameDeformer(scale_faces=masks.scale, blend_faces=masks.blend)


def insta_face_masks(head: Head, config: InstaConfig) -> InstaFaceMasks:
    """INSTA's triangle masks from ``head``'s regions (src/masking.cpp): a face takes the last of eye region, face,
    left ear, lips, right ear (INSTA's enum order) that any of its vertices lies in. Each mask is the union of the
    configured regions the head has. The lips must find one; so must the eye region and the face unless configured
    ``()`` (off); the ears may be absent (the synthetic head has none)."""
    known = head.regions

    def touching(name: str, regions: tuple[str, ...], required: bool) -> Bool[Tensor, " F"] | None:
        if not regions:
            return None
        present = [r for r in regions if r in known]
        if required and not present:
            raise ValueError(
                f"{name}: expected at least one of {list(regions)} among the head's regions {sorted(known)} "
                f"({name}=() turns the option off)"
            )
        inside = torch.zeros(head.canonical_vertices.shape[0], dtype=torch.bool, device=head.faces.device)
        for region in present:
            inside[known[region]] = True
        return inside[head.faces].any(dim=-1)

    if not config.lips_regions:
        raise ValueError("lips_regions: expected at least one region name (INSTA's lips mask), got ()")
    order = [  # INSTA's ids 1, 2, 4, 7, 10
        touching("scale_regions", config.scale_regions, True),
        touching("blend_regions", config.blend_regions, True),
        touching("left_ear_regions", config.left_ear_regions, False),
        touching("lips_regions", config.lips_regions, True),
        touching("right_ear_regions", config.right_ear_regions, False),
    ]
    label = torch.full(head.faces.shape[:1], -1, dtype=torch.long, device=head.faces.device)
    for rank, mask in enumerate(order):
        if mask is not None:
            label[mask] = rank
    scale, blend, _, lips, _ = (None if mask is None else label == rank for rank, mask in enumerate(order))
    return InstaFaceMasks(scale=scale, blend=blend, lips=lips)


def unread_recipe_fields(config: InstaConfig) -> dict[str, str]:
    """The settings the recipe leaves unread (dotted name -> why; the registry refuses a change to them): the mesh
    box's inflation inside INSTA's fixed cube."""
    return {"box_inflation": f"with box_size={config.box_size} (INSTA's cube)"} if config.box_size is not None else {}


def insta_box(canonical_vertices: Tensor, config: InstaConfig) -> Tensor:
    """The render box ``[2, 3]``: INSTA's cube of side ``box_size`` around the origin, or (``box_size`` None) the
    canonical mesh's box grown by ``box_inflation`` of its diagonal. The canonical mesh must lie in the cube."""
    if config.box_size is None:
        return inflated_box(canonical_vertices, config.box_inflation)
    half = config.box_size / 2
    box = torch.tensor([[-half] * 3, [half] * 3], dtype=canonical_vertices.dtype, device=canonical_vertices.device)
    low, high = canonical_vertices.amin(0), canonical_vertices.amax(0)
    if (low < box[0]).any() or (high > box[1]).any():
        raise ValueError(
            f"box_size: the canonical mesh spans {low.tolist()} to {high.tolist()}, outside the {config.box_size} m cube "
            "around the origin (INSTA's box); pass a larger box_size or box_size=None (the mesh's own box)"
        )
    return box


class Insta(AvatarModel):
    """INSTA (see the module docstring): ``field`` a NeRF on the triangle-frame deformer, ``sampler`` its occupancy
    grid's march."""

    captures_graph = True  # (graph_phase)

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
        # The recipe's background as a buffer: it moves with the model, and a step copies nothing from the host.
        self.register_buffer("background", torch.tensor(c.background, dtype=torch.float32), persistent=False)
        self.optimization = c.optimization
        self.parametric = parametric.requires_grad_(False)
        if c.expression_dims > parametric.num_expression:  # a capture's expression files may hold fewer
            raise ValueError(
                f"expression_dims: expected at most the subject's {parametric.num_expression} expression coefficients, "
                f"got {c.expression_dims}"
            )
        neutral = parametric()
        box = insta_box(neutral.canonical_vertices, c)
        encoder = encoder if encoder is not None else HashGrid(c.hash_grid)
        if not isinstance(getattr(encoder, "out_dim", None), int):
            raise TypeError(f"encoder: expected a module with an int out_dim, got {type(encoder).__name__}")
        masks = insta_face_masks(neutral, c)
        deformer = deformer if deformer is not None else insta_deformer(masks)
        directions = SphericalHarmonics(c.sh_degree)
        self.field = NerfField(
            deformer,
            encoder,
            NerfDecoder(encoder.out_dim, directions.out_dim, c.expression_dims, c.decoder),
            directions,
            UnitBox(box),
            RegionExpression(c.expression_dims, masks.lips, outside=1.0),  # ones away from the lips, as INSTA feeds
        )
        grid = (c.occupancy_resolution, c.steps_per_diagonal, c.occupancy_every, c.occupancy_decay, c.occupancy_threshold)
        self.sampler = OccupancySampler(box, *grid, shell=c.shell, cone_angle=c.cone_angle, warmup_steps=c.occupancy_warmup)
        labels = dict(segmentation_labels)
        self.mouth_labels = [labels[r] for r in present_regions("mouth_regions", c.mouth_regions, labels)]
        self.depth_labels = [labels[r] for r in present_regions("depth_regions", c.depth_regions, labels)]
        # The same as tensors that move with the model, so that a step makes no host-to-device copy of them.
        self.register_buffer("mouth_codes", torch.tensor(self.mouth_labels, dtype=torch.long), persistent=False)
        self.register_buffer("depth_codes", torch.tensor(self.depth_labels, dtype=torch.long), persistent=False)
        # The mouth's loss weight and the other rays', for the step's where (two Python numbers: two tensors a step).
        self.register_buffer("mouth_weights", torch.tensor([c.mouth_weight, 1.0]), persistent=False)

    def param_groups(self) -> list[dict]:
        """The hash grid's table apart, without weight decay: tiny-cuda-nn's Adam, which INSTA trains with, puts its
        L2 regulariser on the MLP weights only ("No L2 reg for non-matrix params")."""
        grid = [p for m in self.field.modules() if isinstance(m, HashGrid) for p in m.parameters()]
        ids = {id(p) for p in grid}
        rest = [p for p in self.parameters() if id(p) not in ids]
        return [{"params": rest}, *([{"params": grid, "weight_decay": 0.0}] if grid else [])]

    def graph_phase(self, step: int) -> bool | None:
        """What :meth:`training_step` decides by the step number: the mouth's weight, on after ``warmup_steps``
        (``TrainingConfig.cuda_graph`` captures a phase once); None in the occupancy grid's warm-up, whose refreshes
        move the rays a step needs many times over (each new shape would be captured again): no graph yet."""
        c = self.config
        return None if step < (c.occupancy_warmup or 0) else step >= c.warmup_steps

    @property
    def random_background(self) -> bool:
        """Whether training draws random backgrounds (the loop then draws ``RayBatch.backgrounds``)."""
        return self.config.random_background

    def radiance_field(self) -> NerfField:
        return self.field

    def render(
        self,
        rays: Rays,
        head: Head,
        context: RenderContext | None = None,
        background: Float[Tensor, "R 3"] | None = None,
    ) -> NerfRender:
        """The rays rendered over ``background`` (a colour a ray; None: the recipe's) as the step's ``context`` says
        (:func:`~headfields.renderers.render_nerf`)."""
        if background is None:
            background = self.background
        return render_nerf(self.field, rays, head, self.sampler, background, context)

    def render_rays(self, rays: Rays, head: Head, early_stop: float = EARLY_STOP_TRANSMITTANCE) -> torch.Tensor:
        """The colours by the inference renderer (rounds over the live rays, stopped at transmittance ``early_stop``)."""
        background = self.background
        with self.sampler.frame_shells():  # an image's chunks: the frame's shell classified once
            return render_nerf_inference(self.field, rays, head, self.sampler, background, early_stop).rgb

    def before_step(self, step: int, head: Head) -> None:
        self.sampler.refresh(self.field, head, step)

    def training_step(self, batch: RayBatch, step: int) -> StepOutput:
        c = self.config
        target, background = batch.rgb, None
        if c.random_background and batch.mask is not None:
            fixed = self.background.to(target.dtype)
            drawn = batch.backgrounds  # the loop's; a batch made by hand: the step's generator's first draw, as there
            if drawn is None:
                drawn = torch.rand(target.shape, generator=batch.context.generator, device=target.device)
            background, target = random_backgrounds(target, batch.mask, fixed, drawn)
        rendered = self.render(batch.rays, batch.head, batch.context, background)
        result = rendered.composite
        weight, fits = None, rendered.fits  # fits: None, or the rays the renderer kept (the others weigh 0)
        if step >= c.warmup_steps and batch.segmentation is not None:
            mouth, other = self.mouth_weights
            weight = torch.where(torch.isin(batch.segmentation, self.mouth_codes), mouth, other)
        if fits is not None:  # (times the bool mask itself where there are weights: the same products, no cast first)
            weight = rendered.loss_weight if weight is None else weight * fits
        loss = ngp_huber_loss(result.rgb, target, delta=c.huber_delta, weight=weight)
        logs = {}
        # INSTA's depth prior needs the segmentation: without it no ray is on the allow-list.
        if c.depth_weight > 0 and batch.segmentation is not None:
            prior = mesh_depth(batch.head, batch.rays)
            keep = (prior > 0) & torch.isin(batch.segmentation, self.depth_codes)
            keep = keep if fits is None else keep & fits
            # Summed over the kept rays and divided by all of them (instant-ngp divides every ray's gradient by the
            # number of rays): the mean over the kept rays times their share.
            share = keep.sum() / max(keep.numel(), 1)  # (a tensor: no read-back)
            depth = depth_loss(result.depth, prior, keep) * share
            loss = loss + c.depth_weight * depth
            logs["depth"] = depth.detach()  # read when the loop logs, not every step
        rgb = result.rgb
        if background is not None:  # the running PSNR reads the colours over the recipe's background, as the frames
            rgb = rgb.detach() + (1 - result.opacity.detach())[:, None] * (fixed - background)
        return StepOutput(loss=loss, rgb=rgb, logs=logs, samples=rendered.count)


# INSTA's paper recipe trains as its instant-ngp fork does (testbed_nerf.cu): 2^18 trained samples a step, the rays
# adapting to fill them (target_batch_size), a ray's samples behind transmittance 1e-4 not trained (the training
# march's early termination), in shapes fixed so that a step reads nothing back from the device. It renders a 512²
# frame in one call: on an H100 a call's fixed work (the march's read-back, each round's launches) is what a frame of a
# few million samples spends its time on, and four calls of 2^16 rays took 124 ms against 63 ms for one (docs/insta.md).
PAPER_TRAINING = {"samples_per_batch": 1 << 18, "early_stop": 1e-4, "fixed_shapes": True, "render_chunk": 1 << 18}


def _build(subject, config: InstaConfig) -> Insta:
    return Insta(subject.parametric, subject.train.segmentation_labels, config)


METHOD = Method(
    "insta",
    _build,
    {"paper": Recipe(paper_config, PAPER_TRAINING), "cpu": Recipe(cpu_config, CPU_SAMPLES_PER_BATCH)},
    InstaConfig,
    training=TrainingConfig(max_minutes=15.0, rays_per_batch=2048, eval_every=500, render_chunk=INFERENCE_CHUNK),
    unread_recipe=unread_recipe_fields,
)
