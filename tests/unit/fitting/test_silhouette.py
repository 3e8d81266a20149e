"""The silhouette term against analytic masks: a disc's distances and outline, gradients by gradcheck, and the
visual hull of an ellipsoid seen from a turn recovered by fitting a sphere's three axes to its masks."""

import math

import pytest
import torch

from headfields.cameras import PinholeCameras, look_at, pixel_rays, project_points
from headfields.fitting.silhouette import MaskDistances
from headfields.geometry.primitives import uv_sphere

SIZE = 64


def _disc(centre=(30.1, 33.7), radius=15.3):
    steps = torch.arange(SIZE) + 0.5
    x, y = torch.meshgrid(steps, steps, indexing="xy")
    distance = ((x - centre[0]) ** 2 + (y - centre[1]) ** 2).sqrt()
    return distance <= radius, distance - radius


def test_a_discs_distances_and_outline_are_the_circles():
    """The digital disc's edge lies within a pixel of the circle, so do the signed distances of the centres."""
    mask, signed = _disc()
    masks = MaskDistances(mask[None])
    error = masks.distance[0] - signed
    assert float(error.abs().max()) < 0.75
    assert bool((masks.distance[0][mask] <= 0).all() and (masks.distance[0][~mask] > 0).all())
    outline = masks.outlines[0] - torch.tensor([30.1, 33.7])
    radius = outline.norm(dim=-1)
    assert float((radius - 15.3).abs().max()) < 0.75
    angle = torch.sort(torch.atan2(outline[:, 1], outline[:, 0])).values
    assert float(torch.diff(torch.cat([angle, angle[:1] + 2 * math.pi])).max()) < 0.1  # all the way round


def test_outside_reads_the_map_between_centres_and_the_border_past_it():
    mask, _ = _disc()
    masks = MaskDistances(mask[None])
    d = masks.distance[0].float()
    at = torch.tensor([[[10.5, 20.5], [11.0, 20.5], [-3.0, 0.5], [66.0, 0.5], [30.1, 33.7]]])
    got = masks.outside(at)[0]
    assert torch.allclose(got[:2], torch.stack([d[20, 10], (d[20, 10] + d[20, 11]) / 2]))
    assert torch.allclose(got[2:4], torch.stack([d[0, 0], d[0, 63]]))  # beyond the image: its border's
    assert float(got[4]) == 0.0  # inside: nothing


def test_both_sides_are_differentiable():
    mask, _ = _disc()
    masks = MaskDistances(mask[None])
    g = torch.Generator().manual_seed(0)
    pixels = (torch.rand(1, 12, 2, generator=g, dtype=torch.float64) * 70 - 3).requires_grad_()
    assert torch.autograd.gradcheck(masks.outside, (pixels,))
    assert torch.autograd.gradcheck(masks.unreached, (pixels,))


def test_refuses_an_empty_frame_by_name():
    with pytest.raises(ValueError, match="masks: expected every frame to show the subject, frame 1"):
        MaskDistances(torch.stack([_disc()[0], torch.zeros(SIZE, SIZE, dtype=torch.bool)]))


def test_a_turn_of_masks_gives_an_ellipsoids_axes():
    """An ellipsoid (9, 12 and 10 cm semi-axes) seen by 8 cameras round it at its height; a sphere's three scales
    fitted to the masks (each vertex inside them, each outline reached) come within 2% of its axes (0.4, 1.3, 1.4%
    over: a visual hull from 8 views holds its body)."""
    axes = torch.tensor([0.09, 0.12, 0.10])
    views = 8
    angle = torch.arange(views) * (2 * math.pi / views)
    eye = torch.stack([0.6 * angle.sin(), torch.zeros(views), 0.6 * angle.cos()], dim=-1)
    c2w = look_at(eye, torch.zeros(views, 3), torch.tensor([0.0, 1.0, 0.0]))
    cameras = PinholeCameras.from_fov(c2w, SIZE, SIZE, math.radians(40.0))
    steps = torch.arange(SIZE) + 0.5
    centres = torch.stack(torch.meshgrid(steps, steps, indexing="xy"), dim=-1).reshape(-1, 2)
    masks = []
    for f in range(views):  # a ray meets the ellipsoid where |(o + t d) / axes| = 1 has a real root
        rays = pixel_rays(cameras, f, centres)
        o, d = rays.origins / axes, rays.directions / axes
        a, b, c = (d * d).sum(-1), (o * d).sum(-1), (o * o).sum(-1) - 1
        masks.append((b * b - a * c >= 0).reshape(SIZE, SIZE))
    distances = MaskDistances(torch.stack(masks))
    sphere, _ = uv_sphere(16, 32)
    frame = torch.arange(views).repeat_interleave(len(sphere))
    log_scale = torch.full((3,), math.log(0.05), requires_grad=True)
    optimiser = torch.optim.Adam([log_scale], lr=0.05)
    for _ in range(150):
        points = (sphere * log_scale.exp()).expand(views, -1, -1)
        pixels = project_points(cameras, points.reshape(-1, 3), frame).pixels.reshape(views, -1, 2)
        loss = distances.outside(pixels).mean() + distances.unreached(pixels).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    scale = log_scale.detach().exp()
    assert torch.allclose(scale, axes, rtol=0.02), scale


def test_a_mask_cut_by_the_frame_has_no_outline_along_it():
    """A disc cut by the image's bottom edge (a torso below the frame): its outline stops at the edge, and a point
    below the image, under the mask, is inside."""
    mask, _ = _disc(centre=(32.0, 60.0), radius=12.0)
    masks = MaskDistances(mask[None])
    assert float(masks.outlines[0][:, 1].max()) < SIZE  # no edge along the bottom row (its sides end at 63.5)
    assert float(masks.outside(torch.tensor([[[32.0, 70.0], [5.0, 70.0]]]))[0, 0]) == 0.0
    assert float(masks.outside(torch.tensor([[[5.0, 70.0]]]))[0, 0]) > 10.0


def test_a_subset_of_frames_reads_those_frames_and_a_bad_id_is_refused():
    masks = MaskDistances(torch.stack([_disc()[0], _disc(centre=(20.0, 20.0), radius=8.0)[0]]))
    pixels = torch.rand(2, 5, 2, generator=torch.Generator().manual_seed(1)) * SIZE
    both_outside, both_unreached = masks.outside(pixels), masks.unreached(pixels)
    assert torch.equal(masks.outside(pixels[1:], torch.tensor([1])), both_outside[1:])
    assert torch.equal(masks.unreached(pixels[1:], torch.tensor([1])), both_unreached[1:])
    with pytest.raises(ValueError, match=r"frames: expected frame ids in \[0, 2\), got \[2\]"):
        masks.outside(pixels[:1], torch.tensor([2]))


def test_the_distances_are_the_nearest_outline_points_by_brute_force():
    """Random blobs, one filling the image's lower half (cut by the border) and one the whole image: every pixel
    centre's signed distance is its distance to the nearest outline point, sign by the mask."""
    g = torch.Generator().manual_seed(2)
    blobs = torch.nn.functional.avg_pool2d(torch.rand(3, 1, 40, 56, generator=g), 9, 1, 4)[:, 0] > 0.5
    half = torch.zeros(40, 56, dtype=torch.bool)
    half[25:] = True
    full = torch.ones(40, 56, dtype=torch.bool)
    masks = torch.cat([blobs, half[None], full[None]])
    distances = MaskDistances(masks)
    steps = torch.arange(56) + 0.5, torch.arange(40) + 0.5
    centres = torch.stack(torch.meshgrid(*steps, indexing="xy"), dim=-1).reshape(-1, 2)
    for f in range(len(masks) - 1):
        nearest = torch.cdist(centres, distances.outlines[f]).amin(1).reshape(40, 56)
        truth = torch.where(masks[f], -nearest, nearest)
        torch.testing.assert_close(distances.distance[f].float(), truth, atol=0.0, rtol=1e-3)
    assert len(distances.outlines[-1]) == 0 and bool((distances.distance[-1] < -50).all())  # nothing outside
    assert float(distances.outside(torch.tensor([[[-5.0, -5.0], [60.0, 45.0]]]), torch.tensor([4])).max()) == 0.0
