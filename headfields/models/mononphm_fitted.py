"""What MonoNPHM fits to a video besides the prior's codes (:class:`~headfields.models.mononphm.MonoNphm`): per
frame an expression code and a correction of the tracked head pose (:class:`TrackedFrames`, carried on the head as
its codes and read by :class:`CorrectedPose`), and per sequence a head scale and an affine colour transform
(:class:`ColourTransform`), as MonoNPHM's ``photometric_tracking/tracking.py`` fits them.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from ..checks import check_count
from ..deformers import Canonical, Deformer
from ..fields import NeusField
from ..fitting import corrected_pose
from ..parametric import Head

__all__ = ["POSE_NUMBERS", "ColourTransform", "ColourTransformedField", "CorrectedPose", "TrackedFrames", "frame_codes"]

POSE_NUMBERS = 6  # a frame's pose correction on head.codes: rotation w_f (3), then shift t_f (3)


class TrackedFrames(nn.Module):
    """What tracking fits per frame of a frame set: an expression code, and a correction of the tracked head pose
    (a rotation ``exp(w_f)`` in the head frame, then a world shift ``t_f``); all zero at first (the prior's mean
    expression on the capture's pose). :meth:`attach` puts them on the frames' head as its ``codes``
    ``[expression | w_f | t_f]``, which the model's field reads."""

    def __init__(self, num_frames: int, expression_dim: int):
        super().__init__()
        check_count("num_frames", num_frames, 1)
        self.codes = nn.Parameter(torch.zeros(num_frames, expression_dim))
        self.rotation = nn.Parameter(torch.zeros(num_frames, 3))
        self.shift = nn.Parameter(torch.zeros(num_frames, 3))

    @property
    def count(self) -> int:
        return self.codes.shape[0]

    def attach(self, head: Head) -> Head:
        """``head`` (of the frames these were fitted to) with them as its codes."""
        if head.num_frames != self.count:
            raise ValueError(f"head: expected the {self.count} frames these were fitted to, got {head.num_frames}")
        return head.with_codes(torch.cat([self.codes, self.rotation, self.shift], dim=1))


def frame_codes(head: Head, expression_dim: int) -> tuple[Tensor, Tensor, Tensor] | None:
    """(expression codes, rotations, shifts) per frame of ``head`` (:meth:`TrackedFrames.attach`); None for a head
    without codes (the mean expression on the tracked pose)."""
    if head.codes is None:
        return None
    if head.codes.shape[1] != expression_dim + POSE_NUMBERS:
        raise ValueError(
            f"head: expected codes of {expression_dim + POSE_NUMBERS} numbers per frame ([expression | rotation | "
            f"shift], MonoNphm.head), got {head.codes.shape[1]}"
        )
    e = expression_dim
    return head.codes[:, :e], head.codes[:, e : e + 3], head.codes[:, e + 3 : e + 6]


class CorrectedPose(Deformer):
    """World -> the head frame: the tracked transform of ``joint`` in each frame, composed with the frame's
    correction on ``head.codes`` (:class:`TrackedFrames`: a rotation ``exp(w_f)`` in the head frame, then a world
    shift ``t_f``; a head without codes has none), and the sequence's head ``scale`` (tracking.py's
    ``scale_param``: head-frame points are world offsets divided by it; 1 unless tracking fits it)."""

    def __init__(self, joint: int, expression_dim: int):
        super().__init__()
        self.joint, self.expression_dim = joint, expression_dim
        self.scale = nn.Parameter(torch.ones(()))

    def transforms(self, head: Head, frame: Int[Tensor, " N"]) -> tuple[Tensor, Tensor]:
        """(rotation ``[N, 3, 3]``, translation ``[N, 3]``) of each row's frame: head frame (times the scale) -> world."""
        tracked = head.joint_transforms[frame, self.joint]
        codes = frame_codes(head, self.expression_dim)
        if codes is None:
            return tracked[:, :3, :3], tracked[:, :3, 3]
        _, rotation, shift = codes
        return corrected_pose(tracked[:, :3, :3], tracked[:, :3, 3], rotation[frame], shift[frame])

    def canonicalize(
        self, x: Float[Tensor, "N 3"], head: Head, frame: Int[Tensor, " N"], dirs: Float[Tensor, "N 3"] | None
    ) -> Canonical:
        rotation, translation = self.transforms(head, frame)
        points = torch.einsum("nji,nj->ni", rotation, x.to(rotation.dtype) - translation) / self.scale.to(rotation.dtype)
        canonical_dirs = None if dirs is None else torch.einsum("nji,nj->ni", rotation, dirs.to(rotation.dtype))
        valid = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        return Canonical(points=points, dirs=canonical_dirs, valid=valid, face=None)


class ColourTransform(nn.Module):
    """The sequence's affine colour transform, ``rgb @ A + b`` (tracking.py's ``colorA``, ``colorb``; identity at
    first): it absorbs a camera's colour response that the prior's albedo and SH lighting cannot. Applied to each
    sample's shaded colour, which is the same as to the composited foreground (compositing is linear; the shift
    counts by opacity), never to the background. MonoNPHM's colours are in [-1, 1], ours in [0, 1]: the same family
    of maps, with the same identity start."""

    def __init__(self) -> None:
        super().__init__()
        self.matrix = nn.Parameter(torch.eye(3))
        self.shift = nn.Parameter(torch.zeros(3))

    def forward(self, rgb: Float[Tensor, "N 3"]) -> Float[Tensor, "N 3"]:
        return rgb @ self.matrix.to(rgb.dtype) + self.shift.to(rgb.dtype)


class ColourTransformedField(NeusField):
    """A NeusField whose shaded colour goes through a :class:`ColourTransform`."""

    def __init__(self, *parts: nn.Module | None, transform: ColourTransform):
        super().__init__(*parts)
        self.colour_transform = transform

    def colour(self, geometry, normals: Tensor, frame: Tensor, head: Head) -> Tensor:
        return self.colour_transform(super().colour(geometry, normals, frame, head))
