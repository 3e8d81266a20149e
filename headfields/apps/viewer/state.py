"""The viewer's GUI state (:class:`ViewerState`) and the one-frame head it asks for (:func:`state_head`): pure
functions a test reaches without a server or a browser.

    head = state_head(run.model.parametric, ViewerState(jaw=15.0, frame=3), run.subject.train.params)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ...data.frames import TrackedParams
from ...parametric import Head
from ...parametric.tracked_meshes import TrackedMeshModel, compose_rotations

__all__ = ["ViewerState", "state_head"]


@dataclass(frozen=True)
class ViewerState:
    """What the GUI asks for. ``frame``: a frame of ``split`` whose tracking (expression, pose, translation) is the
    base, or None for the neutral head; ``expression`` (the first coefficients), ``jaw`` (degrees about the jaw
    joint's x axis) and ``yaw`` / ``pitch`` / ``roll`` (degrees about the root joint's y / x / z axes) are offsets
    on top of that base. All zero with ``frame=None``: the parametric model's neutral head."""

    expression: tuple[float, ...] = ()
    jaw: float = 0.0
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    frame: int | None = None
    split: str = "train"
    mesh: bool = False  # the display toggles: the tracked mesh overlay, depth instead of colour,
    depth: bool = False
    splats: bool = False  # ... and a Gaussian run's splats drawn by the browser (depth: the server's picture still)

    @property
    def browser_draws(self) -> bool:
        """Whether the browser draws the splats itself (no server picture): ``splats`` on and ``depth`` off."""
        return self.splats and not self.depth

    @property
    def posed(self) -> bool:
        """Whether a slider other than the frame is off zero."""
        return any(self.expression) or any((self.jaw, self.yaw, self.pitch, self.roll))


def _euler(yaw: float, pitch: float, roll: float, like: Tensor) -> Tensor:
    """Axis-angle of ``Ry(yaw) Rx(pitch) Rz(roll)`` (degrees)."""
    axes = torch.eye(3, dtype=torch.float64, device=like.device)
    angles = torch.tensor([pitch, yaw, roll], dtype=torch.float64, device=like.device) * (math.pi / 180)
    rx, ry, rz = axes * angles[:, None]
    return compose_rotations(ry, rx, rz).to(like.dtype)


def state_head(
    parametric,
    state: ViewerState,
    params: TrackedParams | None,
    neutral_translation: Tensor | None = None,
    tracked: Head | None = None,
) -> Head:
    """The one-frame :class:`Head` of the GUI ``state``: frame ``state.frame`` of ``params`` (the split's tracked
    parameters; the neutral head, moved to ``neutral_translation`` (default: none), when ``state.frame`` is None)
    with the sliders' offsets added. A model of tracked meshes (or a split without parameters) has only its
    ``tracked`` head of the split: its frame, the sliders ignored.

    >>> head = state_head(run.model.parametric, ViewerState(jaw=10.0, frame=0), run.subject.train.params)
    >>> head.num_frames
    1
    """
    if isinstance(parametric, TrackedMeshModel) or params is None:
        if tracked is None:
            raise ValueError("tracked: expected the split's tracked head (a subject without tracked parameters)")
        return tracked.select([0 if state.frame is None else state.frame])
    device = parametric.v_template.device
    params = params.to(device)
    e, j = parametric.num_expression, parametric.num_joints
    if len(state.expression) > e:
        raise ValueError(f"state: expected at most {e} expression values (the model's), got {len(state.expression)}")
    if state.frame is None:
        expression = torch.zeros(e, device=device)
        pose = torch.zeros(j, 3, device=device)
        translation = torch.zeros(3, device=device) if neutral_translation is None else neutral_translation.to(device)
    else:
        if not 0 <= state.frame < params.num_frames:
            raise ValueError(f"frame: expected a frame in [0, {params.num_frames}), got {state.frame}")
        expression = params.expression[state.frame].clone()
        pose = params.pose[state.frame].clone()
        translation = params.translation[state.frame]
    if state.expression:
        expression[: len(state.expression)] += torch.tensor(state.expression, dtype=expression.dtype, device=device)
    if state.jaw and "jaw" in parametric.joint_names:
        jaw = parametric.joint_names.index("jaw")
        jaw_offset = torch.tensor([math.radians(state.jaw), 0.0, 0.0], dtype=pose.dtype, device=device)
        pose[jaw] = compose_rotations(pose[jaw], jaw_offset)  # the offset in the joint's own frame
    if state.yaw or state.pitch or state.roll:
        pose[0] = compose_rotations(pose[0], _euler(state.yaw, state.pitch, state.roll, pose))
    return parametric(shape=params.shape, expression=expression[None], pose=pose[None], translation=translation[None])
