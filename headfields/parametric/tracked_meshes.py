"""A subject's tracked meshes standing in for its parametric model, for captures that have no model files.

INSTA trains from the tracker's per-frame meshes, ``canonical.obj`` and the expression files alone, and the
meshes may have any topology (INSTA's release uses a simplified FLAME). :class:`TrackedMeshModel` gives the
models what they read from a parametric model: the neutral canonical mesh, its faces, UVs and regions, and for
each frame a :class:`Head` whose posed vertices are the tracked mesh.

With no skeleton, the head's motion is the rigid fit of the canonical mesh onto each frame's mesh (least squares,
refitted on the vertices that fit best, so an open jaw does not tilt it). It is both joints' transform: "global"
and "neck", the joint MonoAvatar and MonoNPHM take as the head's frame. Everything the fit leaves (expression,
jaw) is in the rest vertices, skinned rigidly to the neck.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from ..checks import check_float, check_int
from .head import Head
from .model import ParametricModel

__all__ = ["SubjectModel", "TrackedMeshModel", "compose_rotations", "cylindrical_uvs", "require_parametric_model", "rigid_fit"]

# The share of vertices the second pass of the rigid fit keeps (those the first pass fits best).
RIGID_FIT_INLIERS = 0.7


class TrackedMeshModel(nn.Module):
    """The neutral canonical mesh of a capture (``canonical.obj``) with its faces, UVs and regions (region name
    -> vertex ids). ``num_expression``: the width of the capture's expression vectors (0: none)."""

    model_type = "tracked meshes"
    joint_names = ("global", "neck")

    def __init__(
        self,
        canonical_vertices: Float[Tensor, "V 3"],
        faces: Int[Tensor, "F 3"],
        num_expression: int,
        regions: dict[str, Int[Tensor, " _"]] | None = None,
        uvs: Float[Tensor, "T 2"] | None = None,
        uv_faces: Int[Tensor, "F 3"] | None = None,
    ):
        super().__init__()
        check_float("canonical_vertices", canonical_vertices, [None, 3])
        check_int("faces", faces, [None, 3], upper=canonical_vertices.shape[0])
        if (uvs is None) != (uv_faces is None):
            raise ValueError("uv_faces: expected uvs and uv_faces together, got only one of them")
        if uvs is None:
            uvs, uv_faces = cylindrical_uvs(canonical_vertices, faces)
        check_float("uvs", uvs, [None, 2])
        check_int("uv_faces", uv_faces, [faces.shape[0], 3], upper=uvs.shape[0])
        if isinstance(num_expression, bool) or not isinstance(num_expression, int) or num_expression < 0:
            raise ValueError(f"num_expression: expected a non-negative int, got {num_expression!r}")
        self.num_expression = num_expression
        self.register_buffer("v_template", canonical_vertices.float())
        self.register_buffer("faces", faces.long())
        self.register_buffer("uvs", uvs.float())
        self.register_buffer("uv_faces", uv_faces.long())
        self.region_names = tuple(sorted(regions or {}))
        for name in self.region_names:
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(f"regions: expected region names that are identifiers (letters, digits, _), got {name!r}")
            check_int(f"regions[{name!r}]", regions[name], [None], upper=canonical_vertices.shape[0])
            self.register_buffer(f"region_{name}", regions[name].long())

    @property
    def num_vertices(self) -> int:
        return self.v_template.shape[0]

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def regions(self) -> dict[str, Tensor]:
        return {name: getattr(self, f"region_{name}") for name in self.region_names}

    def joint_index(self, joint: str, argument: str = "joint") -> int:
        if joint not in self.joint_names:
            raise ValueError(
                f"{argument}: expected one of {list(self.joint_names)} (a subject of tracked meshes has no skeleton: "
                f"give the parametric model folder and tracked parameters for {joint!r}), got {joint!r}"
            )
        return self.joint_names.index(joint)

    def extra_repr(self) -> str:
        sizes = f"vertices={self.num_vertices}, faces={self.faces.shape[0]}, expression={self.num_expression}"
        return f"{sizes}, regions={len(self.region_names)}"

    def forward(self, translation: Float[Tensor, "B 3"] | None = None, expression: Float[Tensor, "B E"] | None = None) -> Head:
        """The neutral canonical mesh for B frames (one without arguments), moved by ``translation``; an
        ``expression`` is carried on the head (a mesh has no blend shapes to apply it)."""
        device, b = self.v_template.device, 1
        if translation is not None:
            check_float("translation", translation, [None, 3], device=device)
            b = translation.shape[0]
        if expression is not None:
            check_float("expression", expression, [b if translation is not None else None, self.num_expression], device=device)
            b = expression.shape[0]
        transforms = torch.eye(4, device=device).repeat(b, self.num_joints, 1, 1)
        vertices = self.v_template.expand(b, -1, -1)
        if translation is not None:
            transforms[:, :, :3, 3] = translation[:, None]
            vertices = vertices + translation[:, None]
        return self._head(vertices, transforms, expression)

    def track(self, vertices: Float[Tensor, "B V 3"], expression: Float[Tensor, "B E"] | None = None) -> Head:
        """The head of B frames whose posed vertices are the tracked meshes ``vertices``; its joints' transform is
        each frame's rigid fit (see the module's docstring)."""
        check_float("vertices", vertices, [None, self.num_vertices, 3], device=self.v_template.device)
        transforms = rigid_fit(self.v_template, vertices)[:, None].expand(-1, self.num_joints, -1, -1)
        return self._head(vertices, transforms, expression)

    def _head(self, vertices: Tensor, transforms: Float[Tensor, "B J 4 4"], expression: Tensor | None) -> Head:
        b, device = vertices.shape[0], vertices.device
        rotation, translation = transforms[:, 0, :3, :3], transforms[:, 0, :3, 3]
        rest = torch.einsum("bji,bvj->bvi", rotation, vertices - translation[:, None])  # the rigid motion undone
        weights = torch.zeros(self.num_vertices, self.num_joints, device=device)
        weights[:, self.joint_index("neck")] = 1.0
        pose = torch.zeros(b, self.num_joints, 3, device=device)
        pose[:, 0] = rotation_to_axis_angle(rotation)
        if expression is None:
            expression = torch.zeros(b, self.num_expression, device=device)
        check_float("expression", expression, [b, self.num_expression], device=device)
        return Head(
            vertices=vertices,
            rest_vertices=rest,
            canonical_vertices=self.v_template,
            faces=self.faces,
            uvs=self.uvs,
            uv_faces=self.uv_faces,
            shape=torch.zeros(0, device=device),
            expression=expression,
            pose=pose,
            translation=translation,
            joints=translation[:, None].expand(-1, self.num_joints, -1),
            joint_transforms=transforms.contiguous(),
            skinning_weights=weights,
            regions=self.regions,
            landmarks=None,
        )


# What a subject's heads come from, and what every model takes: a parametric model, or a capture's tracked meshes.
SubjectModel = ParametricModel | TrackedMeshModel


def require_parametric_model(parametric: SubjectModel, model: str, needs: str) -> None:
    """A clear error when ``model`` (a model's name) is given tracked meshes where it ``needs`` a parametric model."""
    if isinstance(parametric, TrackedMeshModel):
        raise ValueError(
            f"parametric: {model} needs {needs}, which tracked meshes do not have: give the capture's tracked "
            "parameters (params_path files) and the model folder (the transforms' model, or --model)"
        )


def rigid_fit(source: Float[Tensor, "V 3"], targets: Float[Tensor, "B V 3"]) -> Float[Tensor, "B 4 4"]:
    """The rotation and translation taking ``source`` closest to each of ``targets`` (least squares, Kabsch),
    refitted on the :data:`RIGID_FIT_INLIERS` share of vertices the first fit places best."""
    src, dst = source.double(), targets.double()
    weights = torch.ones(dst.shape[:2], dtype=torch.float64, device=dst.device)
    for _ in range(2):
        transform = _weighted_kabsch(src, dst, weights)
        moved = torch.einsum("bij,vj->bvi", transform[:, :3, :3], src) + transform[:, None, :3, 3]
        residual = (moved - dst).norm(dim=-1)
        keep = max(3, int(RIGID_FIT_INLIERS * src.shape[0]))
        cut = residual.kthvalue(min(keep, src.shape[0]), dim=1, keepdim=True).values
        weights = (residual <= cut).double()
    return transform.to(targets.dtype)


def _weighted_kabsch(src: Tensor, dst: Tensor, weights: Tensor) -> Tensor:
    w = weights / weights.sum(dim=1, keepdim=True)
    src_mean = torch.einsum("bv,vi->bi", w, src)
    dst_mean = torch.einsum("bv,bvi->bi", w, dst)
    cov = torch.einsum("bv,bvi,bvj->bij", w, dst - dst_mean[:, None], src[None] - src_mean[:, None])
    u, _, vt = torch.linalg.svd(cov)
    d = torch.sign(torch.linalg.det(u @ vt))  # no reflection
    correction = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], dim=-1))
    rotation = u @ correction @ vt
    transform = torch.eye(4, dtype=src.dtype, device=src.device).repeat(dst.shape[0], 1, 1)
    transform[:, :3, :3] = rotation
    transform[:, :3, 3] = dst_mean - torch.einsum("bij,bj->bi", rotation, src_mean)
    return transform


def rotation_to_axis_angle(rotation: Float[Tensor, "B 3 3"]) -> Float[Tensor, "B 3"]:
    """Axis-angle vectors of rotation matrices (through the unit quaternion, stable at every angle)."""
    r = rotation.double()
    trace = r.diagonal(dim1=-2, dim2=-1).sum(-1)
    # Each candidate is 4 q_k^2 (k = w, x, y, z); take the largest for the division below.
    squares = torch.stack([1 + trace, 1 + 2 * r[:, 0, 0] - trace, 1 + 2 * r[:, 1, 1] - trace, 1 + 2 * r[:, 2, 2] - trace], dim=-1)
    k = squares.argmax(dim=-1)
    big = squares.gather(1, k[:, None]).clamp_min(1e-12).sqrt()  # 2 |q_k|
    # Off-diagonal sums and differences give 4 q_i q_j for every pair.
    wx, wy, wz = r[:, 2, 1] - r[:, 1, 2], r[:, 0, 2] - r[:, 2, 0], r[:, 1, 0] - r[:, 0, 1]
    xy, xz, yz = r[:, 0, 1] + r[:, 1, 0], r[:, 0, 2] + r[:, 2, 0], r[:, 1, 2] + r[:, 2, 1]
    rows = torch.stack(
        [
            torch.stack([squares[:, 0], wx, wy, wz], -1),
            torch.stack([wx, squares[:, 1], xy, xz], -1),
            torch.stack([wy, xy, squares[:, 2], yz], -1),
            torch.stack([wz, xz, yz, squares[:, 3]], -1),
        ],
        dim=1,
    )  # row k: 4 q_k q
    q = rows[torch.arange(len(r), device=r.device), k] / (2 * big)
    q = q * torch.where(q[:, :1] < 0, -1.0, 1.0)  # w >= 0: angle in [0, pi]
    vector = q[:, 1:]
    sin_half = vector.norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(sin_half, q[:, :1])
    scale = torch.where(sin_half > 1e-12, angle / sin_half.clamp_min(1e-12), 2.0 / q[:, :1].clamp_min(1e-12))
    return (vector * scale).to(rotation.dtype)


def compose_rotations(*axis_angles: Float[Tensor, "... 3"]) -> Float[Tensor, "... 3"]:
    """The axis-angle of ``R(a_1) R(a_2) ... R(a_n)`` (each ``[..., 3]``, broadcast against each other; ``-a`` is
    ``R(a)^T``), in float64 and back to the first's dtype."""
    from smplx.lbs import batch_rodrigues

    shape = torch.broadcast_shapes(*(a.shape for a in axis_angles))
    product = None
    for a in axis_angles:
        r = batch_rodrigues(a.expand(shape).reshape(-1, 3).double())
        product = r if product is None else product @ r
    return rotation_to_axis_angle(product).reshape(shape).to(axis_angles[0].dtype)


def cylindrical_uvs(vertices: Float[Tensor, "V 3"], faces: Int[Tensor, "F 3"]) -> tuple[Float[Tensor, "T 2"], Int[Tensor, "F 3"]]:
    """UVs for a mesh without any: a cylindrical projection about the vertical (+y) axis through the mesh's
    centre, u the angle from the front (+z), v the height. Each face gets its own three corners, so a face across
    the back seam is kept whole (its corners continue past u = 1; u is then rescaled into [0, 1])."""
    centre = (vertices.amin(0) + vertices.amax(0)) / 2
    p = vertices - centre
    u = (torch.atan2(p[:, 0], p[:, 2]) / (2 * math.pi) + 0.5)[faces]  # [F, 3], the front at u = 0.5
    shifted = torch.where(u < 0.5, u + 1.0, u)
    span = lambda x: x.amax(1, keepdim=True) - x.amin(1, keepdim=True)  # noqa: E731
    across = (span(u) > 0.5) & (span(shifted) < 0.5)  # straddles the back seam (not a face around the axis)
    u = torch.where(across, shifted, u)
    u = u / u.amax().clamp_min(1.0)
    height = vertices[:, 1].amax() - vertices[:, 1].amin()
    v = ((vertices[:, 1] - vertices[:, 1].amin()) / height.clamp_min(1e-12))[faces]
    uvs = torch.stack([u, v], dim=-1).reshape(-1, 2)
    return uvs, torch.arange(len(uvs), device=faces.device).reshape(-1, 3)
