"""PSNR (pooled, and averaged over channels as GaussianAvatars scores) and L1 against their formulas; SSIM, whole
and masked, against an independent SciPy implementation of Wang et al. (skimage's method), and 3DGS's zero-padded
SSIM against the same on the padded images."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.ndimage import gaussian_filter

from headfields.metrics import l1, psnr, ssim

from helpers import raises_naming


def ssim_scipy(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """SSIM as skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    channel_axis=-1): SciPy Gaussian filtering (truncate 3.5 -> 11 taps), borders of 5 pixels cropped."""
    filt = lambda x: gaussian_filter(x, sigma=1.5, truncate=3.5, mode="reflect")  # noqa: E731
    c1, c2, pad = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2, 5
    values = []
    for ch in range(a.shape[-1]):
        x, y = a[..., ch].astype(np.float64), b[..., ch].astype(np.float64)
        mx, my = filt(x), filt(y)
        vx, vy, cxy = filt(x * x) - mx * mx, filt(y * y) - my * my, filt(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        values.append(s[pad:-pad, pad:-pad].mean())
    return float(np.mean(values))


def images(seed: int, shape=(24, 31, 3)):
    rng = np.random.default_rng(seed)
    a = rng.random(shape)
    b = np.clip(a + rng.normal(0, 0.1, shape), 0, 1)
    return a, b


def test_skimage_is_not_needed():
    # skimage is not a dependency; where it is installed, the reference above must agree with it.
    skm = pytest.importorskip("skimage.metrics")
    a, b = images(0)
    ref = skm.structural_similarity(a, b, data_range=1.0, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False)  # fmt: skip
    assert math.isclose(ssim_scipy(a, b), ref, rel_tol=1e-10)


@settings(max_examples=15)
@given(st.integers(0, 10_000), st.sampled_from([1.0, 255.0]))
def test_ssim_matches_the_scipy_reference(seed, scale):
    a, b = images(seed)
    got = ssim(torch.from_numpy(a * scale), torch.from_numpy(b * scale), max_value=scale)
    assert math.isclose(float(got), ssim_scipy(a * scale, b * scale, scale), rel_tol=1e-9)


@settings(max_examples=10)
@given(st.integers(0, 10_000), st.sampled_from([(24, 31, 3), (7, 9, 1)]))
def test_3dgs_ssim_is_the_reference_over_the_zero_padded_image(seed, shape):
    """3DGS's SSIM (a window on every pixel of the image padded with zeros by half a window) is the valid-window SSIM
    of the zero-padded images: the reference's on them, whatever their size (3DGS takes images under 11 pixels)."""
    a, b = images(seed, shape)
    padded = [np.pad(x, ((5, 5), (5, 5), (0, 0))) for x in (a, b)]
    got = ssim(torch.from_numpy(a), torch.from_numpy(b), padding="zero")
    assert math.isclose(float(got), ssim_scipy(*padded), rel_tol=1e-9)
    assert ssim(torch.from_numpy(a), torch.from_numpy(a), padding="zero").item() == pytest.approx(1.0)


def test_3dgs_ssim_scores_the_border_s_windows_lower():
    a, b = images(3)
    valid = ssim(torch.from_numpy(a), torch.from_numpy(b))
    zero = ssim(torch.from_numpy(a), torch.from_numpy(b), padding="zero")
    assert zero != valid
    mask = torch.zeros(24, 31, dtype=torch.bool)
    mask[0, 0] = True  # a corner: no valid window centre, a zero-padded one
    assert torch.isfinite(ssim(torch.from_numpy(a), torch.from_numpy(b), mask=mask, padding="zero"))
    with raises_naming("mask"):
        ssim(torch.from_numpy(a), torch.from_numpy(b), mask=mask)
    with raises_naming("padding"):
        ssim(torch.from_numpy(a), torch.from_numpy(b), padding="same")


def test_ssim_batches_and_devices(device):
    pairs = [images(s) for s in range(3)]
    a = torch.tensor(np.stack([p[0] for p in pairs]), dtype=torch.float32, device=device)
    b = torch.tensor(np.stack([p[1] for p in pairs]), dtype=torch.float32, device=device)
    expected = np.mean([ssim_scipy(*p) for p in pairs])
    assert math.isclose(float(ssim(a, b)), expected, rel_tol=1e-5)
    assert ssim(a, a).item() == 1.0
    assert ssim(a, 1 - a) < 0.5


def test_ssim_is_differentiable():
    a, b = images(1, (12, 12, 1))
    x = torch.from_numpy(a).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: ssim(x, torch.from_numpy(b)), (x,), fast_mode=True)


def test_psnr_formula(device):
    a, b = images(2)
    pred, target = torch.tensor(a, device=device), torch.tensor(b, device=device)
    mse = np.mean((a - b) ** 2)
    assert math.isclose(float(psnr(pred, target)), 10 * math.log10(1 / mse), rel_tol=1e-12)
    assert math.isclose(float(psnr(pred * 255, target * 255, max_value=255)), 10 * math.log10(1 / mse), rel_tol=1e-12)
    mask = torch.zeros(a.shape[:2], dtype=torch.bool, device=device)
    mask[3:9, 4:20] = True
    masked_mse = np.mean((a[3:9, 4:20] - b[3:9, 4:20]) ** 2)
    assert math.isclose(float(psnr(pred, target, mask=mask)), 10 * math.log10(1 / masked_mse), rel_tol=1e-12)
    # Constant error 0.1 everywhere: exactly 20 dB; identical images: inf.
    assert math.isclose(float(psnr(torch.full((5, 3), 0.6), torch.full((5, 3), 0.5))), 20.0, rel_tol=1e-5)
    assert psnr(pred, pred).item() == math.inf


def test_psnr_averaged_over_channels_as_gaussian_avatars_scores(device):
    # Each channel its own error (0.01, 0.05, 0.2 in spread): the mean of the three channels' PSNRs (GaussianAvatars'
    # train.py: its psnr views a [3, H, W] image as [3, H * W]) lies above the PSNR of the pooled MSE.
    rng = np.random.default_rng(5)
    a = rng.random((20, 17, 3))
    b = np.clip(a + rng.normal(0, 1, a.shape) * np.array([0.01, 0.05, 0.2]), 0, 1)
    per_channel = [10 * math.log10(1 / np.mean((a[..., c] - b[..., c]) ** 2)) for c in range(3)]
    pooled = 10 * math.log10(1 / np.mean((a - b) ** 2))
    pred, target = torch.tensor(a, device=device), torch.tensor(b, device=device)
    got = float(psnr(pred, target, channels="mean"))
    assert math.isclose(got, float(np.mean(per_channel)), rel_tol=1e-12)
    assert got > pooled + 3  # the two conventions differ by decibels here, not by rounding
    assert math.isclose(float(psnr(pred, target, channels="pooled")), pooled, rel_tol=1e-12)
    # Over a mask: each channel's MSE over the mask's pixels.
    mask = torch.zeros(a.shape[:2], dtype=torch.bool, device=device)
    mask[2:11, 5:16] = True
    inside = [10 * math.log10(1 / np.mean((a[2:11, 5:16, c] - b[2:11, 5:16, c]) ** 2)) for c in range(3)]
    assert math.isclose(float(psnr(pred, target, mask=mask, channels="mean")), float(np.mean(inside)), rel_tol=1e-12)
    # Equal errors in every channel: the same number either way.
    same = pred + 0.1
    torch.testing.assert_close(psnr(same, pred, channels="mean"), psnr(same, pred), rtol=1e-9, atol=0)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: psnr(torch.zeros(4, 3), torch.zeros(4, 3), channels="each"), "channels"),
        (lambda: psnr(torch.zeros(4, 3), torch.zeros(4, 2)), "target"),
        (lambda: psnr(torch.zeros(4, 3), torch.zeros(4, 3), max_value=0.0), "max_value"),
        (lambda: psnr(torch.zeros(4, 3), torch.zeros(4, 3), mask=torch.zeros(4, dtype=torch.bool)), "mask"),
        (lambda: psnr(torch.zeros(4, 3), torch.zeros(4, 3), mask=torch.ones(3, dtype=torch.bool)), "mask"),
        (lambda: psnr(torch.full((4, 3), math.nan), torch.zeros(4, 3)), "pred"),
        (lambda: ssim(torch.zeros(8, 16, 3), torch.zeros(8, 16, 3)), "pred"),
        (lambda: ssim(torch.zeros(16, 16, 3), torch.zeros(16, 15, 3)), "target"),
        (lambda: ssim(torch.zeros(2, 2, 16, 16, 3), torch.zeros(2, 2, 16, 16, 3)), "pred"),
        (lambda: ssim(torch.zeros(16, 16, 3, dtype=torch.long), torch.zeros(16, 16, 3)), "pred"),
    ],
)
def test_bad_input(call, name):
    with raises_naming(name):
        call()


def ssim_map_scipy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The reference's SSIM map, averaged over channels, at the valid window centres (5-pixel border cropped)."""
    filt = lambda x: gaussian_filter(x, sigma=1.5, truncate=3.5, mode="reflect")  # noqa: E731
    c1, c2, pad = 0.01**2, 0.03**2, 5
    maps = []
    for ch in range(a.shape[-1]):
        x, y = a[..., ch].astype(np.float64), b[..., ch].astype(np.float64)
        mx, my = filt(x), filt(y)
        vx, vy, cxy = filt(x * x) - mx * mx, filt(y * y) - my * my, filt(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        maps.append(s[pad:-pad, pad:-pad])
    return np.mean(maps, axis=0)


def test_masked_ssim_averages_the_map_over_the_mask(device):
    pairs = [images(s) for s in (3, 4)]
    a = torch.tensor(np.stack([p[0] for p in pairs]), device=device)
    b = torch.tensor(np.stack([p[1] for p in pairs]), device=device)
    mask = torch.zeros(a.shape[:3], dtype=torch.bool, device=device)
    mask[0, 4:14, 3:20] = True  # partly in the 5-pixel border, where no window is centred
    mask[1, 8:20, 10:29] = True
    maps = [ssim_map_scipy(*p) for p in pairs]
    centres = mask[:, 5:-5, 5:-5].cpu().numpy()
    expected = np.concatenate([m[c] for m, c in zip(maps, centres, strict=True)]).mean()  # pooled over the images
    assert math.isclose(float(ssim(a, b, mask=mask)), expected, rel_tol=1e-9)
    # A mask of every pixel is no mask; one image's mask is that image's map.
    assert math.isclose(float(ssim(a, b, mask=torch.ones_like(mask))), float(ssim(a, b)), rel_tol=1e-12)
    assert math.isclose(float(ssim(a[1], b[1], mask=mask[1])), maps[1][centres[1]].mean(), rel_tol=1e-9)
    assert ssim(a, a, mask=mask).item() == 1.0


def test_l1_formula(device):
    a, b = images(5)
    pred, target = torch.tensor(a, device=device), torch.tensor(b, device=device)
    assert math.isclose(float(l1(pred, target)), np.abs(a - b).mean(), rel_tol=1e-12)
    mask = torch.zeros(a.shape[:2], dtype=torch.bool, device=device)
    mask[2:7, 1:9] = True
    assert math.isclose(float(l1(pred, target, mask=mask)), np.abs(a[2:7, 1:9] - b[2:7, 1:9]).mean(), rel_tol=1e-12)
    assert math.isclose(float(l1(torch.full((5, 3), 0.6), torch.full((5, 3), 0.5))), 0.1, rel_tol=1e-5)
    assert l1(pred, pred).item() == 0.0


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: l1(torch.zeros(4, 3), torch.zeros(4, 2)), "target"),
        (lambda: l1(torch.zeros(4, 3), torch.zeros(4, 3), mask=torch.zeros(4, dtype=torch.bool)), "mask"),
        (lambda: l1(torch.zeros(4, 3), torch.zeros(4, 3), mask=torch.ones(4)), "mask"),
        (lambda: l1(torch.full((4, 3), math.inf), torch.zeros(4, 3)), "pred"),
        (lambda: ssim(torch.zeros(16, 16, 3), torch.zeros(16, 16, 3), mask=torch.ones(16, 15, dtype=torch.bool)), "mask"),
        (lambda: ssim(torch.zeros(16, 16, 3), torch.zeros(16, 16, 3), mask=torch.ones(16, 16)), "mask"),
        (lambda: ssim(torch.zeros(16, 16, 3), torch.zeros(16, 16, 3), mask=_border_only(16)), "mask"),
    ],
)
def test_bad_masked_input(call, name):
    with raises_naming(name):
        call()


def _border_only(size: int) -> torch.Tensor:
    """A mask of the 5-pixel border alone: no SSIM window is centred in it."""
    mask = torch.ones(size, size, dtype=torch.bool)
    mask[5:-5, 5:-5] = False
    return mask
