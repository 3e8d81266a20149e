"""Rigid motions of a body before one fixed camera, shared by the trackers of a turning subject
(:mod:`.turn_tracking`, :mod:`.template_tracking`): points projected, rotations from axis-angles, the turn about the
vertical (yaw) and its interpolation through frames without a face, the landmark fit that starts them.

The tracker's world is the fixed camera's: at the origin, y up, looking down -z
(:data:`~headfields.fitting.landmark_tracking.OPENCV_FROM_WORLD`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from jaxtyping import Bool, Float
from smplx.lbs import batch_rodrigues
from torch import Tensor

from ..cameras import PinholeCameras, project_points
from ..checks import check_positive, check_shape
from ..parametric.tracked_meshes import rotation_to_axis_angle

__all__ = [
    "LEAST_TURN",
    "about_y",
    "check_cues",
    "landmark_poses",
    "project",
    "rotations",
    "second_differences",
    "through_the_turn",
    "wrapped",
    "yaw",
]

# The least turn accepted: a template needs every side (the frames with a face and the turn between them).
LEAST_TURN = math.radians(300.0)


def check_cues(
    masks: Tensor, points: Tensor, found: Tensor, focal: float, observed: Tensor, video: str = "video"
) -> tuple[int, int, int]:
    """The trackers' 2D cues checked, each error naming its argument: ``masks [N, H, W]``, ``points [N, P, 2]`` (pixel
    landmarks, at least the columns ``observed``), ``found [N]`` booleans with a face in some frame of the ``video``,
    ``focal`` positive. Returns ``N, H, W``."""
    check_shape("masks", masks, [None, None, None])
    n, h, w = masks.shape
    if points.dim() != 3 or points.shape[0] != n or points.shape[2] != 2 or not points.is_floating_point():
        raise ValueError(f"points: expected pixel landmarks [{n}, P, 2] (one row a mask), got {list(points.shape)}")
    if found.shape != (n,) or found.dtype != torch.bool:
        raise ValueError(f"found: expected booleans [{n}] (a frame's landmarks found), got {found.dtype} {list(found.shape)}")
    check_positive("focal", focal, finite=True)
    if not bool(found.any()):
        raise ValueError(f"found: expected a face in some frame of the {video}, found none")
    if int(observed.max()) >= points.shape[1]:
        raise ValueError(f"points: expected at least {int(observed.max()) + 1} landmarks a frame, got {points.shape[1]}")
    return n, h, w


def project(cameras: PinholeCameras, x: Float[Tensor, "B P 3"]) -> Float[Tensor, "B P 2"]:
    """World points ``[B, P, 3]`` to pixels ``[B, P, 2]`` through the fixed camera (the first frame's)."""
    b, p = x.shape[:2]
    return project_points(cameras, x.reshape(-1, 3), torch.zeros(b * p, dtype=torch.long)).pixels.reshape(b, p, 2)


def rotations(axis_angle: Float[Tensor, "*B 3"]) -> Float[Tensor, "*B 3 3"]:
    return batch_rodrigues(axis_angle.reshape(-1, 3)).reshape(*axis_angle.shape[:-1], 3, 3)


def yaw(rotation: Float[Tensor, "N 3 3"]) -> Float[Tensor, " N"]:
    """The body's turn about the vertical: the angle of its forward axis (+z) about +y."""
    return torch.atan2(rotation[:, 0, 2], rotation[:, 2, 2])


def wrapped(angle: Tensor) -> Tensor:
    """Angles brought into [-pi, pi)."""
    return torch.remainder(angle + math.pi, 2 * math.pi) - math.pi


def about_y(angle: Float[Tensor, " N"]) -> Float[Tensor, "N 3 3"]:
    zero = torch.zeros_like(angle)
    return rotations(torch.stack([zero, angle, zero], -1))


def second_differences(x: Float[Tensor, "N ..."]) -> Tensor:
    """Second differences along the frames (none for fewer than three)."""
    return x[2:] - 2 * x[1:-1] + x[:-2]


def landmark_poses(
    cameras: PinholeCameras,
    on_face: Float[Tensor, "K 3"],
    directions: Float[Tensor, "S K 3"],
    seen: Float[Tensor, "F K 2"],
    steps: int,
    rates: tuple[float, float, float],
    shape_prior: float,
    tell: Callable[[str, int, int], None],
) -> tuple[Float[Tensor, "F 3 3"], Float[Tensor, "F 3"], Float[Tensor, " S"]]:
    """Rotations and translations of the frames whose landmarks ``seen`` are the body's points ``on_face`` (canonical,
    plus coefficients times ``directions``: linear in the shape, reduced once), and those coefficients (none where
    ``S`` is 0): started facing the camera at the depth their spread gives, then Adam on the mean pixel error at
    ``rates`` (rotation, translation, shape) with ``shape_prior`` on the coefficients' squares."""
    centre = seen.mean(1)
    depth = cameras.fx * (on_face - on_face.mean(0)).norm(dim=-1).mean() / (seen - centre[:, None]).norm(dim=-1).mean(1)
    x = (centre[:, 0] - cameras.cx) / cameras.fx * depth
    y = (centre[:, 1] - cameras.cy) / cameras.fy * depth
    # The tracker's world has y up and the camera looking down -z: a pixel below the centre is a point below the axis.
    start = torch.stack([x, -y, -depth], -1) - on_face.mean(0)
    angle = torch.zeros(len(seen), 3, requires_grad=True)
    shift = start.clone().requires_grad_(True)
    shape = torch.zeros(len(directions), requires_grad=True)
    optimiser = torch.optim.Adam([{"params": [p], "lr": r} for p, r in zip((angle, shift, shape), rates, strict=True)])
    for step in range(steps):
        shaped = on_face + torch.einsum("s,skc->kc", shape, directions)
        moved = torch.einsum("bij,kj->bki", rotations(angle), shaped) + shift[:, None]
        loss = (project(cameras, moved) - seen).norm(dim=-1).mean() + shape_prior * shape.square().sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        tell("rigid", step + 1, steps)
    return rotations(angle.detach()), shift.detach(), shape.detach()


def through_the_turn(
    rotation: Float[Tensor, "F 3 3"], translation: Float[Tensor, "F 3"], found: Bool[Tensor, " N"], least: float = LEAST_TURN
) -> tuple[Float[Tensor, "N 3 3"], Float[Tensor, "N 3"]]:
    """Every frame's rotation and translation from those of the ``found`` frames: the yaw unwrapped (a gap of
    frames without a face adds the whole turns that bring its change closest to the turn's own speed, the median
    over consecutive found frames, times the gap), then interpolated in time, as are the tilt (what is left of each
    rotation once its yaw is undone) and the translation; past the first and last found frames, the speed carries
    the yaw and the rest is held. A ``ValueError`` names ``masks`` where the turn is under ``least`` radians."""
    n = len(found)
    frames = torch.nonzero(found)[:, 0]
    turn = yaw(rotation).double()
    gaps = frames.diff()
    change = wrapped(turn.diff())
    speed = float(change[gaps == 1].median()) if bool((gaps == 1).any()) else 0.0
    turned = [float(turn[0])]
    for gap, step in zip(gaps.tolist(), change.tolist(), strict=True):
        if gap > 1:
            step += 2 * math.pi * round((speed * gap - step) / (2 * math.pi))
        turned.append(turned[-1] + step)
    if abs(turned[-1] - turned[0]) + abs(speed) * (n - 1 - float(frames[-1] - frames[0])) < least:
        raise ValueError(
            f"masks: expected the subject to turn once all the way round; the frames with a face turn "
            f"{math.degrees(abs(turned[-1] - turned[0])):.0f} degrees"
        )
    tilt = rotation_to_axis_angle((rotation.double() @ about_y(-turn)).float())
    t, known = np.arange(n, dtype=np.float64), frames.numpy().astype(np.float64)

    def spread(values: Tensor) -> Tensor:  # [F, D] on the found frames -> [N, D], linear, held past the ends
        return torch.stack([torch.from_numpy(np.interp(t, known, v.numpy())) for v in values.double().T], -1)

    every = spread(torch.tensor(turned)[:, None])[:, 0]
    first, last = int(frames[0]), int(frames[-1])
    every[:first] = turned[0] + speed * (torch.arange(first) - first)
    every[last + 1 :] = turned[-1] + speed * torch.arange(1, n - last)
    return rotations(spread(tilt).float()) @ about_y(every).float(), spread(translation).float()
