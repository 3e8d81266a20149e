"""What every deformer shares: the :class:`Canonical` result, the :class:`Deformer` base class with its
input checks, :class:`DeformerChain`, which runs deformers one after another, and the baseline
:class:`RigidDeformer`, which undoes only the head's global motion."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from ..checks import IntLike, check_float, check_nonzero_rows, check_positive, frame_rows
from ..geometry import closest_point
from ..parametric import Head


@dataclass
class Canonical:
    """Samples mapped from posed (world) space into the canonical space of a field.

    Where ``valid`` is False the deformer dropped the sample (e.g. beyond its maximum distance from the
    mesh); its ``points`` and ``dirs`` are still finite but carry no meaning, and ``face`` is -1 there.
    """

    points: Float[Tensor, "N D"]  # canonical coordinates (D = 3, plus hyper-dimensions for some deformers)
    dirs: Float[Tensor, "N 3"] | None  # canonical unit view directions (None when none were given)
    valid: Bool[Tensor, " N"]
    face: Int[Tensor, " N"] | None  # nearest posed triangle, when the deformer knows it (for conditioning)
    extras: dict[str, Tensor] = field(default_factory=dict)  # what a deformer reports for its loss (e.g. offsets)


@dataclass
class DeformerInput:
    """Checked deformer arguments: ``frame`` as int64 ``[N]`` on the device of ``x``."""

    x: Float[Tensor, "N 3"]
    frame: Int[Tensor, " N"]
    dirs: Float[Tensor, "N 3"] | None


def check_deformer_input(x: Tensor, head: Head, frame: Tensor | IntLike | None, dirs: Tensor | None) -> DeformerInput:
    """Validate ``x [N,3]`` (finite floats on the head's device), ``frame`` (an int, or int ``[N]`` in
    ``[0, head.num_frames)``; None only for a one-frame head) and ``dirs [N,3]`` (non-zero, or None)."""
    if not isinstance(head, Head):
        raise TypeError(f"head: expected a headfields.parametric.Head, got {type(head).__name__}")
    check_float("x", x, [None, 3], device=head.vertices.device)
    frame = frame_rows("frame", frame, x.shape[0], head.num_frames, x.device)  # (no mesh built to check it)
    if dirs is not None:
        check_float("dirs", dirs, [x.shape[0], 3], device=x.device)
        check_nonzero_rows("dirs", dirs, "non-zero view directions")
    return DeformerInput(x=x, frame=frame, dirs=dirs)


class Deformer(nn.Module):
    """Base class: ``forward(x [N,3], head, frame, dirs [N,3] | None) -> Canonical``.

    ``x`` are posed (world) points, ``frame[i]`` the head frame sample i belongs to (an int for all), and
    ``dirs`` the unit view directions at the samples. ``forward`` checks its input once
    (:func:`check_deformer_input`) and calls :meth:`canonicalize`, which subclasses implement and which trusts its
    input: a chain checks once at its entry, not at every link (each check is a host synchronisation on CUDA).
    """

    def forward(
        self,
        x: Float[Tensor, "N 3"],
        head: Head,
        frame: Int[Tensor, " N"] | IntLike | None = None,
        dirs: Float[Tensor, "N 3"] | None = None,
        **options,
    ) -> Canonical:
        checked = check_deformer_input(x, head, frame, dirs)
        return self.canonicalize(checked.x, head, checked.frame, checked.dirs, **options)

    def canonicalize(
        self, x: Float[Tensor, "N 3"], head: Head, frame: Int[Tensor, " N"], dirs: Float[Tensor, "N 3"] | None
    ) -> Canonical:
        """The deformation of checked input: ``frame`` int64 ``[N]`` on the device of ``x``."""
        raise NotImplementedError


def _trusting(deformer: nn.Module):
    """``deformer.canonicalize`` where the deformer has its own; otherwise its ``forward`` (a deformer written to
    the forward-only contract checks what it needs itself)."""
    own = getattr(type(deformer), "canonicalize", Deformer.canonicalize)
    return deformer.canonicalize if own is not Deformer.canonicalize else deformer


_Part = TypeVar("_Part", bound=nn.Module)


class DeformerChain(Deformer):
    """Deformers applied in turn: each one's canonical points (3-D; only the last may add hyper-dimensions)
    and directions are the next one's input, with the same head and frames. ``valid`` is the AND of all;
    ``face`` is the first one reported (the only deformer that sees posed space is the first)."""

    def __init__(self, *deformers: Deformer):
        super().__init__()
        if not deformers or not all(isinstance(d, nn.Module) for d in deformers):
            raise TypeError(f"deformers: expected one or more deformer modules, got {[type(d).__name__ for d in deformers]}")
        self.deformers = nn.ModuleList(deformers)

    def part(self, kind: type[_Part]) -> _Part:
        """The chain's one deformer of type ``kind``: what a model's losses read by what it is, not where it sits."""
        found = [d for d in self.deformers if isinstance(d, kind)]
        if len(found) != 1:
            names = [type(d).__name__ for d in self.deformers]
            raise ValueError(f"kind: expected one {kind.__name__} in the chain {names}, found {len(found)}")
        return found[0]

    def canonicalize(
        self, x: Float[Tensor, "N 3"], head: Head, frame: Int[Tensor, " N"], dirs: Float[Tensor, "N 3"] | None
    ) -> Canonical:
        points, valid, face, extras = x, None, None, {}
        for i, deformer in enumerate(self.deformers):
            if points.shape[1] != 3:
                raise ValueError(
                    f"deformers: deformer {i - 1} returned {points.shape[1]}-D points; only the last may add dimensions"
                )
            out = _trusting(deformer)(points, head, frame, dirs)
            points, dirs = out.points, out.dirs
            valid = out.valid if valid is None else valid & out.valid
            face = out.face if face is None else face
            extras.update(out.extras)
        if face is not None:
            face = face.masked_fill(~valid, -1)
        return Canonical(points=points, dirs=dirs, valid=valid, face=face, extras=extras)


@dataclass
class RigidDeformerConfig:
    max_distance: float | None = None  # drop samples farther than this from the frame's posed mesh
    nearest_face: bool = False  # also report each sample's nearest posed triangle (implied by max_distance)
    joint: int = 0  # whose motion is undone: the root (the head's global motion), or e.g. FLAME's neck

    def __post_init__(self) -> None:
        check_positive("max_distance", self.max_distance)


class RigidDeformer(Deformer):
    """The head's rigid motion undone: ``canonical = R⁻¹ (x − t)`` with ``[R | t]`` the rest → posed transform
    of the configured joint (the root by default: the global motion) in the sample's frame
    (``head.joint_transforms[frame, joint]``, translation included), and directions ``R⁻¹ d``. No expression
    or jaw motion: the baseline that INSTA's triangle-frame deformer is measured against.
    """

    def __init__(self, config: RigidDeformerConfig | None = None):
        super().__init__()
        self.config = config or RigidDeformerConfig()

    def canonicalize(
        self, x: Float[Tensor, "N 3"], head: Head, frame: Int[Tensor, " N"], dirs: Float[Tensor, "N 3"] | None
    ) -> Canonical:
        root = head.joint_transforms[frame, self.config.joint]  # [N, 4, 4]
        dtype = torch.promote_types(x.dtype, root.dtype)
        rotation, offset = root[:, :3, :3].to(dtype), root[:, :3, 3].to(dtype)
        # Rᵀ = R⁻¹ for the root's rotation (the root joint carries no scale).
        points = torch.einsum("nji,nj->ni", rotation, x.to(dtype) - offset)
        canonical_dirs = None
        if dirs is not None:
            canonical_dirs = F.normalize(torch.einsum("nji,nj->ni", rotation, dirs.to(dtype)), dim=-1)
        valid = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        face = None
        max_distance = self.config.max_distance
        if max_distance is not None or self.config.nearest_face:
            with torch.no_grad():
                q = closest_point(head.posed_mesh, x.detach(), frame, max_distance)
            valid = q.hit if max_distance is None else q.hit & (q.distance <= max_distance)
            face = q.face.masked_fill(~valid, -1)
        return Canonical(points=points, dirs=canonical_dirs, valid=valid, face=face)


class MappedDeformer(Deformer):
    """The points through a fixed ``mapping`` (``mapping(x [N,3]) -> [N,3]``), e.g.
    :class:`headfields.fields.Normalize`: after a :class:`RigidDeformer` it puts the samples in the normalised
    head frame a learnt backward field works in (MonoNPHM's :class:`HyperDeformer`). Directions pass unchanged:
    the mapping must be a shift and a uniform scale."""

    def __init__(self, mapping: nn.Module):
        super().__init__()
        self.mapping = mapping

    def canonicalize(
        self, x: Float[Tensor, "N 3"], head: Head, frame: Int[Tensor, " N"], dirs: Float[Tensor, "N 3"] | None
    ) -> Canonical:
        valid = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        return Canonical(points=self.mapping(x), dirs=dirs, valid=valid, face=None)
