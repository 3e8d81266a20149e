"""GaussianAvatars (Qian, Kirschstein, Schoneveld, Davoli, Giebenhain, Nießner; CVPR 2024), assembled from public
headfields primitives: 3D Gaussians bound to the tracked mesh's triangles, rasterised.

bind (each Gaussian's mean, rotation and scale local to its parent face's frame, carried by the posed mesh:
:class:`~headfields.deformers.GaussianSet`) → rasterise (EWA splatting, 16x16 tiles, front-to-back blending:
:func:`~headfields.renderers.rasterize_gaussians`) → (1 − λ) L1 + λ D-SSIM with λ 0.2, and the binding's position and
scale regularisers → adaptive density control whose children keep their parent's face
(:class:`~headfields.models.gaussian_avatars.density.DensityControl`), and each training timestep's FLAME
parameters fine-tuned in the same optimiser (:mod:`~headfields.models.gaussian_avatars.fine_tuning`).

Any tracked mesh carries the Gaussians: FLAME's, SMPL-X's or a capture's own topology. The model renders whole
images (``render_camera``), not rays; it trains through the shared loop (:func:`headfields.training.train`) with
its own steps (:mod:`headfields.models.gaussian_avatars.steps`).

Two recipes: :func:`paper_config` is GaussianAvatars' code (``arguments/__init__.py``: 600,000 iterations, its learning
rates and densification schedule); :func:`cpu_config` keeps its rates and takes 3D Gaussian Splatting's original
30,000-iteration schedule (the values GaussianAvatars' comments give in brackets), which minutes on a CPU reach.

    model = GaussianAvatar(subject.parametric, cpu_config())
    out = model.render_camera(frames.cameras, 0, head, 0)  # GaussianRender: image [H, W, 3], alpha, depth
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...cameras import PinholeCameras
from ...checks import IntLike, check_count, check_non_negative, check_positive
from ...configs import added_field
from ...deformers.gaussian_binding import BindingRegulariserConfig, GaussianSet, PosedGaussians, Splats
from ...parametric import Head, SubjectModel
from ...renderers import GaussianRender, rasterize_gaussians
from ...renderers.gaussians import BACKENDS, Backend
from ...training import AvatarModel
from .density import DensityConfig
from .fine_tuning import FittedTracking
from .steps import GaussianSteps

__all__ = ["GaussianAvatar", "GaussianAvatarConfig", "cpu_config", "paper_config", "unread_recipe_fields"]


@dataclass(frozen=True)
class GaussianAvatarConfig:
    """GaussianAvatars' settings (``arguments/__init__.py``, ``train.py``); positions and scales in the parent face's
    units (its scale ``k``)."""

    sh_degree: int = 3  # ModelParams.sh_degree
    sh_interval: int = 1000  # train.py: one more SH degree every 1000 iterations (oneupSHdegree)
    ssim_weight: float = 0.2  # lambda_dssim: (1 - λ) L1 + λ (1 - SSIM)
    position_lr_init: float = 0.005  # position_lr_init (times the extent, as 3DGS's spatial_lr_scale)
    position_lr_final: float = 0.00005  # position_lr_final
    # get_expon_lr_func's delay: the rate scaled by position_lr_delay_mult rising to 1 over the first
    # position_lr_delay_steps (GaussianAvatars passes no delay steps, so its delay_mult is never read: nor is ours then).
    position_lr_delay_mult: float = 0.01  # GaussianAvatars' (arguments/__init__.py)
    position_lr_delay_steps: int = 0  # get_expon_lr_func's lr_delay_steps (0: no delay)
    position_lr_max_steps: int = 600_000  # position_lr_max_steps
    feature_lr: float = 0.0025  # feature_lr (SH DC; the higher bands at / 20)
    opacity_lr: float = 0.05  # opacity_lr
    scaling_lr: float = 0.017  # scaling_lr
    rotation_lr: float = 0.001  # rotation_lr
    adam_eps: float = 1e-15  # gaussian_model.py training_setup: Adam(..., eps=1e-15)
    # train.py resets opacities at densify_from_iter too when the background is white (GaussianAvatars trains so).
    density: DensityConfig = field(default_factory=lambda: DensityConfig(reset_opacity_at_densify_from=True))
    regularisers: BindingRegulariserConfig = field(default_factory=BindingRegulariserConfig)
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)  # the captures' white (GaussianAvatars: --white_background)
    # FlameGaussianModel always builds FLAME with VHAP's teeth (FlameHead(add_teeth=True)): Gaussians on 168 more faces
    # (headfields.parametric.add_teeth). None: on for FLAME's 5,023 vertices, whose lip rings VHAP's teeth hang from,
    # off for other meshes; a config.json written before the switch existed loads with False, as it was trained.
    teeth: bool | None = added_field(None, before=False)
    # FLAME fine-tuning (fine_tuning.py), on as GaussianAvatars trains (ModelParams.not_finetune_flame_params False):
    # each training timestep's expression, pose and translation in the same Adam, at arguments/__init__.py's rates.
    fine_tune_flame: bool = True
    flame_expression_lr: float = 1e-3  # flame_expr_lr
    flame_pose_lr: float = 1e-5  # flame_pose_lr: FLAME's global rotation, neck, jaw and eyes
    flame_translation_lr: float = 1e-6  # flame_trans_lr
    # Who rasterises (rasterize_gaussians' backend): our Warp kernels, or gsplat's on CUDA (the [gsplat] extra).
    rasterizer: Backend = "warp"

    def __post_init__(self) -> None:
        if self.rasterizer not in BACKENDS:
            raise ValueError(f"rasterizer: expected one of {BACKENDS}, got {self.rasterizer!r}")
        check_count("sh_degree", self.sh_degree, 0, 4)
        check_count("sh_interval", self.sh_interval, 1)
        check_count("position_lr_max_steps", self.position_lr_max_steps, 1)
        check_count("position_lr_delay_steps", self.position_lr_delay_steps, 0)
        check_positive("position_lr_delay_mult", self.position_lr_delay_mult, finite=True)
        if not 0 <= self.ssim_weight <= 1:
            raise ValueError(f"ssim_weight: expected a weight in [0, 1], got {self.ssim_weight}")
        rates = ("position_lr_init", "position_lr_final", "feature_lr", "opacity_lr", "scaling_lr", "rotation_lr")
        for name in (*rates, "flame_expression_lr", "flame_pose_lr", "flame_translation_lr"):
            check_positive(name, getattr(self, name), finite=True)
        check_non_negative("adam_eps", self.adam_eps)  # Adam's own message named no field: "Invalid epsilon value: nan"
        if self.teeth is not None and not isinstance(self.teeth, bool):
            raise TypeError(f"teeth: expected True, False or None (on for FLAME's 5,023 vertices), got {self.teeth!r}")
        if not isinstance(self.fine_tune_flame, bool):
            raise TypeError(f"fine_tune_flame: expected True or False, got {self.fine_tune_flame!r}")
        if len(self.background) != 3 or not all(0 <= c <= 1 for c in self.background):
            raise ValueError(f"background: expected three values in [0, 1], got {self.background}")

    def schedule(self, max_iterations: int, max_minutes: float | None) -> str:
        """The training schedule this recipe runs for a run of ``max_iterations`` steps and ``max_minutes`` (the
        train command prints it when it starts, so a run that will stop early says so)."""
        d = self.density
        stop = (
            f"stopped at {max_minutes:g} minutes (--max-minutes) if the steps take longer"
            if max_minutes is not None
            else "no time limit (--max-minutes sets one)"
        )
        return (
            f"{max_iterations:,} steps, one frame each; density control every {d.densification_interval:,} steps "
            f"after {d.densify_from:,} until {d.densify_until:,}, opacities reset every {d.opacity_reset_interval:,}; "
            f"one more SH degree every {self.sh_interval:,} up to {self.sh_degree}; the position rate decayed over "
            f"{self.position_lr_max_steps:,} steps; {stop}"
        )


def unread_recipe_fields(config: GaussianAvatarConfig) -> dict[str, str]:
    """The settings the recipe leaves unread (dotted name -> why; the registry refuses a change to them): the FLAME
    rates without fine-tuning, the delay's multiplier without delay steps (3DGS's get_expon_lr_func reads it only then)."""
    unread = {}
    if not config.fine_tune_flame:
        unread |= dict.fromkeys(("flame_expression_lr", "flame_pose_lr", "flame_translation_lr"), "with fine_tune_flame=False")
    if config.position_lr_delay_steps == 0:
        unread["position_lr_delay_mult"] = "with position_lr_delay_steps=0 (give the delay's steps too)"
    if not config.density.prune_by_screen_size:
        unread["density.max_screen_radius"] = "with density.prune_by_screen_size=False"
    return unread


def paper_config(**overrides: Any) -> GaussianAvatarConfig:
    """GaussianAvatars' recipe (``GaussianAvatarConfig()``), then ``overrides``."""
    return GaussianAvatarConfig(**overrides)


# 3D Gaussian Splatting's schedule, which GaussianAvatars' arguments/__init__.py quotes as "(original)".
ORIGINAL_SCHEDULE = dict(densification_interval=100, opacity_reset_interval=3000, densify_from=500, densify_until=15_000)
ORIGINAL_ITERATIONS = 30_000
# The CPU recipe's FLAME rates for the head pose: a CPU run draws each training timestep about a hundred times, not
# GaussianAvatars' hundreds to thousands, and Adam moves a value by about its rate a draw, so 100x GaussianAvatars'
# rates let a tracker's error of a few degrees and millimetres be undone within the run (at GaussianAvatars' own rates
# it stays: benchmarks/ablations/gaussian_flame_tuning.py). The expression's rate is GaussianAvatars'.
CPU_FLAME_RATES = {"flame_pose_lr": 1e-3, "flame_translation_lr": 1e-4}


def cpu_config(**overrides: Any) -> GaussianAvatarConfig:
    """GaussianAvatars' rates on 3D Gaussian Splatting's original 30,000-iteration schedule (densify every 100 steps
    from 500 to 15,000, reset opacities every 3,000, position rate decayed over 30,000): a CPU's minutes reach
    thousands of steps, not GaussianAvatars' 600,000; FLAME fine-tuning off, and, where it is turned on, the head
    pose's rates ``CPU_FLAME_RATES``; then ``overrides``."""
    density = DensityConfig(**ORIGINAL_SCHEDULE, reset_opacity_at_densify_from=True)
    defaults = {"density": density, "position_lr_max_steps": ORIGINAL_ITERATIONS, "fine_tune_flame": False, **CPU_FLAME_RATES}
    return GaussianAvatarConfig(**{**defaults, **overrides})


class GaussianAvatar(AvatarModel):
    """Gaussians bound to a tracked mesh (see the module docstring): one a face to start."""

    draws_images = True  # (render_camera; trained by its own whole-frame steps, step_strategy)

    def __init__(self, parametric: SubjectModel, config: GaussianAvatarConfig | None = None):
        super().__init__()
        self.config = config if config is not None else paper_config()
        if not isinstance(self.config, GaussianAvatarConfig):
            raise TypeError(f"config: expected a GaussianAvatarConfig, got {type(self.config).__name__}")
        self.parametric = parametric
        faces = parametric().faces
        device = faces.device
        generator = torch.Generator().manual_seed(0)
        self.gaussians = GaussianSet.one_per_face(faces.shape[0], self.config.sh_degree, device=device, generator=generator)
        # Each training timestep's fitted FLAME parameters (empty until a run starts, or without fine-tuning).
        self.tracking = FittedTracking().to(device)
        # The SH degree in use (3DGS's active_sh_degree): state, so that a loaded run renders with the degree it reached;
        # the host's copy is what a render reads (a read of the buffer would wait for the GPU at every frame).
        self.register_buffer("active_sh_degree", torch.zeros((), dtype=torch.long, device=device))
        self.sh_degree_in_use = 0
        self.register_load_state_dict_post_hook(lambda module, keys: module._read_sh_degree())
        # The recipe's background as a constant on the device: a render copies nothing from the host.
        self.register_buffer("background", torch.tensor(self.config.background, device=device), persistent=False)

    def _read_sh_degree(self) -> None:
        self.sh_degree_in_use = int(self.active_sh_degree)

    def raise_sh_degree(self) -> None:
        """One more SH band in use (3DGS's ``oneupSHdegree``), the buffer and the host's copy alike."""
        self.active_sh_degree += 1
        self.sh_degree_in_use += 1

    def step_strategy(self) -> GaussianSteps:
        """How the shared loop trains this model (:func:`headfields.training.train` calls it): GaussianAvatars'
        steps, a whole frame each, with density control after backward."""
        return GaussianSteps(self)

    def posed(self, head: Head, frame: IntLike, timestep: int | None = None) -> PosedGaussians:
        """The Gaussians on frame ``frame`` of ``head``: on the mesh of its training timestep's fitted parameters
        where it is one's (``timestep``, or found from the frame's tracking when None), else on the head's own."""
        frame = check_count("frame", frame, 0, head.num_frames - 1)
        return self.gaussians.bound(self.tracking.vertices(self.parametric, head, frame, timestep), head.faces)

    def fitted_head(self, head: Head, split: str = "train") -> Head:
        """``head`` (the tracked head of a split's frames) with the fitted parameters of the frames of a training
        timestep, the mesh re-posed from them: what the run renders those frames with (:func:`headfields.load_run`
        builds each split's head so, and the export writes its parameters). ``split`` is not read: a frame is known
        by its tracking."""
        return self.tracking.fitted_head(self.parametric, head)

    def render_camera(
        self, cameras: PinholeCameras, camera: IntLike, head: Head, head_frame: IntLike, validate: bool = True
    ) -> GaussianRender:
        """The image of camera ``camera`` of ``cameras`` seeing frame ``head_frame`` of ``head``, over the
        recipe's background, with the SH degree reached so far."""
        return self.rasterize(self.posed(head, head_frame), cameras, camera, validate)

    def rasterize(self, posed: PosedGaussians, cameras: PinholeCameras, camera: IntLike, validate: bool = True) -> GaussianRender:
        """:meth:`render_camera` of Gaussians already posed (:meth:`posed`): the training loop poses them once a step
        for the image and for density control's face scales."""
        background = self.background.to(posed.means.dtype)
        degree = self.sh_degree_in_use
        return rasterize_gaussians(
            posed.means, posed.quats, posed.scales, posed.opacities, posed.sh, cameras, camera,
            background=background, sh_degree=degree, validate=validate, backend=self.config.rasterizer,
        )  # fmt: skip

    def splats(self, head: Head, frame: IntLike) -> Splats:
        """The Gaussians on frame ``frame`` of ``head`` as :func:`~headfields.data.splat_ply.write_splat_ply` writes them
        (SH up to the degree reached; the higher bands, never trained, are zero)."""
        with torch.no_grad():
            posed = self.posed(head, frame)
            # In float64 from the logits: a float32 sigmoid rounds a confident Gaussian to exactly 1, no logit to write.
            opacities = torch.sigmoid(self.gaussians.opacity_logits.double().clamp(-30, 30))
            return Splats(posed.means, F.normalize(posed.quats, dim=-1), posed.scales, opacities, posed.sh)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # Density control changed the number of Gaussians: take the checkpoint's count before its values go in.
        key = f"{prefix}gaussians.parent"
        if key in state_dict and state_dict[key].shape[0] != self.gaussians.num_gaussians:
            n = state_dict[key].shape[0]
            for name, value in list(self.gaussians.named_parameters()) + list(self.gaussians.named_buffers()):
                shaped = value.new_empty(n, *value.shape[1:])
                setattr(self.gaussians, name, nn.Parameter(shaped) if isinstance(value, nn.Parameter) else shaped)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
