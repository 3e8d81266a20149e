"""Mouth regions from lip landmarks: the MediaPipe rings against their published list, polygon filling against
analytic counts and scikit-image's point-in-polygon test, the three regions tiling the outer lip line, and the
regions of the synthetic head's true landmarks against its painted lips and mouth."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.measure import points_in_poly

from headfields.apps.tracking.mouth import MEDIAPIPE_LIP_RINGS, MOUTH_POLYGONS, fill_polygon, mouth_regions

from helpers import raises_naming


def test_mediapipe_rings_are_the_published_ones():
    # The ordered rings as listed from FACEMESH_LIPS (google-ai-edge/mediapipe, face_mesh_connections.py), by hand.
    assert MEDIAPIPE_LIP_RINGS == {
        "upper_outer": (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291),
        "lower_outer": (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291),
        "upper_inner": (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308),
        "lower_inner": (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308),
    }
    assert MOUTH_POLYGONS["ibug68"]["mouth_interior"] == tuple(range(60, 68))


# ---------------------------------------------------------------- polygon filling


def test_square_and_rectangle_counts():
    square = torch.tensor([[2.0, 2.0], [10.0, 2.0], [10.0, 10.0], [2.0, 10.0]])
    mask = fill_polygon(square, 16, 16)
    want = torch.zeros(16, 16, dtype=torch.bool)
    want[2:10, 2:10] = True  # centres 2.5 .. 9.5
    assert torch.equal(mask, want)
    # Fractional corners: x in [2.3, 9.7] holds centres 2.5..9.5 (8), y in [1.6, 5.4] holds 1.5? no, 2.5..4.5 (3).
    rect = torch.tensor([[2.3, 1.6], [9.7, 1.6], [9.7, 5.4], [2.3, 5.4]])
    assert int(fill_polygon(rect, 16, 16).sum()) == 8 * 3
    # Partly outside the image: only the pixels inside it.
    assert int(fill_polygon(square - 6, 16, 16).sum()) == 4 * 4


def test_triangle_count_is_its_area():
    # A right triangle of legs 40 px: area 800; the centres inside miss it by at most the pixels along the edges.
    triangle = torch.tensor([[5.0, 5.0], [45.0, 5.0], [5.0, 45.0]])
    count = int(fill_polygon(triangle, 64, 64).sum())
    # Rows y = r + 0.5 for r in 5..44 hold the centres x in [5, 50 - y): 45 - r - 0.5 rounded up, counted exactly.
    exact = sum(math.ceil(50 - (r + 0.5) - 5.5) for r in range(5, 45))
    assert count == exact and abs(count - 800) <= 40


def test_even_odd_leaves_a_pentagrams_centre_out():
    angles = [math.pi / 2 + k * 4 * math.pi / 5 for k in range(5)]  # the star drawn in one stroke
    star = torch.tensor([[32 + 25 * math.cos(a), 32 - 25 * math.sin(a)] for a in angles])
    mask = fill_polygon(star, 64, 64)
    assert not mask[32, 32]  # the pentagon in the middle is crossed twice
    assert mask[int(32 - 25 * 0.8), 32]  # the upper spike


@settings(max_examples=40)
@given(
    count=st.integers(3, 12),
    seed=st.integers(0, 2**16),
    height=st.integers(1, 40),
    width=st.integers(1, 40),
)
def test_fill_matches_scikit_image(count, seed, height, width):
    # Any polygon, self-intersecting included, partly outside the image: scikit-image's crossing test at each centre.
    polygon = np.random.default_rng(seed).uniform(-10, 50, (count, 2))
    mask = fill_polygon(torch.from_numpy(polygon), height, width)
    rows, cols = np.mgrid[0:height, 0:width]
    centres = np.stack([cols.ravel() + 0.5, rows.ravel() + 0.5], 1)
    want = points_in_poly(centres, polygon).reshape(height, width)
    assert np.array_equal(mask.numpy(), want)


# ---------------------------------------------------------------- regions


def ellipse(cx, cy, a, b, angles):
    return [(cx + a * math.cos(t), cy - b * math.sin(t)) for t in angles]


def open_mouth_ibug(cx=40.3, cy=30.7, open_=6.0) -> torch.Tensor:
    """iBUG-68 points with only the lips set (the rest NaN): outer lip on an ellipse 36 x 20 px, inner on one
    28 x ``2 open_`` px, corners at the ends, as a detector puts them (48 the subject's right = image left)."""
    points = torch.full((68, 2), float("nan"), dtype=torch.float64)
    outer = ellipse(cx, cy, 18, 10, [math.pi - k * math.pi / 6 for k in range(12)])  # 48 left, 51 top, 54 right, 57
    inner = ellipse(cx, cy, 14, open_, [math.pi - k * math.pi / 4 for k in range(8)])  # 60 left, 62 top, 64 right
    points[48:60] = torch.tensor(outer)
    points[60:68] = torch.tensor(inner)
    return points


def shoelace(polygon: torch.Tensor) -> float:
    x, y = polygon[:, 0], polygon[:, 1]
    return float(0.5 * (x * y.roll(-1) - x.roll(-1) * y).sum().abs())


def test_ibug_regions_tile_the_outer_lip_line():
    points = torch.stack([open_mouth_ibug(), open_mouth_ibug(open_=0.0), torch.full((68, 2), float("nan"))])
    points = points.double()
    regions = mouth_regions(points, "ibug68", 64, 80)
    outer = fill_polygon(points[0, 48:60], 64, 80)
    parts = [regions.mouth_interior[0], regions.upper_lip[0], regions.lower_lip[0]]
    assert torch.equal(parts[0] | parts[1] | parts[2], outer)
    assert int(sum(p.int() for p in parts).max()) == 1  # no pixel in two regions
    # The interior's pixel count is the inner polygon's area, to within its edge pixels (perimeter ~ 80 px).
    assert abs(int(parts[0].sum()) - shoelace(points[0, 60:68])) <= 20
    # The lips lie above and below the mouth's centre line.
    rows = torch.arange(64, dtype=torch.float64)[:, None].expand(64, 80) + 0.5
    assert float(rows[parts[1]].mean()) < 30.7 < float(rows[parts[2]].mean())
    # A closed mouth (inner lip points on one line) has no interior; a frame without a face has nothing.
    assert not regions.mouth_interior[1].any() and regions.upper_lip[1].any()
    assert not (regions.mouth_interior[2].any() or regions.upper_lip[2].any() or regions.lower_lip[2].any())


def test_mediapipe_regions_tile_the_outer_lip_line():
    rings = MEDIAPIPE_LIP_RINGS
    points = torch.full((1, 478, 2), float("nan"), dtype=torch.float64)
    # Outer paths along the ellipse 36 x 20 px, inner along 28 x 12 px: 11 points corner to corner.
    half = [math.pi - k * math.pi / 10 for k in range(11)]
    for name, (a, b) in (("upper_outer", (18, 10)), ("upper_inner", (14, 6))):
        points[0, list(rings[name])] = torch.tensor(ellipse(40.0, 30.0, a, b, half), dtype=torch.float64)
    for name, (a, b) in (("lower_outer", (18, 10)), ("lower_inner", (14, 6))):
        points[0, list(rings[name])] = torch.tensor(ellipse(40.0, 30.0, a, b, [-t for t in half]), dtype=torch.float64)
    regions = mouth_regions(points, "mediapipe", 64, 80)
    outer = fill_polygon(points[0, list(rings["upper_outer"]) + list(reversed(rings["lower_outer"][1:-1]))], 64, 80)
    parts = [regions.mouth_interior[0], regions.upper_lip[0], regions.lower_lip[0]]
    assert torch.equal(parts[0] | parts[1] | parts[2], outer)
    assert int(sum(p.int() for p in parts).max()) == 1
    assert abs(int(parts[0].sum()) - math.pi * 14 * 6) <= 25  # the inner ellipse's area, to its edge pixels
    assert mouth_regions(points[:, :468], "mediapipe", 64, 80).upper_lip.equal(regions.upper_lip)


def test_bad_input():
    points = open_mouth_ibug()[None]
    with raises_naming("layout"):
        mouth_regions(points, "dlib", 64, 64)
    with raises_naming("points"):
        mouth_regions(points[:, :51], "ibug68", 64, 64)
    with raises_naming("points"):
        mouth_regions(points, "mediapipe", 64, 64)
    with raises_naming("height"):
        mouth_regions(points, "ibug68", 0, 64)
    bad = points.clone()
    bad[0, 50, 0] = float("inf")
    with raises_naming("points"):
        mouth_regions(bad, "ibug68", 64, 64)


# ---------------------------------------------------------------- the synthetic head


@pytest.mark.unchecked
def test_regions_of_the_synthetic_heads_true_landmarks(tmp_path):
    from headfields.cameras import project_points
    from headfields.data import load_insta_dataset
    from headfields.parametric import load_model
    from headfields.synthetic import SyntheticVideoConfig, make_synthetic_video

    # Short episodes so that the jaw opens in the training frames (a jaw episode every 12 frames).
    config = SyntheticVideoConfig(num_frames=24, num_val=1, num_test=2, resolution=128, episode_frames=4, supersampling=1)
    root = make_synthetic_video(tmp_path, config)
    frames = load_insta_dataset(root, "train")
    p = frames.params
    model = load_model(root / "model")
    landmarks = model(shape=p.shape, expression=p.expression, pose=p.pose, translation=p.translation).landmarks
    n = landmarks.shape[0]
    assert landmarks.shape[1] == 51  # iBUG 17..67: iBUG i is index i - 17
    lips = landmarks[:, 48 - 17 :]
    pixels = project_points(frames.cameras, lips.reshape(-1, 3), torch.arange(n).repeat_interleave(20)).pixels
    points = torch.full((n, 68, 2), float("nan"))
    points[:, 48:] = pixels.reshape(n, 20, 2).float()
    regions = mouth_regions(points, "ibug68", 128, 128)

    labels, seg = frames.segmentation_labels, frames.segmentation
    inside = (seg == labels["mouth_interior"]) | (seg == labels["teeth"])  # a face parser's "mouth" holds the teeth
    painted = inside | (seg == labels["lips"])
    drawn = regions.mouth_interior | regions.upper_lip | regions.lower_lip
    both = (drawn & painted).sum((1, 2)).float()
    iou = both / (drawn | painted).sum((1, 2)).float()
    # Measured: IoU 0.57-0.73 per frame (0.63 over all), precision 1.00: every drawn pixel is painted lip or mouth,
    # but the painted lips run wider than FLAME's lip landmarks (~160 painted pixels to ~95 drawn at 128 px).
    assert float(iou.min()) > 0.5, iou
    assert float((both / drawn.sum((1, 2))).min()) > 0.95
    open_jaw = p.pose[:, model.joint_index("jaw"), 0] > 0.15
    assert int(open_jaw.sum()) >= 2
    interior = regions.mouth_interior[open_jaw]
    assert bool(interior.flatten(1).any(1).all())
    # Measured: the drawn interior overlaps the painted mouth (cavity + teeth) with IoU 0.87-0.88 on open-jaw frames.
    overlap = (interior & inside[open_jaw]).sum((1, 2)).float() / (interior | inside[open_jaw]).sum((1, 2)).float()
    assert float(overlap.min()) > 0.75, overlap
