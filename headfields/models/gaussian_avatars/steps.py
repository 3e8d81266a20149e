"""GaussianAvatars' training steps (``train.py``) as the shared loop's :class:`~headfields.training.strategy.StepStrategy`:
one training frame a step, rendered whole; (1 − λ) L1 + λ D-SSIM plus the binding's regularisers; density control
with the view-space gradients of the drawn Gaussians between ``backward`` and the optimiser's step; one more SH
degree every ``sh_interval`` steps; the position rate decayed log-linearly; each training timestep's FLAME parameters
in the same Adam (``fine_tune_flame``). The loop (:func:`headfields.training.train`)
does the rest as for every model: the budget, checkpoints, evaluations, logs and the run folder.

    python -m headfields train gaussian_avatar --recipe cpu --max-minutes 5 --out outputs/gaussians
    metrics = train(model, subject.train, subject.eval, "outputs/gaussians", TrainingConfig(max_minutes=5))
"""

from __future__ import annotations

import random
import warnings
from typing import TYPE_CHECKING

import torch

from ...data import FrameSet
from ...deformers.gaussian_binding import binding_regularisers
from ...metrics import ssim
from ...parametric import Head, ParametricModel
from ...renderers.gaussians import check_backend, check_image_memory
from ...training.config import TrainingConfig
from ...training.contract import StepOutput
from ...training.optimizer import FUSED_ADAM_DEVICES
from ...training.strategy import RAY_FIELDS, FrameBatch
from .density import DensityControl, gaussian_param_groups
from .fine_tuning import FITTED_NAMES
from .rates import camera_extent, learning_rates, position_learning_rate

if TYPE_CHECKING:
    from ...renderers import GaussianRender
    from .model import GaussianAvatar

__all__ = ["REFUSED_TRAINING_FIELDS", "GaussianSteps"]

# TrainingConfig's fields these steps have no use for: the ray fields (a whole frame a step, rasterised at once), the
# weights' average, which density control's changing number of Gaussians leaves nothing to average over, and the
# precision of field MLPs' products, which a rasteriser has none of (it trained in float32 under bfloat16).
REFUSED_TRAINING_FIELDS = (*RAY_FIELDS, "ema_decay", "precision")


class GaussianSteps:
    """The steps of one run of ``model`` (see the module docstring); ``model.step_strategy()`` makes one."""

    refused = REFUSED_TRAINING_FIELDS

    def __init__(self, model: GaussianAvatar) -> None:
        check_backend(model.config.rasterizer, "rasterizer")  # made before the run folder is touched (training.run_checks)
        self.model = model
        self.density: DensityControl | None = None
        self._render: GaussianRender | None = None  # this step's, for density control after backward
        self._face_scale: torch.Tensor | None = None
        self.timesteps: list[int] | None = None  # each training frame's timestep, fitted (None: no fine-tuning)

    def optimizer(self, train_frames: FrameSet, train_head: Head, config: TrainingConfig) -> torch.optim.Optimizer:
        """Adam over the Gaussians, a param group a parameter (as density control needs them); the extent and the
        density statistics (empty) of the run."""
        recipe, device = self.model.config, self.model.gaussians.parent.device
        self.cameras = train_frames.cameras.to(device)
        check_image_memory(self.cameras, self.model.gaussians.local_means.dtype, device)  # once: steps skip it
        self.extent, self.extent_rule = camera_extent(train_frames, train_head.vertices.mean(dim=(0, 1)))
        self.density = DensityControl(recipe.density, generator=torch.Generator(device=device).manual_seed(config.seed))
        self.frames = random.Random(config.seed)  # the frames the steps draw
        groups = gaussian_param_groups(self.model.gaussians, learning_rates(recipe, self.extent))
        groups += self._fine_tuning(train_frames, train_head)
        # torch's fused Adam: one kernel for every parameter, and no read of each one's step count (the loop's default)
        fused = all(p.device.type in FUSED_ADAM_DEVICES for g in groups for p in g["params"])
        self._optimizer = torch.optim.Adam(groups, lr=0.0, eps=recipe.adam_eps, fused=fused or None)
        return self._optimizer

    def step(
        self, step: int, train_frames: FrameSet, train_head: Head, generator: torch.Generator
    ) -> tuple[FrameBatch, StepOutput]:
        """A training frame drawn at random (with replacement; GaussianAvatars shuffles an epoch), rendered whole."""
        model, recipe = self.model, self.model.config
        iteration = step + 1  # train.py counts its iterations from 1
        if iteration % recipe.sh_interval == 0 and model.sh_degree_in_use < recipe.sh_degree:
            model.raise_sh_degree()  # oneupSHdegree
        for group in self._optimizer.param_groups:
            if group["name"] == "local_means":
                group["lr"] = position_learning_rate(recipe, iteration, self.extent)
        # Which frame: a host decision, drawn by the host (as 3DGS picks its camera), so nothing waits for the GPU.
        frame = self.frames.randrange(len(train_frames))
        posed = model.posed(train_head, frame, None if self.timesteps is None else self.timesteps[frame])
        render = model.rasterize(posed, self.cameras, frame, validate=False)
        render.means2d.retain_grad()
        truth = train_frames.images[frame].to(render.image.device).float() / 255.0
        l1 = (render.image - truth).abs().mean()
        d_ssim = 1.0 - ssim(render.image, truth, padding="zero")  # 3DGS's SSIM, as GaussianAvatars' loss_utils
        position, scale = binding_regularisers(model.gaussians, render.radii > 0, recipe.regularisers)
        loss = (1 - recipe.ssim_weight) * l1 + recipe.ssim_weight * d_ssim + position + scale
        self._render, self._face_scale = render, posed.face_scale.detach()
        logs = {"l1": l1.detach(), "d_ssim": d_ssim.detach(), "position": position.detach(), "scale": scale.detach()}
        pixels = FrameBatch(frame, truth.reshape(-1, 3))
        return pixels, StepOutput(loss=loss, rgb=render.image.reshape(-1, 3), logs=logs)

    def _fine_tuning(self, train_frames: FrameSet, train_head: Head) -> list[dict]:
        """GaussianAvatars' FLAME fine-tuning (``training_setup``): the fitted parameters of each training timestep
        (:mod:`~headfields.models.gaussian_avatars.fine_tuning`), a param group each at the recipe's rate; none
        where the recipe turns it off, where the run's checkpoint was made without it, or where the frames' meshes
        are not a parametric model's of tracked parameters (said once, and the run goes on without it)."""
        model, recipe = self.model, self.model.config
        fitted, self.timesteps = model.tracking, None
        if not recipe.fine_tune_flame or fitted.absent_from_checkpoint:
            fitted.clear()
            return []
        if not isinstance(model.parametric, ParametricModel) or train_frames.params is None:
            warnings.warn(
                f"fine_tune_flame: the {train_frames.split} frames have tracked meshes, not a parametric model's tracked "
                "parameters, so there are no FLAME parameters to fine-tune; training goes on without it (set "
                "fine_tune_flame False to silence this)",
                stacklevel=2,
            )
            fitted.clear()
            return []
        self.timesteps = fitted.start(train_head)
        rates = (recipe.flame_expression_lr, recipe.flame_pose_lr, recipe.flame_translation_lr)
        named = zip(FITTED_NAMES, rates, strict=True)
        return [{"params": [getattr(fitted, name)], "lr": rate, "name": f"flame_{name}"} for name, rate in named]

    def after_backward(self, step: int) -> dict[str, float]:
        """Density control (``train.py``, before ``optimizer.step()``): this view's gradients added, then clone, split,
        prune and reset where the schedule says; the counts and the number of Gaussians after it."""
        render, self._render = self._render, None
        gaussians = self.model.gaussians
        self.density.accumulate(render.means2d.grad, render.radii, self.cameras.width, self.cameras.height)
        counts = self.density.step(step + 1, gaussians, self._optimizer, self.extent, self._face_scale)
        return {**counts, "gaussians": gaussians.num_gaussians}

    def state_dict(self) -> dict:
        density = self.density
        return {
            "density": {"grad_sum": density.grad_sum, "count": density.count, "max_radii": density.max_radii},
            "density_generator": density.generator.get_state(),
            "frame_generator": self.frames.getstate(),
        }

    def load_state_dict(self, state: dict) -> None:
        density = self.density
        density.grad_sum, density.count, density.max_radii = (state["density"][k] for k in ("grad_sum", "count", "max_radii"))
        density.generator.set_state(state["density_generator"].cpu())  # a generator's state is a CPU tensor
        if "frame_generator" in state:  # (a checkpoint from before the frames were drawn by the host: drawn anew)
            self.frames.setstate(_tuples(state["frame_generator"]))

    def metrics(self) -> dict[str, object]:
        return {"gaussians": self.model.gaussians.num_gaussians, "extent": self.extent, "extent_rule": self.extent_rule}


def _tuples(state: object) -> object:
    """``random.Random.getstate()``'s nested tuples back from a checkpoint (which may hold them as lists)."""
    return tuple(_tuples(x) for x in state) if isinstance(state, list | tuple) else state
