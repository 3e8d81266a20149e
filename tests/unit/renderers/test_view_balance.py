"""View-balanced ray sampling: view angles against cameras placed at known azimuths, bins of a synthetic orbit,
and balanced frame draws (exact counts per bin, the extra draws to random bins, uniform within a bin)."""

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation
from scipy.stats import chisquare

from headfields.cameras import PinholeCameras, look_at
from headfields.renderers import BACK, FRONT, SIDE, balanced_frames, sample_pixels_balanced, view_angles, view_bins

from helpers import raises_naming


def _orbit_cameras(azimuth, elevation, centre, radius, dtype, device):
    """Cameras at ``azimuth`` (about +y, 0 on +z) and ``elevation`` around ``centre``, looking at it."""
    a = torch.as_tensor(azimuth, dtype=torch.float64)
    e = torch.as_tensor(elevation, dtype=torch.float64)
    offset = torch.stack([torch.sin(a) * torch.cos(e), torch.sin(e), torch.cos(a) * torch.cos(e)], dim=-1)
    eye = (centre + radius * offset).to(dtype).to(device)
    c2w = look_at(eye, centre.to(dtype).to(device).expand_as(eye))
    return PinholeCameras(50.0, 50.0, 8.0, 8.0, 16, 16, c2w)


def _wrapped(angle):
    """|angle| wrapped to [0, pi]."""
    return np.abs((np.asarray(angle) + np.pi) % (2 * np.pi) - np.pi)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_view_angles_of_cameras_at_known_azimuths(device, dtype):
    azimuth = np.linspace(-math.pi, math.pi, 13)[:-1] + 0.05
    centre = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
    cameras = _orbit_cameras(azimuth, np.zeros_like(azimuth), centre, 1.5, dtype, device)
    for yaw in (0.0, 0.7, -2.5):  # the subject faces +z turned by yaw about +y; length does not matter
        forward = 3.0 * torch.tensor([math.sin(yaw), 0.0, math.cos(yaw)], dtype=dtype, device=device)
        angles = view_angles(cameras, forward.expand(len(azimuth), 3), centre.to(dtype).to(device).expand(len(azimuth), 3))
        assert angles.dtype == dtype and angles.device == device
        tol = 1e-5 if dtype == torch.float32 else 1e-12
        np.testing.assert_allclose(angles.cpu().double().numpy(), _wrapped(azimuth - yaw), atol=tol)


def test_view_angles_in_front_behind_and_above(device):
    # In front, behind, and at elevation e above the facing direction: angles 0, pi and e exactly.
    centre = torch.zeros(3, dtype=torch.float64)
    cameras = _orbit_cameras([0.0, math.pi, 0.0, math.pi], [0.0, 0.0, 0.4, 1.2], centre, 2.0, torch.float64, device)
    forward = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64, device=device).expand(4, 3)
    angles = view_angles(cameras, forward, torch.zeros(4, 3, dtype=torch.float64, device=device))
    np.testing.assert_allclose(angles.cpu().numpy(), [0.0, math.pi, 0.4, math.pi - 1.2], atol=1e-12)


def test_view_angles_gradients():
    cameras = _orbit_cameras([0.3, 2.0, -1.1], [0.1, -0.2, 0.5], torch.zeros(3, dtype=torch.float64), 2.0, torch.float64, "cpu")
    forward = torch.tensor([[0.1, 0.2, 1.0], [0.5, -0.1, 0.8], [-0.3, 0.0, 1.0]], dtype=torch.float64, requires_grad=True)
    centers = (0.1 * torch.randn(3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda f, c: view_angles(cameras, f, c), (forward, centers))


def test_view_bins_edges():
    third = math.pi / 3
    angles = torch.tensor([0.0, third - 1e-6, third, math.pi / 2, 2 * third - 1e-6, 2 * third, math.pi], dtype=torch.float64)
    assert view_bins(angles).tolist() == [FRONT, FRONT, SIDE, SIDE, SIDE, BACK, BACK]
    assert view_bins(torch.tensor([math.pi], dtype=torch.float32)).tolist() == [BACK]  # float32 pi > math.pi
    assert view_bins(angles, edges=(math.pi / 2,)).tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert view_bins(torch.zeros(0)).shape == (0,)


@pytest.fixture(scope="module")
def orbit_video(tmp_path_factory):
    """A 21-frame orbit: 20 training and validation frames make one turn in yaw steps of 18 degrees, never within
    6 degrees of a bin edge."""
    from headfields.data import load_insta_dataset
    from headfields.synthetic import SyntheticVideoConfig, make_synthetic_video

    config = SyntheticVideoConfig(
        num_frames=21, num_val=1, num_test=1, resolution=8, supersampling=1, episode_frames=4, orbit=True, orbit_turns=1.0
    )
    root = make_synthetic_video(tmp_path_factory.mktemp("orbit"), config)
    return config, load_insta_dataset(root, "train")


def test_orbit_frames_fall_into_front_side_and_back_thirds(orbit_video):
    config, frames = orbit_video
    # The subject's facing direction: SMPL-X faces +z, turned by the global orientation (pose joint 0).
    rotation = Rotation.from_rotvec(frames.params.pose[:, 0].double().numpy())
    forward = torch.from_numpy(rotation.apply([0.0, 0.0, 1.0]))
    centers = frames.mesh_vertices.double().mean(dim=1)
    cameras = PinholeCameras(
        frames.cameras.fx, frames.cameras.fy, frames.cameras.cx, frames.cameras.cy, 8, 8, frames.cameras.camera_to_world.double()
    )
    angles = view_angles(cameras, forward, centers)

    to_camera = (cameras.camera_to_world[:, :3, 3] - centers).numpy()
    cosine = np.einsum("bi,bi->b", forward.numpy(), to_camera) / np.linalg.norm(to_camera, axis=1)
    np.testing.assert_allclose(angles.numpy(), np.arccos(cosine), atol=1e-7)

    k = np.arange(len(frames))
    yaw = 2 * np.pi * config.orbit_turns * k / (config.num_frames - config.num_test)
    # The camera is framed on the head, about 0.1 rad above the body's centre, and drifts a little.
    np.testing.assert_allclose(angles.numpy(), _wrapped(yaw), atol=0.12)
    expected = np.digitize(_wrapped(yaw), [np.pi / 3, 2 * np.pi / 3])
    bins = view_bins(angles)
    assert bins.tolist() == expected.tolist()
    counts = np.bincount(bins.numpy(), minlength=3)
    assert counts.tolist() == [6, 6, 7]  # 19 of 20 frames of a uniform turn: about a third each

    batch = balanced_frames(bins, 300, torch.Generator().manual_seed(0))
    assert np.bincount(bins[batch].numpy(), minlength=3).tolist() == [100, 100, 100]


@settings(max_examples=40)
@given(
    labels=st.lists(st.integers(0, 4), min_size=1, max_size=30),
    count=st.integers(0, 200),
    seed=st.integers(0, 2**31 - 1),
)
def test_balanced_frames_counts_per_bin(labels, count, seed):
    bins = torch.tensor(labels)
    frames = balanced_frames(bins, count, torch.Generator().manual_seed(seed), num_bins=5)
    assert frames.shape == (count,) and frames.dtype == torch.long
    assert frames.min().item() >= 0 if count else True
    present = sorted(set(labels))
    drawn = np.bincount(bins[frames].numpy(), minlength=5) if count else np.zeros(5, dtype=int)
    base, extra = divmod(count, len(present))
    for b in range(5):
        if b not in present:
            assert drawn[b] == 0  # empty bins are skipped
        else:
            assert drawn[b] in (base, base + 1)
    assert (drawn == base + 1).sum() == extra
    runs = [b for i, b in enumerate(bins[frames].tolist()) if i == 0 or b != bins[frames[i - 1]]]
    assert len(runs) == len(set(runs))  # grouped by bin


def test_balanced_frames_equal_counts_exactly():
    bins = torch.tensor([0] * 40 + [1] * 7 + [2] * 1)  # a front-heavy video
    frames = balanced_frames(bins, 99, torch.Generator().manual_seed(3))
    assert np.bincount(bins[frames].numpy()).tolist() == [33, 33, 33]


def test_balanced_frames_uniform_within_a_bin():
    bins = torch.tensor([1, 0, 1, 2, 1, 1, 0, 1])  # bin 1: frames 0, 2, 4, 5, 7
    frames = balanced_frames(bins, 3 * 5000, torch.Generator().manual_seed(1))
    inside = frames[bins[frames] == 1].numpy()
    observed = np.bincount(inside, minlength=8)[[0, 2, 4, 5, 7]]
    assert observed.sum() == 5000
    assert chisquare(observed).pvalue > 1e-3
    # a large bin, its frames scattered among the other bin's: each of its 37 frames alike
    bins = torch.tensor([0] * 37 + [1] * 3)[torch.randperm(40, generator=torch.Generator().manual_seed(0))]
    frames = balanced_frames(bins, 2 * 37 * 300, torch.Generator().manual_seed(2))
    observed = np.bincount(frames.numpy(), minlength=40)[(bins == 0).numpy()]
    assert observed.sum() == 37 * 300
    assert chisquare(observed).pvalue > 1e-3


def test_balanced_frames_gives_the_extra_draws_to_a_uniformly_random_set_of_bins():
    bins = torch.tensor([4, 0, 3, 1, 0, 4])  # four filled bins (2 empty): 6 draws, 2 bins get a second
    pairs = []
    for seed in range(1200):
        drawn = np.bincount(bins[balanced_frames(bins, 6, torch.Generator().manual_seed(seed), 5)].numpy(), minlength=5)
        assert drawn[2] == 0 and sorted(drawn[[0, 1, 3, 4]].tolist()) == [1, 1, 2, 2]
        pairs.append(tuple(np.flatnonzero(drawn == 2)))
    observed = [pairs.count(pair) for pair in itertools.combinations([0, 1, 3, 4], 2)]
    assert sum(observed) == 1200 and chisquare(observed).pvalue > 1e-3  # each of the 6 pairs alike


def test_balanced_frames_remainder_goes_to_random_bins():
    bins = torch.tensor([0, 1, 1, 2, 2, 2])
    picked = [bins[balanced_frames(bins, 1, torch.Generator().manual_seed(s))].item() for s in range(600)]
    assert chisquare(np.bincount(picked, minlength=3)).pvalue > 1e-3


def test_balanced_frames_skips_empty_bins():
    front_only = torch.zeros(6, dtype=torch.long)
    frames = balanced_frames(front_only, 10, torch.Generator().manual_seed(0))
    assert frames.shape == (10,) and frames.max() < 6
    bins = torch.tensor([2, 0, 2, 0])  # no side views
    frames = balanced_frames(bins, 10, torch.Generator().manual_seed(0))
    assert np.bincount(bins[frames].numpy(), minlength=3).tolist() == [5, 0, 5]


def test_balanced_frames_reproducible(device):
    bins = torch.tensor([0, 0, 0, 1, 2, 2, 1, 0, 0])
    reference = balanced_frames(bins, 50, torch.Generator().manual_seed(7))
    again = balanced_frames(bins.to(device), 50, torch.Generator().manual_seed(7))
    assert again.device == device and torch.equal(again.cpu(), reference)
    other = balanced_frames(bins, 50, torch.Generator().manual_seed(8))
    assert not torch.equal(other, reference)


def test_sample_pixels_balanced(device):
    azimuth = [0.0, 0.2, -0.3, 0.1, 1.6, 3.0]  # four front views, one side, one back
    cameras = _orbit_cameras(azimuth, [0.0] * 6, torch.zeros(3, dtype=torch.float64), 2.0, torch.float32, device)
    forward = torch.tensor([0.0, 0.0, 1.0], device=device).expand(6, 3)
    bins = view_bins(view_angles(cameras, forward, torch.zeros(6, 3, device=device)))
    assert bins.tolist() == [FRONT] * 4 + [SIDE, BACK]
    samples = sample_pixels_balanced(cameras, bins, 3000, torch.Generator().manual_seed(2))
    assert samples.frame.device == device and samples.pixels.device == device
    assert np.bincount(bins[samples.frame].cpu().numpy()).tolist() == [1000, 1000, 1000]
    pixels = samples.pixels.cpu().numpy()
    assert np.all(pixels - np.floor(pixels) == 0.5) and pixels.min() > 0 and pixels.max() < 16
    assert chisquare(np.bincount(samples.cols.cpu().numpy(), minlength=16)).pvalue > 1e-3
    assert chisquare(np.bincount(samples.rows.cpu().numpy(), minlength=16)).pvalue > 1e-3
    again = sample_pixels_balanced(cameras, bins, 3000, torch.Generator().manual_seed(2))
    assert torch.equal(again.frame, samples.frame) and torch.equal(again.pixels, samples.pixels)
    assert sample_pixels_balanced(cameras, bins, 0, torch.Generator()).frame.shape == (0,)
    labels = torch.tensor([0, 0, 5, 0, 7, 5], device=device)  # bins of finer edges: any labels, empty ones between
    frame = sample_pixels_balanced(cameras, labels, 300, torch.Generator().manual_seed(4)).frame
    assert np.bincount(labels[frame].cpu().numpy(), minlength=8).tolist() == [100, 0, 0, 0, 0, 100, 0, 100]


def test_a_training_step_s_draw_reads_nothing_back_and_keeps_its_shapes(host_sync_spy):
    """On a GPU (CUDA's paths, the loop's trusted values) the draw asks the device for nothing: a CUDA graph can hold it;
    its shapes are those of the frames and the count, whatever bins are filled."""
    from headfields.checks import trusted_values
    from headfields.device_paths import cuda_paths

    cameras = _orbit_cameras([0.0, 0.2, 1.6, 3.0], [0.0] * 4, torch.zeros(3, dtype=torch.float64), 2.0, torch.float32, "cpu")
    g = torch.Generator().manual_seed(5)
    for labels in ([0, 0, 1, 2], [2, 2, 2, 2], [0, 2, 0, 2]):
        with cuda_paths(), trusted_values(), host_sync_spy() as spy:
            samples = sample_pixels_balanced(cameras, torch.tensor(labels), 101, g)
        assert not spy.reads and not spy.copies, spy.report()
        assert samples.frame.shape == (101,) and samples.pixels.shape == (101, 2)


def test_bad_input_names_the_argument():
    cameras = _orbit_cameras([0.0, 1.0], [0.0, 0.0], torch.zeros(3, dtype=torch.float64), 2.0, torch.float64, "cpu")
    forward = torch.tensor([[0.0, 0.0, 1.0]] * 2, dtype=torch.float64)
    centers = torch.zeros(2, 3, dtype=torch.float64)
    g = torch.Generator()
    with raises_naming("cameras"):
        view_angles(cameras.camera_to_world, forward, centers)
    with raises_naming("forward"):
        view_angles(cameras, forward[:, :2], centers)
    with raises_naming("forward"):
        view_angles(cameras, torch.zeros(2, 3, dtype=torch.float64), centers)
    with raises_naming("centers"):
        view_angles(cameras, forward, cameras.camera_to_world[:, :3, 3])  # subject at the camera
    with raises_naming("centers"):
        view_angles(cameras, forward, torch.full((2, 3), float("nan"), dtype=torch.float64))
    with raises_naming("angles"):
        view_bins(torch.tensor([0.5, -0.1]))
    with raises_naming("angles"):
        view_bins(torch.tensor([4.0]))
    with raises_naming("angles"):
        view_bins(torch.tensor([1, 2]))
    with raises_naming("edges"):
        view_bins(torch.tensor([0.5]), edges=(2.0, 1.0))
    with raises_naming("edges"):
        view_bins(torch.tensor([0.5]), edges=(1.0, 4.0))
    bins = torch.tensor([0, 1, 2])
    with raises_naming("bins"):
        balanced_frames(torch.tensor([0.0, 1.0]), 4, g)
    with raises_naming("bins"):
        balanced_frames(torch.tensor([0, 3]), 4, g)
    with raises_naming("bins"):
        balanced_frames(torch.zeros(0, dtype=torch.long), 4, g)
    with raises_naming("count"):
        balanced_frames(bins, -1, g)
    with raises_naming("count"):
        balanced_frames(bins, True, g)
    with raises_naming("generator"):
        balanced_frames(bins, 4, None)
    with raises_naming("num_bins"):
        balanced_frames(bins, 4, g, num_bins=0)
    with raises_naming("bins"):
        sample_pixels_balanced(cameras, bins, 4, g)  # three bins for two frames
    with raises_naming("cameras"):
        sample_pixels_balanced(None, bins[:2], 4, g)
