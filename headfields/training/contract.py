"""What a model gives the training loop and what the loop gives it: :class:`AvatarModel`, the declared base of every
model, the batch of rays it trains on (:class:`RayBatch`) and the result of its step (:class:`StepOutput`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from ..cameras import PinholeCameras, Rays
from ..data import FrameSet
from ..parametric import Head, SubjectModel
from ..renderers.context import RenderContext
from ..renderers.samples import SampleCount
from ..renderers.volume import EARLY_STOP_TRANSMITTANCE

if TYPE_CHECKING:
    from ..fields import NerfField, NeusField
    from .optimizer import OptimizerConfig
    from .strategy import StepStrategy

__all__ = ["AvatarModel", "RasterImage", "RayBatch", "SampleCount", "StepOutput"]


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
    # How the step renders, which the model hands to its renderer whole: the step's jitter (seeded by the loop from
    # the seed and the step), early termination and fixed shapes (TrainingConfig.early_stop, fixed_shapes).
    context: RenderContext = field(default_factory=RenderContext)
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
        if self.context.fixed_shapes:
            raise ValueError(
                "frames_per_batch: expected a number of frames with fixed_shapes (the step works on the batch's drawn "
                "frames, which it reads without a read-back), got None"
            )
        return torch.unique(self.rays.frame)

    def slice(self, start: int, stop: int) -> RayBatch:
        """Rays ``start`` to ``stop`` (exclusive) with their targets: a rank's share of a batch."""
        return self.select(slice(start, stop))

    def select(self, index: slice | Int[Tensor, " K"]) -> RayBatch:
        """The rays ``index`` picks (a slice or indices) with their targets; head, frames and context kept."""

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


class AvatarModel(nn.Module):
    """The base of every model the engine trains (as nerfstudio's models subclass its ``Model``): each callback the
    engine asks for and each fact it reads before a run is declared here with its default, so the engine never asks a
    model which names it has. A model overrides what applies to it:

    - ray models: ``optimization`` (its optimiser's settings), :meth:`training_step` and :meth:`render_rays`, and
      where they do more, :meth:`before_step`, :meth:`param_groups`, :meth:`render`, :meth:`view_bins` (with
      ``balances_views``), :meth:`graph_phase` (with ``captures_graph``);
    - a rasteriser (``draws_images``): :meth:`render_camera` and :meth:`step_strategy`, its own whole-frame steps.

    ``parametric`` (the subject's model, from which the engine builds each split's Head) and ``config`` (the recipe,
    part of a checkpoint's fingerprint) every model holds; ``parametric`` is a submodule, so it is declared for type
    checkers only (a class attribute would hide ``nn.Module``'s submodule of that name)."""

    if TYPE_CHECKING:
        parametric: SubjectModel
        optimization: OptimizerConfig
    config: object = None  # the recipe (a dataclass), which a checkpoint's fingerprint names
    # What the engine reads before a run (class attributes; a model that needs one sets it):
    draws_images: ClassVar[bool] = False  # render_camera draws whole images (a rasteriser), not rays
    random_background: bool = False  # the loop draws a colour a ray to composite over (RayBatch.backgrounds)
    # Its renderer gives every ray samples when the shapes are fixed (NeuS: those that miss its box, of no length),
    # so fixed_shapes needs no samples_per_batch.
    renders_every_ray: ClassVar[bool] = False
    # Its step works on the batch's frames (RayBatch.drawn_frames), so fixed_shapes needs frames_per_batch.
    steps_on_frames: ClassVar[bool] = False
    captures_graph: ClassVar[bool] = False  # cuda_graph: graph_phase says what the step's Python decides
    balances_views: ClassVar[bool] = False  # balance_views: view_bins bins the frames by view

    def training_step(self, batch: RayBatch, step: int) -> StepOutput:
        """The loss of a batch of rays: a ray model's step (a rasteriser trains by :meth:`step_strategy`)."""
        raise NotImplementedError(f"{type(self).__name__} trains by its own steps (step_strategy), not on rays")

    def render_rays(self, rays: Rays, head: Head, early_stop: float = EARLY_STOP_TRANSMITTANCE) -> Float[Tensor, "R 3"]:
        """Colours of ``rays`` (``rays.frame`` indexes ``head``'s frames), each ray stopped at transmittance
        ``early_stop`` (EARLY_STOP_TRANSMITTANCE for scores, INTERACTIVE_TRANSMITTANCE in the viewer)."""
        if self.draws_images:
            raise NotImplementedError(
                f"{type(self).__name__} renders whole images (render_camera), not rays: headfields.training.render_view "
                "and render_image call it for you"
            )
        raise NotImplementedError(f"{type(self).__name__} renders no rays: a ray model overrides render_rays")

    def render(self, rays: Rays, head: Head) -> object | None:
        """The renderer's whole output for ``rays`` (with a ``depth``, or a ``composite`` holding one), which the
        viewer shows; None: the model has none beyond its colours (the viewer shows the tracked mesh's depth)."""
        return None

    def render_camera(self, cameras: PinholeCameras, camera: int, head: Head, head_frame: int) -> RasterImage:
        """The image of camera ``camera`` of ``cameras`` seeing frame ``head_frame`` of ``head``: a rasteriser's
        (``draws_images``) ``.image [H, W, 3]``, ``.alpha``, ``.depth``."""
        raise NotImplementedError(f"{type(self).__name__} renders rays (render_rays), not whole images")

    def step_strategy(self) -> StepStrategy | None:
        """The model's own steps inside the loop (a rasteriser's whole frames, :mod:`.strategy`); None: rays."""
        return None

    def before_step(self, step: int, head: Head) -> None:
        """Work before each ray step: refresh an occupancy grid, advance a schedule. Nothing by default."""

    def param_groups(self) -> list[dict]:
        """The optimiser's parameter groups, each a dict with ``params`` and an ``lr_scale`` on the learning rate."""
        return [{"params": list(self.parameters())}]

    def graph_phase(self, step: int) -> Hashable | None:
        """What the step's Python decides by the step number, which keys a CUDA graph (``captures_graph``); None:
        not yet (its shapes still settling)."""
        return None

    def view_bins(self, frames: FrameSet, head: Head) -> Int[Tensor, " N"]:
        """A view bin a frame (front, side, back: ``balances_views``), each bin drawn alike."""
        raise NotImplementedError(f"{type(self).__name__} bins no views (balances_views is False)")

    def fitted_head(self, head: Head, split: str = "train") -> Head:
        """``head`` (a split's tracked head) with what the model fitted for its frames (GaussianAvatars' fine-tuned
        FLAME, MonoNPHM's codes): what a loaded run renders that split with. ``head`` itself by default."""
        return head

    def radiance_field(self) -> NerfField | NeusField | None:
        """The model's field, which a mesh is extracted from (:func:`headfields.apps.export.field_mesh`); None: none."""
        return None


class RasterImage(Protocol):
    """What :meth:`AvatarModel.render_camera` returns (a Gaussian render)."""

    image: Float[Tensor, "H W 3"]
    alpha: Float[Tensor, "H W"]
    depth: Float[Tensor, "H W"]
