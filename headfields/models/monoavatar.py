"""MonoAvatar (Bai et al., CVPR 2023), assembled from public headfields primitives.

sample (NeRF's coarse pass, then its fine pass on the coarse and the importance samples together) → deform (the
tracked head's motion undone, then, in training only, an SE(3) error-correction field with a per-frame latent)
→ encode (a UV-space CNN turns each frame's vertex displacements (variant D) or codes (C) into 64-d vertex
features, shared by the two networks; a sample blends its 4 nearest posed vertices' per-neighbour MLP outputs,
one MLP per network) → decode (each network's NeRF MLPs) → composite → MSE of both passes + the correction's
elastic and magnitude terms.

    model = MonoAvatar(parametric, len(train_frames), paper_config())  # or cpu_config() for a CPU run
    coarse, fine = model.render_passes(rays, head)  # model.render_rays(rays, head): the fine pass's colours
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from jaxtyping import Int
from torch import Tensor

from ..cameras import Rays
from ..checks import check_count, check_positive
from ..decoders import NerfDecoder, NerfDecoderConfig
from ..deformers import DeformerChain, ErrorCorrectionConfig, ErrorCorrectionField, RigidDeformer, RigidDeformerConfig
from ..encoders import (
    ConcatEncoder,
    FrequencyEncoding,
    MeshAnchoredConfig,
    MeshAnchoredEncoder,
    MeshFeatureEncoder,
    UVCodeDecoderConfig,
    UVUNetConfig,
    VertexFeatureKind,
)
from ..encoders.mesh_features import feature_kind
from ..fields import NerfField, UnitBox, inflated_box
from ..losses import mse_loss
from ..parametric import Head, ParametricModel, SubjectModel, add_mouth_interior
from ..renderers import (
    CPU_SHELL,
    EARLY_STOP_TRANSMITTANCE,
    NerfPasses,
    NerfRender,
    RenderContext,
    StratifiedSampler,
    importance_samples,
    merge_samples,
    nerf_weights_inference,
    render_nerf_inference,
    render_nerf_passes,
)
from ..training import AvatarModel, OptimizerConfig, RayBatch, StepOutput, TrainingConfig
from .method import INFERENCE_CHUNK, Method, Recipe

__all__ = [
    "METHOD",
    "MonoAvatar",
    "MonoAvatarConfig",
    "cpu_config",
    "paper_config",
    "unread_recipe_fields",
    "unread_settings",
]

# NeRF (Mildenhall et al. 2020), whose coarse + fine sampling MonoAvatar follows: 64 coarse and 128 fine samples
# per ray; PAPERS.md gives MonoAvatar's no counts of its own.
NERF_COARSE_SAMPLES = 64
NERF_FINE_SAMPLES = 128
# MonoAvatar (PAPERS.md): Adam, lr 1e-3 -> 1e-4 (exponential) over 400k iterations, no moving average named.
MONOAVATAR_OPTIMIZATION = OptimizerConfig(1e-3, 1e-4, 400_000)


@dataclass(frozen=True)
class MonoAvatarConfig:
    """MonoAvatar's recipe (PAPERS.md; ``paper_config()``). NeRF's two networks, coarse and fine, both supervised;
    the fine one renders the coarse and the importance samples together and is what evaluation renders. Where the
    paper is silent: the two networks share the vertex-feature CNN and each has its own per-neighbour MLP and
    decoder; 64 + 128 samples per ray (NeRF's); the error correction's latent width and the shape of the elastic
    weight's decay (log-linear). Departures: the elastic loss is a plain mean over a random subset of the fine
    samples (Nerfies weights it by the rendering weights); the magnitude loss is in units of the correction's
    ``length_scale``. docs/monoavatar.md tabulates every setting against the paper and ``cpu_config()``."""

    # D (the paper's best), "code_cnn" (C), or an ablation row: "codes_mlp", "codes", "static"; "code" = "code_cnn"
    features: VertexFeatureKind = "displacement"
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
    coarse_samples: int = NERF_COARSE_SAMPLES  # per ray, the coarse network's
    fine_samples: int = NERF_FINE_SAMPLES  # per ray, drawn from the coarse weights; the fine network reads both
    padding: float = 0.03  # metres around each frame's posed-mesh box, where rays are sampled
    shell: float | None = None  # metres from the frame's mesh beyond which coarse samples are dropped (None: keep all)
    box_inflation: float = 0.15  # the point encoder's box: canonical mesh box inflated by this fraction of its diagonal
    error_correction: ErrorCorrectionConfig | None = field(default_factory=ErrorCorrectionConfig)  # None: none
    correction_samples: int = 1024  # fine samples per step whose correction Jacobian enters the elastic loss
    optimization: OptimizerConfig = MONOAVATAR_OPTIMIZATION  # the correction's group at error_correction's lr scale

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", feature_kind("features", self.features))  # "code" -> "code_cnn"
        for name in ("feature_dim", "uv_resolution", "direction_frequencies", "coarse_samples", "fine_samples"):
            check_count(name, getattr(self, name), 1)
        check_count("correction_samples", self.correction_samples, 0)
        # The UV network the features read matches them (the other is not built: unread_settings).
        if self.features == "code_cnn" and self.code_decoder.resolution != self.uv_resolution:
            got = self.code_decoder.resolution
            raise ValueError(f"code_decoder: expected resolution = uv_resolution = {self.uv_resolution}, got {got}")
        networks = {"displacement": ("unet", self.unet), "code_cnn": ("code_decoder", self.code_decoder)}
        name, network = networks.get(self.features, (None, None))
        if network is not None and network.out_channels != self.feature_dim:
            raise ValueError(f"{name}: expected out_channels = feature_dim = {self.feature_dim}, got {network.out_channels}")
        for name in ("padding", "shell", "box_inflation"):
            check_positive(name, getattr(self, name))


def unread_settings(config: MonoAvatarConfig) -> dict[str, str]:
    """The fields of ``config`` its own settings leave unread (dotted name -> why): the UV network the vertex
    features do not use, and the correction's samples without a correction."""
    why, unread = f"with features={config.features!r}", {}
    if config.features != "code_cnn":
        unread["code_decoder"] = why
    if config.features != "displacement":
        unread["unet"] = why
    if config.features not in ("displacement", "code_cnn"):  # (code_cnn's resolution: code_decoder's, held equal)
        unread["uv_resolution"] = why
    if config.error_correction is None:
        unread["correction_samples"] = "with error_correction=None"
    return unread


def unread_recipe_fields(config: MonoAvatarConfig) -> dict[str, str]:
    """What MonoAvatar's run leaves unread (the registry refuses a change to them): :func:`unread_settings`, and
    the point encoder's box, which only a model given a point encoder reads (the anchored hash grid mix)."""
    return {**unread_settings(config), "box_inflation": "without a point encoder (the anchored hash grid mix has one)"}


def paper_config(**overrides) -> MonoAvatarConfig:
    """MonoAvatar's sizes and schedules (``MonoAvatarConfig()``, the default), then ``overrides``."""
    return MonoAvatarConfig(**overrides)


def cpu_config(**overrides) -> MonoAvatarConfig:
    """The sizes a 15-minute run on a 2-core CPU affords (benchmarks/ablations/monoavatar.py), then ``overrides``: 128 x 128
    UV maps; 24 coarse and 16 fine samples per ray, and coarse samples beyond 3 cm of the mesh dropped (the
    shell: most of a ray's box is empty air around the face), so that a step with both networks trained costs
    what the one-network recipe's 48 + 32 samples did (0.92-1.04x, measured); the learning rate and the elastic weight
    decaying tenfold over 5,000 steps, and the error correction's warm-up and coarse-to-fine window shortened in
    proportion to the ~1,000 iterations; a moving average of the weights (0.95) for evaluation, which the paper
    does not name: a short run ends at a high learning rate, and the average was 0.8 dB ahead of the raw weights
    after 400 steps (docs/monoavatar.md)."""
    sizes = dict(
        uv_resolution=128,
        code_decoder=UVCodeDecoderConfig(resolution=128),
        coarse_samples=24,
        fine_samples=16,
        shell=CPU_SHELL,
        error_correction=ErrorCorrectionConfig(start_step=300, window_steps=2_000, elastic_decay_steps=5_000),
        optimization=OptimizerConfig(1e-3, 1e-4, 5_000, ema_decay=0.95),
    )
    return MonoAvatarConfig(**{**sizes, **overrides})


class MonoAvatar(AvatarModel):
    """MonoAvatar: ``field`` is the fine network (what evaluation renders), ``coarse_field`` the coarse one; both
    read the same deformer chain and vertex features. ``sampler`` draws the coarse samples."""

    steps_on_frames = True  # its UV CNN runs on the batch's drawn frames (RayBatch.drawn_frames)
    captures_graph = True  # (graph_phase)

    def __init__(self, parametric: SubjectModel, num_frames: int, config: MonoAvatarConfig | None = None, point_encoder=None):
        """``num_frames``: training frames (one error-correction latent each). ``point_encoder`` (none in the
        paper): an encoder of the sample's head-frame position in the unit box (e.g. a hash grid, with an
        ``out_dim``), whose features join the fine network's mesh-anchored ones at its decoder's input (the
        coarse network, which only places the fine samples, stays as in the paper)."""
        super().__init__()
        self.config = c = config or MonoAvatarConfig()
        self.optimization, self.parametric = c.optimization, parametric.requires_grad_(False)
        joint = parametric.joint_index(c.head_joint, "head_joint")
        n, sizes = parametric(), (c.feature_dim, c.uv_resolution, c.unet, c.code_decoder)
        encoder = MeshFeatureEncoder.build(c.features, n, joint, c.anchored, *sizes)
        # The coarse network: its own per-neighbour MLP on the same vertex features (one UV CNN for both).
        coarse_encoder = encoder.sibling(MeshAnchoredEncoder(encoder.anchored.feature_dim, c.anchored))
        if point_encoder is not None:  # it reads the head-frame point in the unit box, beside the anchored features
            if not isinstance(getattr(point_encoder, "out_dim", None), int):
                raise TypeError(f"point_encoder: expected a module with an int out_dim, got {type(point_encoder).__name__}")
            box = UnitBox(inflated_box(n.canonical_vertices, c.box_inflation))
            encoder = ConcatEncoder((encoder, None), (point_encoder, box))
        self.correction, deformers = None, [RigidDeformer(RigidDeformerConfig(joint=joint))]
        if c.error_correction is not None:
            self.correction = ErrorCorrectionField(check_count("num_frames", num_frames, 1), c.error_correction)
            deformers.append(self.correction)  # the identity outside training and before its start step
        deformer = DeformerChain(*deformers)  # one chain, one correction, for both networks
        directions = FrequencyEncoding(3, c.direction_frequencies)
        self.field = NerfField(deformer, encoder, NerfDecoder(encoder.out_dim, directions.out_dim, 0, c.decoder), directions)
        coarse_decoder = NerfDecoder(coarse_encoder.out_dim, directions.out_dim, 0, c.decoder)
        self.coarse_field = NerfField(deformer, coarse_encoder, coarse_decoder, directions)
        self.sampler = StratifiedSampler(c.coarse_samples, padding=c.padding, shell=c.shell)

    def param_groups(self) -> list[dict]:
        """The optimiser's groups: everything at the model's rate, the error correction at its ``learning_rate_scale``
        of it (MonoAvatar: 1e-4 → 1e-5 against 1e-3 → 1e-4)."""
        if self.correction is None:
            return [{"params": list(self.parameters()), "lr_scale": 1.0}]
        correction = list(self.correction.parameters())
        ids = {id(p) for p in correction}
        rest = [p for p in self.parameters() if id(p) not in ids]
        return [
            {"params": rest, "lr_scale": 1.0},
            {"params": correction, "lr_scale": self.correction.config.learning_rate_scale},
        ]

    def render_passes(
        self,
        rays: Rays,
        head: Head,
        context: RenderContext | None = None,
        frames: Int[Tensor, " K"] | None = None,
    ) -> NerfPasses:
        """NeRF's two passes (:func:`~headfields.renderers.render_nerf_passes`): the coarse network on the sampler's
        samples, then the fine network on those and ``fine_samples`` more per ray drawn from the coarse weights, as
        the step's ``context`` says. ``frames``: every frame of the rays, sorted and distinct
        (``RayBatch.drawn_frames``); None: found from the rays (one read-back)."""
        background = torch.ones(3, device=rays.origins.device)
        if frames is None:
            frames = torch.unique(rays.frame)
        # The shared UV CNN: once per frame of the rays for both passes.
        with self.coarse_field.encoder.reuse_frame_features(frames):
            fine = self.config.fine_samples
            return render_nerf_passes(self.coarse_field, self.field, rays, head, self.sampler, fine, background, context)

    def radiance_field(self) -> NerfField:
        return self.field

    def render(self, rays: Rays, head: Head, context: RenderContext | None = None) -> NerfRender:
        """The fine pass (what evaluation renders)."""
        return self.render_passes(rays, head, context).fine

    def render_rays(self, rays: Rays, head: Head, early_stop: float = EARLY_STOP_TRANSMITTANCE) -> Tensor:
        """The fine pass's colours by the inference renderer (both passes in rounds over the live rays, stopped at
        transmittance ``early_stop``; the fine samples drawn from the coarse weights in front of the stop)."""
        background = torch.ones(3, device=rays.origins.device)
        # No gradient: render_nerf_inference's, detached samples; an image's chunks: the frame's shell classified once.
        with self.coarse_field.encoder.reuse_frame_features(), self.sampler.frame_shells():
            samples = self.sampler(rays, head)
            coarse = nerf_weights_inference(self.coarse_field, rays, head, samples, early_stop)  # no coarse colour
            drawn = importance_samples(samples, coarse, self.config.fine_samples)
            fine = merge_samples(samples, drawn)
            return render_nerf_inference(self.field, rays, head, fine, background, early_stop).rgb

    def before_step(self, step: int, head: Head) -> None:
        if self.correction is not None:
            self.correction.set_step(step)

    def graph_phase(self, step: int) -> bool:
        """What :meth:`training_step` decides by the step number (``TrainingConfig.cuda_graph``): whether the error
        correction is on (past its warm-up). Its window and elastic weight, which change every step, are buffers
        that :meth:`before_step` sets."""
        return self.correction is None or step >= self.correction.config.start_step

    def training_step(self, batch: RayBatch, step: int) -> StepOutput:
        rays, frames = batch.rays, batch.drawn_frames()  # (the UV CNN's frames)
        passes = self.render_passes(rays, batch.head, batch.context, frames)
        (coarse, out), weight = passes, passes.loss_weight
        coarse_loss, fine_loss = mse_loss(coarse.composite.rgb, batch.rgb, weight), mse_loss(out.composite.rgb, batch.rgb, weight)
        loss = coarse_loss + fine_loss  # NeRF: both passes supervised alike
        logs = {"coarse": coarse_loss.detach(), "fine": fine_loss.detach()}  # read when the loop logs, not every step
        trained = out.count.trained  # (a count the device holds is not read back: the trained samples come first)
        if self.correction is not None and self.correction.active and (isinstance(trained, Tensor) or trained):
            # A subset drawn with replacement: as many draws whatever the samples.
            g = batch.context.generator or torch.Generator().manual_seed(step)
            draws = torch.rand(self.config.correction_samples, generator=g, device=g.device, dtype=torch.float64)
            some = (draws.to(out.points.device) * trained).long()
            frame = rays.frame[out.samples.ray[some]]
            in_head = self.field.deformer.part(RigidDeformer)(out.points[some].detach(), batch.head, frame).points
            terms = self.correction.regularizers(in_head, frame)
            # (no term where nothing was trained, whose draws all fell on padding: a device count is not read back)
            loss = loss + (terms.total * (trained > 0) if isinstance(trained, Tensor) else terms.total)
            logs.update(elastic=terms.elastic.detach(), magnitude=terms.magnitude.detach())
        return StepOutput(loss=loss, rgb=out.composite.rgb, logs=logs, samples=passes.count)


def _build(subject, config: MonoAvatarConfig) -> MonoAvatar:
    parametric = subject.parametric
    # Real FLAME has no mouth cavity: MonoAvatar anchors features inside it. A capture's own tracked meshes (no
    # model files) fix the topology, so they are used as the tracker made them.
    if isinstance(parametric, ParametricModel) and "mouth_interior" not in parametric.regions:
        if subject.train.params is None:
            raise ValueError(
                "data: a capture with tracked meshes needs a FLAME with a mouth interior for MonoAvatar (its meshes "
                "fix the topology); track with parameters, or use such a model"
            )
        parametric = add_mouth_interior(parametric)
    return MonoAvatar(parametric, len(subject.train), config)


# Two networks a sample and four frames' UV CNN a step: half the other CPU recipes' budget (method.CPU_SAMPLES_PER_BATCH).
CPU_TRAINING = {"samples_per_batch": 1 << 13}

METHOD = Method(
    "monoavatar",
    _build,
    {"paper": Recipe(paper_config), "cpu": Recipe(cpu_config, CPU_TRAINING)},
    MonoAvatarConfig,
    training=TrainingConfig(
        max_minutes=15.0, rays_per_batch=1024, frames_per_batch=4, eval_every=500, render_chunk=INFERENCE_CHUNK
    ),
    unread_recipe=unread_recipe_fields,
)
