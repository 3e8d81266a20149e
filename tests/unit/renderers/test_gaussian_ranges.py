"""rasterize_gaussians at the edges of its sizes and ranges (issue 96): a frame's (tile, Gaussian) pairs checked from
their count before any is made, with no host read-back beyond that count, and focal lengths whose squares are past
float32 drawn as the float64 dense reference draws them."""

from __future__ import annotations

import pytest
import torch
from test_gaussian_rasterizer import reference

from headfields import checks
from headfields.cameras import PinholeCameras
from headfields.device_paths import cuda_paths
from headfields.renderers.gaussians import rasterize_gaussians

SH_C0 = 0.28209479177387814


def _covering(n: int, side: int) -> tuple[list[torch.Tensor], PinholeCameras]:
    """``n`` Gaussians a metre wide a metre in front of a ``side``-pixel camera: each covers every tile."""
    means = torch.zeros(n, 3)
    means[:, 2] = 1.0 + torch.arange(n) / n
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]]).expand(n, 4)
    scene = [means, quats, torch.ones(n, 3), torch.full((n,), 0.5), torch.full((n, 3), 0.5)]
    cameras = PinholeCameras(fx=side, fy=side, cx=side / 2, cy=side / 2, width=side, height=side,
                             camera_to_world=torch.eye(4)[None])  # fmt: skip
    return scene, cameras


def test_tile_pairs_past_memory_or_warp_are_refused_before_any_is_made(monkeypatch):
    """A frame of many large Gaussians built its (tile, Gaussian) pairs (13.5 GB) before their count was refused:
    the count is checked against the memory available and Warp's indexing first, naming scales."""
    scene, cameras = _covering(1000, 32)  # 4 tiles each: 4,000 pairs, 80 B each at the sort
    assert rasterize_gaussians(*scene, cameras).alpha.min() > 0.5  # drawn where memory allows

    def made(*args, **kwargs):
        raise AssertionError("the (tile, Gaussian) pairs were made before their count was checked")

    monkeypatch.setattr(torch, "repeat_interleave", made)
    monkeypatch.setattr(checks, "available_memory", lambda device: 200_000)  # the image's 74 KB fit, not 320 KB
    with pytest.raises(ValueError, match=(
        r"^scales: a frame of 4,000 \(tile, Gaussian\) pairs needs 320 KB for the rasteriser's tile lists on cpu, more "
        r"than the 200 KB available; give fewer or smaller Gaussians, or smaller cameras$"
    )):  # fmt: skip
        rasterize_gaussians(*scene, cameras)
    monkeypatch.setattr(checks, "available_memory", lambda device: 2**50)
    scene, cameras = _covering(3300, 4096)  # 65,536 tiles each: 216M pairs, past 2^31 / 10
    with pytest.raises(ValueError, match=r"^scales: a frame of 216,268,800 \(tile, Gaussian\) pairs, more than the ras"):
        rasterize_gaussians(*scene, cameras)


def test_a_render_reads_back_only_its_pair_count(host_sync_spy):
    """The pair count is read once, before the pairs, and handed on: the check adds no host synchronisation."""
    scene, cameras = _covering(20, 32)
    with cuda_paths(), host_sync_spy() as spy:
        rasterize_gaussians(*scene, cameras, validate=False)
    assert [(where, n) for (_, where), n in spy.reads.items()] == [("renderers/gaussians.py:_tile_lists", 1)], spy.report()
    assert not spy.copies, spy.report()


@pytest.mark.parametrize("focal", [1e20, 1e30])
def test_a_focal_length_past_float32_s_squares_draws_as_the_dense_reference(focal):
    """In float32 a focal length of 1e20 pixels squared past float32 in the 2D covariance: nothing was drawn. A
    Gaussian on the optical axis covers the image flat (its alpha its opacity at every pixel), one a few pixels off
    it is a few pixels wide: as the float64 dense reference draws them (the Jacobian in units of a power of two)."""
    means = torch.tensor([[0.0, 0.0, 2.0], [3.0 / focal, -2.0 / focal, 1.0]])  # on the axis; 3 and -2 pixels off
    quats = torch.tensor([[1.0, 0.2, 0.1, 0.0], [0.9, 0.0, 0.3, 0.1]])
    scales = torch.tensor([[0.01, 0.02, 0.005], [1.5 / focal, 2.0 / focal, 1.0 / focal]])
    opacities, sh = torch.tensor([0.6, 0.7]), torch.tensor([[[0.9, -0.4, -0.8]], [[-0.6, 0.8, 0.1]]])
    background = torch.tensor([0.2, 0.4, 0.9])

    def cameras(dtype: torch.dtype) -> PinholeCameras:
        return PinholeCameras(fx=focal, fy=1.1 * focal, cx=8.0, cy=8.0, width=16, height=16,
                              camera_to_world=torch.eye(4, dtype=dtype)[None])  # fmt: skip

    out = rasterize_gaussians(means, quats, scales, opacities, sh, cameras(torch.float32), background=background)
    assert int(out.radii[0]) > 16 and 0 < int(out.radii[1]) < 16
    # The corner, 10 pixels from the small one: the flat one alone, its opacity over the background.
    flat = 0.6 * (SH_C0 * sh[0, 0] + 0.5) + 0.4 * background
    torch.testing.assert_close(out.image[0, 0], flat, atol=1e-6, rtol=0)
    truth = reference(*(t.double() for t in (means, quats, scales, opacities, sh)), cameras(torch.float64),
                      background.double())  # fmt: skip
    for got, want in zip((out.image, out.alpha, out.depth), truth, strict=True):
        torch.testing.assert_close(got.double(), want, atol=2e-4, rtol=0)  # float32 against float64, as elsewhere


def test_intrinsics_past_the_gaussians_dtype_are_refused_naming_cameras():
    """A focal length of 1e39 is finite in Python but inf in float32 (NaN centres, nothing drawn): refused for
    float32 Gaussians, drawn for float64 ones."""
    scene = [torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[1.0, 0.0, 0.0, 0.0]]), torch.full((1, 3), 0.01),
             torch.tensor([0.6]), torch.ones(1, 3)]  # fmt: skip
    cameras = PinholeCameras(fx=1e39, fy=1e39, cx=8.0, cy=8.0, width=16, height=16, camera_to_world=torch.eye(4)[None])
    refused = r"^cameras: expected fx within the range of the Gaussians' torch.float32 \(±3.403e\+38\), got 1e\+39"
    with pytest.raises(ValueError, match=refused):
        rasterize_gaussians(*scene, cameras)
    out = rasterize_gaussians(*(t.double() for t in scene), cameras)
    torch.testing.assert_close(out.alpha, torch.full((16, 16), 0.6, dtype=torch.float64))
