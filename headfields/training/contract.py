"""What a model gives the training loop and what the loop gives it: :class:`AvatarModel`, the batch of rays it
trains on (:class:`RayBatch`) and the result of its step (:class:`StepOutput`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..cameras import Rays
from ..data import FrameSet
from ..parametric import Head, SubjectModel
from ..renderers.samples import SampleCount, SampleSlots
from .optimizer import OptimizerConfig

__all__ = ["AvatarModel", "ImageModel", "RayBatch", "SampleCount", "StepOutput"]


@dataclass
class RayBatch:
    """Rays with what the training frames say about their pixels."""

    rays: Rays
    frames: FrameSet  # where the rays come from: ``rays.frame`` indexes its frames
    rgb: Float[Tensor, "R 3"]  # in [0, 1]
    mask: Bool[Tensor, " R"] | None = None
    depth: Float[Tensor, " R"] | None = None  # metres along the camera axis; 0 = none
    segmentation: Int[Tensor, " R"] | None = None  # region labels of the dataset
    head: Head | None = None  # the tracked head of ``frames`` (the loop builds it once per split)
    generator: torch.Generator | None = None  # this step's jitter (seeded by the loop from the seed and the step)
    early_stop: float | None = None  # the renderer's early termination (TrainingConfig.early_stop; None: off)
    slots: SampleSlots | None = None  # fixed sizes for the renderer's samples (TrainingConfig.fixed_shapes; None: off)
    fixed_shapes: bool = False  # TrainingConfig.fixed_shapes: no size may depend on the data (slots: the budget's)
    # A random colour a ray, drawn by the loop before the batch is shared among ranks (the step's generator's first
    # draw) for a model whose ``random_background`` is True: what it composites over (training.random_backgrounds).
    backgrounds: Float[Tensor, "R 3"] | None = None
    # The frames the rays were drawn from, sorted (TrainingConfig.frames_per_batch's draw; None: any training frame):
    # a model that computes something a frame (MonoAvatar's UV CNN) finds them here without reading the rays back.
    frame_subset: Int[Tensor, " K"] | None = None

    def drawn_frames(self) -> Int[Tensor, " K"]:
        """The batch's frames, sorted and distinct: those it drew (``frame_subset``), else found in its rays (a
        read-back, refused with fixed shapes, whose steps read nothing back: ``frames_per_batch`` draws them)."""
        if self.frame_subset is not None:
            return self.frame_subset
        if self.fixed_shapes or self.slots is not None:
            raise ValueError(
                "frames_per_batch: expected a number of frames with fixed_shapes (the step works on the batch's drawn "
                "frames, which it reads without a read-back), got None"
            )
        return torch.unique(self.rays.frame)

    def slice(self, start: int, stop: int) -> RayBatch:
        """Rays ``start`` to ``stop`` (exclusive) with their targets: a rank's share of a batch."""
        return self.select(slice(start, stop))

    def select(self, index: slice | Int[Tensor, " K"]) -> RayBatch:
        """The rays ``index`` picks (a slice or indices) with their targets; head, frames and generator kept."""

        def part(x: Tensor | None) -> Tensor | None:
            return None if x is None else x[index]

        rays = Rays(origins=part(self.rays.origins), directions=part(self.rays.directions), frame=part(self.rays.frame))
        rgb, mask, depth, segmentation = part(self.rgb), part(self.mask), part(self.depth), part(self.segmentation)
        return dataclasses.replace(
            self, rays=rays, rgb=rgb, mask=mask, depth=depth, segmentation=segmentation, backgrounds=part(self.backgrounds)
        )


@dataclass
class StepOutput:
    loss: Tensor  # scalar to minimise
    rgb: Float[Tensor, "R 3"]  # the rendered colours, for the running PSNR
    logs: dict[str, float | Tensor]  # scalars; tensors are read back only on the steps the loop logs
    samples: SampleCount | None = None  # None: the model does not count them (no sample budget then)


@runtime_checkable
class AvatarModel(Protocol):
    """What the loop needs from a model (an ``nn.Module``). Optional: ``before_step(step, head)`` (refresh an
    occupancy grid, advance a schedule), ``param_groups()`` (parameter groups, each a dict with ``params`` and
    an ``lr_scale`` on the learning rate), ``view_bins(frames, head)`` (for ``balance_views``),
    ``random_background`` (True: the loop draws ``RayBatch.backgrounds``).

    ``parametric``, from which the loop builds each split's Head, is a member for type checkers only: a model holds
    it as a submodule, in ``nn.Module``'s ``_modules``, where ``isinstance`` on a protocol does not look from Python
    3.12 on (it reads attributes statically, ``inspect.getattr_static``), and every model would fail the check."""

    if TYPE_CHECKING:
        parametric: SubjectModel
    optimization: OptimizerConfig

    def training_step(self, batch: RayBatch, step: int) -> StepOutput: ...

    # rays.frame indexes head's frames. Optionally an ``early_stop`` keyword: each ray's stop (EARLY_STOP_TRANSMITTANCE
    # for scores, INTERACTIVE_TRANSMITTANCE in the viewer), which render_view passes where the method takes it.
    def render_rays(self, rays: Rays, head: Head) -> Float[Tensor, "R 3"]: ...


@runtime_checkable
class ImageModel(Protocol):
    """A model that draws whole images rather than rays (a rasteriser: GaussianAvatar), trained by the loop through
    its own steps (``step_strategy()``: :mod:`headfields.training.strategy`): what evaluation, ``render`` and the
    viewer need from it. ``parametric``: as :class:`AvatarModel`'s."""

    if TYPE_CHECKING:
        parametric: SubjectModel

    def render_camera(self, cameras, camera: int, head: Head, head_frame: int): ...  # .image [H, W, 3], .alpha, .depth
