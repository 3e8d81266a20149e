"""The tile rasteriser's per-pixel Warp kernels (3D Gaussian Splatting's ``renderCUDA`` and its backward, Kerbl et al.
2023), the CPU's, behind :func:`headfields.renderers.rasterize_gaussians` (:mod:`headfields.renderers.gaussian_blend`
chooses them or CUDA's block-cooperative pair, :mod:`headfields.renderers.gaussian_blocks`): front-to-back blending
of depth-sorted splats, one thread a pixel, and its hand-written adjoint; and the cuts both pairs share.

Each splat is one row of ``params [N, 10]``: its pixel centre ``(mx, my)``, conic ``(a, b, c)`` (the inverse of its
2D covariance, ``[[a, b], [b, c]]``), opacity, colour ``(r, g, b)`` and camera depth ``z``. At pixel centre ``p``
with ``d = (mx, my) − p`` a splat has ``alpha = min(0.99, opacity · exp(−½(a dx² + c dy²) − b dx dy))``; splats
with alpha below 1/255 are skipped and a pixel stops before the splat that would take its transmittance below
1e-4, as 3D Gaussian Splatting does. A pixel blends the splats listed for its 16x16 tile (``ids[start[t]:end[t]]``,
sorted by depth, gathered into rows of their own) and writes ``out [P, 5]`` = colour, alpha (1 − transmittance)
and depth (Σ wᵢ zᵢ, the weights' sum of depths: divide by alpha for the expected depth) and how far down the list it
went (``last``).

The backward pass walks the same list front to back again (the forward's transmittance, recomputed exactly rather
than divided back out), keeping what is still to come behind each splat (the pixel's output minus what was
blended so far), so that for splat ``j`` with weight ``wⱼ = αⱼ Tⱼ``

    ∂C/∂αⱼ = cⱼ Tⱼ − (C − Σ_{k≤j} c_k w_k) / (1 − αⱼ),   ∂A/∂αⱼ = T_N / (1 − αⱼ)

(``C`` a colour channel or the depth, ``A`` the alpha, ``T_N`` the final transmittance). A clamped alpha (opacity ·
G above 0.99) passes no gradient to opacity or shape. Gradients add into one buffer per concurrent CPU chunk
(:func:`headfields.kernels.launch_slots`). Both kernels exist in float32 and float64 (the float64 pair for
gradcheck). Gradients go to each listed row and are summed into the splats' by ``index_add``.
"""

from functools import cache
from typing import no_type_check

import torch  # no `from __future__ import annotations`: Warp reads the kernels' annotations, which name closure types
import warp as wp
from torch import Tensor

__all__ = [
    "ALPHA_MAX",
    "ALPHA_MIN",
    "OUTPUTS",
    "PARAMS",
    "PIXELS_PER_THREAD",
    "TILE",
    "TRANSMITTANCE_MIN",
    "exponent_cut",
    "pixel_kernels",
    "splat_exponent",
    "splat_gradient",
]

TILE = 16  # pixels a tile side (3D Gaussian Splatting's BLOCK_X, BLOCK_Y)
ALPHA_MIN = 1.0 / 255.0  # a splat fainter than this at a pixel is skipped (forward.cu, renderCUDA)
ALPHA_MAX = 0.99  # alpha is clamped here, so that 1 - alpha stays invertible
TRANSMITTANCE_MIN = 1e-4  # a pixel stops before the splat that would take its transmittance below this
PARAMS = 10  # a splat's row: mx, my, a, b, c, opacity, r, g, b, z
OUTPUTS = 5  # a pixel's row: r, g, b, alpha, depth
# A pixel loops over its tile's list (hundreds of splats): four tiles of pixels are worth a CPU thread, where the
# launcher's default waits for 8192 rows (a 96 x 96 image would blend on one core).
PIXELS_PER_THREAD = 4 * TILE * TILE


@cache
def splat_exponent(scalar: type) -> wp.Function:
    """The Warp function every blend kernel (this module's and :mod:`~headfields.renderers.gaussian_blocks`') takes a
    splat's exponent at a pixel with: ``−½(a dx² + c dy²) − b dx dy`` of its conic ``(a, b, c)`` at the pixel's offset
    ``(dx, dy)`` from its centre, in one order of operations, so that the kernels agree to round-off."""
    half = scalar(0.5)

    @no_type_check  # Warp parameter types are not Python type hints; keep the jaxtyping checker off them.
    @wp.func
    def exponent(a: scalar, b: scalar, c: scalar, dx: scalar, dy: scalar):
        return -half * (a * dx * dx + c * dy * dy) - b * dx * dy

    return exponent


@cache
def splat_gradient(scalar: type) -> wp.Function:
    """The Warp function both kernel pairs' backward passes share (this module's and
    :mod:`~headfields.renderers.gaussian_blocks`'): a blended splat's gradient at one pixel, its row's ten values, from
    its ``row`` (a ``PARAMS``-vector of ``scalar``), the pixel's offset ``(dx, dy)`` from its centre, ``gauss`` (its
    ``exp(power)``), the transmittance ``t`` in front of it, ``rest`` (what the pixel's colour and depth still get from
    the splats behind it, this one's share taken off), ``g`` (the loss's gradient w.r.t. the pixel's colour and depth)
    and ``final_t`` (the gradient w.r.t. its alpha times its final transmittance). A clamped alpha passes no gradient
    to opacity or shape (the module docstring gives the formulas)."""
    alpha_max, half, one = scalar(ALPHA_MAX), scalar(0.5), scalar(1.0)
    vec = wp.types.vector(length=PARAMS, dtype=scalar)
    vec4 = wp.types.vector(length=4, dtype=scalar)

    @no_type_check  # Warp parameter types are not Python type hints; keep the jaxtyping checker off them.
    @wp.func
    def gradient(row: vec, dx: scalar, dy: scalar, gauss: scalar, t: scalar, rest: vec4, g: vec4, final_t: scalar):
        raw = row[5] * gauss
        alpha = wp.min(alpha_max, raw)
        w = alpha * t
        d = vec()
        d[6] = w * g[0]
        d[7] = w * g[1]
        d[8] = w * g[2]
        d[9] = w * g[3]
        if raw <= alpha_max:  # a clamped alpha does not move with opacity or shape
            keep = one / (one - alpha)
            g_alpha = g[0] * (row[6] * t - rest[0] * keep) + g[1] * (row[7] * t - rest[1] * keep)
            g_alpha += g[2] * (row[8] * t - rest[2] * keep) + g[3] * (row[9] * t - rest[3] * keep)
            g_alpha += final_t * keep
            d[5] = gauss * g_alpha
            g_power = raw * g_alpha  # ∂α/∂power = opacity · G
            d[0] = -(row[2] * dx + row[3] * dy) * g_power
            d[1] = -(row[4] * dy + row[3] * dx) * g_power
            d[2] = -half * dx * dx * g_power
            d[3] = -dx * dy * g_power
            d[4] = -half * dy * dy * g_power
        return d

    return gradient


@cache
def pixel_kernels(scalar: type) -> tuple[wp.Kernel, wp.Kernel]:
    """The forward and backward kernels in ``scalar`` (wp.float32 or wp.float64), built on first use."""
    alpha_min, alpha_max, t_min = scalar(ALPHA_MIN), scalar(ALPHA_MAX), scalar(TRANSMITTANCE_MIN)
    half, one, zero = scalar(0.5), scalar(1.0), scalar(0.0)
    tile_side = TILE
    exponent, gradient = splat_exponent(scalar), splat_gradient(scalar)
    vec = wp.types.vector(length=PARAMS, dtype=scalar)
    vec4 = wp.types.vector(length=4, dtype=scalar)

    @no_type_check
    @wp.kernel(module="unique", enable_backward=False)  # the adjoint is the kernel below
    def forward(
        params: wp.array2d(dtype=scalar),
        cut: wp.array(dtype=scalar),
        start: wp.array(dtype=wp.int32),
        end: wp.array(dtype=wp.int32),
        width: int,
        tiles_x: int,
        out: wp.array2d(dtype=scalar),
        last: wp.array(dtype=wp.int32),
        pixel: wp.array(dtype=wp.int32),
    ):
        p = pixel[wp.tid()]
        py = p / width
        px = p - py * width
        tile = (py / tile_side) * tiles_x + px / tile_side
        cx = scalar(px) + half
        cy = scalar(py) + half
        t = one
        r = zero
        g = zero
        b = zero
        depth = zero
        n = start[tile]
        for j in range(start[tile], end[tile]):
            k = j
            dx = params[k, 0] - cx
            dy = params[k, 1] - cy
            power = exponent(params[k, 2], params[k, 3], params[k, 4], dx, dy)
            if power > zero or power < cut[k]:
                continue
            alpha = wp.min(alpha_max, params[k, 5] * wp.exp(power))
            if alpha < alpha_min:
                continue
            t_next = t * (one - alpha)
            if t_next < t_min:
                break
            w = alpha * t
            r += w * params[k, 6]
            g += w * params[k, 7]
            b += w * params[k, 8]
            depth += w * params[k, 9]
            t = t_next
            n = j + 1
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
        tiles_x: int,
        out: wp.array2d(dtype=scalar),
        last: wp.array(dtype=wp.int32),
        grad_out: wp.array2d(dtype=scalar),
        grad: wp.array3d(dtype=scalar),
        pixel: wp.array(dtype=wp.int32),
        slot: wp.array(dtype=wp.int32),
    ):
        i = wp.tid()
        p = pixel[i]
        s = slot[i]
        py = p / width
        px = p - py * width
        tile = (py / tile_side) * tiles_x + px / tile_side
        cx = scalar(px) + half
        cy = scalar(py) + half
        g = vec4(grad_out[p, 0], grad_out[p, 1], grad_out[p, 2], grad_out[p, 4])  # colour and depth
        final_t = grad_out[p, 3] * (one - out[p, 3])  # dL/dA times T_N: ∂A/∂αⱼ = T_N / (1 - αⱼ)
        rest = vec4(out[p, 0], out[p, 1], out[p, 2], out[p, 4])  # what the pixel still gets from the splats behind
        t = one
        for j in range(start[tile], last[p]):
            k = j
            dx = params[k, 0] - cx
            dy = params[k, 1] - cy
            power = exponent(params[k, 2], params[k, 3], params[k, 4], dx, dy)
            if power > zero or power < cut[k]:
                continue
            gauss = wp.exp(power)
            raw = params[k, 5] * gauss
            alpha = wp.min(alpha_max, raw)
            if alpha < alpha_min:
                continue
            w = alpha * t
            row = vec()
            for c in range(PARAMS):
                row[c] = params[k, c]
            rest -= w * vec4(row[6], row[7], row[8], row[9])
            d = gradient(row, dx, dy, gauss, t, rest, g, final_t)
            for c in range(PARAMS):
                wp.atomic_add(grad, s, k, c, d[c])
            t = t * (one - alpha)

    return forward, backward


def exponent_cut(opacity: Tensor) -> Tensor:
    """Below this exponent a splat's alpha, ``opacity · exp(power)``, is under 1/255 whatever the clamp: a pixel
    skips it without the exponential (most of a tile's splats are far from most of its pixels). Kept 1e-5 (and
    1e-5 of its size) short of the bound, so that the exact test on alpha still decides the borderline cases."""
    bound = torch.log(ALPHA_MIN / opacity.clamp(min=torch.finfo(opacity.dtype).tiny))
    return bound - 1e-5 * (1 + bound.abs())
