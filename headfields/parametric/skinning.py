"""Linear blend skinning of arbitrary points: weights from the nearest triangle, blended joint transforms.

A point takes the skinning weights of its closest point on the mesh (the barycentric blend of the triangle's
three vertex weight rows). Forward skinning (rest -> posed) reads the weights on the rest mesh; inverse
skinning (posed -> rest) reads them on the posed mesh and applies the inverse of the blended transform. On
mesh vertices both are exact: the closest point of a vertex is the vertex itself.

Warp finds the triangle; the barycentrics are recomputed in torch (see ``closest_point``), so the result is
differentiable with respect to the points, the vertex weights and the joint transforms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..checks import IntLike, check_float, check_int, checking_values
from ..device_paths import takes_cuda_path
from ..geometry import TriangleMesh, closest_point

if TYPE_CHECKING:
    from .model import ParametricModel


@dataclass
class SkinningWeights:
    """Per-point skinning weights and where they were read."""

    weights: Float[Tensor, "N J"]
    face: Int[Tensor, " N"]  # nearest triangle on the frame's mesh
    distance: Float[Tensor, " N"]  # unsigned distance to it
    frame: Int[Tensor, " N"]


def skinning_weights(
    mesh: TriangleMesh,
    vertex_weights: Float[Tensor, "V J"],
    points: Float[Tensor, "N 3"],
    frame: Int[Tensor, " N"] | IntLike | None = None,
) -> SkinningWeights:
    """Weights of ``points[i]``: the barycentric blend of ``vertex_weights`` over its nearest triangle on
    frame ``frame[i]`` of ``mesh`` (an int names one frame for all; None only for one-frame meshes)."""
    frame = _checked_frame(mesh, vertex_weights, points, frame)
    q = closest_point(mesh, points, frame, signed=False)  # no inside/outside sign: the CPU's faster search
    dtype = torch.promote_types(q.bary.dtype, vertex_weights.dtype)
    weights = _corner_blend(vertex_weights.to(dtype), mesh.faces[q.face], q.bary.to(dtype))
    return SkinningWeights(weights=weights, face=q.face, distance=q.distance, frame=frame)


def blend_transforms(
    weights: Float[Tensor, "N J"], transforms: Float[Tensor, "B J 4 4"], frame: Int[Tensor, " N"]
) -> Float[Tensor, "N 4 4"]:
    """Per point, the weighted sum of its frame's joint transforms: ``sum_j weights[i, j] * transforms[frame[i], j]``."""
    check_float("weights", weights, [None, None])
    check_float("transforms", transforms, [None, weights.shape[1], 4, 4], device=weights.device)
    check_int("frame", frame, [weights.shape[0]], upper=transforms.shape[0], device=weights.device)
    return _blend(weights, transforms, frame)


def transform_points(
    transforms: Float[Tensor, "N 4 4"], points: Float[Tensor, "N 3"], inverse: bool = False
) -> Float[Tensor, "N 3"]:
    """Apply each 4x4 affine transform to its point, or its inverse (``R^-1 (x - t)``, solved, not inverted)."""
    check_float("transforms", transforms, [None, 4, 4])
    check_float("points", points, [transforms.shape[0], 3], device=transforms.device)
    return _transform(transforms, points, inverse)


def inverse_skinning(
    mesh: TriangleMesh,
    vertex_weights: Float[Tensor, "V J"],
    transforms: Float[Tensor, "B J 4 4"],
    points: Float[Tensor, "N 3"],
    frame: Int[Tensor, " N"],
) -> tuple[Float[Tensor, "N 3"], Float[Tensor, "N 3 3"], Int[Tensor, " N"], Float[Tensor, " N"]]:
    """``skin_points(..., inverse=True)``'s rest points, the inverse of each blended transform's linear part (what
    carries directions), the nearest faces and their distances; differentiable to any order, as ``skin_points``.
    The weights are linear in the barycentrics, so the blended transform is the barycentric blend of the corners'
    own blended transforms (``vertex_weights @ transforms``, once a call): three rows a point instead of every
    joint's transform (SMPL-X: 55), unless that table would be the larger (a batch drawn from many frames); the 3x3
    inverse is the adjugate over the determinant (no batched LU)."""
    q = closest_point(mesh, points, frame, signed=False)
    dtype = torch.promote_types(torch.promote_types(q.bary.dtype, vertex_weights.dtype), transforms.dtype)
    bary, corners = q.bary.to(dtype), mesh.faces[q.face.clamp(min=0)]  # [N, 3], [N, 3]
    num_vertices, joints = vertex_weights.shape
    # A table of blended transforms where it is no larger than a gather of every joint a point. On a GPU the table over
    # every frame (no read-back: training); without autograd, or where it is too large, over the frames present (one
    # when an image renders: on the CPU, where unique's read-back costs nothing, the 50 frames' table cost 18 ms a call);
    # on a GPU without autograd and a table too large, per point (a training step's march: no read-back in a step).
    chosen = None  # the table's frames' transforms and each point's frame among them
    fits = len(transforms) * num_vertices <= len(points) * joints
    cuda = takes_cuda_path(points.device)
    if fits and (cuda or torch.is_grad_enabled()):
        chosen = transforms, frame
    elif not torch.is_grad_enabled() and not cuda:
        present = torch.unique(frame)  # sorted
        if len(present) * num_vertices <= len(points) * joints:
            chosen = transforms[present], torch.searchsorted(present, frame)
    if chosen is None:  # per point: its weights, then its frame's joints
        blended = _blend(_corner_blend(vertex_weights.to(dtype), corners, bary), transforms, frame)
    else:
        table_transforms, index = chosen
        table = vertex_weights.to(dtype) @ table_transforms.to(dtype).reshape(len(table_transforms), joints, 16)
        rows, table = index[:, None] * num_vertices + corners, table.reshape(-1, 16)  # [N, 3], [U * V, 16]
        if torch.is_grad_enabled():  # a gather and a product: derivatives of any order
            blended = _corner_blend(table, rows, bary).view(-1, 4, 4)
        else:
            blended = F.embedding_bag(rows, table, per_sample_weights=bary, mode="sum").view(-1, 4, 4)
    linear, offset = blended[:, :3, :3], blended[:, :3, 3]
    adjugate = _adjugate(linear)
    det = (adjugate[:, 0] * linear[:, :, 0]).sum(-1)  # c0 . (c1 x c2): no batched LU, differentiable to any order
    if checking_values() and bool((det == 0).any()):
        row = int((det == 0).nonzero()[0, 0])
        raise ValueError(f"points: row {row}'s blended transform is singular (no skinning weights reach it)")
    inverse = adjugate / det[:, None, None]
    rest = torch.einsum("nrc,nc->nr", inverse, points.to(dtype) - offset)
    return rest, inverse, q.face, q.distance


def _checked_frame(mesh: TriangleMesh, vertex_weights: Tensor, points: Tensor, frame: Tensor | IntLike | None) -> Tensor:
    """``points`` and ``vertex_weights`` checked against ``mesh``; each point's frame (``mesh.frame_index``)."""
    check_float("points", points, [None, 3], device=mesh.device)
    check_float("vertex_weights", vertex_weights, [mesh.num_vertices, None], device=mesh.device)
    return mesh.frame_index(frame, points.shape[0])


def _corner_blend(values: Tensor, corners: Tensor, bary: Tensor) -> Tensor:
    """Each point's barycentric blend of the rows of ``values`` [R, C] at its corners ``corners`` [N, 3]: [N, C]."""
    return torch.einsum("nk,nkc->nc", bary, values[corners])


def _adjugate(m: Tensor) -> Tensor:
    """The adjugate of 3x3 matrices ``[N, 3, 3]`` (its transposed cofactors): ``adj(m) m = det(m) I``."""
    c0, c1, c2 = m[:, :, 0], m[:, :, 1], m[:, :, 2]  # columns
    return torch.stack([torch.cross(c1, c2, dim=-1), torch.cross(c2, c0, dim=-1), torch.cross(c0, c1, dim=-1)], dim=1)


def skin_points(
    mesh: TriangleMesh,
    vertex_weights: Float[Tensor, "V J"],
    transforms: Float[Tensor, "B J 4 4"],
    points: Float[Tensor, "N 3"],
    frame: Int[Tensor, " N"] | IntLike | None = None,
    inverse: bool = False,
) -> Float[Tensor, "N 3"]:
    """Skin ``points`` with weights read on ``mesh`` and the blended ``transforms`` of each point's frame.

    Forward (rest -> posed): ``mesh`` is the rest mesh. Inverse (posed -> rest, ``inverse=True``): ``mesh``
    is the posed mesh, and the inverse of the blended transform is applied.
    """
    check_float("transforms", transforms, [mesh.num_frames, vertex_weights.shape[-1], 4, 4], device=mesh.device)
    if inverse:
        return inverse_skinning(mesh, vertex_weights, transforms, points, _checked_frame(mesh, vertex_weights, points, frame))[0]
    w = skinning_weights(mesh, vertex_weights, points, frame)  # checks points, vertex_weights and frame
    return _transform(_blend(w.weights, transforms, w.frame), points, False)


# Unchecked cores: skin_points checks everything once, up front (before the nearest-triangle search).


def _blend(weights: Tensor, transforms: Tensor, frame: Tensor) -> Tensor:
    dtype = torch.promote_types(weights.dtype, transforms.dtype)
    weights, transforms = weights.to(dtype), transforms.to(dtype)
    if torch.is_grad_enabled():  # derivatives of any order (an SDF's eikonal term differentiates the deformer twice)
        return torch.einsum("nj,njrc->nrc", weights, transforms[frame])
    # Without autograd, a weighted sum of the frame's rows with no [N, J, 4, 4] gather (SMPL-X: 55 joints, 3.5 kB a
    # point): 7x on the CPU for 400,000 points.
    n, j = weights.shape
    rows = frame[:, None] * j + torch.arange(j, device=frame.device)
    flat = F.embedding_bag(rows, transforms.reshape(-1, 16), per_sample_weights=weights, mode="sum")
    return flat.view(n, 4, 4)


def _transform(transforms: Tensor, points: Tensor, inverse: bool) -> Tensor:
    dtype = torch.promote_types(transforms.dtype, points.dtype)
    linear, offset = transforms[:, :3, :3].to(dtype), transforms[:, :3, 3].to(dtype)
    points = points.to(dtype)
    if inverse:
        solved, info = torch.linalg.solve_ex(linear, points - offset)
        if checking_values() and bool((info != 0).any()):
            row = int((info != 0).nonzero()[0, 0])
            raise ValueError(f"points: row {row}'s blended transform is singular (no skinning weights reach it)")
        return solved
    return torch.einsum("nrc,nc->nr", linear, points) + offset


def skinned_to(model: ParametricModel, joints: Sequence[str]) -> Bool[Tensor, " V"]:
    """``model``'s vertices that move mostly with ``joints`` (more than half their skinning weight on them): with
    :data:`~headfields.parametric.EYE_JOINTS`, FLAME's eyeballs, a rule that needs no regions."""
    index = [model.joint_index(name, "joints") for name in joints]
    return model.lbs_weights[:, index].sum(dim=1) > 0.5
