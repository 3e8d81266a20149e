"""Image metrics: PSNR and SSIM (Wang et al. 2004), the numbers every paper's tables report; and the Chamfer
distance between two triangle meshes, the geometry score of SDF heads such as MonoNPHM (Giebenhain et al. 2024).

Images are channels-last floats ``[H, W, C]`` or ``[B, H, W, C]`` with values in ``[0, max_value]``.
Identical images give PSNR ``inf`` (zero error) and SSIM exactly 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from .checks import IntLike, check_count, check_float, check_int, check_positive, check_shape

__all__ = ["ChamferDistance", "chamfer_distance", "psnr", "ssim"]

# SSIM as defined by Wang et al. (2004) and used by the papers' tables (and skimage with gaussian_weights=True,
# use_sample_covariance=False): an 11x11 Gaussian window of sigma 1.5, K1 = 0.01, K2 = 0.03, averaged over the
# positions where the window fits inside the image ("valid"), then over channels and images.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def psnr(
    pred: Float[Tensor, "*B C"], target: Float[Tensor, "*B C"], max_value: float = 1.0, mask: Bool[Tensor, "*B"] | None = None
) -> Float[Tensor, ""]:
    """``10 log10(max_value^2 / MSE)`` over all elements, or over the pixels (rows of the last dim) where ``mask``
    is True. ``inf`` when the images are identical; a mask with no True entry is an error (no pixels to compare)."""
    check_positive("max_value", max_value)
    check_float("pred", pred, [None] * pred.dim())
    check_float("target", target, list(pred.shape), device=pred.device)
    if mask is not None:
        check_shape("mask", mask, list(pred.shape[:-1]), device=pred.device)
        if mask.dtype != torch.bool:
            raise TypeError(f"mask: expected a bool tensor, got {mask.dtype}")
        pred, target = pred[mask], target[mask]
    if pred.numel() == 0:
        raise ValueError(f"{'mask' if mask is not None else 'pred'}: expected at least one pixel to compare, got none")
    mse = (pred - target).square().mean()
    return 10 * torch.log10(max_value**2 / mse)


def _gaussian_window(dtype: torch.dtype, device: torch.device) -> Tensor:
    x = torch.arange(SSIM_WINDOW, dtype=dtype, device=device) - (SSIM_WINDOW - 1) / 2
    w = torch.exp(-(x**2) / (2 * SSIM_SIGMA**2))
    return w / w.sum()


def _blur(x: Tensor, window: Tensor) -> Tensor:
    """Separable 'valid' Gaussian filter of ``[N, 1, H, W]``."""
    x = F.conv2d(x, window.view(1, 1, -1, 1))
    return F.conv2d(x, window.view(1, 1, 1, -1))


def ssim(pred: Float[Tensor, "*B H W C"], target: Float[Tensor, "*B H W C"], max_value: float = 1.0) -> Float[Tensor, ""]:
    """Mean structural similarity over the valid window positions, channels and images (Wang et al. 2004:
    Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, ``L = max_value``). Images must be at least 11 x 11."""
    check_positive("max_value", max_value)
    if pred.dim() not in (3, 4):
        raise ValueError(f"pred: expected shape [H, W, C] or [B, H, W, C], got {list(pred.shape)}")
    check_float("pred", pred, [None] * pred.dim())
    check_float("target", target, list(pred.shape), device=pred.device)
    h, w = pred.shape[-3], pred.shape[-2]
    if h < SSIM_WINDOW or w < SSIM_WINDOW:
        size = f"{SSIM_WINDOW} x {SSIM_WINDOW}"
        raise ValueError(f"pred: expected images of at least {size} pixels (the SSIM window), got {h} x {w}")
    # [B, H, W, C] -> [B * C, 1, H, W]: every channel of every image filtered on its own.
    x, y = (t.reshape(-1, h, w, t.shape[-1]).permute(0, 3, 1, 2).reshape(-1, 1, h, w) for t in (pred, target))
    window = _gaussian_window(x.dtype, x.device)
    mu_x, mu_y = _blur(x, window), _blur(y, window)
    var_x = _blur(x * x, window) - mu_x**2
    var_y = _blur(y * y, window) - mu_y**2
    cov = _blur(x * y, window) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * max_value) ** 2, (SSIM_K2 * max_value) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean()


@dataclass
class ChamferDistance:
    """Mean point-to-surface distances between two meshes, in the meshes' units (not squared)."""

    a_to_b: Float[Tensor, ""]  # mean over area-uniform samples of mesh a of the distance to mesh b's surface
    b_to_a: Float[Tensor, ""]
    symmetric: Float[Tensor, ""]  # (a_to_b + b_to_a) / 2
    a_samples: Float[Tensor, "N 3"]  # the points drawn on mesh a
    a_distances: Float[Tensor, " N"]  # each one's distance to mesh b (for percentiles, F-scores, error maps)
    b_samples: Float[Tensor, "N 3"]
    b_distances: Float[Tensor, " N"]  # each b sample's distance to mesh a


def _check_mesh(name: str, vertices: Tensor, faces: Tensor, device: torch.device | None = None) -> None:
    check_float(f"{name}_vertices", vertices, [None, 3], device=device)
    if vertices.shape[0] == 0:
        raise ValueError(f"{name}_vertices: expected at least one vertex, got an empty [0, 3] tensor")
    check_int(f"{name}_faces", faces, [None, 3], upper=vertices.shape[0], device=vertices.device)
    if faces.shape[0] == 0:
        raise ValueError(f"{name}_faces: expected at least one triangle, got an empty [0, 3] tensor")


def chamfer_distance(
    a_vertices: Float[Tensor, "Va 3"],
    a_faces: Int[Tensor, "Fa 3"],
    b_vertices: Float[Tensor, "Vb 3"],
    b_faces: Int[Tensor, "Fb 3"],
    num_samples: IntLike = 10000,
    generator: torch.Generator | None = None,
) -> ChamferDistance:
    """Chamfer distance between meshes a and b: ``num_samples`` area-uniform points on each surface, each point's
    exact distance to the other surface (point to triangle, not to the other's samples or vertices), averaged
    per direction; ``symmetric`` is the mean of the two directions.

    Samples are drawn from ``generator`` (a CPU generator; seed 0 when None), so a fixed generator state gives the
    same score on every device. Differentiable with respect to both meshes' vertices; the result has the wider
    dtype of the two.
    """
    # Imported here: image metrics should not pay for Warp's start-up.
    from .geometry import TriangleMesh, closest_point, sample_surface

    _check_mesh("a", a_vertices, a_faces)
    _check_mesh("b", b_vertices, b_faces, device=a_vertices.device)
    meshes = []
    for name, vertices, faces in (("a", a_vertices, a_faces), ("b", b_vertices, b_faces)):
        try:
            meshes.append(TriangleMesh(vertices, faces))
        except ValueError as error:  # what is left to fail is a degenerate triangle ("vertices: ..."): say which mesh
            raise ValueError(f"{name}_{error}") from None
    mesh_a, mesh_b = meshes
    num_samples = check_count("num_samples", num_samples, 1)
    if generator is None:
        generator = torch.Generator(device="cpu").manual_seed(0)
    elif not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise TypeError(f"generator: expected a CPU torch.Generator or None, got {generator!r}")
    # One seed per surface from the caller's generator: sample_surface draws its own random numbers on the CPU.
    seed_a, seed_b = torch.randint(0, 2**62, (2,), generator=generator).tolist()
    dtype = torch.promote_types(a_vertices.dtype, b_vertices.dtype)
    on_a = sample_surface(mesh_a, num_samples, seed=seed_a).point.to(dtype)
    on_b = sample_surface(mesh_b, num_samples, seed=seed_b).point.to(dtype)
    a_distances = closest_point(mesh_b, on_a).distance
    b_distances = closest_point(mesh_a, on_b).distance
    a_to_b, b_to_a = a_distances.mean(), b_distances.mean()
    return ChamferDistance(
        a_to_b=a_to_b,
        b_to_a=b_to_a,
        symmetric=(a_to_b + b_to_a) / 2,
        a_samples=on_a,
        a_distances=a_distances,
        b_samples=on_b,
        b_distances=b_distances,
    )
