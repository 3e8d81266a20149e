"""A differentiable rasteriser of 3D Gaussians (3D Gaussian Splatting, Kerbl et al. 2023), in torch and Warp, on
CPU and CUDA: :func:`rasterize_gaussians`, one entry in the shape of gsplat's ``rasterization``.

1. **Project** (torch, differentiable by autograd): each Gaussian's mean through the camera; its covariance
   ``Σ = R S Sᵀ Rᵀ`` (``R`` from the unit quaternion, ``S`` the scales) to the image by EWA splatting,
   ``Σ' = J W Σ Wᵀ Jᵀ + 0.3 I`` (``J`` the pinhole's Jacobian at the mean, evaluated with the mean clamped to
   1.3x the field of view as 3DGS does; 0.3 pixels² the low-pass filter of 3DGS's ``computeCov2D``); its colour
   from spherical harmonics of the direction from the camera centre (3DGS's ``computeColorFromSH``: the basis of
   :mod:`headfields.encoders.spherical_harmonics`, + 0.5, clamped at 0).
2. **Bin** (torch): each Gaussian covers the 16x16 tiles its ``3σ`` square touches (radius ``⌈3 √λ_max⌉``, capped
   at :data:`RADIUS_MAX`: a footprint larger than the image covers all of it), or the smaller square beyond which
   its alpha is under 1/255 everywhere; one (tile, depth) key per covered tile, sorted, gives every tile its list of
   Gaussians near to far. The pairs' count, the render's one read-back on CUDA, is checked against the memory
   available and Warp's 32-bit indexing before any pair is made.
3. **Blend** (Warp, :mod:`headfields.renderers.gaussian_blend`): front to back with 3DGS's thresholds, a
   hand-written backward kernel; on CUDA a block of threads a tile, its splats in shared memory
   (:mod:`~headfields.renderers.gaussian_blocks`), on the CPU one thread a pixel
   (:mod:`~headfields.renderers.gaussian_kernels`).

``backend="gsplat"`` draws the same inputs with gsplat's ``rasterization`` instead (CUDA and float32 only, the
``[gsplat]`` extra; imported at the call, never required), returning the same :class:`GaussianRender`: its colour
and alpha, its ``"RGB+D"`` depth channel (the weights' sum of camera depths, as ours; ``"RGB+ED"`` is that over
alpha), the background composited here as ours is. Its projection and blending are 3DGS's, as ours are; its tile
rules differ. gsplat 1.5 and later bins a Gaussian to the axis-aligned box of ``min(3.33, √(2 ln(255 · opacity)))``
standard deviations along each image axis, every pixel where its alpha can reach 1/255 (gsplat 1.4: the square of
half-side ``⌈3 √λ_max⌉``, ours before its shrink), and does not draw one whose opacity is under 1/255; ours stops
at 3σ as 3DGS does. So a pixel past 3σ of a Gaussian of opacity over 0.35 (where its alpha at 3σ,
``0.011 × opacity``, is over 1/255), in a tile ours leaves out, differs by up to that alpha times the colours'
difference; and the radii differ (gsplat's: the larger half-side of its box).

Gaussians whose mean lies nearer than ``near`` in front of the camera (or behind it) are not drawn; one that
covers the whole image is drawn on every tile. The image, alpha and depth are differentiable w.r.t. means,
quaternions, scales, opacities and colours (and the camera pose).

    cameras = PinholeCameras.from_fov(look_at(eye, target)[None], 512, 512, math.radians(30))
    out = rasterize_gaussians(means, quats, scales, opacities, sh, cameras, frame=0)
    out.image  # [512, 512, 3]; out.means2d.retain_grad() before backward gives density control its gradients
"""

from __future__ import annotations

import functools
import math
import typing
import weakref
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from ..cameras import PinholeCameras
from ..checks import IntLike, check_count, check_finite, check_float, check_memory, check_shape, checking_values, validation
from ..deformers.gaussian_binding import quaternion_to_matrix
from ..encoders.spherical_harmonics import MAX_DEGREE, _real_sh
from .gaussian_blend import blend_tiles
from .gaussian_kernels import ALPHA_MIN, OUTPUTS, PARAMS, TILE

__all__ = [
    "BACKENDS",
    "BLUR",
    "Backend",
    "GaussianRender",
    "TileLists",
    "check_image_memory",
    "project_gaussians",
    "rasterize_gaussians",
    "sh_colors",
]

# Who draws (rasterize_gaussians' backend): our Warp kernels on CPU and CUDA, or gsplat's rasterization on CUDA.
Backend = Literal["warp", "gsplat"]
BACKENDS = typing.get_args(Backend)

BLUR = 0.3  # pixels², added to the projected covariance's diagonal (3DGS's computeCov2D low-pass filter)
SIGMAS = 3.0  # a Gaussian reaches the tiles within this many standard deviations of its mean (3DGS: 3)
FOV_MARGIN = 1.3  # the Jacobian is evaluated with the mean clamped to this many times the half field of view (3DGS)
NEAR = 0.01  # metres: nearer Gaussians are not drawn (3DGS's in_frustum: 0.2 in its scenes' units)
# Pixels a footprint's radius is capped at: a square this wide about any centre within 2^29 pixels of the image
# covers every tile of every image the rasteriser draws (Warp's 32-bit indexing keeps them under 2^29 pixels a side).
RADIUS_MAX = 2.0**30
# Bytes a pixel of the padded tile grid takes while the tiles are listed (_tile_lists: int64 pixel indices, their
# tile-order copy and the kept ones, int32 for Warp, four bool masks), and a scalar a pixel's output takes (the
# blend's [r, g, b, alpha, depth], the image over the background, 1 - alpha) besides its int32 list position.
TILE_LIST_BYTES = 8 + 8 + 8 + 4 + 4
PIXEL_SCALARS = OUTPUTS + 3 + 1
# Bytes a (tile, Gaussian) pair takes at a render's peak: while the lists are sorted, eight int64s (the Gaussian, its
# offset, tile, depth and key, the order and the sort's copies), counted as ten for CUDA's radix sort (its second
# keys and values; not measured); while they are blended, an int32 id and PARAMS + 3 scalars (its row, the cut and
# the cut's temporaries). Measured on the CPU (peak RSS, 2M to 16M pairs): the lists 64 B a pair; a whole float32
# render 67 B, a float64 one 105 B.
SORT_PAIR_BYTES = 10 * 8
BLEND_PAIR_BYTES, BLEND_PAIR_SCALARS = 4, PARAMS + 3
GSPLAT_DTYPE = torch.float32  # gsplat's CUDA kernels draw in float32 only


@dataclass
class Projection2D:
    """Each Gaussian on the image: pixel centre, conic (upper triangle of the inverse 2D covariance), camera depth
    and radius in pixels (0: not drawn)."""

    means2d: Float[Tensor, "N 2"]
    conics: Float[Tensor, "N 3"]
    depths: Float[Tensor, " N"]
    radii: Int[Tensor, " N"]


@dataclass
class TileLists:
    """Which Gaussians each 16x16 tile blends, near to far: ``ids[start[t]:end[t]]`` for tile ``t`` (row-major
    tiles); ``pixel`` the image's pixels (row-major indices) in tile order, one blending thread each."""

    ids: Int[Tensor, " M"]
    start: Int[Tensor, " T"]
    end: Int[Tensor, " T"]
    pixel: Int[Tensor, " P"]
    width: int
    height: int
    tiles_x: int


@dataclass
class GaussianRender:
    """What :func:`rasterize_gaussians` draws: the image (background where nothing is), alpha, depth (the
    blending weights' sum of camera depths: ``depth / alpha`` is the expected depth), and, per Gaussian, the
    projected centres (in the autograd graph: ``retain_grad()`` them for view-space gradients) and radii (0:
    not drawn)."""

    image: Float[Tensor, "H W 3"]
    alpha: Float[Tensor, "H W"]
    depth: Float[Tensor, "H W"]
    means2d: Float[Tensor, "N 2"]
    radii: Int[Tensor, " N"]


def project_gaussians(
    means: Float[Tensor, "N 3"],
    quats: Float[Tensor, "N 4"],
    scales: Float[Tensor, "N 3"],
    cameras: PinholeCameras,
    frame: IntLike = 0,
    near: float = NEAR,
) -> Projection2D:
    """EWA splatting of the Gaussians (means, unit-normalised ``(w, x, y, z)`` quaternions, scales) into camera
    ``frame`` of ``cameras`` (see the module docstring); differentiable, unchecked (:func:`rasterize_gaussians`
    checks its input).

        proj = project_gaussians(means, quats, scales, cameras, 0)
        proj.means2d  # [N, 2] pixels; proj.radii [N], 0 where a Gaussian is not drawn
    """
    w2c = cameras.world_to_camera[frame].to(means.dtype)
    cam = means @ w2c[:3, :3].T + w2c[:3, 3]
    x, y, z = cam.unbind(-1)
    front = z > near
    z = torch.where(front, z, torch.ones_like(z))  # behind the camera: a stand-in depth, the Gaussian is not drawn
    fx, fy, cx, cy, w, h = cameras.fx, cameras.fy, cameras.cx, cameras.cy, cameras.width, cameras.height
    # The Jacobian at the mean clamped to the field of view widened by 0.3 of it on either side (3DGS's
    # computeCov2D, gsplat's persp_proj): a Gaussian far outside the image keeps a bounded footprint.
    margin_x, margin_y = (FOV_MARGIN - 1) * 0.5 * w / fx, (FOV_MARGIN - 1) * 0.5 * h / fy  # 0.3 tan(half field of view)
    tx = z * torch.clamp(x / z, -(cx / fx + margin_x), (w - cx) / fx + margin_x)
    ty = z * torch.clamp(y / z, -(cy / fy + margin_y), (h - cy) / fy + margin_y)
    # The 2D covariance in units of (k g)²: k the Gaussian's largest scale where that is over 1, g the power of two
    # at most f / z times that scale (up to 1), the pixels it spans at its depth. A Gaussian metres wide a centimetre
    # away (its determinant past float32 at scales of 1e8), or one over 1e9 pixels wide (any on the image at a focal
    # length of 1e20), made NaN and undrawn where 3DGS's math covers the image. Dividing by a power of two is exact:
    # wherever the unscaled math stays in float32's range, each value is the unscaled one, bit for bit.
    largest_scale = scales.detach().amax(-1)
    k = torch.clamp(largest_scale, min=1.0)
    g = _power_of_two(max(fx, fy) / z.detach() * torch.clamp(largest_scale, max=1.0))
    zg, z2g, zero = z * g, z**2 * g, torch.zeros_like(z)  # fx / (z g): fx / z is past float32 at fx = 1e37, z = 0.01
    jacobian = torch.stack(
        [torch.stack([fx / zg, zero, -fx * tx / z2g], -1), torch.stack([zero, fy / zg, -fy * ty / z2g], -1)], -2
    )  # J / g
    k2, g2 = k * k, g * g  # k2 inf past float32's reach: the conic is then 0, the Gaussian flat over the whole image
    m = quaternion_to_matrix(quats) * (scales / k[:, None])[:, None, :]  # R S / k (of the normalised quaternion)
    t = jacobian @ w2c[:3, :3] @ m  # [N, 2, 3]
    cov = t @ t.transpose(1, 2)
    blur = BLUR / k2 / g2
    a, b, c = cov[:, 0, 0] + blur, cov[:, 0, 1], cov[:, 1, 1] + blur
    det = a * c - b * b
    good = front & (det > 0)
    det = torch.where(good, det, torch.ones_like(det))
    conics = torch.stack([c / det, -b / det, a / det], -1) / k2[:, None] / g2[:, None]
    mid = 0.5 * (a + c)
    floor = 0.1 / (k2 * k2) / (g2 * g2)  # 3DGS's floor of 0.1 pixels⁴
    largest = mid + torch.sqrt(torch.maximum(mid * mid - det, floor))
    # A footprint past RADIUS_MAX (or float32's reach) covers every tile of any image drawn: capped, not overflowed.
    radius = torch.clamp(torch.ceil(SIGMAS * torch.sqrt(largest.detach()) * k * g), max=RADIUS_MAX)
    radii = torch.where(good, radius, 0).long()
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], -1)
    # A Gaussian whose square touches no tile of the image is not drawn (3DGS's getRect): radius 0.
    lo_x, hi_x, lo_y, hi_y = _tile_rect(means2d.detach(), radii.to(means2d.dtype), w, h)
    radii = torch.where((hi_x > lo_x) & (hi_y > lo_y), radii, 0)
    return Projection2D(means2d=means2d, conics=conics, depths=z, radii=radii)


def _power_of_two(x: Tensor) -> Tensor:
    """The power of two in ``(x / 2, x]`` of each ``x`` clamped to ``[1, the dtype's largest]``: 1 up to 2, and
    exact (``x`` over twice its mantissa, a quotient that IEEE division rounds to itself)."""
    x = torch.clamp(x, 1.0, torch.finfo(x.dtype).max)
    return x / (2 * torch.frexp(x).mantissa)


def _tile_rect(center: Tensor, radius: Tensor, width: int, height: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The tiles (first and one past the last, on each axis) a square of half-side ``radius`` about ``center`` touches."""
    tiles_x, tiles_y = -(-width // TILE), -(-height // TILE)
    lo_x = ((center[:, 0] - radius) / TILE).floor().clamp(0, tiles_x).long()
    hi_x = ((center[:, 0] + radius) / TILE).floor().add(1).clamp(0, tiles_x).long()
    lo_y = ((center[:, 1] - radius) / TILE).floor().clamp(0, tiles_y).long()
    hi_y = ((center[:, 1] + radius) / TILE).floor().add(1).clamp(0, tiles_y).long()
    return lo_x, hi_x, lo_y, hi_y


def sh_colors(
    sh: Float[Tensor, "N K 3"], means: Float[Tensor, "N 3"], eye: Float[Tensor, " 3"], degree: int | None = None
) -> Float[Tensor, "N 3"]:
    """3DGS's colour of each Gaussian seen from ``eye``: its spherical harmonics ``sh`` (``K = (D+1)²``
    coefficients a channel; only the first ``(degree+1)²`` used, all when None) at the unit direction from ``eye``
    to its mean, + 0.5, clamped at 0.

        rgb = sh_colors(sh, means, cameras.camera_to_world[0, :3, 3])  # [N, 3]
    """
    bands = math.isqrt(sh.shape[1]) if degree is None else degree + 1
    dirs = F.normalize(means - eye.to(means.dtype), dim=-1)
    basis = torch.stack(_real_sh(dirs, bands), -1)  # [N, bands²]
    return torch.clamp((basis[:, :, None] * sh[:, : bands * bands]).sum(1) + 0.5, min=0.0)


def _tile_lists(proj: Projection2D, opacities: Tensor, width: int, height: int) -> TileLists:
    """Bin the drawn Gaussians to the tiles their square of side 2·radius touches, sorted by (tile, depth).

    The square shrinks to where the Gaussian's alpha can reach 1/255, ``√(2 ln(255 · opacity))`` standard
    deviations, where that is inside 3: the tiles it leaves out would skip the Gaussian at every pixel, so the
    image is the same, with fewer (tile, Gaussian) pairs to sort and blend."""
    device = proj.means2d.device
    tiles_x, tiles_y = -(-width // TILE), -(-height // TILE)
    center = proj.means2d.detach()
    sigmas = torch.sqrt(2 * torch.log(torch.clamp(opacities.detach() / ALPHA_MIN, min=1.0)))
    radius = torch.minimum(proj.radii.to(center.dtype), torch.ceil(sigmas * proj.radii / SIGMAS))
    lo_x, hi_x, lo_y, hi_y = _tile_rect(center, radius, width, height)
    span_x = hi_x - lo_x
    count = torch.where(radius > 0, span_x * (hi_y - lo_y), 0)
    # The one host sync of a render on CUDA: how many (tile, Gaussian) pairs there are (gsplat reads it too), read
    # before any pair exists so that it is checked first, and handed to repeat_interleave (which reads it otherwise).
    pairs = int(count.sum())
    _check_pairs(pairs, center.dtype, device)
    gaussian = torch.repeat_interleave(torch.arange(len(count), device=device), count, output_size=pairs)
    first = torch.cumsum(count, 0) - count
    k = torch.arange(pairs, device=device) - first[gaussian]
    tile = (lo_y[gaussian] + k // span_x[gaussian]) * tiles_x + lo_x[gaussian] + k % span_x[gaussian]
    # Positive float32 depths order as their bit patterns: the key is the tile above the depth's 32 bits.
    depth_bits = proj.depths.detach().float().view(torch.int32).long()[gaussian]
    order = torch.argsort((tile << 32) | depth_bits, stable=True)  # equal depths keep the Gaussians' order
    per_tile = torch.zeros(tiles_x * tiles_y, dtype=torch.long, device=device).index_add_(0, tile, torch.ones_like(tile))
    end = torch.cumsum(per_tile, 0)
    return TileLists(
        ids=gaussian[order].int(),
        start=(end - per_tile).int(),
        end=end.int(),
        pixel=_tile_pixels(width, height, device),
        width=width,
        height=height,
        tiles_x=tiles_x,
    )


def _check_pairs(pairs: int, dtype: torch.dtype, device: torch.device) -> None:
    """A frame's (tile, Gaussian) pairs fit in ``device``'s memory and in Warp's 32-bit indexing, checked from their
    count before any is made: a frame of many large Gaussians on a large image built 13.5 GB of pairs before their
    count was refused. Named ``scales``: large footprints make the pairs (fewer Gaussians or a smaller image too)."""
    itemsize = torch.finfo(dtype).bits // 8
    need = pairs * max(SORT_PAIR_BYTES, BLEND_PAIR_BYTES + BLEND_PAIR_SCALARS * itemsize)
    value, advice = f"a frame of {pairs:,} (tile, Gaussian) pairs", "give fewer or smaller Gaussians, or smaller cameras"
    check_memory("scales", value, need, device, "the rasteriser's tile lists", advice)
    if pairs * PARAMS >= 2**31:  # Warp indexes its arrays with 32-bit strides
        raise ValueError(f"scales: {value}, more than the rasteriser indexes (2^31 / {PARAMS}); {advice}")


@functools.lru_cache(maxsize=16)
def _tile_pixels(width: int, height: int, device: torch.device) -> Tensor:
    """The image's pixels tile by tile (a tile's 256 threads blend the same list), those inside the image: int32, made
    once an image size and device (its selection reads a count back then, not at every render)."""
    tiles_x, tiles_y = -(-width // TILE), -(-height // TILE)
    with torch.inference_mode(False):  # a plain tensor, whatever mode the first render ran in
        rows = torch.arange(tiles_y * TILE, device=device)[:, None].expand(-1, tiles_x * TILE)
        cols = torch.arange(tiles_x * TILE, device=device)[None, :].expand(tiles_y * TILE, -1)
        in_tiles = (rows * width + cols).reshape(tiles_y, TILE, tiles_x, TILE).transpose(1, 2).reshape(-1)
        inside = (cols < width).reshape(tiles_y, TILE, tiles_x, TILE).transpose(1, 2).reshape(-1)
        inside &= (rows < height).reshape(tiles_y, TILE, tiles_x, TILE).transpose(1, 2).reshape(-1)
        return in_tiles[inside].int()


def _check(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor, cameras: PinholeCameras) -> None:
    device = means.device
    check_float("means", means, [None, 3])
    n = means.shape[0]
    check_float("quats", quats, [n, 4], device)
    check_float("scales", scales, [n, 3], device)
    check_float("opacities", opacities, [n], device)
    if colors.dim() == 2:
        check_float("colors", colors, [n, 3], device)
    else:
        check_float("colors", colors, [n, None, 3], device)
        bands = math.isqrt(colors.shape[1])
        if bands * bands != colors.shape[1] or not 1 <= bands <= MAX_DEGREE:
            raise ValueError(
                f"colors: expected [N, 3] colours or [N, K, 3] SH coefficients with K a square up to {MAX_DEGREE**2}, "
                f"got K = {colors.shape[1]}"
            )
    dtypes = {t.dtype for t in (means, quats, scales, opacities, colors)}
    if len(dtypes) != 1 or means.dtype not in (torch.float32, torch.float64):
        raise TypeError("means, quats, scales, opacities, colors: expected one dtype, float32 or float64")
    if cameras.device != device:
        raise ValueError(f"cameras: expected cameras on {device} (the device of means), got {cameras.device}")
    limit = torch.finfo(means.dtype).max  # the projection takes the intrinsics in the Gaussians' dtype
    for name in ("fx", "fy", "cx", "cy"):
        if abs(getattr(cameras, name)) > limit:
            raise ValueError(
                f"cameras: expected {name} within the range of the Gaussians' {means.dtype} (±{limit:.4g}), got "
                f"{getattr(cameras, name):.4g}; give float64 Gaussians or a smaller {name}"
            )
    if checking_values() and n:
        if bool((scales <= 0).any()):
            raise ValueError(f"scales: expected positive scales, found {float(scales.min()):.4g}")
        if bool((quats == 0).all(dim=-1).any()):  # not the norm: its square underflows for a quaternion of 1e-30s
            raise ValueError("quats: expected non-zero quaternions (they are normalised), found a zero one")
        if bool(((opacities < 0) | (opacities > 1)).any()):
            raise ValueError(
                f"opacities: expected values in [0, 1], found [{float(opacities.min()):.4g}, {float(opacities.max()):.4g}]"
            )


def check_image_memory(cameras: PinholeCameras, dtype: torch.dtype, device: torch.device) -> None:
    """The rasteriser's buffers for an image of ``cameras``' size in ``dtype`` fit in ``device``'s memory: a clear
    error naming the cameras' size before the allocation, not the allocator's after the projection. A render checks it
    itself unless ``validate=False``; a caller drawing many frames of one size (a training run) checks it once."""
    width, height = cameras.width, cameras.height
    padded = -(-width // TILE) * TILE * -(-height // TILE) * TILE
    itemsize = torch.finfo(dtype).bits // 8
    need = padded * TILE_LIST_BYTES + width * height * (PIXEL_SCALARS * itemsize + 4)
    check_memory("cameras", f"{width} x {height} pixels", need, device, "the rasteriser's image buffers")


def _check_image(cameras: PinholeCameras, dtype: torch.dtype) -> None:
    """The image within Warp's 32-bit indexing (arithmetic: every render checks it)."""
    width, height = cameras.width, cameras.height
    itemsize = torch.finfo(dtype).bits // 8
    size = f"{width} x {height} pixels"
    if width * height * OUTPUTS * itemsize >= 2**31:  # Warp's strides are 32-bit byte counts
        raise ValueError(
            f"cameras: {size} is more than the rasteriser indexes ({OUTPUTS} {dtype} values a pixel under 2^31 bytes); "
            "give smaller cameras (headfields.cameras.resized_cameras)"
        )


def rasterize_gaussians(
    means: Float[Tensor, "N 3"],
    quats: Float[Tensor, "N 4"],
    scales: Float[Tensor, "N 3"],
    opacities: Float[Tensor, " N"],
    colors: Float[Tensor, "N 3"] | Float[Tensor, "N K 3"],
    cameras: PinholeCameras,
    frame: IntLike = 0,
    background: Float[Tensor, " 3"] | None = None,
    sh_degree: int | None = None,
    near: float = NEAR,
    validate: bool = True,
    backend: Backend = "warp",
) -> GaussianRender:
    """Render Gaussians (world means, ``(w, x, y, z)`` quaternions, normalised here, positive scales, opacities in
    [0, 1], and colours ``[N, 3]`` or SH coefficients ``[N, K, 3]`` of which the first ``(sh_degree+1)²`` are used)
    into camera ``frame`` of ``cameras`` over ``background`` (default black). See the module docstring.
    ``validate=False`` skips the checks of values (NaN, scales, quaternions, opacities: host syncs on CUDA) and of the
    image's memory (a driver call on CUDA: a caller drawing many frames of one size checks it once,
    :func:`check_image_memory`).
    ``backend="gsplat"`` draws with gsplat's ``rasterization`` (CUDA, float32, the ``[gsplat]`` extra; see the
    module docstring for where its tiles differ); without gsplat, on the CPU or in float64 it raises, naming ``backend``.

        out = rasterize_gaussians(means, quats, scales, opacities, sh, cameras, 0, background=torch.ones(3))
        loss = (out.image - target).abs().mean()
        loss.backward()  # gradients for means, quats, scales, opacities and sh
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    with validation(validate):
        _check(means, quats, scales, opacities, colors, cameras)
        frame = check_count("frame", frame, 0, cameras.num_frames - 1)
        if sh_degree is not None and colors.dim() == 2:
            raise ValueError(f"sh_degree: expected None with [N, 3] colours (no SH to evaluate), got {sh_degree}")
        if sh_degree is not None:
            check_count("sh_degree", sh_degree, 0, math.isqrt(colors.shape[1]) - 1)
        if not (isinstance(near, int | float) and math.isfinite(near) and near > 0):
            raise ValueError(f"near: expected a positive distance in the camera's units, got {near!r}")
        if background is not None:
            check_shape("background", background, [3], means.device)
            check_finite("background", background)
    if backend == "gsplat":
        return _gsplat_render(means, quats, scales, opacities, colors, cameras, frame, background, sh_degree, near)
    if validate:
        check_image_memory(cameras, means.dtype, means.device)
    _check_image(cameras, means.dtype)
    proj = project_gaussians(means, quats, scales, cameras, frame, near)
    if colors.dim() == 3:
        eye = cameras.camera_to_world[frame, :3, 3]
        colors = sh_colors(colors, means, eye, sh_degree)
    params = torch.cat([proj.means2d, proj.conics, opacities[:, None], colors, proj.depths[:, None]], -1)
    width, height = cameras.width, cameras.height
    out = blend_tiles(params, _tile_lists(proj, opacities, width, height)).reshape(height, width, 5)
    image, alpha = out[..., :3], out[..., 3]
    if background is not None:
        image = image + (1 - alpha)[..., None] * background.to(image.dtype)
    return GaussianRender(image=image, alpha=alpha, depth=out[..., 4], means2d=proj.means2d, radii=proj.radii)


def check_backend(backend: Backend, name: str = "backend") -> None:
    """Refuse a ``backend`` this process cannot draw with (gsplat's, without the gsplat package) before any work: a
    run asking for it fails before its folder is written, not at its first frame. ``name``: the caller's setting."""
    if backend == "gsplat":
        _gsplat_rasterization(name)


def _gsplat_rasterization(name: str = "backend"):
    """gsplat's ``rasterization``, imported at the call: gsplat is an optional extra (it builds a CUDA extension).
    ``name``: the setting that asked for it, in the error."""
    try:
        from gsplat import rasterization
    except ImportError as error:
        raise ImportError(
            f"{name}: 'gsplat' needs the gsplat package ({error}): pip install 'headfields[gsplat]' on a machine with "
            f"CUDA, or take {name}='warp' (the default)"
        ) from None
    return rasterization


@functools.lru_cache(maxsize=16)
def _intrinsics(fx: float, fy: float, cx: float, cy: float, device: torch.device) -> Tensor:
    """The float32 matrix K gsplat takes, made once a camera and device (a render copies nothing from the host)."""
    with torch.inference_mode(False):  # a plain tensor, whatever mode the first render ran in
        return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=GSPLAT_DTYPE, device=device)


def _gsplat_render(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    cameras: PinholeCameras,
    frame: int,
    background: Tensor | None,
    sh_degree: int | None,
    near: float,
) -> GaussianRender:
    """:func:`rasterize_gaussians` with ``backend="gsplat"``, its input checked: one camera through gsplat's
    ``rasterization`` (16x16 tiles, 3DGS's 0.3 pixels² blur, unpacked), back as our :class:`GaussianRender`."""
    rasterization = _gsplat_rasterization()
    if means.dtype != GSPLAT_DTYPE:
        raise TypeError(
            f"backend: 'gsplat' draws float32 only, got {means.dtype} Gaussians: .float() them, or take backend='warp'"
        )
    if means.device.type != "cuda":
        raise ValueError(
            f"backend: 'gsplat' draws on CUDA only (gsplat's kernels), got means on {means.device}: move the Gaussians "
            "and cameras to a GPU, or take backend='warp' (the default), which draws on both"
        )
    if colors.dim() == 3 and sh_degree is None:
        sh_degree = math.isqrt(colors.shape[1]) - 1
    k = _intrinsics(cameras.fx, cameras.fy, cameras.cx, cameras.cy, means.device)
    view = cameras.world_to_camera[frame : frame + 1].to(GSPLAT_DTYPE)
    rendered, alphas, meta = rasterization(
        means, quats, scales, opacities, colors, view, k[None], cameras.width, cameras.height,
        near_plane=near, eps2d=BLUR, sh_degree=sh_degree, packed=False, tile_size=TILE, render_mode="RGB+D",
    )  # fmt: skip
    image, alpha, depth = rendered[0, ..., :3], alphas[0, ..., 0], rendered[0, ..., 3]
    if background is not None:  # here, as ours does: gsplat's backgrounds would need a depth channel of their own
        image = image + (1 - alpha)[..., None] * background.to(image.dtype)
    radii = meta["radii"][0]
    if radii.dim() == 2:  # gsplat 1.5 and later: its box's half-sides along x and y
        radii = radii.amax(-1)
    return GaussianRender(image=image, alpha=alpha, depth=depth, means2d=_means2d(meta["means2d"]), radii=radii.long())


def _means2d(batched: Tensor) -> Tensor:
    """The one camera's projected centres ``[N, 2]`` out of gsplat's ``[1, N, 2]``, with the gradient density control
    reads: the row is a view the loss does not pass through, so a hook hands it the batched tensor's gradient when
    the caller has asked for it (``retain_grad()``), as ours has it."""
    means2d = batched[0]
    if batched.requires_grad:
        row = weakref.ref(means2d)  # weak: a strong one would close a cycle through the graph, which gc cannot see

        def hand_over(grad: Tensor) -> None:
            target = row()
            if target is not None and target.retains_grad:
                target.grad = grad[0] if target.grad is None else target.grad + grad[0]

        batched.register_hook(hand_over)
    return means2d
