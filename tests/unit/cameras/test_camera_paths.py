"""Camera paths around a head: the rig read back from cameras placed by hand on a known circle, the look-at property
of every path camera (checked with the intrinsics and world_to_camera by hand, under hypothesis), orbit and spiral
angles, resized intrinsics, and bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headfields.cameras import CAMERA_PATHS, CameraRig, PinholeCameras, camera_path, camera_rig, project_points, resized_cameras

from helpers import raises_naming

HYPOTHESIS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def unit(v) -> torch.Tensor:
    v = torch.as_tensor(v, dtype=torch.float64)
    return v / v.norm()


def perpendicular(up: torch.Tensor, v) -> torch.Tensor:
    v = torch.as_tensor(v, dtype=torch.float64)
    return unit(v - (v @ up) * up)


def on_circle(center, up, front, radius, elevation, yaws, dtype=torch.float64, device="cpu") -> torch.Tensor:
    """Camera-to-world matrices written out by hand: cameras at ``yaws`` on the circle of ``radius`` and
    ``elevation`` about ``center``, each looking at it, held level (+x perpendicular to up, +y down)."""
    side = torch.linalg.cross(up, front, dim=-1)
    out = []
    for yaw in yaws:
        d = math.cos(elevation) * (math.cos(yaw) * front + math.sin(yaw) * side) + math.sin(elevation) * up
        eye = center + radius * d
        z = -d  # forward: toward the centre
        x = unit(torch.linalg.cross(z, up, dim=-1))  # right: y = z x x points down (-up side)
        y = torch.linalg.cross(z, x, dim=-1)
        m = torch.eye(4, dtype=torch.float64)
        m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = x, y, z, eye
        out.append(m)
    return torch.stack(out).to(dtype=dtype, device=device)


def template(device="cpu", dtype=torch.float64, width=64, height=48) -> PinholeCameras:
    return PinholeCameras(70.0, 60.0, 31.5, 25.25, width, height, torch.eye(4, dtype=dtype, device=device)[None])


def make_rig(center, up, front, radius, elevation, device="cpu", dtype=torch.float64) -> CameraRig:
    return CameraRig(center.to(device, dtype), up.to(device, dtype), front.to(device, dtype), radius, elevation)


def world_yaw_elevation(rig: CameraRig, eyes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Yaw (from front toward up x front) and elevation of each camera centre, by hand."""
    d = (eyes - rig.center).double()
    up, front = rig.up.double(), rig.front.double()
    side = torch.linalg.cross(up, front, dim=-1)
    yaw = torch.atan2(d @ side, d @ front)
    elevation = torch.asin((d @ up) / d.norm(dim=-1))
    return yaw, elevation


def check_looks_at_center(cams: PinholeCameras, rig: CameraRig, tol: float = 1e-9) -> None:
    """Every camera: rigid, at rig.radius from the centre, the centre at the principal point (projected by hand
    with the intrinsics and world_to_camera), image-up (-y) in the plane of up and the view direction, pointing up."""
    c2w = cams.camera_to_world.double()
    r = c2w[:, :3, :3]
    eye3 = torch.eye(3, dtype=torch.float64, device=r.device)
    torch.testing.assert_close(r.transpose(1, 2) @ r, eye3.expand_as(r), atol=tol, rtol=0)
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(len(r), dtype=torch.float64, device=r.device), atol=tol, rtol=0)
    center = rig.center.double()
    distance = (c2w[:, :3, 3] - center).norm(dim=-1)
    torch.testing.assert_close(distance, torch.full_like(distance, rig.radius), atol=tol * max(1, rig.radius), rtol=0)
    w2c = cams.world_to_camera.double()
    q = (w2c[:, :3, :3] @ center) + w2c[:, :3, 3]  # the centre in camera space
    assert (q[:, 2] > 0).all()
    u = cams.fx * q[:, 0] / q[:, 2] + cams.cx
    v = cams.fy * q[:, 1] / q[:, 2] + cams.cy
    torch.testing.assert_close(u, torch.full_like(u, cams.cx), atol=tol * 1e3, rtol=0)
    torch.testing.assert_close(v, torch.full_like(v, cams.cy), atol=tol * 1e3, rtol=0)
    image_up, view = -c2w[:, :3, 1], c2w[:, :3, 2]
    up = rig.up.double().expand_as(view)
    normal = torch.linalg.cross(up, view, dim=-1)  # the plane of up and the view direction
    torch.testing.assert_close(
        (image_up * normal).sum(-1), torch.zeros(len(r), dtype=torch.float64, device=r.device), atol=tol, rtol=0
    )
    assert ((image_up * up).sum(-1) > 0).all()


# ---------------------------------------------------------------- the rig


@pytest.mark.parametrize("up_vector", [[0.0, 1.0, 0.0], [0.3, 0.9, -0.2]])
@pytest.mark.parametrize("elevation", [0.0, 0.35, -0.2])
def test_rig_recovered_from_cameras_on_a_known_circle(up_vector, elevation):
    center = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
    up = unit(up_vector)
    front = perpendicular(up, [0.2, 0.1, 1.0])
    yaws = [math.radians(a) for a in (-60, -35, -10, 0, 10, 35, 60)]  # symmetric: the mean direction is front
    c2w = on_circle(center, up, front, 0.8, elevation, yaws)
    rig = camera_rig(PinholeCameras(50.0, 50.0, 32.0, 32.0, 64, 64, c2w), center)
    # The eigenvector's pull toward the mean image-up (1e-4) leaves ~1e-4 rad; the rest is exact.
    torch.testing.assert_close(rig.up, up, atol=1e-3, rtol=0)
    torch.testing.assert_close(rig.front, front, atol=1e-3, rtol=0)
    torch.testing.assert_close(rig.center, center)
    assert rig.radius == pytest.approx(0.8, abs=1e-12)
    assert rig.elevation == pytest.approx(elevation, abs=1e-3)


def test_rig_medians_and_mean_direction():
    center = torch.zeros(3, dtype=torch.float64)
    up, front = unit([0.0, 1.0, 0.0]), unit([0.0, 0.0, 1.0])
    # Three heights and distances: the rig takes the medians; yaws 0, 40 and 20 degrees: front is near 20.
    c2w = torch.cat(
        [
            on_circle(center, up, front, 1.0, 0.1, [0.0]),
            on_circle(center, up, front, 1.5, 0.3, [math.radians(40)]),
            on_circle(center, up, front, 3.0, 0.2, [math.radians(20)]),
        ]
    )
    rig = camera_rig(PinholeCameras(50.0, 50.0, 32.0, 32.0, 64, 64, c2w), center)
    assert rig.radius == pytest.approx(1.5) and rig.elevation == pytest.approx(0.2, abs=1e-3)
    # front: the mean of the unit directions to the cameras, off up (each counts cos(elevation) horizontally).
    horizontal = [
        (math.cos(e) * math.sin(math.radians(a)), math.cos(e) * math.cos(math.radians(a)))
        for e, a in ((0.1, 0), (0.3, 40), (0.2, 20))
    ]
    expected = unit([sum(h[0] for h in horizontal), 0.0, sum(h[1] for h in horizontal)])
    torch.testing.assert_close(rig.front, expected, atol=1e-3, rtol=0)  # up is ~1e-4 rad off, see above
    assert math.degrees(math.atan2(expected[0], expected[2])) == pytest.approx(20, abs=0.5)


def test_rig_of_one_view_takes_its_image_up():
    """A monocular capture: one view cannot tell pitch from elevation, so up is the camera's image-up."""
    center = torch.zeros(3, dtype=torch.float64)
    up, front = unit([0.0, 1.0, 0.0]), unit([0.0, 0.0, 1.0])
    c2w = on_circle(center, up, front, 1.0, 0.3, [0.0, 0.0])
    rig = camera_rig(PinholeCameras(50.0, 50.0, 32.0, 32.0, 64, 64, c2w), center)
    torch.testing.assert_close(rig.up, -c2w[0, :3, 1], atol=1e-9, rtol=0)
    assert rig.elevation == pytest.approx(0.0, abs=1e-9) and rig.radius == pytest.approx(1.0)


def test_rig_on_device_and_dtype(device):
    center = torch.tensor([0.0, 0.1, 0.0], dtype=torch.float64)
    up, front = unit([0.0, 1.0, 0.0]), unit([1.0, 0.0, 0.0])
    c2w = on_circle(center, up, front, 1.2, 0.25, [-0.5, 0.0, 0.5], dtype=torch.float32, device=device)
    rig = camera_rig(PinholeCameras(50.0, 50.0, 32.0, 32.0, 64, 64, c2w), center.float().to(device))
    assert rig.up.device == c2w.device and rig.up.dtype == torch.float32
    torch.testing.assert_close(rig.up.cpu().double(), up, atol=1e-3, rtol=0)
    torch.testing.assert_close(rig.front.cpu().double(), front, atol=1e-3, rtol=0)
    assert rig.radius == pytest.approx(1.2, rel=1e-5) and rig.elevation == pytest.approx(0.25, abs=1e-3)
    path = camera_path("orbit", rig, 6, template(device, torch.float32))
    assert path.camera_to_world.device == c2w.device and path.camera_to_world.dtype == torch.float32
    check_looks_at_center(path, rig, tol=1e-5)


def test_rig_errors():
    center = torch.zeros(3, dtype=torch.float64)
    up, front = unit([0.0, 1.0, 0.0]), unit([0.0, 0.0, 1.0])
    # Cameras held level (image up = +y) straight above the centre: up is +y and no direction toward them is
    # horizontal. (A camera above looking down at the centre is a level one to the rig: one view cannot tell.)
    above = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64)).repeat(2, 1, 1)
    above[:, 1, 3] = torch.tensor([2.0, 3.0], dtype=torch.float64)
    with raises_naming("cameras"):
        camera_rig(PinholeCameras(50.0, 50.0, 32.0, 32.0, 64, 64, above), center)
    all_around = on_circle(center, up, front, 1.0, 0.2, [2 * math.pi * k / 12 for k in range(12)])
    with raises_naming("cameras"):
        camera_rig(PinholeCameras(50.0, 50.0, 32.0, 32.0, 64, 64, all_around), center)
    some = on_circle(center, up, front, 1.0, 0.2, [0.0, 0.3])
    cams = PinholeCameras(50.0, 50.0, 32.0, 32.0, 64, 64, some)
    with raises_naming("center"):
        camera_rig(cams, some[0, :3, 3].clone())  # at a camera
    with raises_naming("center"):
        camera_rig(cams, torch.zeros(2, dtype=torch.float64))


def test_rig_field_errors():
    center, up, front = torch.zeros(3), torch.tensor([0.0, 1.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])
    with raises_naming("up"):
        CameraRig(center, 2 * up, front, 1.0, 0.0)
    with raises_naming("up"):
        CameraRig(center, up.double(), front, 1.0, 0.0)
    with raises_naming("front"):
        CameraRig(center, up, F.normalize(torch.tensor([0.0, 1.0, 1.0]), dim=0), 1.0, 0.0)
    with raises_naming("radius"):
        CameraRig(center, up, front, 0.0, 0.0)
    with raises_naming("elevation"):
        CameraRig(center, up, front, 1.0, math.pi / 2)
    with raises_naming("center"):
        CameraRig(torch.tensor([0.0, float("nan"), 0.0]), up, front, 1.0, 0.0)


# ---------------------------------------------------------------- paths


finite = st.floats(-1, 1, allow_nan=False)
vectors = st.tuples(finite, finite, finite)


def random_rig(center, up, front, radius, elevation) -> CameraRig:
    """A rig from hypothesis' numbers (built in the test: the runtime type checker samples with ``random``)."""
    center, up, front = (torch.tensor(v, dtype=torch.float64) for v in (center, up, front))
    if up.norm() < 0.1 or torch.linalg.cross(up, front, dim=-1).norm() < 0.1 * max(float(up.norm() * front.norm()), 1e-3):
        up, front = torch.tensor([0.0, 1.0, 0.0]).double(), torch.tensor([0.0, 0.0, 1.0]).double()
    up = unit(up)
    return CameraRig(center, up, perpendicular(up, front), radius, elevation)


@HYPOTHESIS
@given(
    center=vectors,
    up=vectors,
    front=vectors,
    radius=st.floats(0.2, 5.0),
    elevation=st.floats(-1.3, 1.3),
    kind=st.sampled_from(CAMERA_PATHS),
    count=st.integers(1, 30),
    turns=st.floats(0.5, 3.0),
)
def test_every_path_camera_looks_at_the_centre(center, up, front, radius, elevation, kind, count, turns):
    rig = random_rig(center, up, front, radius, elevation)
    elevation_range = 0.5 * (math.pi / 2 - abs(rig.elevation))
    cams = camera_path(kind, rig, count, template(), turns=turns, elevation_range=elevation_range)
    assert cams.num_frames == count
    assert (cams.fx, cams.fy, cams.cx, cams.cy, cams.width, cams.height) == (70.0, 60.0, 31.5, 25.25, 64, 48)
    check_looks_at_center(cams, rig)
    # Frame 0 of every path is the frontal view: yaw 0 at the rig's elevation.
    yaw, elevation = world_yaw_elevation(rig, cams.camera_to_world[:, :3, 3])
    assert float(yaw[0]) == pytest.approx(0.0, abs=1e-9) and float(elevation[0]) == pytest.approx(rig.elevation, abs=1e-9)


def test_yaw_turns_right_handed_about_up():
    rig = make_rig(torch.zeros(3), unit([0.0, 1.0, 0.0]), unit([0.0, 0.0, 1.0]), 2.0, 0.0)
    eyes = camera_path("orbit", rig, 4, template()).camera_to_world[:, :3, 3]
    expected = torch.tensor([[0.0, 0.0, 2.0], [2.0, 0.0, 0.0], [0.0, 0.0, -2.0], [-2.0, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(eyes, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("count", [1, 2, 7, 36])
@pytest.mark.parametrize("yaw_range", [2 * math.pi, -2 * math.pi, 4 * math.pi])
def test_orbit_whole_turns_step_uniformly_and_loop(count, yaw_range):
    rig = make_rig(
        torch.tensor([0.1, 0.2, 0.3]), unit([0.2, 1.0, 0.1]), perpendicular(unit([0.2, 1.0, 0.1]), [1.0, 0, 0.3]), 1.3, 0.2
    )
    cams = camera_path("orbit", rig, count, template(), yaw_range=yaw_range)
    yaw, elevation = world_yaw_elevation(rig, cams.camera_to_world[:, :3, 3])
    step = yaw_range / count
    # Steps (the last one back to the first included) are uniform modulo a turn and sum to the range.
    steps = torch.remainder(torch.diff(torch.cat([yaw, yaw[:1]])) - step + math.pi, 2 * math.pi) - math.pi + step
    torch.testing.assert_close(steps, torch.full_like(steps, step), atol=1e-9, rtol=0)
    assert float(steps.sum()) == pytest.approx(yaw_range)
    torch.testing.assert_close(elevation, torch.full_like(elevation, 0.2), atol=1e-9, rtol=0)
    if count > 1 and abs(yaw_range) == 2 * math.pi:  # one turn never repeats the first view
        assert (cams.camera_to_world[1:, :3, 3] - cams.camera_to_world[0, :3, 3]).norm(dim=-1).min() > 1e-3


@pytest.mark.parametrize("yaw_range", [math.pi / 2, -math.pi, 1.0])
def test_orbit_partial_range_sweeps_end_to_end(yaw_range):
    rig = make_rig(torch.zeros(3), unit([0.0, 1.0, 0.0]), unit([0.0, 0.0, 1.0]), 1.0, -0.1)
    yaw, _ = world_yaw_elevation(rig, camera_path("orbit", rig, 11, template(), yaw_range=yaw_range).camera_to_world[:, :3, 3])
    torch.testing.assert_close(yaw, torch.linspace(0, yaw_range, 11, dtype=torch.float64), atol=1e-9, rtol=0)


def test_spiral_angles():
    rig = make_rig(torch.zeros(3), unit([0.0, 1.0, 0.0]), unit([0.0, 0.0, 1.0]), 1.5, 0.2)
    count, turns, swing = 40, 2.0, 0.3
    cams = camera_path("spiral", rig, count, template(), turns=turns, elevation_range=swing)
    check_looks_at_center(cams, rig)
    yaw, elevation = world_yaw_elevation(rig, cams.camera_to_world[:, :3, 3])
    step = 2 * math.pi * turns / count
    steps = torch.remainder(torch.diff(yaw) + math.pi, 2 * math.pi) - math.pi
    torch.testing.assert_close(steps, torch.full_like(steps, step), atol=1e-9, rtol=0)
    assert float(elevation.max()) == pytest.approx(0.2 + swing, abs=1e-9)  # sin reaches 1 at k = count / 4
    assert float(elevation.min()) == pytest.approx(0.2 - swing, abs=1e-9)
    assert ((elevation - 0.2).abs() <= swing + 1e-9).all()


def test_front_path_is_copies_of_orbit_frame_zero():
    rig = make_rig(torch.tensor([0.0, 0.1, 0.0]), unit([0.0, 1.0, 0.0]), unit([0.3, 0.0, 1.0]), 1.1, 0.15)
    still = camera_path("front", rig, 5, template())
    orbit = camera_path("orbit", rig, 12, template())
    torch.testing.assert_close(still.camera_to_world, orbit.camera_to_world[:1].expand(5, 4, 4), atol=1e-12, rtol=0)
    # The frontal camera sits along front, raised by the elevation.
    expected = rig.center + 1.1 * (math.cos(0.15) * rig.front + math.sin(0.15) * rig.up)
    torch.testing.assert_close(still.camera_to_world[0, :3, 3], expected, atol=1e-12, rtol=0)


def test_path_errors():
    rig = make_rig(torch.zeros(3), unit([0.0, 1.0, 0.0]), unit([0.0, 0.0, 1.0]), 1.0, 1.2)
    with pytest.raises(ValueError, match="^kind:.*orbit, spiral, front"):
        camera_path("track", rig, 5, template())
    with raises_naming("count"):
        camera_path("orbit", rig, 0, template())
    with raises_naming("count"):
        camera_path("orbit", rig, 2.5, template())
    with raises_naming("elevation_range"):  # 1.2 + 0.5 passes the pole
        camera_path("spiral", rig, 5, template(), elevation_range=0.5)
    with raises_naming("elevation_range"):
        camera_path("spiral", rig, 5, template(), elevation_range=-0.1)
    with raises_naming("yaw_range"):
        camera_path("orbit", rig, 5, template(), yaw_range=float("nan"))
    with raises_naming("turns"):
        camera_path("spiral", rig, 5, template(), turns=float("inf"), elevation_range=0.1)
    with raises_naming("rig"):
        camera_path("orbit", "rig", 5, template())
    with raises_naming("template"):
        camera_path("orbit", rig, 5, None)


# ---------------------------------------------------------------- resized cameras


@pytest.mark.parametrize("size", [(32, 24), (128, 48), (17, 99)])
def test_resized_cameras_project_to_scaled_pixels(device, size):
    center = torch.zeros(3, dtype=torch.float64)
    up, front = unit([0.0, 1.0, 0.0]), unit([0.0, 0.0, 1.0])
    c2w = on_circle(center, up, front, 1.0, 0.2, [-0.3, 0.4], device=device)
    cams = PinholeCameras(70.0, 60.0, 31.5, 25.25, 64, 48, c2w)
    width, height = size
    small = resized_cameras(cams, width, height)
    assert (small.width, small.height) == (width, height)
    assert small.camera_to_world is cams.camera_to_world
    points = torch.tensor([[0.05, -0.1, 0.02], [0.1, 0.1, -0.1], [0.0, 0.0, 0.0]], dtype=torch.float64, device=device)
    for frame in range(2):
        before = project_points(cams, points, frame).pixels
        after = project_points(small, points, frame).pixels
        scale = torch.tensor([width / 64, height / 48], dtype=torch.float64, device=device)
        torch.testing.assert_close(after, before * scale)
    # The image corners map to the corners: (W, H) -> (width, height).
    assert (small.cx, small.cy) == pytest.approx((31.5 * width / 64, 25.25 * height / 48))


def test_resized_errors():
    cams = template()
    with raises_naming("width"):
        resized_cameras(cams, 0, 10)
    with raises_naming("height"):
        resized_cameras(cams, 10, 1.5)
