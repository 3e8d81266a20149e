"""Fields: one contract from posed samples to what a renderer composites, and the composers that build it.

A field maps posed samples — points ``x [S, 3]`` in world space, their view directions, the frame each
belongs to and the frames' :class:`~headfields.parametric.Head` — to a :class:`FieldOutput`: a density (NeRF)
or a signed distance (NeuS), a colour, and what the deformer reported on the way (nearest face, validity,
named extras such as a backward field's offsets for its regularisers). Every renderer takes a field.

The composers chain the parts every paper model is made of::

    x ─► deformer ─► canonical points ─► mapping (encoder's domain) ─► encoder ─► decoder ─► density | sdf, rgb
                         └──────────────► condition (expression near the lips, per-frame codes, ...) ──┘

:class:`NerfField` (INSTA, MonoAvatar, the 360° portrait) and :class:`NeusField` (an SDF with an appearance field
and spherical-harmonics lighting). Conditioning is data: a :class:`Condition` picks, per sample, what the
decoder sees (:class:`RegionExpression`, :class:`FrameCondition`,
:class:`TrackedCondition`, :class:`SharedCode`, :class:`ConcatCondition`).

    field = NerfField(TriangleFrameDeformer(), HashGrid(), NerfDecoder(32, 16), SphericalHarmonics(4), UnitBox(box))
    out = field(x, dirs, frame, head)  # out.density [S], out.rgb [S, 3], out.canonical.face [S]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from .deformers import Canonical, Deformer
from .encoders import LatentCodes, LatentCodesConfig
from .parametric import Head

__all__ = [
    "ConcatCondition",
    "Condition",
    "EncodedSamples",
    "Field",
    "FieldOutput",
    "FrameCodes",
    "FrameCondition",
    "Normalize",
    "NerfField",
    "NeusField",
    "RegionExpression",
    "SdfGeometry",
    "SharedCode",
    "TrackedCondition",
    "UnitBox",
    "identity_canonical",
    "inflated_box",
    "padded_box",
]


@dataclass
class FieldOutput:
    """What a field gives at S samples. ``rgb`` is None when no directions were given (geometry only)."""

    canonical: Canonical  # where the deformer took the samples: face, valid, extras
    rgb: Float[Tensor, "S 3"] | None
    density: Float[Tensor, " S"] | None = None  # NeRF fields, 0 where the deformer dropped the sample
    sdf: Float[Tensor, " S"] | None = None  # SDF fields


@runtime_checkable
class Field(Protocol):
    """``field(x [S,3], dirs [S,3] | None, frame [S], head) -> FieldOutput``."""

    def __call__(
        self, x: Float[Tensor, "S 3"], dirs: Float[Tensor, "S 3"] | None, frame: Int[Tensor, " S"], head: Head
    ) -> FieldOutput: ...


def identity_canonical(x: Float[Tensor, "S 3"], dirs: Float[Tensor, "S 3"] | None) -> Canonical:
    """The samples as they are: for fields whose features ride the posed mesh (MonoAvatar) and need no deformer."""
    valid = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    return Canonical(points=x, dirs=dirs, valid=valid, face=None)


def padded_box(vertices: Float[Tensor, "V 3"], pad: float | Float[Tensor, ""]) -> Float[Tensor, "2 3"]:
    """The box of ``vertices`` grown by ``pad`` on every side."""
    return torch.stack([vertices.amin(0) - pad, vertices.amax(0) + pad])


def inflated_box(vertices: Float[Tensor, "V 3"], fraction: float) -> Float[Tensor, "2 3"]:
    """The box of ``vertices`` grown on every side by ``fraction`` of its diagonal: a model's render box."""
    return padded_box(vertices, fraction * (vertices.amax(0) - vertices.amin(0)).norm())


# --- mappings into an encoder's domain ------------------------------------------------------------------


class UnitBox(nn.Module):
    """The first three coordinates mapped from ``box [2, 3]`` to the unit cube and clamped (a hash grid's
    domain); hyper-dimensions after them pass on as they are."""

    def __init__(self, box: Float[Tensor, "2 3"]):
        super().__init__()
        self.register_buffer("box", box.detach().clone())

    def forward(self, points: Float[Tensor, "S D"]) -> Float[Tensor, "S D"]:
        unit = ((points[:, :3] - self.box[0]) / (self.box[1] - self.box[0])).clamp(0.0, 1.0)
        return torch.cat([unit, points[:, 3:].to(unit.dtype)], dim=1) if points.shape[1] > 3 else unit


class Normalize(nn.Module):
    """``(p - center) / scale`` on the first three coordinates (an SDF's units: the head spans about [-1, 1]),
    hyper-dimensions passed on. Isotropic, so an SDF's gradient keeps its length."""

    def __init__(self, center: Float[Tensor, " 3"], scale: float | Float[Tensor, ""]):
        super().__init__()
        self.register_buffer("center", center.detach().clone())
        self.register_buffer("scale", torch.as_tensor(scale, dtype=center.dtype, device=center.device).reshape(()))

    @classmethod
    def of_box(cls, vertices: Float[Tensor, "V 3"]) -> Normalize:
        """Centred on the box of ``vertices``, its longest side spanning [-1, 1]."""
        low, high = vertices.amin(0), vertices.amax(0)
        return cls((low + high) / 2, (high - low).amax() / 2)

    def forward(self, points: Float[Tensor, "S D"]) -> Float[Tensor, "S D"]:
        unit = (points[:, :3] - self.center) / self.scale
        return torch.cat([unit, points[:, 3:].to(unit.dtype)], dim=1) if points.shape[1] > 3 else unit


# --- conditioning -----------------------------------------------------------------------------------------


class Condition(Protocol):
    """``condition(canonical, head, frame) -> [S, dim]``: what a decoder sees besides the features.

    A condition that reads each sample's frame alone may also have ``per_frame(head) -> [F, dim] | None``: its
    row for each of the head's frames (None where it reads more than the frame), so that ``condition(...)``
    equals ``per_frame(head)[frame]``. A reader such as :class:`~headfields.deformers.HyperDeformer` then
    computes the condition's share of its network once per frame instead of once per sample."""

    dim: int

    def __call__(self, canonical: Canonical, head: Head, frame: Int[Tensor, " S"]) -> Float[Tensor, "S C"]: ...


class RegionExpression(nn.Module):
    """The frame's first ``dims`` expression coefficients where the sample's nearest posed face is in
    ``faces`` (INSTA's lips conditioning), ``outside`` elsewhere; with ``faces`` None, at every sample."""

    def __init__(self, dims: int, faces: Bool[Tensor, " F"] | None = None, outside: float = 0.0):
        super().__init__()
        self.dim, self.outside = dims, float(outside)
        self.register_buffer("faces", None if faces is None else faces.detach().clone())
        # The table's last row, made once (not a fill a call); not saved: ``outside`` and ``dims`` make it.
        outside_row = None if faces is None else torch.full((1, dims), self.outside, device=faces.device)
        self.register_buffer("outside_row", outside_row, persistent=False)

    def forward(
        self, canonical: Canonical, head: Head, frame: Int[Tensor, " S"], index: Int[Tensor, " S"] | None = None
    ) -> Float[Tensor, "S C"]:
        """``index``: each sample's row (:meth:`index`), where the caller kept them from an earlier pass."""
        index = self.index(canonical, head, frame) if index is None else index
        return _gathered(self.table(head), index).to(canonical.points.dtype)

    def rows(self, canonical: Canonical, head: Head, frame: Int[Tensor, " S"]) -> tuple[Float[Tensor, "T C"], Int[Tensor, " S"]]:
        """The condition as a table and each sample's row of it: the frames' first ``dims`` coefficients (in the
        head's dtype), then a row of ``outside`` (the last); ``forward`` gathers them (the experimental fused decoder,
        ``experimental.fused_nerf.fused_decode``, can take the table and the rows and gather them itself)."""
        return self.table(head), self.index(canonical, head, frame)

    def table(self, head: Head) -> Float[Tensor, "T C"]:
        """The frames' first ``dims`` coefficients, then (with ``faces``) the row of ``outside``."""
        table = head.expression[:, : self.dim]
        return table if self.faces is None else torch.cat([table, self.outside_row.to(table.dtype)])

    def index(self, canonical: Canonical, head: Head, frame: Int[Tensor, " S"]) -> Int[Tensor, " S"]:
        """Each sample's row of :meth:`table`: its frame's, or (with ``faces``) the outside row where its nearest
        face is not one of them or the deformer dropped it."""
        if self.faces is None:
            return frame
        if canonical.face is None:
            raise ValueError("deformer: expected a deformer that reports each sample's nearest face (region conditioning)")
        inside = self.faces[canonical.face.clamp(min=0)] & canonical.valid
        return torch.where(inside, frame, head.expression.shape[0])

    def per_frame(self, head: Head) -> Float[Tensor, "F C"] | None:
        return head.expression[:, : self.dim] if self.faces is None else None  # the faces: a condition per sample


def _gathered(table: Tensor, index: Tensor) -> Tensor:
    """``table[index]``: by ``index_select`` without autograd (3x a 16-wide ``where`` on the CPU), by indexing with it
    (whose backward sums in a fixed order on CUDA, where ``index_select``'s adds with atomics)."""
    return table[index] if table.requires_grad and torch.is_grad_enabled() else table.index_select(0, index)


class FrameCondition(nn.Module):
    """``network(inputs(head, frames))`` computed once per frame present, then given to each of its samples
    (the 360° portrait's blend coefficients from expression and jaw pose; per-frame codes)."""

    def __init__(self, inputs: Callable[[Head, Int[Tensor, " U"]], Float[Tensor, "U I"]], network: nn.Module, dim: int):
        super().__init__()
        self.inputs, self.network, self.dim = inputs, network, dim

    def forward(self, canonical: Canonical, head: Head, frame: Int[Tensor, " S"]) -> Float[Tensor, "S C"]:
        return _gathered(*self.rows(canonical, head, frame))

    def rows(self, canonical: Canonical, head: Head, frame: Int[Tensor, " S"]) -> tuple[Float[Tensor, "U C"], Int[Tensor, " S"]]:
        """The network's output for each frame present and each sample's row of it (as :meth:`RegionExpression.rows`)."""
        frames, inverse = torch.unique(frame, return_inverse=True)
        return self.network(self.inputs(head, frames).to(canonical.points.dtype)), inverse


class SharedCode(nn.Module):
    """One learnt code given to every sample: a one-subject model's identity or appearance code (MonoNPHM).
    ``codes`` is the :class:`~headfields.encoders.LatentCodes` of one that holds it (its regulariser too)."""

    def __init__(self, config: LatentCodesConfig):
        super().__init__()
        self.codes, self.dim = LatentCodes(1, config), config.dim

    @property
    def code(self) -> Float[Tensor, " C"]:
        return self.codes.codes[0]

    def forward(self, canonical: Canonical, head: Head, frame: Int[Tensor, " S"]) -> Float[Tensor, "S C"]:
        return self.code.to(canonical.points.dtype).expand(frame.shape[0], -1)

    def per_frame(self, head: Head) -> Float[Tensor, "F C"]:
        return self.code.expand(head.num_frames, -1)


class FrameCodes(LatentCodes):
    """One learnt code per training frame (an auto-decoder's): :meth:`attach` puts them on the training frames'
    head as ``head.codes``, where a :class:`TrackedCondition` reads them (MonoNPHM's expression codes)."""

    def attach(self, head: Head) -> Head:
        if head.num_frames != self.count:
            raise ValueError(f"head: expected the {self.count} frames the codes were learnt for, got {head.num_frames}")
        return head.with_codes(self.codes)


class TrackedCondition(nn.Module):
    """Of each sample's frame: the head's first ``expression`` coefficients, the axis-angle poses of ``joints``
    and ``head.codes`` (``codes`` numbers per frame, zeros where the head has none): the condition of a
    deformation driven by the tracking and by per-frame latent codes (MonoNPHM's)."""

    def __init__(self, expression: int, joints: tuple[int, ...] = (), codes: int = 0):
        super().__init__()
        self.expression, self.joints, self.codes = expression, tuple(joints), codes
        self.dim = expression + 3 * len(self.joints) + codes

    def forward(self, canonical: Canonical, head: Head, frame: Int[Tensor, " S"]) -> Float[Tensor, "S C"]:
        return self.per_frame(head)[frame].to(canonical.points.dtype)

    def per_frame(self, head: Head) -> Float[Tensor, "F C"]:
        parts = [head.expression[:, : self.expression], *(head.pose[:, j] for j in self.joints)]
        if head.codes is not None and head.codes.shape[1] != self.codes:
            raise ValueError(f"head: expected codes of {self.codes} numbers per frame, got {head.codes.shape[1]}")
        codes = head.codes if head.codes is not None else head.expression.new_zeros(head.num_frames, self.codes)
        return torch.cat([*parts, codes], dim=1)


class ConcatCondition(nn.Module):
    """Several conditions side by side."""

    def __init__(self, *conditions: nn.Module):
        super().__init__()
        self.conditions = nn.ModuleList(conditions)
        self.dim = sum(c.dim for c in conditions)

    def forward(self, canonical: Canonical, head: Head, frame: Int[Tensor, " S"]) -> Float[Tensor, "S C"]:
        return torch.cat([c(canonical, head, frame) for c in self.conditions], dim=1)

    def per_frame(self, head: Head) -> Float[Tensor, "F C"] | None:
        """Each part's rows side by side; None unless every part has them."""
        rows = [getattr(c, "per_frame", lambda head: None)(head) for c in self.conditions]
        return None if any(r is None for r in rows) else torch.cat(rows, dim=1)


def _deform(deformer: Deformer | None, x: Tensor, dirs: Tensor | None, frame: Tensor, head: Head) -> Canonical:
    return identity_canonical(x, dirs) if deformer is None else deformer(x, head, frame, dirs)


# --- NeRF -------------------------------------------------------------------------------------------------


@dataclass
class EncodedSamples:
    """Samples deformed and encoded, the first half of a :class:`NerfField`: what its decoder reads. Early termination
    makes them without autograd for every marched sample; the samples it keeps are then trained from them
    (:meth:`NerfField.trainable`) instead of being deformed and encoded a second time."""

    canonical: Canonical
    inputs: Float[Tensor, "S D"]  # the encoder's input: the canonical points mapped into its domain
    features: Float[Tensor, "S F"]
    # Each sample's row of a region condition's table (RegionExpression.index), found once: the samples kept after
    # early termination take theirs instead of looking up their faces again. None: the condition finds them.
    condition_rows: Int[Tensor, " S"] | None = None

    def rows(self, index: Int[Tensor, " K"] | Bool[Tensor, " S"]) -> EncodedSamples:
        """The samples at ``index`` (the canonical extras, one row a sample, too)."""
        c = self.canonical
        extras = {name: value[index] for name, value in c.extras.items()}
        dirs, face, condition_rows = (None if t is None else t[index] for t in (c.dirs, c.face, self.condition_rows))
        canonical = Canonical(c.points[index], dirs, c.valid[index], face, extras)
        return EncodedSamples(canonical, self.inputs[index], self.features[index], condition_rows)


class NerfField(nn.Module):
    """deformer → mapping → encoder → :class:`~headfields.decoders.NerfDecoder` (density, then colour from the
    encoded canonical direction). ``encoder(points)``, or ``encoder(points, head, frame)`` for an encoder that
    reads the posed mesh (``reads_head = True``); ``deformer`` None: the samples as they are. The two halves,
    :meth:`encode_samples` and :meth:`decode_samples`, are what ``forward`` runs one after the other."""

    def __init__(
        self,
        deformer: Deformer | None,
        encoder: nn.Module,
        decoder: nn.Module,
        directions: nn.Module,
        mapping: nn.Module | None = None,
        condition: nn.Module | None = None,
    ):
        super().__init__()
        self.deformer, self.encoder, self.decoder, self.directions = deformer, encoder, decoder, directions
        self.mapping = mapping if mapping is not None else nn.Identity()
        self.condition = condition

    def encode_samples(
        self, x: Float[Tensor, "S 3"], dirs: Float[Tensor, "S 3"] | None, frame: Int[Tensor, " S"], head: Head
    ) -> EncodedSamples:
        """The samples deformed (with their directions, if given), mapped and encoded."""
        canonical = _deform(self.deformer, x, dirs, frame, head)
        inputs = self.mapping(canonical.points)
        features = self.encoder(inputs, head, frame) if getattr(self.encoder, "reads_head", False) else self.encoder(inputs)
        regional = isinstance(self.condition, RegionExpression) and self.condition.faces is not None
        return EncodedSamples(canonical, inputs, features, self.condition.index(canonical, head, frame) if regional else None)

    def decode_samples(self, encoded: EncodedSamples, frame: Int[Tensor, " S"], head: Head, colour: bool = True) -> FieldOutput:
        """Density, and with ``colour`` (and the canonical directions) the colour, of ``encoded``."""
        canonical, features, rows = encoded.canonical, encoded.features, encoded.condition_rows
        cond = None
        if self.condition is not None:
            cond = self.condition(canonical, head, frame) if rows is None else self.condition(canonical, head, frame, rows)
        if not colour or canonical.dirs is None:
            density, rgb = self.decoder.density(features, cond), None
        else:
            out = self.decoder(features, self.directions(canonical.dirs), cond)
            density, rgb = out.density, out.rgb
        return FieldOutput(canonical=canonical, rgb=rgb, density=density * canonical.valid)

    def forward(
        self, x: Float[Tensor, "S 3"], dirs: Float[Tensor, "S 3"] | None, frame: Int[Tensor, " S"], head: Head
    ) -> FieldOutput:
        return self.decode_samples(self.encode_samples(x, dirs, frame, head), frame, head, colour=dirs is not None)

    def trains_from_encoding(self, head: Head) -> bool:
        """Whether samples encoded without autograd can be trained as they are (:meth:`trainable`): nothing before the
        encoder learns (the deformer's and the mapping's parameters frozen, the head's vertices constant) and the
        encoder can take its gradient back from features it gave (``reattach``: :class:`~headfields.encoders.HashGrid`)."""
        before = [p for part in (self.deformer, self.mapping) if part is not None for p in part.parameters()]
        return (
            callable(getattr(self.encoder, "reattach", None))
            and not getattr(self.encoder, "reads_head", False)
            and not any(p.requires_grad for p in before)
            and not head.vertices.requires_grad
        )

    def trainable(self, encoded: EncodedSamples) -> EncodedSamples:
        """``encoded`` (made without autograd; see :meth:`trains_from_encoding`) with the encoder's gradient
        reattached to its features: the decoder trains on them as it would on samples encoded again, the same values
        and the same gradients."""
        features = self.encoder.reattach(encoded.inputs, encoded.features)
        return EncodedSamples(encoded.canonical, encoded.inputs, features, encoded.condition_rows)


# --- SDF (NeuS) -------------------------------------------------------------------------------------------


@dataclass
class SdfGeometry:
    """An SDF field's geometry at S samples, before its colour."""

    sdf: Float[Tensor, " S"]
    points: Float[Tensor, "S 3"]  # the canonical points the SDF read, in its units (the eikonal term's variable)
    mapped: Float[Tensor, "S D"]  # the same with their hyper-dimensions (what the appearance reads)
    features: Float[Tensor, "S F"]  # the SDF network's features (what the appearance reads)
    canonical: Canonical


class NeusField(nn.Module):
    """deformer → mapping (the SDF's units) → SDF network (features) → appearance field × SH lighting of the
    world normal. ``sdf(points [S,3], extra)`` reads the hyper-dimensions and ``sdf_condition`` as ``extra``;
    ``appearance(mapped [S,D], features, code)`` reads ``colour_condition`` as its code. :meth:`geometry` and
    :meth:`colour` are the two halves a NeuS renderer calls (the colour needs the SDF's gradient)."""

    def __init__(
        self,
        deformer: Deformer | None,
        sdf: nn.Module,
        appearance: nn.Module,
        mapping: nn.Module | None = None,
        lighting: nn.Module | None = None,
        sdf_condition: nn.Module | None = None,
        colour_condition: nn.Module | None = None,
    ):
        super().__init__()
        self.deformer, self.sdf, self.appearance, self.lighting = deformer, sdf, appearance, lighting
        self.mapping = mapping if mapping is not None else nn.Identity()
        self.sdf_condition, self.colour_condition = sdf_condition, colour_condition

    def canonical_sdf(self, mapped: Float[Tensor, "S D"], cond: Float[Tensor, "S C"] | None):
        """The SDF network at mapped canonical points (with their hyper-dimensions) under ``cond``."""
        extra = [t for t in (mapped[:, 3:], cond) if t is not None and t.shape[1] > 0]
        return self.sdf(mapped[:, :3], torch.cat(extra, dim=1) if extra else None)

    def geometry(self, x: Float[Tensor, "S 3"], frame: Int[Tensor, " S"], head: Head) -> SdfGeometry:
        canonical = _deform(self.deformer, x, None, frame, head)
        mapped = self.mapping(canonical.points)
        points = mapped[:, :3]
        mapped = torch.cat([points, mapped[:, 3:]], dim=1)  # the SDF reads ``points``: its gradient's variable
        cond = None if self.sdf_condition is None else self.sdf_condition(canonical, head, frame)
        out = self.canonical_sdf(mapped, cond)
        return SdfGeometry(out.sdf, points, mapped, out.features, canonical)

    def colour(
        self, geometry: SdfGeometry, normals: Float[Tensor, "S 3"], frame: Int[Tensor, " S"], head: Head
    ) -> Float[Tensor, "S 3"]:
        """Albedo at the samples, times the SH lighting of the unit world ``normals`` (unclamped: a clamp
        would cut the lighting's gradient)."""
        code = None if self.colour_condition is None else self.colour_condition(geometry.canonical, head, frame)
        rgb = self.appearance(geometry.mapped, geometry.features, code)
        return rgb if self.lighting is None else rgb * self.lighting(F.normalize(normals, dim=-1))

    def forward(
        self, x: Float[Tensor, "S 3"], dirs: Float[Tensor, "S 3"] | None, frame: Int[Tensor, " S"], head: Head
    ) -> FieldOutput:
        if dirs is None:
            geometry = self.geometry(x, frame, head)
            return FieldOutput(canonical=geometry.canonical, rgb=None, sdf=geometry.sdf)
        train = torch.is_grad_enabled()
        with torch.enable_grad():  # normals need the SDF's gradient in evaluation too
            x = x if x.requires_grad else x.detach().requires_grad_(True)
            geometry = self.geometry(x, frame, head)
            (normals,) = torch.autograd.grad(geometry.sdf.sum(), x, create_graph=train)
        return FieldOutput(canonical=geometry.canonical, rgb=self.colour(geometry, normals, frame, head), sdf=geometry.sdf)
