"""Pinhole cameras for a set of frames and the rays through their pixels.

Conventions (as INSTA / NeRFace captures): intrinsics ``fx, fy, cx, cy`` in pixels shared by every frame, one
camera-to-world matrix per frame in OpenCV axes (+x right, +y down, +z forward) in the world of the tracked
parametric model (FLAME / SMPL-X: metres, y up). A pixel's centre is at integer + 0.5, so pixel ``(col, row)``
is sampled at ``(col + 0.5, row + 0.5)`` and ``(cx, cy) = (W/2, H/2)`` is the centre of the image. Rays are
torch ops, differentiable w.r.t. ``camera_to_world`` (camera refinement).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from ..checks import (
    IntLike,
    check_count,
    check_float,
    check_frame,
    check_generator,
    check_int,
    check_nonzero_rows,
    check_positive,
)

# camera_to_world must be rigid: |R^T R - I|, |det R - 1| and the last row's error below this. Loose enough
# for float32 matrices written to text by trackers, tight enough to catch a scale or shear.
RIGID_TOLERANCE = 1e-3


@dataclass
class PinholeCameras:
    """One pinhole camera per frame with shared intrinsics (pixels) and per-frame pose."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    camera_to_world: Float[Tensor, "N 4 4"]  # OpenCV axes (+x right, +y down, +z forward)

    def __post_init__(self) -> None:
        for name in ("fx", "fy"):
            value = getattr(self, name)
            if not (isinstance(value, numbers.Real) and math.isfinite(value)):
                raise ValueError(f"{name}: expected a finite positive focal length in pixels, got {value!r}")
            check_positive(name, value)
        for name in ("cx", "cy"):
            value = getattr(self, name)
            if not (isinstance(value, numbers.Real) and math.isfinite(value)):
                raise ValueError(f"{name}: expected a finite principal point coordinate in pixels, got {value!r}")
        self.width = check_count("width", self.width, 1)
        self.height = check_count("height", self.height, 1)
        check_rigid("camera_to_world", self.camera_to_world)

    @classmethod
    def from_fov(
        cls, camera_to_world: Float[Tensor, "N 4 4"], width: int, height: int, fov_x: float, fov_y: float | None = None
    ) -> PinholeCameras:
        """Cameras with the principal point at the image centre and horizontal field of view ``fov_x`` (radians;
        NeRF's ``camera_angle_x``); ``fov_y`` defaults to square pixels (``fy = fx``)."""
        fx = focal_from_fov(width, fov_x, "fov_x")
        fy = fx if fov_y is None else focal_from_fov(height, fov_y, "fov_y")
        return cls(fx, fy, width / 2, height / 2, width, height, camera_to_world)

    @property
    def num_frames(self) -> int:
        return self.camera_to_world.shape[0]

    @property
    def device(self) -> torch.device:
        return self.camera_to_world.device

    @property
    def fov_x(self) -> float:
        """Horizontal field of view in radians (NeRF's ``camera_angle_x``; exact for a centred principal point)."""
        return 2 * math.atan(self.width / (2 * self.fx))

    @property
    def fov_y(self) -> float:
        return 2 * math.atan(self.height / (2 * self.fy))

    @property
    def intrinsics(self) -> Float[Tensor, "3 3"]:
        """The 3x3 matrix K, in the dtype and on the device of ``camera_to_world``."""
        k = [[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]]
        return torch.tensor(k, dtype=self.camera_to_world.dtype, device=self.device)

    @property
    def world_to_camera(self) -> Float[Tensor, "N 4 4"]:
        """The inverse of each rigid ``camera_to_world`` (transpose of the rotation), differentiable."""
        r = self.camera_to_world[:, :3, :3].transpose(1, 2)
        t = -(r @ self.camera_to_world[:, :3, 3:])
        bottom = self.camera_to_world[:, 3:, :]
        return torch.cat([torch.cat([r, t], dim=2), bottom], dim=1)

    def to(self, device: torch.device | str) -> PinholeCameras:
        moved = self.camera_to_world.to(device)
        if moved is self.camera_to_world:  # already there: not copied, nor checked again
            return self
        return PinholeCameras(self.fx, self.fy, self.cx, self.cy, self.width, self.height, moved)

    def select(self, frames: Int[Tensor, " K"]) -> PinholeCameras:
        """The cameras of the given frames, in that order."""
        check_int("frames", frames, [None], upper=self.num_frames, device=self.device)
        return PinholeCameras(self.fx, self.fy, self.cx, self.cy, self.width, self.height, self.camera_to_world[frames])


@dataclass
class Rays:
    origins: Float[Tensor, "R 3"]
    directions: Float[Tensor, "R 3"]  # unit length
    frame: Int[Tensor, " R"]  # the frame (camera) each ray belongs to

    def __len__(self) -> int:
        return self.origins.shape[0]


def check_rays(rays: Rays, num_frames: int, device: torch.device | None = None) -> None:
    """``rays`` of a head of ``num_frames`` frames: finite origins and non-zero directions ``[R, 3]`` (on
    ``device``), and each ray's frame an integer in ``[0, num_frames)``."""
    if not isinstance(rays, Rays):
        raise TypeError(f"rays: expected headfields.cameras.Rays, got {type(rays).__name__}")
    check_float("rays.origins", rays.origins, [None, 3], device=device)
    check_float("rays.directions", rays.directions, [rays.origins.shape[0], 3], device=rays.origins.device)
    check_int("rays.frame", rays.frame, [rays.origins.shape[0]], upper=num_frames, device=rays.origins.device)
    check_nonzero_rows("rays.directions", rays.directions)


@dataclass
class Projection:
    pixels: Float[Tensor, "N 2"]  # (x, y) in pixels, centre of pixel (col, row) at (col + 0.5, row + 0.5)
    depth: Float[Tensor, " N"]  # z in camera space; <= 0 behind the camera (pixels are then meaningless)

    def __iter__(self):  # ``pixels, depth = project_points(...)``
        return iter((self.pixels, self.depth))


@dataclass
class PixelSamples:
    frame: Int[Tensor, " R"]
    pixels: Float[Tensor, "R 2"]  # pixel centres (x, y)
    drawn: Int[Tensor, "R 2"] | None = None  # the integer (col, row) sample_pixels drew: cells without a pass

    def __iter__(self):  # ``frame, pixels = sample_pixels(...)``
        return iter((self.frame, self.pixels))

    @property
    def rows(self) -> Int[Tensor, " R"]:
        """Integer row of each sample, to gather image values: ``images[frame, rows, cols]``."""
        return self.cells[:, 1]

    @property
    def cols(self) -> Int[Tensor, " R"]:
        return self.cells[:, 0]

    @property
    def cells(self) -> Int[Tensor, "R 2"]:
        """Integer column and row of each sample (the pixel holding its centre): as drawn, or in one pass."""
        return self.pixels.floor().long() if self.drawn is None else self.drawn


def focal_from_fov(size: int, fov: float, name: str = "fov") -> float:
    """Focal length in pixels that spans ``size`` pixels with field of view ``fov`` (radians)."""
    if not (isinstance(fov, numbers.Real) and 0 < fov < math.pi):
        raise ValueError(f"{name}: expected a field of view in (0, pi) radians, got {fov!r}")
    return size / (2 * math.tan(fov / 2))


def check_rigid(name: str, matrices: Tensor) -> None:
    """``matrices`` [N,4,4]: finite, rotation part orthonormal with det +1, last row [0, 0, 0, 1]."""
    check_float(name, matrices, [None, 4, 4])
    m = matrices.detach().double()
    r = m[:, :3, :3]
    eye = torch.eye(3, dtype=m.dtype, device=m.device)
    error = (r.transpose(1, 2) @ r - eye).abs().amax(dim=(1, 2))
    error = torch.maximum(error, (torch.linalg.det(r) - 1).abs()) if len(m) else error
    last = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=m.dtype, device=m.device)
    error = torch.maximum(error, (m[:, 3] - last).abs().amax(dim=1))
    bad = (error > RIGID_TOLERANCE).nonzero()
    if len(bad):
        i = int(bad[0, 0])
        raise ValueError(
            f"{name}: expected rigid transforms (orthonormal rotation with det +1, last row [0, 0, 0, 1]), "
            f"matrix {i} is off by {float(error[i]):.3g}"
        )


def _frame_index(cameras: PinholeCameras, frame: Tensor | IntLike, count: int) -> Tensor:
    return check_frame("frame", frame, count, cameras.num_frames, cameras.device)


def pixel_rays(cameras: PinholeCameras, frame: Int[Tensor, " R"] | IntLike, pixels: Float[Tensor, "R 2"]) -> Rays:
    """Rays through ``pixels`` (x, y in pixels) of each ray's ``frame``: origin at the camera centre, unit
    direction in world space. Pixels outside the image are allowed (the ray is still well defined)."""
    check_float("pixels", pixels, [None, 2], device=cameras.device)
    frame = _frame_index(cameras, frame, pixels.shape[0])
    c2w = cameras.camera_to_world[frame]
    p = pixels.to(c2w.dtype)
    d_cam = torch.stack([(p[:, 0] - cameras.cx) / cameras.fx, (p[:, 1] - cameras.cy) / cameras.fy, torch.ones_like(p[:, 0])], -1)
    directions = F.normalize((c2w[:, :3, :3] @ d_cam[:, :, None])[:, :, 0], dim=-1)
    return Rays(origins=c2w[:, :3, 3], directions=directions, frame=frame)


def image_pixels(cameras: PinholeCameras) -> Float[Tensor, "HW 2"]:
    """Centres of every pixel of the image, row-major: index ``row * width + col`` holds ``(col + .5, row + .5)``."""
    dtype = cameras.camera_to_world.dtype
    rows, cols = torch.meshgrid(
        torch.arange(cameras.height, dtype=dtype, device=cameras.device),
        torch.arange(cameras.width, dtype=dtype, device=cameras.device),
        indexing="ij",
    )
    return torch.stack([cols.reshape(-1), rows.reshape(-1)], dim=-1) + 0.5


def image_rays(cameras: PinholeCameras, frame: IntLike) -> Rays:
    """All ``height * width`` rays of frame ``frame``, row-major (reshape a per-ray result to ``[H, W]``)."""
    pixels = image_pixels(cameras)
    return pixel_rays(cameras, _frame_index(cameras, frame, pixels.shape[0]), pixels)


def project_points(cameras: PinholeCameras, points: Float[Tensor, "N 3"], frame: Int[Tensor, " N"] | IntLike) -> Projection:
    """World points to pixel coordinates and camera-space depth z of each point's frame; the inverse of
    :func:`pixel_rays` (a point at depth z on the ray through pixel p projects to p). Differentiable. Pixels
    are always finite; they mean something only where ``depth > 0``."""
    check_float("points", points, [None, 3], device=cameras.device)
    frame = _frame_index(cameras, frame, points.shape[0])
    w2c = cameras.world_to_camera[frame]
    q = (w2c[:, :3, :3] @ points.to(w2c.dtype)[:, :, None])[:, :, 0] + w2c[:, :3, 3]
    z = q[:, 2]
    # A point in the camera's plane (z = 0, the centre itself) has no pixel: divide by a depth kept off zero, so
    # its pixel is finite (and meaningless, as behind the camera) instead of NaN.
    eps = torch.finfo(z.dtype).eps
    safe = torch.where(z.abs() < eps, torch.where(z < 0, -eps, eps), z)
    pixels = torch.stack([cameras.fx * q[:, 0] / safe + cameras.cx, cameras.fy * q[:, 1] / safe + cameras.cy], dim=-1)
    return Projection(pixels=pixels, depth=z)


def sample_pixels(
    cameras: PinholeCameras,
    count: IntLike,
    generator: torch.Generator,
    frames: Int[Tensor, " K"] | Sequence[int] | None = None,
) -> PixelSamples:
    """``count`` pixel centres drawn uniformly (with replacement) over all pixels of ``frames`` (default: every
    frame; a tensor must be on the cameras' device). Random numbers come from ``generator`` on its device, so a
    seed gives the same samples on any device; results are on the cameras' device (float32 pixels, int64 frames)."""
    count = check_count("count", count, 0)
    check_generator("generator", generator)
    device = cameras.device
    if frames is not None and not isinstance(frames, Tensor):
        frames = torch.as_tensor(list(frames), dtype=torch.long, device=device)
    if frames is not None:
        check_int("frames", frames, [None], upper=cameras.num_frames, device=device)
    available = cameras.num_frames if frames is None else frames.numel()
    if available == 0:
        raise ValueError("frames: expected at least one frame to sample from, got none")
    g = generator.device
    pick = torch.randint(available, (count,), generator=generator, device=g).to(device)
    cols = torch.randint(cameras.width, (count,), generator=generator, device=g)
    rows = torch.randint(cameras.height, (count,), generator=generator, device=g)
    drawn = torch.stack([cols, rows], dim=-1).to(device)
    pixels = drawn.to(torch.float32) + 0.5
    # Every frame: the pick is the frame itself (no arange to gather it from, two kernels fewer a training step).
    return PixelSamples(frame=pick if frames is None else frames.long()[pick], pixels=pixels, drawn=drawn)


def look_at(
    eye: Float[Tensor, "N 3"], target: Float[Tensor, "N 3"], up: Float[Tensor, " 3"] | Float[Tensor, "N 3"] | None = None
) -> Float[Tensor, "N 4 4"]:
    """Camera-to-world matrices (OpenCV axes) of cameras at ``eye`` looking at ``target``: +z towards the
    target, +y (down in the image) along ``-up`` projected off the view direction. ``up`` defaults to world
    +y (FLAME / SMPL-X). Differentiable w.r.t. eye and target."""
    check_float("eye", eye, [None, 3])
    check_float("target", target, [eye.shape[0], 3], device=eye.device)
    if up is None:
        up = torch.tensor([0.0, 1.0, 0.0], dtype=eye.dtype, device=eye.device)
    check_float("up", up, [3] if up.dim() == 1 else [eye.shape[0], 3], device=eye.device)
    forward = target - eye
    length = forward.detach().norm(dim=-1)
    if (length <= 1e-12).any():
        row = int((length <= 1e-12).nonzero()[0, 0])
        raise ValueError(f"target: expected points distinct from eye, got one at the eye (row {row})")
    z = forward / forward.norm(dim=-1, keepdim=True)
    right = torch.linalg.cross(z, up.to(z.dtype).expand_as(z), dim=-1)
    norm = right.detach().norm(dim=-1)
    if (norm <= 1e-9 * up.detach().norm(dim=-1).clamp(min=1e-30)).any():
        raise ValueError("up: expected a direction not parallel to the view direction (target - eye)")
    x = right / right.norm(dim=-1, keepdim=True)
    y = torch.linalg.cross(z, x, dim=-1)
    m = torch.stack([x, y, z, eye], dim=-1)  # columns: camera axes in world space, then the centre
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=eye.dtype, device=eye.device).expand(eye.shape[0], 1, 4)
    return torch.cat([m, bottom], dim=1)
