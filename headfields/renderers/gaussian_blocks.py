"""The tile rasteriser's block-cooperative Warp kernels, for CUDA (gsplat's ``rasterize_to_pixels`` forward and
backward, the shape of 3D Gaussian Splatting's ``renderCUDA``): one block of ``TILE x TILE`` threads a 16x16 tile,
one thread a pixel, the same arithmetic and cuts as :mod:`headfields.renderers.gaussian_kernels`' per-pixel kernels
(whose docstring gives the formulas), so that the two agree to round-off.

Where a per-pixel thread walks its tile's list from global memory on its own, a block here loads the list in batches
of :data:`BATCH` rows into shared memory (``wp.tile_load``: every thread takes part, a pixel outside an odd-sized
image too, and writes nothing), and each thread blends from the batch. Before each batch the block counts its pixels
still blending (a block sum of a per-thread flag, gsplat's ``__syncthreads_count``) and stops when none is. The
backward pass walks the batches up to the furthest pixel's ``last`` (a block maximum), and sums each splat's ten
gradients over the block's pixels before one atomic add to global memory, where the per-pixel kernel makes ten atomic
adds a pixel a splat (all 256 of a tile's pixels onto the same ten addresses, one after another).

On the CPU, Warp runs a block as one thread unless the caller has set ``wp.config.enable_cpu_blocks`` (an
experimental switch: a block's threads as cooperative fibers); :func:`runs_here` says whether these kernels can run
where they are asked. On the fibers (one launch, one core) they are about 3x slower than the per-pixel kernels on two
(5,000 Gaussians at 128², forward and backward, ``benchmarks/gaussians.py --cpu-blocks``), so the CPU keeps those.
Both exist in float32 and float64 (the float64 pair for gradcheck).
"""

from functools import cache
from typing import no_type_check

import torch  # no `from __future__ import annotations`: Warp reads the kernels' annotations, which name closure types
import warp as wp

from .gaussian_kernels import ALPHA_MAX, ALPHA_MIN, PARAMS, TILE, TRANSMITTANCE_MIN, splat_exponent, splat_gradient

__all__ = ["BATCH", "BLOCK", "block_kernels", "runs_here"]

BLOCK = TILE * TILE  # threads a block: one a pixel of its tile
# Splat rows a batch loads into shared memory: 64 x 11 scalars (a row and its exponent cut), 2.8 KB in float32. gsplat
# loads a block's worth (256); a quarter of it lets a block whose pixels are all done stop sooner, at four block
# sums per 256 splats instead of one (a sum and its read-back: a few barriers; 64 splats: 64 exponentials a thread).
BATCH = 64


def runs_here(device: torch.device) -> bool:
    """Whether a block of these kernels runs as :data:`BLOCK` threads on ``device``: on CUDA, and on the CPU only
    where the caller has set ``wp.config.enable_cpu_blocks`` (read, never set, here).

        wp.config.enable_cpu_blocks = True  # the caller's choice, for its process
        assert runs_here(torch.device("cpu"))
    """
    return device.type == "cuda" or bool(wp.config.enable_cpu_blocks)


@cache
def block_kernels(scalar: type) -> tuple[wp.Kernel, wp.Kernel]:
    """The forward and backward kernels in ``scalar`` (wp.float32 or wp.float64), built on first use; launched a
    block a tile (``launch_rows(..., tile=(1, BLOCK))``, as :mod:`headfields.renderers.gaussian_blend` does).

        forward, backward = block_kernels(wp.float32)
    """
    alpha_min, alpha_max, t_min = scalar(ALPHA_MIN), scalar(ALPHA_MAX), scalar(TRANSMITTANCE_MIN)
    half, one, zero = scalar(0.5), scalar(1.0), scalar(0.0)
    tile_side, block, batch, params_n = TILE, BLOCK, BATCH, PARAMS
    vec = wp.types.vector(length=PARAMS, dtype=scalar)
    vec4 = wp.types.vector(length=4, dtype=scalar)
    exponent, gradient = splat_exponent(scalar), splat_gradient(scalar)

    @no_type_check  # Warp parameter types are not Python type hints; keep the jaxtyping checker off them.
    @wp.func
    def pixel_of(tile: int, lane: int, tiles_x: int):
        """The image column and row of ``lane``, one of the ``BLOCK`` threads of block ``tile``."""
        ty = tile / tiles_x
        return (tile - ty * tiles_x) * tile_side + lane % tile_side, ty * tile_side + lane / tile_side

    @no_type_check  # Warp parameter types are not Python type hints; keep the jaxtyping checker off them.
    @wp.kernel(module="unique", enable_backward=False)  # the adjoint is the kernel below
    def forward(
        params: wp.array2d(dtype=scalar),
        cut: wp.array(dtype=scalar),
        start: wp.array(dtype=wp.int32),
        end: wp.array(dtype=wp.int32),
        width: int,
        height: int,
        tiles_x: int,
        out: wp.array2d(dtype=scalar),
        last: wp.array(dtype=wp.int32),
    ):
        tile, lane = wp.tid()
        px, py = pixel_of(tile, lane, tiles_x)
        inside = px < width and py < height
        cx = scalar(px) + half
        cy = scalar(py) + half
        t = one
        r = zero
        g = zero
        b = zero
        depth = zero
        first = start[tile]
        stop = end[tile]
        n = first
        done = 0
        if not inside:
            done = 1
        for row in range(first, stop, batch):
            if wp.tile_sum(wp.tile(done))[0] == block:  # every pixel of the block is done
                break
            rows = wp.tile_load(params, shape=(batch, params_n), offset=(row, 0), storage="shared")
            cuts = wp.tile_load(cut, shape=batch, offset=row, storage="shared")  # past the array: zeros, never read
            for q in range(wp.min(batch, stop - row)):
                if done == 0:
                    dx = rows[q, 0] - cx
                    dy = rows[q, 1] - cy
                    power = exponent(rows[q, 2], rows[q, 3], rows[q, 4], dx, dy)
                    if not (power > zero or power < cuts[q]):  # the per-pixel kernels' tests, NaN included
                        alpha = wp.min(alpha_max, rows[q, 5] * wp.exp(power))
                        if not (alpha < alpha_min):
                            t_next = t * (one - alpha)
                            if t_next < t_min:
                                done = 1
                            else:
                                w = alpha * t
                                r += w * rows[q, 6]
                                g += w * rows[q, 7]
                                b += w * rows[q, 8]
                                depth += w * rows[q, 9]
                                t = t_next
                                n = row + q + 1
        if inside:
            p = py * width + px
            out[p, 0] = r
            out[p, 1] = g
            out[p, 2] = b
            out[p, 3] = one - t
            out[p, 4] = depth
            last[p] = n

    @no_type_check
    @wp.kernel(module="unique", enable_backward=False)
    def backward(
        params: wp.array2d(dtype=scalar),
        cut: wp.array(dtype=scalar),
        start: wp.array(dtype=wp.int32),
        width: int,
        height: int,
        tiles_x: int,
        out: wp.array2d(dtype=scalar),
        last: wp.array(dtype=wp.int32),
        grad_out: wp.array2d(dtype=scalar),
        grad: wp.array(dtype=vec),
    ):
        tile, lane = wp.tid()
        px, py = pixel_of(tile, lane, tiles_x)
        inside = px < width and py < height
        p = py * width + px
        cx = scalar(px) + half
        cy = scalar(py) + half
        first = start[tile]
        mine = first  # one past this pixel's last blended splat: none outside the image
        g = vec4()  # the loss's gradient w.r.t. the pixel's colour and depth
        final_t = zero
        rest = vec4()  # what the pixel still gets from the splats behind the current one
        if inside:
            mine = last[p]
            g = vec4(grad_out[p, 0], grad_out[p, 1], grad_out[p, 2], grad_out[p, 4])
            final_t = grad_out[p, 3] * (one - out[p, 3])  # dL/dA times T_N: ∂A/∂αⱼ = T_N / (1 - αⱼ)
            rest = vec4(out[p, 0], out[p, 1], out[p, 2], out[p, 4])
        stop = wp.tile_max(wp.tile(mine))[0]  # the block's furthest pixel
        t = one
        for row in range(first, stop, batch):
            rows = wp.tile_load(params, shape=(batch, params_n), offset=(row, 0), storage="shared")
            cuts = wp.tile_load(cut, shape=batch, offset=row, storage="shared")
            for q in range(wp.min(batch, stop - row)):
                d = vec()  # this pixel's share of the splat's gradient (zero where it does not blend it)
                if row + q < mine:
                    dx = rows[q, 0] - cx
                    dy = rows[q, 1] - cy
                    power = exponent(rows[q, 2], rows[q, 3], rows[q, 4], dx, dy)
                    if not (power > zero or power < cuts[q]):  # the per-pixel kernels' tests, NaN included
                        gauss = wp.exp(power)
                        raw = rows[q, 5] * gauss
                        alpha = wp.min(alpha_max, raw)
                        if not (alpha < alpha_min):
                            w = alpha * t
                            row_q = vec()
                            for c in range(params_n):
                                row_q[c] = rows[q, c]
                            rest -= w * vec4(row_q[6], row_q[7], row_q[8], row_q[9])
                            d = gradient(row_q, dx, dy, gauss, t, rest, g, final_t)
                            t = t * (one - alpha)
                # The block's sum, then one atomic add of the ten values a splat a block (every thread reaches it).
                # The per-pixel kernel's ten atomic adds a pixel put a tile's 256 pixels onto the same ten addresses,
                # served one after another: 2,560 a splat a block. gsplat sums a warp's 32 lanes by shuffles and adds
                # once a warp (8 a splat a block, no barrier); Warp 1.19's tiles reduce over the block (shuffles, then
                # one shared-memory step across the warps: two barriers). Which of the two costs less on a GPU is for
                # benchmarks/gaussians.py to measure there; both are far from the per-pixel kernel's contention.
                total = wp.tile_sum(wp.tile(d, preserve_type=True))
                wp.tile_atomic_add(grad, total, offset=row + q)

    return forward, backward
