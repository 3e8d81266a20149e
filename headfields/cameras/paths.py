"""Camera paths around a head for novel-view videos: an orbit, a spiral, a still frontal view.

A :class:`CameraRig` (the head's centre, world up, the horizontal direction toward the capture's cameras, their
distance and elevation) is read off the capture's cameras by :func:`camera_rig`; :func:`camera_path` places new
cameras on the rig's sphere, each looking at the centre with its image up along world up::

    from headfields.cameras import camera_path, camera_rig, resized_cameras

    rig = camera_rig(frames.cameras, center=head_centre)  # head_centre: Float[Tensor, "3"], world
    orbit = camera_path("orbit", rig, 120, resized_cameras(frames.cameras, 256, 256))
    # orbit.camera_to_world [120, 4, 4]; orbit.select(torch.tensor([0])) is the frontal view

Angles: yaw turns about ``rig.up`` by the right-hand rule, from ``rig.front`` toward ``up x front`` (with y up and
the cameras in front on +z, yaw pi/2 looks from +x); elevation is the angle above the centre's horizontal plane.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from ..checks import check_count, check_float
from .pinhole import PinholeCameras, look_at

__all__ = ["CAMERA_PATHS", "CameraRig", "camera_path", "camera_rig", "resized_cameras"]

# The paths camera_path builds ("track", the capture's own cameras, is the caller's: it has them already).
CAMERA_PATHS = ("orbit", "spiral", "front")

# up and front must be unit and perpendicular to this tolerance (float32 arithmetic on tracked cameras).
_UNIT_TOLERANCE = 1e-4

# camera_rig's weight pulling up toward the cameras' mean image-up (see there): about the squared roll noise of
# tracked cameras (0.6 degrees), small beside the spread of a multi-view rig's right axes (0.3 for +-60 degrees).
_UP_PRIOR = 1e-4


@dataclass(frozen=True, eq=False)  # eq=False: == of tensor fields is ambiguous; rigs compare by identity
class CameraRig:
    """Where new views of a head are placed: on a sphere of ``radius`` about ``center``."""

    center: Float[Tensor, " 3"]  # the head's centre, world
    up: Float[Tensor, " 3"]  # unit world up
    front: Float[Tensor, " 3"]  # unit, perpendicular to up: from the centre toward the capture's cameras
    radius: float  # distance of the cameras from the centre (world units, metres)
    elevation: float  # radians of the cameras above the centre's horizontal plane, in (-pi/2, pi/2)

    def __post_init__(self) -> None:
        check_float("center", self.center, [3])
        check_float("up", self.up, [3], device=self.center.device)
        check_float("front", self.front, [3], device=self.center.device)
        for name in ("up", "front"):
            if getattr(self, name).dtype != self.center.dtype:
                raise TypeError(f"{name}: expected the dtype of center ({self.center.dtype}), got {getattr(self, name).dtype}")
        up, front = self.up.detach().double(), self.front.detach().double()
        if abs(float(up.norm()) - 1) > _UNIT_TOLERANCE:
            raise ValueError(f"up: expected a unit vector, got one of length {float(up.norm()):.6g}")
        if abs(float(front.norm()) - 1) > _UNIT_TOLERANCE or abs(float(front @ up)) > _UNIT_TOLERANCE:
            raise ValueError(
                f"front: expected a unit vector perpendicular to up, got length {float(front.norm()):.6g}, "
                f"dot with up {float(front @ up):.3g}"
            )
        for name in ("radius", "elevation"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"{name}: expected a finite number, got {value!r}")
        if not self.radius > 0:
            raise ValueError(f"radius: expected a positive distance, got {self.radius}")
        if not abs(self.elevation) < math.pi / 2:
            raise ValueError(f"elevation: expected radians in (-pi/2, pi/2), got {self.elevation}")

    @property
    def side(self) -> Float[Tensor, " 3"]:
        """``up x front``: where yaw pi/2 looks from."""
        return torch.linalg.cross(self.up, self.front, dim=-1)

    def positions(self, yaw: Float[Tensor, " N"], elevation: Float[Tensor, " N"]) -> Float[Tensor, "N 3"]:
        """Camera centres at ``yaw`` and ``elevation`` (radians) on the rig's sphere."""
        horizontal = torch.cos(yaw)[:, None] * self.front + torch.sin(yaw)[:, None] * self.side
        direction = torch.cos(elevation)[:, None] * horizontal + torch.sin(elevation)[:, None] * self.up
        return self.center + self.radius * direction


def camera_rig(cameras: PinholeCameras, center: Float[Tensor, " 3"]) -> CameraRig:
    """The rig of a capture's ``cameras`` about the head's ``center`` (world, on the cameras' device).

    ``up``: perpendicular to every camera's right axis (+x), as for cameras held level, taking the mean image-up
    (-y) where the right axes do not pin it down (one view, a monocular capture). The smallest eigenvector of
    ``mean(x x^T) + mu (I - y y^T)`` (``y`` the normalised mean image-up, ``mu`` small) is both. The mean image-up
    alone, exact only for cameras looking level, tilts by about the elevation for cameras above the head looking
    down at it (19 degrees for a frontal rig 20 degrees up). ``front``: the mean direction from the centre to the
    camera centres, projected off up. ``radius`` and ``elevation``: the medians over the cameras.

    >>> rig = camera_rig(frames.cameras, torch.tensor([0.0, 0.0, 0.0]))
    >>> rig.radius, math.degrees(rig.elevation)  # e.g. (1.0, 10.0)
    """
    c2w = cameras.camera_to_world.detach()
    check_float("center", center, [3], device=c2w.device)
    if cameras.num_frames == 0:
        raise ValueError("cameras: expected at least one camera, got none")
    dtype = c2w.dtype
    m = c2w.double()  # eigenvectors and medians in double: float32 rigs are recovered to float32 precision
    right, image_up, eyes = m[:, :3, 0], -m[:, :3, 1], m[:, :3, 3]

    mean_up = image_up.mean(dim=0)
    if float(mean_up.norm()) < 1e-6:
        raise ValueError("cameras: expected image-up axes (-y) that agree, their mean is zero (cameras rolled every way)")
    mean_up = mean_up / mean_up.norm()
    eye3 = torch.eye(3, dtype=m.dtype, device=m.device)
    system = right.T @ right / len(right) + _UP_PRIOR * (eye3 - torch.outer(mean_up, mean_up))
    up = torch.linalg.eigh(system).eigenvectors[:, 0]
    up = up if float(up @ mean_up) >= 0 else -up

    offset = eyes - center.detach().double()
    distance = offset.norm(dim=-1)
    if float(distance.min()) < 1e-9:
        raise ValueError("center: expected a point away from every camera centre, got one at a camera centre")
    direction = offset / distance[:, None]
    mean_direction = direction.mean(dim=0)
    front = mean_direction - (mean_direction @ up) * up
    # Below this the mean horizontal direction is noise: cameras straight above or below, or all around the head.
    if float(front.norm()) < 1e-4:
        raise ValueError(
            "cameras: expected cameras to one side of the centre (a horizontal direction toward them); they are "
            "straight above or below it, or spread all around it: build a CameraRig with the front you want"
        )
    front = front / front.norm()
    elevation = torch.asin((direction @ up).clamp(-1, 1))
    return CameraRig(
        center=center.detach().to(dtype),
        up=up.to(dtype),
        front=front.to(dtype),
        radius=float(distance.quantile(0.5)),
        elevation=float(elevation.quantile(0.5)),
    )


def _angle(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite angle in radians, got {value!r}")
    return float(value)


def camera_path(
    kind: str,
    rig: CameraRig,
    count: int,
    template: PinholeCameras,
    *,
    yaw_range: float = 2 * math.pi,
    elevation_range: float = math.radians(15),
    turns: float = 2.0,
) -> PinholeCameras:
    """``count`` cameras with ``template``'s intrinsics (fx, fy, cx, cy, width, height) on the rig's sphere, each
    looking at ``rig.center`` with its image up along ``rig.up`` projected off the view direction (OpenCV axes);
    on the device and in the dtype of ``rig.center``. ``kind`` is one of :data:`CAMERA_PATHS` (the caller handles
    ``"track"``, the capture's own cameras):

    - ``"orbit"``: yaw ``k * yaw_range / count`` at the rig's elevation: a whole number of turns (the default,
      one) never repeats the first view, so the video loops; another range is swept end to end,
      ``k * yaw_range / (count - 1)``. Frame 0 is the frontal view.
    - ``"spiral"``: yaw ``2 pi turns k / count`` while the elevation swings once, as a sine, through
      ``rig.elevation +- elevation_range`` (radians; the path loops too).
    - ``"front"``: ``count`` copies of the frontal camera (yaw 0, the rig's elevation), for a still-view video.

    >>> orbit = camera_path("orbit", rig, 60, cameras)  # one turn, 6 degrees a frame
    >>> swing = camera_path("orbit", rig, 31, cameras, yaw_range=math.pi / 2)  # 0 to 90 degrees, 3 a frame
    """
    if kind not in CAMERA_PATHS:
        raise ValueError(f"kind: expected one of {', '.join(CAMERA_PATHS)} ('track' is the capture's cameras), got {kind!r}")
    if not isinstance(rig, CameraRig):
        raise TypeError(f"rig: expected a CameraRig (see camera_rig), got {type(rig).__name__}")
    if not isinstance(template, PinholeCameras):
        raise TypeError(f"template: expected PinholeCameras (for the intrinsics), got {type(template).__name__}")
    count = check_count("count", count, 1)
    yaw_range = _angle("yaw_range", yaw_range)
    elevation_range = _angle("elevation_range", elevation_range)
    turns = _angle("turns", turns)
    if kind == "spiral" and not (elevation_range >= 0 and abs(rig.elevation) + elevation_range < math.pi / 2):
        raise ValueError(
            f"elevation_range: expected radians >= 0 that keep the spiral below the poles "
            f"(|rig.elevation| + elevation_range < pi/2, rig.elevation = {rig.elevation:.4g}), got {elevation_range}"
        )

    options = dict(dtype=rig.center.dtype, device=rig.center.device)
    k = torch.arange(count, **options)
    flat = torch.full((count,), rig.elevation, **options)
    if kind == "orbit":
        whole_turns = yaw_range != 0 and math.isclose(math.remainder(yaw_range, 2 * math.pi), 0, abs_tol=1e-9)
        yaw = k * (yaw_range / (count if whole_turns or count == 1 else count - 1))
        elevation = flat
    elif kind == "spiral":
        phase = 2 * math.pi * k / count
        yaw, elevation = turns * phase, rig.elevation + elevation_range * torch.sin(phase)
    else:
        yaw, elevation = torch.zeros_like(k), flat
    eyes = rig.positions(yaw, elevation)
    camera_to_world = look_at(eyes, rig.center.expand_as(eyes), rig.up)
    t = template
    return PinholeCameras(t.fx, t.fy, t.cx, t.cy, t.width, t.height, camera_to_world)


def resized_cameras(cameras: PinholeCameras, width: int, height: int) -> PinholeCameras:
    """The same views rendered at ``width x height`` pixels: focal lengths and principal point scaled per axis
    (pixel coordinates scale with the image, the 0.5-centred pixel grid included).

    >>> small = resized_cameras(cameras, cameras.width // 4, cameras.height // 4)
    """
    width = check_count("width", width, 1)
    height = check_count("height", height, 1)
    sx, sy = width / cameras.width, height / cameras.height
    return PinholeCameras(
        cameras.fx * sx, cameras.fy * sy, cameras.cx * sx, cameras.cy * sy, width, height, cameras.camera_to_world
    )
