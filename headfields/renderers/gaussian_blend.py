"""The tile rasteriser's blend, behind :func:`headfields.renderers.rasterize_gaussians`: which Warp kernels draw, and
the ``torch.autograd.Function`` around them.

Two pairs of kernels blend the same splats with the same arithmetic, to round-off: the per-pixel pair
(:mod:`headfields.renderers.gaussian_kernels`, one thread a pixel, launched over a thread pool on the CPU) and the
block-cooperative pair (:mod:`headfields.renderers.gaussian_blocks`, a block a tile, its splats in shared memory).
CUDA takes the cooperative pair and the CPU the per-pixel one. Under :func:`headfields.device_paths.cuda_paths` the CPU
takes the cooperative pair only where the caller has set ``wp.config.enable_cpu_blocks`` (Warp otherwise runs a block
as one thread); the per-pixel pair, counted as one launch, where not. :data:`KERNEL` chooses another, for tests and
tools.
"""

from typing import Any

import torch
from torch import Tensor

from .. import kernels
from ..device_paths import takes_cuda_path
from . import gaussian_blocks
from .gaussian_kernels import OUTPUTS, PARAMS, PIXELS_PER_THREAD, exponent_cut, pixel_kernels

__all__ = ["KERNEL", "KERNELS", "blend_tiles", "cooperative"]

KERNELS = ("auto", "per-pixel", "cooperative")
# Which kernels blend, read at each call (a module setting, as tools/frame_variants.py sets them): "auto" as the module
# docstring says, "per-pixel" anywhere, "cooperative" on CUDA and on a CPU with wp.config.enable_cpu_blocks set.
KERNEL = "auto"


def cooperative(device: torch.device) -> bool:
    """Whether a blend on ``device`` takes the block-cooperative kernels, by :data:`KERNEL` (see the module
    docstring); "cooperative" where a block cannot run its threads raises, naming the setting.

        cooperative(torch.device("cuda"))  # True
        cooperative(torch.device("cpu"))  # False, unless under cuda_paths() with wp.config.enable_cpu_blocks set
    """
    if KERNEL not in KERNELS:
        raise ValueError(f"gaussian_blend.KERNEL: expected one of {KERNELS}, got {KERNEL!r}")
    if KERNEL == "per-pixel":
        return False
    runs = gaussian_blocks.runs_here(device)
    if KERNEL == "cooperative" and not runs:
        raise ValueError(
            "gaussian_blend.KERNEL: 'cooperative' on the CPU needs wp.config.enable_cpu_blocks = True (Warp otherwise "
            "runs a block as one thread, which would draw one pixel a tile); set it, or choose 'auto' or 'per-pixel'"
        )
    return runs and (KERNEL == "cooperative" or takes_cuda_path(device))


class _Blend(torch.autograd.Function):
    @staticmethod
    def forward(ctx, params: Tensor, tiles: Any) -> Tensor:
        ctx.tiles = tiles
        # The tiles' lists as rows of their own: a pixel reads its tile's splats one after another, not scattered
        # over params.
        rows = params.detach()[tiles.ids.long()].contiguous()
        cut = exponent_cut(rows[:, 5])
        out = params.new_empty(tiles.width * tiles.height, OUTPUTS)
        last = torch.empty(tiles.width * tiles.height, dtype=torch.int32, device=params.device)
        scalar = kernels.WARP_SCALARS[params.dtype]
        ctx.cooperative = cooperative(params.device)
        if ctx.cooperative:
            forward = gaussian_blocks.block_kernels(scalar)[0]
            shared = [rows, cut, tiles.start, tiles.end, tiles.width, tiles.height, tiles.tiles_x, out, last]
            kernels.launch_rows(forward, len(tiles.start), shared, [], params.device, tile=(1, gaussian_blocks.BLOCK))
        else:
            shared = [rows, cut, tiles.start, tiles.end, tiles.width, tiles.tiles_x, out, last]
            kernels.launch_rows(
                pixel_kernels(scalar)[0], len(tiles.pixel), shared, [tiles.pixel], params.device, PIXELS_PER_THREAD
            )
        ctx.save_for_backward(rows, cut, out.detach(), last)  # detached: Warp reads a saved output's .grad otherwise
        ctx.count = params.shape[0]
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, None]:
        rows, cut, out, last = ctx.saved_tensors
        tiles, device = ctx.tiles, rows.device
        scalar = kernels.WARP_SCALARS[rows.dtype]
        if ctx.cooperative:  # one launch, real atomics (or one CPU block at a time): one buffer
            grad_rows = rows.new_zeros(rows.shape)
            backward = gaussian_blocks.block_kernels(scalar)[1]
            shared = [rows, cut, tiles.start, tiles.width, tiles.height, tiles.tiles_x, out, last, grad_out.contiguous()]
            kernels.launch_rows(backward, len(tiles.start), [*shared, grad_rows], [], device, tile=(1, gaussian_blocks.BLOCK))
        else:
            slots, slot = kernels.launch_slots(len(tiles.pixel), device, PIXELS_PER_THREAD)
            if slots * rows.numel() * rows.element_size() >= 2**31:  # Warp's strides are 32-bit byte counts
                raise ValueError(f"means: {len(rows):,} (tile, Gaussian) pairs are too many for the CPU's gradient buffers")
            buffers = rows.new_zeros(slots, *rows.shape)
            shared = [rows, cut, tiles.start, tiles.width, tiles.tiles_x, out, last, grad_out.contiguous(), buffers]
            kernels.launch_rows(
                pixel_kernels(scalar)[1], len(tiles.pixel), shared, [tiles.pixel, slot], device, PIXELS_PER_THREAD
            )
            grad_rows = buffers.sum(0)
        grad = rows.new_zeros(ctx.count, PARAMS)
        return grad.index_add_(0, tiles.ids.long(), grad_rows), None


def blend_tiles(params: Tensor, tiles: Any) -> Tensor:
    """Each pixel's ``[r, g, b, alpha, depth]`` (``[H·W, 5]``, row-major pixels) from the splats ``params [N, 10]``
    (float32 or float64) listed per tile in ``tiles`` (:class:`headfields.renderers.gaussians.TileLists`);
    differentiable w.r.t. ``params`` (first derivatives).

        out = blend_tiles(params, tiles)  # [H·W, 5]; the cooperative kernels on CUDA (see the module docstring)
    """
    return _Blend.apply(params, tiles)
