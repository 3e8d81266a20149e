"""Image metrics: PSNR and SSIM (Wang et al. 2004), the numbers every paper's tables report.

Images are channels-last floats ``[H, W, C]`` or ``[B, H, W, C]`` with values in ``[0, max_value]``.
Identical images give PSNR ``inf`` (zero error) and SSIM exactly 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor

from ._checks import check_float, check_positive, check_shape

__all__ = ["psnr", "ssim"]

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
