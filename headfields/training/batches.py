"""Seeding, the random rays a training step draws from all training frames, and their random backgrounds."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..cameras import pixel_rays, sample_pixels
from ..checks import check_count, check_shape
from ..data import FrameSet
from ..parametric import Head
from ..renderers.view_balance import sample_pixels_balanced
from .config import INT64_MAX
from .contract import RayBatch

__all__ = ["place_frames", "random_backgrounds", "ray_batch", "restored_generator", "seed_everything"]


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (CPU and every CUDA device) from ``seed``. Call it
    before building a model: its initial weights draw from them (the loop seeds its own sampling)."""
    seed = check_count("seed", seed, 0, INT64_MAX)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def ray_batch(
    frames: FrameSet,
    count: int,
    generator: torch.Generator,
    device: torch.device,
    frames_per_batch: int | None = None,
    view_bins: Int[Tensor, " N"] | None = None,
    head: Head | None = None,
) -> RayBatch:
    """``count`` random pixels over all of ``frames`` (uniform), as rays with their targets, on ``device``.

    With ``frames_per_batch``, the pixels come from that many frames drawn at random first (all frames when
    there are fewer): models that compute something per frame (MonoAvatar's UV-CNN features) then do it a
    few times per batch instead of once for nearly every ray (``RayBatch.frame_subset``: those frames). With
    ``view_bins`` (a bin per frame, e.g. front / side / back), each bin gives the same share of the rays
    (:func:`~headfields.renderers.sample_pixels_balanced`)."""
    cameras = frames.cameras.to(device)
    # The pixels are picked where the frames are (the step's device after place_frames: no read-back), and the
    # picks and the pixels' values copied to the device otherwise.
    where = cameras if frames.images.device == cameras.device else frames.cameras
    drawn = None  # the frames drawn for the batch, sorted (frames_per_batch)
    if view_bins is not None:  # the 360-degree portrait: front, side and back views alike
        picked = sample_pixels_balanced(where, view_bins.to(where.device), count, generator)
    else:
        subset = None
        if frames_per_batch is not None and frames_per_batch < len(frames):
            subset = torch.randperm(len(frames), generator=generator, device=generator.device)[:frames_per_batch]
            subset = subset.to(where.device)
            drawn = torch.sort(subset).values.to(device, non_blocking=True)
        elif frames_per_batch is not None:  # as many frames as asked for, or fewer: all of them
            drawn = torch.arange(len(frames), device=device)
        picked = sample_pixels(where, count, generator, subset)

    # One flat index for the images, masks, depths and labels (each a kernel on a GPU: an index, not three).
    height, width = frames.images.shape[1:3]
    cols, rows = picked.cells.unbind(-1)
    flat = (picked.frame * height + rows) * width + cols

    def gather(x: Tensor | None) -> Tensor | None:
        return None if x is None else x.flatten(0, 2)[flat].to(device, non_blocking=True)

    segmentation = gather(frames.segmentation)
    frame, pixels = picked.frame.to(device, non_blocking=True), picked.pixels.to(device, non_blocking=True)
    return RayBatch(
        rays=pixel_rays(cameras, frame, pixels),
        frames=frames,
        rgb=gather(frames.images).float() / 255.0,
        mask=gather(frames.masks),
        depth=None if frames.depths is None else gather(frames.depths).float(),  # the reader's are float16
        segmentation=None if segmentation is None else segmentation.long(),
        head=head,
        frame_subset=drawn,
    )


def place_frames(frames: FrameSet, device: torch.device, share: float) -> tuple[FrameSet, str]:
    """``frames`` where training reads them (INSTA's ``max_images_gpu`` idea; ``TrainingConfig.frames_device_share``),
    and a line saying where: on a CUDA ``device`` when their images,
    masks, depths and labels take at most ``share`` of its free memory (each step's pixels are then gathered
    there, with no copy and no read-back), else in pinned host memory (each step's pixels copied over
    asynchronously). On the CPU they stay as they are."""
    if not 0 <= share <= 1:
        raise ValueError(f"share: expected a share of the free device memory in [0, 1], got {share!r}")
    device = torch.device(device)
    if device.type != "cuda":
        return frames, ""
    arrays = {name: getattr(frames, name) for name in ("images", "masks", "depths", "segmentation")}
    size = sum(x.numel() * x.element_size() for x in arrays.values() if x is not None)
    free, _ = torch.cuda.mem_get_info(device)
    if size <= share * free:
        return frames.to(device), f"training frames on {device}: {size / 2**30:.2f} GiB"
    pinned = {name: None if x is None else x.pin_memory() for name, x in arrays.items()}
    budget = share * free / 2**30
    return replace(frames, **pinned), (
        f"training frames in pinned host memory: {size / 2**30:.2f} GiB, over the device budget of {budget:.2f} GiB "
        f"({share:g} of its free memory)"
    )


def random_backgrounds(
    rgb: Float[Tensor, "R 3"],
    mask: Bool[Tensor, " R"],
    background: Float[Tensor, " 3"],
    drawn: Float[Tensor, "R 3"],
) -> tuple[Float[Tensor, "R 3"], Float[Tensor, "R 3"]]:
    """Each ray's background and target colour for training over random backgrounds (instant-ngp's
    ``random_bg_color``, testbed_nerf.cu): a pixel that saw nothing but the frames' ``background`` (outside the
    ``mask`` and its colour in 8 bits, as a capture composited by its alpha shows one) gets its ``drawn`` colour
    (uniform in [0, 1): ``RayBatch.backgrounds``) as both; every other pixel keeps ``background`` and its own
    colour, which holds the silhouette's blend with ``background`` that the boolean mask cannot undo. Empty space
    then has no colour to pass for: a fog there costs loss where over a fixed colour it costs none.

    ```python
    background, target = random_backgrounds(batch.rgb, batch.mask, torch.ones(3), batch.backgrounds)
    loss = huber(render(rays, background).rgb, target)
    ```
    """
    # Shapes and types only: a training step reads nothing back (TrainingConfig.fixed_shapes).
    check_shape("rgb", rgb, [None, 3])
    check_shape("mask", mask, [len(rgb)], rgb.device)
    check_shape("background", background, [3], rgb.device)
    check_shape("drawn", drawn, [len(rgb), 3], rgb.device)
    arguments = (("rgb", rgb, True), ("mask", mask, False), ("background", background, True), ("drawn", drawn, True))
    for name, x, floating in arguments:
        if x.is_floating_point() != floating or (not floating and x.dtype != torch.bool):
            raise TypeError(f"{name}: expected a {'floating-point' if floating else 'boolean'} tensor, got {x.dtype}")
    fixed = background.to(rgb.dtype).expand_as(rgb)
    # The colour as the frames' 8 bits hold it: 0.5 is stored as 128 / 255.
    empty = (~mask & (torch.round(rgb * 255) == torch.round(fixed * 255)).all(-1))[:, None]
    drawn = drawn.to(rgb.dtype)
    return torch.where(empty, drawn, fixed), torch.where(empty, drawn, rgb)


def restored_generator(generator: torch.Generator, state: torch.Tensor, seed: int, log) -> torch.Generator:
    """The pixel sampler's generator as a checkpoint left it. A state from a generator of another kind (a run
    checkpointed before the sampler drew on the GPU, or on another device) continues on a CPU generator where it is
    a CPU state, so that the run resumes bit for bit; otherwise the batches continue from ``seed``, and ``log`` says so."""
    if len(state) == len(generator.get_state()):
        generator.set_state(state)
        return generator
    cpu = torch.Generator()
    if len(state) == len(cpu.get_state()):
        cpu.set_state(state)
        return cpu
    print(f"the checkpoint's pixel generator is of another device: the batches go on from seed {seed}", file=log)
    return generator.manual_seed(seed)
