"""Pinhole cameras and rays: analytic rays, the pixel -> ray -> point -> pixel round trip, look_at, the seeded
pixel sampler, gradients w.r.t. the camera pose, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headfields.cameras import (
    PinholeCameras,
    PixelSamples,
    focal_from_fov,
    image_pixels,
    image_rays,
    look_at,
    pixel_rays,
    project_points,
    sample_pixels,
)

from helpers import raises_naming

HYPOTHESIS = settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def random_poses(n: int, seed: int, dtype=torch.float64, device="cpu") -> torch.Tensor:
    """Random rigid camera-to-world matrices: a QR rotation with det +1 and a random centre."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=1, dim2=2))[:, None, :]
    q = torch.where(torch.linalg.det(q)[:, None, None] < 0, -q, q)
    m = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    m[:, :3, :3] = q
    m[:, :3, 3] = torch.randn(n, 3, generator=g, dtype=torch.float64)
    return m.to(dtype=dtype, device=device)


def cameras(n: int = 3, seed: int = 0, dtype=torch.float64, device="cpu", w: int = 8, h: int = 6) -> PinholeCameras:
    return PinholeCameras(7.0, 9.0, 4.25, 2.75, w, h, random_poses(n, seed, dtype, device))


# ---------------------------------------------------------------- analytic rays


def test_identity_camera_rays_are_analytic(device):
    cams = PinholeCameras(10.0, 20.0, 4.0, 3.0, 8, 6, torch.eye(4, device=device)[None])
    pixels = torch.tensor([[4.0, 3.0], [14.0, 3.0], [4.0, 23.0], [-6.0, -17.0]], device=device)
    rays = pixel_rays(cams, torch.zeros(4, dtype=torch.long, device=device), pixels)
    # (x - cx) / fx and (y - cy) / fy are the camera-space slopes; +y in the image is +y of the camera (down).
    expected = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [-1.0, -1.0, 1.0]], device=device)
    torch.testing.assert_close(rays.directions, torch.nn.functional.normalize(expected, dim=-1))
    torch.testing.assert_close(rays.origins, torch.zeros(4, 3, device=device))
    assert rays.directions.device.type == device.type and rays.frame.dtype == torch.int64


def test_principal_point_ray_is_the_optical_axis(device):
    cams = cameras(4, seed=1, device=device)
    frame = torch.arange(4, device=device)
    pixels = torch.tensor([[cams.cx, cams.cy]], dtype=torch.float64, device=device).expand(4, 2)
    rays = pixel_rays(cams, frame, pixels)
    torch.testing.assert_close(rays.directions, cams.camera_to_world[:, :3, 2])  # camera +z in world space
    torch.testing.assert_close(rays.origins, cams.camera_to_world[:, :3, 3])
    assert torch.equal(rays.frame, frame)


def test_image_rays_cover_every_pixel_row_major(device):
    cams = cameras(2, seed=2, device=device)
    rays = image_rays(cams, 1)
    assert len(rays) == 6 * 8 and (rays.frame == 1).all()
    torch.testing.assert_close(rays.directions.norm(dim=-1), torch.ones(48, dtype=torch.float64, device=device))
    # Ray k goes through pixel (col + .5, row + .5) with k = row * W + col: project a point on it back.
    points = rays.origins + 2.0 * rays.directions
    proj = project_points(cams, points, 1)
    rows, cols = torch.meshgrid(torch.arange(6.0), torch.arange(8.0), indexing="ij")
    expected = torch.stack([cols.reshape(-1), rows.reshape(-1)], -1).to(device=device, dtype=torch.float64) + 0.5
    torch.testing.assert_close(proj.pixels, expected)
    torch.testing.assert_close(image_pixels(cams), expected)
    assert (proj.depth > 0).all()


def test_each_ray_uses_its_own_frame(device):
    cams = cameras(3, seed=3, device=device)
    frame = torch.tensor([2, 0, 1, 2, 0], device=device)
    pixels = torch.rand(5, 2, dtype=torch.float64, device=device) * torch.tensor([8.0, 6.0], dtype=torch.float64, device=device)
    rays = pixel_rays(cams, frame, pixels)
    assert torch.equal(rays.frame, frame)
    for i in range(5):
        one = pixel_rays(cams, int(frame[i]), pixels[i : i + 1])
        torch.testing.assert_close(rays.directions[i], one.directions[0])
        torch.testing.assert_close(rays.origins[i], cams.camera_to_world[frame[i], :3, 3])


# ---------------------------------------------------------------- round trip


@HYPOTHESIS
@given(
    seed=st.integers(0, 2**31 - 1),
    fx=st.floats(2.0, 500.0),
    aspect=st.floats(0.5, 2.0),
    px=st.floats(-0.5, 1.5),
    py=st.floats(-0.5, 1.5),
    depth=st.floats(0.05, 20.0),
)
def test_pixel_ray_point_pixel_round_trip(seed, fx, aspect, px, py, depth):
    w, h = 64, 48
    cams = PinholeCameras(fx, fx * aspect, 31.0, 25.5, w, h, random_poses(2, seed))
    frame = torch.tensor([0, 1])
    pixels = torch.tensor([[px * w, py * h], [(1 - px) * w, (1 - py) * h]], dtype=torch.float64)
    rays = pixel_rays(cams, frame, pixels)
    # The point at camera depth z on the ray: t = z / cos(angle to the optical axis).
    axis = cams.camera_to_world[frame, :3, 2]
    t = depth / (rays.directions * axis).sum(-1)
    points = rays.origins + t[:, None] * rays.directions
    proj = project_points(cams, points, frame)
    torch.testing.assert_close(proj.pixels, pixels, atol=1e-7 * max(fx, 1.0), rtol=1e-9)
    torch.testing.assert_close(proj.depth, torch.full((2,), depth, dtype=torch.float64))
    # And the other way: the ray through a point's projection passes through the point.
    back = pixel_rays(cams, frame, proj.pixels)
    offset = points - back.origins
    along = (offset * back.directions).sum(-1, keepdim=True)
    torch.testing.assert_close(offset - along * back.directions, torch.zeros(2, 3, dtype=torch.float64), atol=1e-9, rtol=0)


def test_float32_poses_give_float32_rays():
    cams = cameras(2, seed=4, dtype=torch.float32)
    rays = image_rays(cams, 0)
    assert rays.directions.dtype == torch.float32 and rays.origins.dtype == torch.float32
    proj = project_points(cams, rays.origins + rays.directions, torch.zeros(48, dtype=torch.long))
    torch.testing.assert_close(proj.pixels, image_pixels(cams), atol=1e-4, rtol=0)


# ---------------------------------------------------------------- look_at, field of view


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_look_at_puts_the_target_at_the_image_centre(seed, device):
    g = torch.Generator().manual_seed(seed)
    eye = (torch.randn(5, 3, generator=g, dtype=torch.float64) * 2).to(device)
    target = torch.randn(5, 3, generator=g, dtype=torch.float64).to(device)
    c2w = look_at(eye, target)
    cams = PinholeCameras(10.0, 10.0, 4.0, 3.0, 8, 6, c2w)  # rigid, or the constructor raises
    proj = project_points(cams, target, torch.arange(5, device=device))
    torch.testing.assert_close(proj.pixels, torch.tensor([[4.0, 3.0]], dtype=torch.float64, device=device).expand(5, 2))
    torch.testing.assert_close(proj.depth, (target - eye).norm(dim=-1))
    # World up appears up in the image (smaller y): y is down in OpenCV axes.
    lift = torch.tensor([0.0, 0.1, 0.0], dtype=torch.float64, device=device)
    above = project_points(cams, target + lift, torch.arange(5, device=device))
    assert (above.pixels[:, 1] < 3.0).all()


def test_look_at_at_a_face_shows_its_left_on_the_image_right():
    # FLAME: the face looks along +z and +x is the subject's left; a camera in front sees that on its right.
    c2w = look_at(torch.tensor([[0.0, 0.0, 1.0]]), torch.zeros(1, 3))
    expected = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 1.0], [0.0, 0.0, 0.0, 1.0]])
    torch.testing.assert_close(c2w[0], expected)
    cams = PinholeCameras(10.0, 10.0, 4.0, 3.0, 8, 6, c2w)
    assert project_points(cams, torch.tensor([[0.1, 0.0, 0.0]]), 0).pixels[0, 0] > 4.0


def test_from_fov_matches_the_nerf_camera_angle():
    c2w = torch.eye(4)[None]
    cams = PinholeCameras.from_fov(c2w, 8, 6, math.pi / 2)
    assert cams.fx == pytest.approx(4.0) and cams.fy == pytest.approx(4.0) and (cams.cx, cams.cy) == (4.0, 3.0)
    assert cams.fov_x == pytest.approx(math.pi / 2)
    assert cams.fov_y == pytest.approx(2 * math.atan(3 / 4))
    assert focal_from_fov(6, 2 * math.atan(3 / 4)) == pytest.approx(4.0)
    # The edge pixel boundary x = 0 is at 45 degrees from the axis.
    d = pixel_rays(cams, 0, torch.tensor([[0.0, 3.0]])).directions[0]
    torch.testing.assert_close(d, torch.tensor([-1.0, 0.0, 1.0]) / math.sqrt(2))
    k = cams.intrinsics
    torch.testing.assert_close(k, torch.tensor([[4.0, 0.0, 4.0], [0.0, 4.0, 3.0], [0.0, 0.0, 1.0]]))


def test_world_to_camera_inverts_camera_to_world():
    cams = cameras(4, seed=5)
    eye = torch.eye(4, dtype=torch.float64).expand(4, 4, 4)
    torch.testing.assert_close(cams.world_to_camera @ cams.camera_to_world, eye)
    assert torch.equal(cams.select(torch.tensor([2, 0])).camera_to_world, cams.camera_to_world[[2, 0]])


# ---------------------------------------------------------------- gradients


def test_rays_and_projection_are_differentiable_wrt_pose():
    c2w = random_poses(2, seed=6).requires_grad_(True)
    frame = torch.tensor([0, 1, 1])
    pixels = torch.tensor([[1.5, 2.5], [7.5, 0.5], [3.0, 5.0]], dtype=torch.float64)

    def rays(m):
        r = pixel_rays(PinholeCameras(7.0, 9.0, 4.25, 2.75, 8, 6, m), frame, pixels)
        return r.origins, r.directions

    assert torch.autograd.gradcheck(rays, (c2w,))
    points = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_(True)

    def project(m, p):
        proj = project_points(PinholeCameras(7.0, 9.0, 4.25, 2.75, 8, 6, m), p, frame)
        return proj.pixels, proj.depth

    assert torch.autograd.gradcheck(project, (c2w, points))


def test_look_at_is_differentiable():
    eye = torch.tensor([[0.3, 0.2, 1.0], [1.0, -0.5, 0.2]], dtype=torch.float64, requires_grad=True)
    target = torch.tensor([[0.0, 0.1, 0.0], [0.1, 0.0, -0.1]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(look_at, (eye, target))


# ---------------------------------------------------------------- pixel sampler


def test_sample_pixels_is_seeded_and_returns_pixel_centres(device):
    cams = cameras(3, seed=7, device=device)
    a = sample_pixels(cams, 500, torch.Generator().manual_seed(3))
    b = sample_pixels(cams, 500, torch.Generator().manual_seed(3))
    c = sample_pixels(cams, 500, torch.Generator().manual_seed(4))
    assert torch.equal(a.frame, b.frame) and torch.equal(a.pixels, b.pixels)
    assert not torch.equal(a.pixels, c.pixels)
    assert a.frame.device.type == device.type and a.pixels.dtype == torch.float32
    assert torch.equal(a.pixels - 0.5, (a.pixels - 0.5).round())
    assert (a.rows >= 0).all() and (a.rows < 6).all() and (a.cols >= 0).all() and (a.cols < 8).all()
    assert torch.equal(a.cols.float() + 0.5, a.pixels[:, 0])
    assert torch.equal(a.cells, a.pixels.floor().long()) and a.cells is a.drawn  # as drawn: no pass
    assert torch.equal(PixelSamples(a.frame, a.pixels).cells, a.cells)  # from the centres
    frame, pixels = a  # unpacks like a (frame, pixels) pair
    assert frame is a.frame and pixels is a.pixels


def test_sample_pixels_gives_the_same_samples_on_every_device(device):
    """Random numbers come from the CPU generator, so a seed gives the CPU's samples on the cameras' device,
    whether frames is a list, a tensor on that device or left out."""
    expected = sample_pixels(cameras(4, seed=7), 300, torch.Generator().manual_seed(5), frames=[2, 0])
    cams = cameras(4, seed=7, device=device)
    for frames in ([2, 0], torch.tensor([2, 0], device=device)):
        s = sample_pixels(cams, 300, torch.Generator().manual_seed(5), frames=frames)
        assert s.frame.device == s.pixels.device == cams.device
        assert torch.equal(s.frame.cpu(), expected.frame) and torch.equal(s.pixels.cpu(), expected.pixels)
    every = sample_pixels(cams, 300, torch.Generator().manual_seed(5))
    assert every.frame.device == cams.device and set(every.frame.tolist()) == {0, 1, 2, 3}


def test_look_at_default_up_follows_the_eye_device(device):
    eye = torch.tensor([[0.0, 0.0, 1.0]], device=device)
    m = look_at(eye, torch.zeros(1, 3, device=device))
    assert m.device == eye.device  # default up created on the eye's device
    expected = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 1.0], [0.0, 0.0, 0.0, 1.0]])
    torch.testing.assert_close(m[0].cpu(), expected)  # +z towards the origin, +y down = world -y


def test_frame_arguments_on_another_device_name_the_argument_not_a_mesh():
    cams = cameras(3, seed=10)
    pixels = torch.ones(4, 2, dtype=torch.float64)
    with raises_naming("frame") as error:
        pixel_rays(cams, torch.zeros(4, dtype=torch.long, device="meta"), pixels)
    assert "mesh" not in str(error.value)
    with raises_naming("frames"):
        sample_pixels(cams, 10, torch.Generator(), frames=torch.tensor([0, 1], device="meta"))
    # A numpy integer is a frame, a bool is not.
    torch.testing.assert_close(pixel_rays(cams, np.int64(2), pixels).directions, pixel_rays(cams, 2, pixels).directions)
    with raises_naming("frame"):
        pixel_rays(cams, True, pixels)


def test_sample_pixels_is_uniform_over_the_given_frames():
    cams = cameras(5, seed=8, w=4, h=3)
    n = 24000
    s = sample_pixels(cams, n, torch.Generator().manual_seed(0), frames=[1, 3])
    assert set(s.frame.tolist()) == {1, 3}
    # Chi-square against uniform over the 2 frames x 12 pixels (p > 1e-4 fails by chance once in 10^4 runs).
    cell = ((s.frame == 3).long() * 12 + s.rows * 4 + s.cols).bincount(minlength=24)
    assert scipy.stats.chisquare(cell.numpy()).pvalue > 1e-4
    assert sample_pixels(cams, 0, torch.Generator()).pixels.shape == (0, 2)


# ---------------------------------------------------------------- bad input


def test_bad_camera_construction():
    good = random_poses(2, seed=9)
    scaled = good.clone()
    scaled[1, :3, :3] *= 1.1
    with raises_naming("camera_to_world"):
        PinholeCameras(7.0, 7.0, 4.0, 3.0, 8, 6, scaled)
    sheared = good.clone()
    sheared[0, 0, 1] += 0.2
    with raises_naming("camera_to_world"):
        PinholeCameras(7.0, 7.0, 4.0, 3.0, 8, 6, sheared)
    reflected = good.clone()
    reflected[0, :3, 0] *= -1
    with raises_naming("camera_to_world"):
        PinholeCameras(7.0, 7.0, 4.0, 3.0, 8, 6, reflected)
    last_row = good.clone()
    last_row[0, 3, 0] = 0.5
    with raises_naming("camera_to_world"):
        PinholeCameras(7.0, 7.0, 4.0, 3.0, 8, 6, last_row)
    with raises_naming("camera_to_world"):
        PinholeCameras(7.0, 7.0, 4.0, 3.0, 8, 6, good[:, :3])
    with raises_naming("fx"):
        PinholeCameras(-7.0, 7.0, 4.0, 3.0, 8, 6, good)
    with raises_naming("fy"):
        PinholeCameras(7.0, math.inf, 4.0, 3.0, 8, 6, good)
    with raises_naming("width"):
        PinholeCameras(7.0, 7.0, 4.0, 3.0, 0, 6, good)
    with raises_naming("fov_x"):
        PinholeCameras.from_fov(good, 8, 6, 4.0)


def test_bad_ray_and_projection_input():
    cams = cameras(3, seed=10)
    pixels = torch.ones(4, 2, dtype=torch.float64)
    with raises_naming("frame"):
        pixel_rays(cams, torch.tensor([0, 1, 3, 0]), pixels)
    with raises_naming("frame"):
        pixel_rays(cams, torch.tensor([0, -1, 0, 0]), pixels)
    with raises_naming("(frame|pixels)"):  # a length mismatch: the checker names whichever it binds second
        pixel_rays(cams, torch.tensor([0, 1, 2]), pixels)
    with raises_naming("frame"):
        pixel_rays(cams, 3, pixels)
    with raises_naming("frame"):
        image_rays(cams, -1)
    with raises_naming("pixels"):
        pixel_rays(cams, torch.zeros(4, dtype=torch.long), torch.ones(4, 3))
    with raises_naming("pixels"):
        pixel_rays(cams, torch.zeros(4, dtype=torch.long), torch.tensor([[0.0, math.nan]] * 4))
    with raises_naming("points"):
        project_points(cams, torch.ones(4, 2), torch.zeros(4, dtype=torch.long))
    with raises_naming("frame"):
        project_points(cams, torch.ones(4, 3), torch.full((4,), 5))
    with raises_naming("frames"):
        sample_pixels(cams, 10, torch.Generator(), frames=[0, 3])
    with raises_naming("frames"):
        sample_pixels(cams, 10, torch.Generator(), frames=[])
    with raises_naming("count"):
        sample_pixels(cams, -1, torch.Generator())


def test_bad_look_at_input():
    eye = torch.tensor([[0.0, 0.0, 1.0]])
    with raises_naming("up"):
        look_at(eye, torch.tensor([[0.0, 2.0, 1.0]]))  # looking straight up
    with raises_naming("target"):
        look_at(eye, eye.clone())
    with raises_naming("target"):
        look_at(eye, torch.zeros(2, 3))
    with raises_naming("eye"):
        look_at(torch.zeros(1, 2), torch.zeros(1, 3))
