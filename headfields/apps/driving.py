"""Reenactment: a trained avatar driven by another capture's tracking (NeRFace's and INSTA's transfer).

Relative transfer (the default for another person) moves the avatar by the driver's motion away from the driver's
own neutral frame: expression and jaw as offsets added to the avatar's neutral frame, joint rotations and the
head's translation likewise relative, so the avatar keeps its own face shape, resting expression and placement.
Absolute transfer uses the driver's tracking as it is (with the avatar's identity shape): right when the driver
is the avatar's own capture, e.g. its held-out split.

    driven = drive(run.subject.train, driver_frames, relative=True)  # the driver's frames, the avatar's tracking
    head = tracked_head(run.model.parametric, driven)
"""

from __future__ import annotations

import dataclasses

import torch
from jaxtyping import Float
from torch import Tensor

from ..checks import check_count
from ..data import FrameSet, TrackedParams
from ..parametric.tracked_meshes import compose_rotations

__all__ = ["TRANSFERS", "drive", "is_own_capture"]

TRANSFERS = ("auto", "relative", "absolute")  # auto: absolute for the avatar's own capture, relative otherwise


def is_own_capture(avatar: FrameSet, driver: FrameSet) -> bool:
    """Whether ``driver`` is a split of the capture the avatar was trained on (the same folder, or the same
    identity shape in memory)."""
    if avatar.root is not None and driver.root is not None:
        return avatar.root.resolve() == driver.root.resolve()
    if avatar.params is not None and driver.params is not None:
        return avatar.params.shape.shape == driver.params.shape.shape and bool(
            torch.equal(avatar.params.shape.cpu(), driver.params.shape.cpu())
        )
    return False


def _relative_rotations(
    avatar: Float[Tensor, "J 3"], driver: Float[Tensor, "N J 3"], driver_neutral: Float[Tensor, "J 3"]
) -> Float[Tensor, "N J 3"]:
    """Per joint: the driver's rotation away from its neutral frame, applied to the avatar's neutral rotation,
    ``R = R_driver R_driver_neutral^T R_avatar`` (axis-angle in, axis-angle out)."""
    return compose_rotations(driver, -driver_neutral, avatar)


def _check_sizes(name: str, avatar: Tensor | None, driver: Tensor | None, what: str) -> None:
    if avatar is None:
        return
    if driver is None:
        raise ValueError(f"driver: expected {what} like the avatar's capture, got a capture without them")
    if avatar.shape[1:] != driver.shape[1:]:
        raise ValueError(
            f"driver: expected {what} of shape {list(avatar.shape[1:])} per frame (the avatar's capture's {name}), "
            f"got {list(driver.shape[1:])}: the two captures were tracked with different models or sizes"
        )


def drive(
    avatar: FrameSet, driver: FrameSet, relative: bool = True, avatar_neutral: int = 0, driver_neutral: int = 0
) -> FrameSet:
    """The frames of ``driver`` (its cameras and images) carrying the avatar's tracking driven by the driver's:
    relative to ``driver_neutral`` and ``avatar_neutral`` (frames of ``driver`` and of the avatar's training frames
    ``avatar``), or absolute (see the module docstring). Tracked parameters keep the avatar's identity shape;
    tracked meshes (a capture without model files) move by the driver's vertex offsets, so both must share the
    mesh topology. Raises when the two captures' tracking does not match in kind or size."""
    check_count("avatar_neutral", avatar_neutral, 0, len(avatar) - 1)
    check_count("driver_neutral", driver_neutral, 0, len(driver) - 1)
    _check_sizes("expression files", avatar.expression, driver.expression, "expression coefficients")
    params, vertices, expression = driver.params, driver.mesh_vertices, driver.expression
    if avatar.params is not None:
        if driver.params is None:
            raise ValueError("driver: expected tracked parameters like the avatar's capture, got a capture without them")
        _check_sizes("expression", avatar.params.expression, driver.params.expression, "expression coefficients")
        _check_sizes("pose", avatar.params.pose, driver.params.pose, "joint rotations")
        a, d = avatar.params, driver.params.to(avatar.params.shape.device)
        if relative:
            params = TrackedParams(
                shape=a.shape,
                expression=a.expression[avatar_neutral] + d.expression - d.expression[driver_neutral],
                pose=_relative_rotations(a.pose[avatar_neutral], d.pose, d.pose[driver_neutral]),
                translation=a.translation[avatar_neutral] + d.translation - d.translation[driver_neutral],
                static_offset=a.static_offset,
            )
        else:  # the avatar's identity: its shape and static offsets
            params = dataclasses.replace(d, shape=a.shape, static_offset=a.static_offset)
    elif avatar.mesh_vertices is not None:
        _check_sizes("meshes", avatar.mesh_vertices, driver.mesh_vertices, "tracked mesh vertices")
        if not torch.equal(avatar.mesh_faces.cpu(), driver.mesh_faces.cpu()):
            raise ValueError("driver: expected tracked meshes with the faces of the avatar's capture, got another topology")
        if relative:
            vertices = avatar.mesh_vertices[avatar_neutral] + driver.mesh_vertices - driver.mesh_vertices[driver_neutral]
    else:
        raise ValueError("avatar: expected training frames with tracked parameters or meshes, got neither")
    if relative and avatar.expression is not None:
        expression = avatar.expression[avatar_neutral] + driver.expression - driver.expression[driver_neutral]
    if avatar.params is not None:  # the driver's meshes are its own person's: the parameters say it all
        return dataclasses.replace(driver, params=params, mesh_vertices=None, mesh_faces=None, expression=expression)
    return dataclasses.replace(driver, params=params, mesh_vertices=vertices, expression=expression)
