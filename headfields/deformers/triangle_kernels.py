"""The fused triangle-frame deformer (INSTA; the maths in :mod:`headfields.deformers.triangle_frames`): one Warp
thread per sample finds the nearest face on its frame's source mesh and evaluates the frame map there, the area
scaling and the neighbour blend included; a second kernel runs the hand-written reverse pass for points,
directions and both meshes' vertices from the face the forward found (no second query, no host round trip).

Both kernels exist in float32 and float64 (:func:`_kernels`), so the float64 path can be gradchecked. Each sample
is one blend of ``K`` candidate faces (``K = 1``: the nearest face alone, ``M_p⁻¹ = R_pᵀ / s`` in closed form;
``K ≤ 4`` on ``blend_faces``: the nearest face and its edge neighbours, the 3x3 block inverted):

    M_p = Σ w^p_k s_k R^p_k,  o_p = Σ w^p_k a^p_k,  M_c = Σ w^c_k R^c_k,  o_c = Σ w^c_k a^c_k
    l = M_p⁻¹ (x − o_p),  m = M_p⁻¹ d,  points = M_c l + o_c,  dirs = normalize(M_c m)

and its reverse pass, with ḡ the gradient of what follows:

    ḡ_Mc = ḡ_p lᵀ + ḡ_r mᵀ,  ḡ_l = M_cᵀ ḡ_p,  ḡ_v = M_p⁻ᵀ ḡ_l,  ḡ_d = M_p⁻ᵀ M_cᵀ ḡ_r,  ḡ_Mp = −(ḡ_v lᵀ + ḡ_d mᵀ)
    ḡ_x = ḡ_v (+ the weights' terms),  ḡ_op = −ḡ_v

then through the weights (a softmax of ``−φ_k |c_k − x|``: ``ḡ_z_k = w_k (ḡ_w_k − Σ_j w_j ḡ_w_j)``, and
``Σ_j w_j ḡ_w_j = ⟨M, ḡ_M⟩ + o · ḡ_o``), the scales ``s = (A_p / A_c)^e`` and the frames
(``n = normalize(e1 × e2)``, ``b̂ = normalize(e1 × n)``, ``t = normalize(b̂ × n)``) down to the corners.

Vertex gradients are added with atomics. Warp's CPU atomics are plain read-modify-writes and
:func:`headfields.kernels.launch_rows` runs row chunks concurrently, so each chunk adds into a buffer of its own
(as the hash grid's table gradient does), summed afterwards.

A gradient asked for with ``create_graph=True`` (a NeuS field's eikonal term through the deformer) is taken
through the torch reference the caller passes, recomputed at the saved faces: the Warp backward has no graph.

One file over 500 lines because the forward and reverse kernels are one derivation: each line of the reverse pass
undoes a line of the forward, and they are read (and changed) side by side.
"""

# No `from __future__ import annotations`: Warp reads the kernels' annotations as objects, and those of the
# kernels built in _kernels name its local types.

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, no_type_check

import torch
import warp as wp
from jaxtyping import Bool, Float, Int
from torch import Tensor

from .. import kernels
from ..backends.cpu.wide_bvh import nearest_faces
from ..geometry import TriangleMesh
from ..geometry.queries import UNBOUNDED
from ..geometry.ties import canonical_face, tie_tables

# Candidates of a blended sample: the nearest face and its three edge neighbours.
BLEND_CANDIDATES = wp.constant(4)


# ---------------------------------------------------------------- generic helpers (float32 and float64)
# ``mesh`` is the kernels' _Mesh struct (see _kernels): both meshes, the faces and the options.


@no_type_check  # Warp parameter types are not Python type hints; keep the jaxtyping checker off them.
@wp.func
def _unit(v: Any):
    return v / wp.length(v)


@no_type_check
@wp.func
def _unit_adjoint(v: Any, g: Any):
    """Gradient w.r.t. ``v`` of ``normalize(v)`` given the gradient ``g`` of the result."""
    length = wp.length(v)
    y = v / length
    return (g - y * wp.dot(y, g)) / length


@no_type_check
@wp.func
def _distance_adjoint(offset: Any, g_distance: Any):
    """Gradient w.r.t. ``offset`` of ``|offset|`` given ``g_distance``; 0 at 0 (torch's subgradient)."""
    length = wp.length(offset)
    result = offset * type(length)(0.0)
    if length > type(length)(0.0):
        result = offset * (g_distance / length)
    return result


@no_type_check
@wp.func
def _frame(a: Any, b: Any, c: Any):
    """INSTA's frame rotation ``[t | b̂ | n]`` of triangle ``(a, b, c)`` (origin ``a``)."""
    e1 = b - a
    n = _unit(wp.cross(e1, c - a))
    bitangent = _unit(wp.cross(e1, n))
    return wp.matrix_from_cols(_unit(wp.cross(bitangent, n)), bitangent, n)


@no_type_check
@wp.func
def _frame_adjoint(a: Any, b: Any, c: Any, g_rotation: Any, g_area: Any):
    """Gradients w.r.t. ``b − a`` and ``c − a`` of ``⟨_frame(a, b, c), g_rotation⟩ + g_area · _area(a, b, c)``
    (for ``z = u × v``: ``ḡ_u = v × ḡ_z``, ``ḡ_v = ḡ_z × u``)."""
    e1 = b - a
    e2 = c - a
    un = wp.cross(e1, e2)
    n = _unit(un)
    ub = wp.cross(e1, n)
    bitangent = _unit(ub)
    ut = wp.cross(bitangent, n)
    columns = wp.transpose(g_rotation)
    g_ut = _unit_adjoint(ut, columns[0])  # t = normalize(b̂ × n)
    g_bitangent = columns[1] + wp.cross(n, g_ut)
    g_n = columns[2] + wp.cross(g_ut, bitangent)
    g_ub = _unit_adjoint(ub, g_bitangent)  # b̂ = normalize(e1 × n)
    g_e1 = wp.cross(n, g_ub)
    g_n = g_n + wp.cross(g_ub, e1)
    g_un = _unit_adjoint(un, g_n) + n * (g_area * type(g_area)(0.5))  # n = normalize(e1 × e2), area = |e1 × e2| / 2
    g_e1 = g_e1 + wp.cross(e2, g_un)
    return g_e1, wp.cross(g_un, e1)


@no_type_check
@wp.func
def _area(a: Any, b: Any, c: Any):
    return wp.length(wp.cross(b - a, c - a)) * type(a[0])(0.5)


@no_type_check
@wp.func
def _centroid(a: Any, b: Any, c: Any):
    return (a + b + c) / type(a[0])(3.0)


@no_type_check
@wp.func
def _posed_corners(mesh: Any, fr: int, g: int):
    return mesh.vertices[fr, mesh.faces[g, 0]], mesh.vertices[fr, mesh.faces[g, 1]], mesh.vertices[fr, mesh.faces[g, 2]]


@no_type_check
@wp.func
def _canonical_corners(mesh: Any, g: int):
    return mesh.canonical[mesh.faces[g, 0]], mesh.canonical[mesh.faces[g, 1]], mesh.canonical[mesh.faces[g, 2]]


@no_type_check
@wp.func
def _candidate(mesh: Any, f: int, k: int):
    """Candidate ``k`` of a blend around face ``f``: ``f`` itself, then its edge neighbours (-1: none)."""
    g = f
    if k > 0:
        g = mesh.adjacency[f, k - 1]
    return g


@no_type_check
@wp.func
def _in_mask(has: int, mask: wp.array(dtype=wp.uint8), f: int):
    """Whether face ``f`` is in a face mask (``has`` 0: no mask, and ``mask`` may be empty)."""
    inside = False
    if has != 0:
        inside = mask[f] != wp.uint8(0)
    return inside


@no_type_check
@wp.func
def _scale(mesh: Any, scaled: bool, pa: Any, pb: Any, pc: Any, ca: Any, cb: Any, cc: Any):
    """``s = (A_p / A_c) ** area_exponent`` of a face with posed corners ``p*`` and canonical ``c*`` on
    ``scale_faces``, 1 elsewhere (no areas computed there)."""
    s = type(mesh.exponent)(1.0)
    if scaled:
        s = wp.pow(_area(pa, pb, pc) / _area(ca, cb, cc), mesh.exponent)
    return s


@no_type_check
@wp.func
def _falloff(mesh: Any, k: int):
    """``φ_k`` of blend candidate ``k``: the nearest face's, then the neighbours'."""
    falloff = mesh.neighbour_falloff
    if k == 0:
        falloff = mesh.nearest_falloff
    return falloff


@no_type_check
@wp.func
def _logits(mesh: Any, fr: int, g: int, k: int, x: Any):
    """Posed and canonical log-weights ``−φ_k |c_k − x|`` of blend candidate ``k`` (face ``g``)."""
    pa, pb, pc = _posed_corners(mesh, fr, g)
    ca, cb, cc = _canonical_corners(mesh, g)
    falloff = _falloff(mesh, k)
    return -falloff * wp.length(_centroid(pa, pb, pc) - x), -falloff * wp.length(_centroid(ca, cb, cc) - x)


@no_type_check
@wp.func
def _blend_maxima(mesh: Any, fr: int, f: int, x: Any):
    """The largest posed and canonical log-weights of the blend around face ``f`` (softmax without overflow, as
    torch's)."""
    top_p, top_c = _logits(mesh, fr, f, 0, x)
    for k in range(1, BLEND_CANDIDATES):
        g = _candidate(mesh, f, k)
        if g >= 0:
            z_p, z_c = _logits(mesh, fr, g, k, x)
            top_p = wp.max(top_p, z_p)
            top_c = wp.max(top_c, z_c)
    return top_p, top_c


@no_type_check
@wp.func
def _frames(mesh: Any, fr: int, f: int, blend: bool, x: Any):
    """The sample's posed matrix ``M_p``, its inverse, origin ``o_p`` and the canonical ``M_c``, ``o_c``: of face
    ``f`` alone, or (``blend``) INSTA's blend of ``f`` and its edge neighbours."""
    if not blend:
        pa, pb, pc = _posed_corners(mesh, fr, f)
        ca, cb, cc = _canonical_corners(mesh, f)
        rotation_p = _frame(pa, pb, pc)
        s = _scale(mesh, _in_mask(mesh.has_scale, mesh.scale_mask, f), pa, pb, pc, ca, cb, cc)
        return rotation_p * s, wp.transpose(rotation_p) / s, pa, _frame(ca, cb, cc), ca
    top_p, top_c = _blend_maxima(mesh, fr, f, x)
    zero = x[0] * type(x[0])(0.0)
    matrix_p = wp.outer(x, x) * zero
    origin_p = x * zero
    matrix_c = matrix_p
    origin_c = origin_p
    total_p = zero
    total_c = zero
    for k in range(BLEND_CANDIDATES):
        g = _candidate(mesh, f, k)
        if g >= 0:
            pa, pb, pc = _posed_corners(mesh, fr, g)
            ca, cb, cc = _canonical_corners(mesh, g)
            z_p, z_c = _logits(mesh, fr, g, k, x)
            e_p = wp.exp(z_p - top_p)
            e_c = wp.exp(z_c - top_c)
            s = _scale(mesh, _in_mask(mesh.has_scale, mesh.scale_mask, g), pa, pb, pc, ca, cb, cc)
            matrix_p = matrix_p + _frame(pa, pb, pc) * (e_p * s)
            origin_p = origin_p + pa * e_p
            matrix_c = matrix_c + _frame(ca, cb, cc) * e_c
            origin_c = origin_c + ca * e_c
            total_p = total_p + e_p
            total_c = total_c + e_c
    matrix_p = matrix_p / total_p
    return matrix_p, wp.inverse(matrix_p), origin_p / total_p, matrix_c / total_c, origin_c / total_c


@no_type_check
@wp.func
def _query(mesh_ids: Any, limit: float, has_limit: int, max_distance: float, queries: Any, fr: int, i: int):
    """The nearest face of query ``i`` on its frame's mesh; -1 beyond ``max_distance`` (float32, as
    :func:`headfields.geometry.closest_point` measures it)."""
    mesh = mesh_ids[fr]
    q = wp.mesh_query_point_no_sign(mesh, queries[i], limit)
    f = int(-1)
    if q.result:
        f = q.face
        if has_limit != 0:
            if wp.length(queries[i] - wp.mesh_eval_position(mesh, q.face, q.u, q.v)) > max_distance:
                f = -1
    return f


@no_type_check
@wp.func
def _add_corner_grads(
    grad_vertices: Any,
    slot: int,
    fr: int,
    corners: Any,
    a: Any,
    b: Any,
    c: Any,
    g_rotation: Any,
    g_area: Any,
    g_origin: Any,
    g_centroid: Any,
):
    """Add the gradients of a face's frame, area, origin and centroid into its ``corners`` (frame ``fr`` of
    ``grad_vertices [slots, frames, V]``)."""
    g_e1, g_e2 = _frame_adjoint(a, b, c, g_rotation, g_area)
    third = g_centroid / type(g_area)(3.0)
    wp.atomic_add(grad_vertices, slot, fr, corners[0], g_origin - g_e1 - g_e2 + third)
    wp.atomic_add(grad_vertices, slot, fr, corners[1], g_e1 + third)
    wp.atomic_add(grad_vertices, slot, fr, corners[2], g_e2 + third)


@cache
def _kernels(scalar: type) -> tuple[Any, wp.Kernel, wp.Kernel]:
    """The mesh struct and the forward and backward kernels in ``scalar`` (wp.float32 or wp.float64); each kernel
    its own module, built on first use."""
    vec3 = wp.types.vector(3, scalar)

    @no_type_check
    @wp.struct
    class _Mesh:
        vertices: wp.array2d(dtype=vec3)  # the source mesh [frames, V]
        canonical: wp.array(dtype=vec3)
        faces: wp.array2d(dtype=wp.int32)
        adjacency: wp.array2d(dtype=wp.int32)  # face_adjacency(faces) with blend_faces
        scale_mask: wp.array(dtype=wp.uint8)
        blend_mask: wp.array(dtype=wp.uint8)
        has_scale: int
        has_blend: int
        exponent: scalar
        nearest_falloff: scalar
        neighbour_falloff: scalar

    @no_type_check
    @wp.kernel(module="unique", enable_backward=False)  # the adjoint is hand-written: no Warp autodiff code
    def forward(
        mesh_ids: wp.array(dtype=wp.uint64),
        limit: float,
        has_limit: int,
        max_distance: float,
        known_face: int,
        mesh: _Mesh,
        has_dirs: int,
        warp_points: wp.array2d(dtype=wp.vec3),  # the source mesh as the searches read it (geometry.ties)
        vertex_face: wp.array(dtype=wp.int32),
        edge_face: wp.array2d(dtype=wp.int32),
        queries: wp.array(dtype=wp.vec3),
        points: wp.array(dtype=vec3),
        frame: wp.array(dtype=wp.int64),
        dirs: wp.array(dtype=vec3),
        out_points: wp.array(dtype=vec3),
        out_dirs: wp.array(dtype=vec3),
        out_face: wp.array(dtype=wp.int32),
        order: wp.array(dtype=wp.int64),
    ):
        i = int(order[wp.tid()])
        fr = int(frame[i])
        x = points[i]
        f = int(-1)
        if known_face != 0:  # found already (the CPU's wide BVH)
            f = out_face[i]
        else:
            f = _query(mesh_ids, limit, has_limit, max_distance, queries, fr, i)
        # Of equally near faces (the closest point a shared edge or vertex), the lowest id, whichever search ran.
        f, _v, _w = canonical_face(warp_points, mesh.faces, vertex_face, edge_face, fr, f, queries[i])
        out_face[i] = f
        if f < 0:
            out_points[i] = x
            if has_dirs != 0:
                out_dirs[i] = _unit(dirs[i])
            return
        matrix_p, inverse_p, origin_p, matrix_c, origin_c = _frames(mesh, fr, f, _in_mask(mesh.has_blend, mesh.blend_mask, f), x)
        out_points[i] = matrix_c @ (inverse_p @ (x - origin_p)) + origin_c
        if has_dirs != 0:
            out_dirs[i] = _unit(matrix_c @ (inverse_p @ dirs[i]))

    @no_type_check
    @wp.kernel(module="unique", enable_backward=False)  # the adjoint is hand-written: no Warp autodiff code
    def backward(
        mesh: _Mesh,
        has_dirs: int,
        want_source: int,
        want_canonical: int,
        points: wp.array(dtype=vec3),
        frame: wp.array(dtype=wp.int64),
        dirs: wp.array(dtype=vec3),
        face: wp.array(dtype=wp.int32),
        grad_out_points: wp.array(dtype=vec3),
        grad_out_dirs: wp.array(dtype=vec3),
        grad_points: wp.array(dtype=vec3),
        grad_dirs: wp.array(dtype=vec3),
        grad_source: wp.array3d(dtype=vec3),  # [slots, frames, V]
        grad_canonical: wp.array3d(dtype=vec3),  # [slots, 1, V]
        order: wp.array(dtype=wp.int64),
        slot: wp.array(dtype=wp.int32),
    ):
        t = wp.tid()
        i = int(order[t])
        fr = int(frame[i])
        f = face[i]
        g_p = grad_out_points[i]
        if f < 0:  # dropped: points = x, dirs = normalize(d)
            grad_points[i] = g_p
            if has_dirs != 0:
                grad_dirs[i] = _unit_adjoint(dirs[i], grad_out_dirs[i])
            return
        x = points[i]
        blend = _in_mask(mesh.has_blend, mesh.blend_mask, f)
        matrix_p, inverse_p, origin_p, matrix_c, origin_c = _frames(mesh, fr, f, blend, x)
        # The map: l = M_p⁻¹ (x − o_p), points = M_c l + o_c; m = M_p⁻¹ d, dirs = normalize(M_c m).
        local = inverse_p @ (x - origin_p)
        g_matrix_c = wp.outer(g_p, local)
        g_x = wp.transpose(inverse_p) @ (wp.transpose(matrix_c) @ g_p)
        g_matrix_p = -wp.outer(g_x, local)
        if has_dirs != 0:
            m = inverse_p @ dirs[i]
            g_r = _unit_adjoint(matrix_c @ m, grad_out_dirs[i])
            g_matrix_c = g_matrix_c + wp.outer(g_r, m)
            g_d = wp.transpose(inverse_p) @ (wp.transpose(matrix_c) @ g_r)
            g_matrix_p = g_matrix_p - wp.outer(g_d, m)
            grad_dirs[i] = g_d
        g_origin_p = -g_x
        # The blend: the weights' softmax normalisers, and Σ_j w_j ḡ_w_j of each (the baseline of ḡ_z).
        count = int(1)
        zero = scalar(0.0)
        top_p = zero
        top_c = zero
        total_p = scalar(1.0)
        total_c = scalar(1.0)
        if blend:
            count = BLEND_CANDIDATES
            top_p, top_c = _blend_maxima(mesh, fr, f, x)
            total_p = zero
            total_c = zero
            for k in range(BLEND_CANDIDATES):
                g = _candidate(mesh, f, k)
                if g >= 0:
                    z_p, z_c = _logits(mesh, fr, g, k, x)
                    total_p = total_p + wp.exp(z_p - top_p)
                    total_c = total_c + wp.exp(z_c - top_c)
        base_p = wp.ddot(matrix_p, g_matrix_p) + wp.dot(origin_p, g_origin_p)
        base_c = wp.ddot(matrix_c, g_matrix_c) + wp.dot(origin_c, g_p)
        for k in range(count):
            g = _candidate(mesh, f, k)
            if g >= 0:
                corners = wp.vec3i(mesh.faces[g, 0], mesh.faces[g, 1], mesh.faces[g, 2])
                pa, pb, pc = _posed_corners(mesh, fr, g)
                ca, cb, cc = _canonical_corners(mesh, g)
                rotation_p = _frame(pa, pb, pc)
                scaled = _in_mask(mesh.has_scale, mesh.scale_mask, g)
                s = _scale(mesh, scaled, pa, pb, pc, ca, cb, cc)
                w_p = scalar(1.0)
                w_c = scalar(1.0)
                g_centroid_p = vec3(zero)
                g_centroid_c = vec3(zero)
                if blend:
                    # w_k = softmax(z)_k, z_k = −φ_k |c_k − x|: ḡ_z_k = w_k (ḡ_w_k − Σ_j w_j ḡ_w_j).
                    z_p, z_c = _logits(mesh, fr, g, k, x)
                    w_p = wp.exp(z_p - top_p) / total_p
                    w_c = wp.exp(z_c - top_c) / total_c
                    g_z_p = w_p * (s * wp.ddot(rotation_p, g_matrix_p) + wp.dot(pa, g_origin_p) - base_p)
                    g_z_c = w_c * (wp.ddot(_frame(ca, cb, cc), g_matrix_c) + wp.dot(ca, g_p) - base_c)
                    falloff = _falloff(mesh, k)
                    g_centroid_p = _distance_adjoint(_centroid(pa, pb, pc) - x, -falloff * g_z_p)
                    g_centroid_c = _distance_adjoint(_centroid(ca, cb, cc) - x, -falloff * g_z_c)
                    g_x = g_x - g_centroid_p - g_centroid_c
                # M_p = Σ w s R: ḡ_R = w s ḡ_M, ḡ_s = w ⟨R, ḡ_M⟩; s = (A_p / A_c)^e: ∂s/∂A_p = e s / A_p, ∂s/∂A_c = −e s / A_c.
                g_area_p = zero
                g_area_c = zero
                if scaled:
                    g_log_s = w_p * wp.ddot(rotation_p, g_matrix_p) * mesh.exponent * s
                    g_area_p = g_log_s / _area(pa, pb, pc)
                    g_area_c = -g_log_s / _area(ca, cb, cc)
                if want_source != 0:
                    g_rotation_p = g_matrix_p * (w_p * s)
                    _add_corner_grads(
                        grad_source, slot[t], fr, corners, pa, pb, pc, g_rotation_p, g_area_p, g_origin_p * w_p, g_centroid_p
                    )
                if want_canonical != 0:
                    _add_corner_grads(
                        grad_canonical, slot[t], 0, corners, ca, cb, cc, g_matrix_c * w_c, g_area_c, g_p * w_c, g_centroid_c
                    )
        grad_points[i] = g_x

    return _Mesh, forward, backward


@dataclass(frozen=True)
class FrameMapOptions:
    """What the kernels take besides the differentiable tensors (see :class:`TriangleFrameDeformer`)."""

    mesh: TriangleMesh  # the source mesh (posed or rest): its BVHs find the faces
    frame: Int[Tensor, " N"]
    faces: Int[Tensor, "F 3"]  # int32 as the kernels read them (another integer dtype is cast at every call)
    scale_faces: Bool[Tensor, " F"] | None
    blend_faces: Bool[Tensor, " F"] | None
    adjacency: Int[Tensor, "F 3"] | None  # face_adjacency(faces), needed with blend_faces; int32 as faces
    max_distance: float | None
    area_exponent: float
    nearest_falloff: float
    neighbour_falloff: float
    # The torch evaluation at given faces, ``(x, dirs, source, canonical, face) -> (points, dirs)``: the gradient
    # with create_graph=True goes through it.
    reference: Callable[..., tuple[Tensor, Tensor | None]]


def _mask(mask: Tensor | None, device: torch.device) -> tuple[wp.array, int]:
    """A Bool face mask as Warp reads it, and whether there is one."""
    if mask is None:
        return kernels.to_warp(torch.zeros(1, dtype=torch.uint8, device=device), wp.uint8), 0
    return kernels.to_warp(mask.contiguous().view(torch.uint8), wp.uint8), 1


def _mesh_struct(options: FrameMapOptions, source: Tensor, canonical: Tensor) -> Any:
    """The kernels' ``_Mesh`` of the detached, contiguous ``source`` and ``canonical`` vertices."""
    device = source.device
    scalar = kernels.WARP_SCALARS[source.dtype]
    mesh = _kernels(scalar)[0]()
    mesh.vertices = _vec3(source)
    mesh.canonical = _vec3(canonical)
    mesh.faces = kernels.to_warp(options.faces.to(torch.int32).contiguous(), wp.int32)
    no_adjacency = options.adjacency is None
    adjacency = torch.full((1, 3), -1, dtype=torch.int32, device=device) if no_adjacency else options.adjacency
    mesh.adjacency = kernels.to_warp(adjacency.to(torch.int32).contiguous(), wp.int32)
    mesh.scale_mask, mesh.has_scale = _mask(options.scale_faces, device)
    mesh.blend_mask, mesh.has_blend = _mask(options.blend_faces, device)
    mesh.exponent = scalar(options.area_exponent)
    mesh.nearest_falloff = scalar(options.nearest_falloff)
    mesh.neighbour_falloff = scalar(options.neighbour_falloff)
    return mesh


def _vec3(x: Tensor) -> wp.array:
    return kernels.to_warp(x, wp.types.vector(3, kernels.WARP_SCALARS[x.dtype]))


class _FrameMap(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, dirs: Tensor | None, source: Tensor, canonical: Tensor, options: FrameMapOptions):
        n, device = x.shape[0], x.device
        ctx.save_for_backward(x, dirs, source, canonical)  # as given: a gradient with a graph needs them
        x, source, canonical = (t.detach().contiguous() for t in (x, source, canonical))
        has_dirs = dirs is not None
        dirs_in = dirs.detach().contiguous() if has_dirs else x.new_empty(0, 3)
        mesh, frame = options.mesh, options.frame
        queries = mesh.to_warp_frame(x, frame)
        order = mesh.query_order(queries, frame)
        points = torch.empty_like(x)
        out_dirs = torch.empty_like(x) if has_dirs else x.new_empty(0, 3)
        face = torch.empty(n, dtype=torch.int32, device=device)
        limit = UNBOUNDED if options.max_distance is None else min(float(options.max_distance), UNBOUNDED)
        has_limit = int(options.max_distance is not None)
        # On the CPU the nearest faces come from the wide BVH's search (2.0-2.3x Warp's, geometry.wide_bvh) and the kernel
        # only maps; elsewhere the kernel asks Warp's BVH itself.
        wide = mesh.wide_bvh(n)
        if wide is not None:
            found = [torch.empty(n, 3, device=device), torch.empty(n, 3, device=device), torch.empty(n, device=device)]
            nearest_faces(wide, queries, frame, limit, order, face, *found)
        inputs = [queries, _vec3(x), frame, _vec3(dirs_in)]
        outputs = [_vec3(points), _vec3(out_dirs), face]
        mesh_ids = mesh.warp_mesh_ids() if wide is None else wp.empty(1, dtype=wp.uint64, device=kernels.warp_device(device))
        struct = _mesh_struct(options, source, canonical)
        ties = tie_tables(mesh.faces, mesh.num_vertices)
        shared = [mesh_ids, limit, has_limit, limit, int(wide is not None), struct, int(has_dirs)]
        shared += [mesh.warp_points(), ties.vertex_face, ties.edge_face]
        kernels.launch_rows(_kernels(kernels.WARP_SCALARS[x.dtype])[1], n, [*shared, *inputs, *outputs], [order], device)
        ctx.face, ctx.order, ctx.options = face, order, options  # outputs of no gradient, kept as they are
        ctx.mark_non_differentiable(face)
        return points, (out_dirs if has_dirs else None), face

    @staticmethod
    def backward(ctx, grad_points: Tensor, grad_dirs: Tensor | None, _grad_face: Tensor | None):
        x, dirs, source, canonical = ctx.saved_tensors
        face, order, options = ctx.face, ctx.order, ctx.options
        want = ctx.needs_input_grad[:4]
        if torch.is_grad_enabled():
            return (*_reference_grads(x, dirs, source, canonical, face, options, want, grad_points, grad_dirs), None)
        n, device = x.shape[0], x.device
        x, source, canonical = (t.detach().contiguous() for t in (x, source, canonical))
        has_dirs = dirs is not None
        empty = x.new_empty(0, 3)
        dirs = dirs.detach().contiguous() if has_dirs else empty
        grad_points = grad_points.contiguous()
        if has_dirs:
            grad_dirs = torch.zeros_like(x) if grad_dirs is None else grad_dirs.contiguous()
        grad_x = torch.empty_like(x)
        grad_d = torch.empty_like(x) if has_dirs else empty
        slots, slot = kernels.launch_slots(n, device)
        # [slots, frames, V, 3] and [slots, 1, V, 3]; a stand-in where the gradient is not wanted.
        grad_source = x.new_zeros(slots, *source.shape) if want[2] else x.new_zeros(1, 1, 1, 3)
        grad_canonical = x.new_zeros(slots, 1, *canonical.shape) if want[3] else x.new_zeros(1, 1, 1, 3)
        shared = [_mesh_struct(options, source, canonical), int(has_dirs), int(want[2]), int(want[3])]
        inputs = [_vec3(x), options.frame, _vec3(dirs), face, _vec3(grad_points), _vec3(grad_dirs if has_dirs else empty)]
        outputs = [_vec3(grad_x), _vec3(grad_d), _vec3(grad_source), _vec3(grad_canonical)]
        kernels.launch_rows(_kernels(kernels.WARP_SCALARS[x.dtype])[2], n, [*shared, *inputs, *outputs], [order, slot], device)
        return (
            grad_x if want[0] else None,
            grad_d if want[1] and has_dirs else None,
            grad_source.sum(0) if want[2] else None,
            grad_canonical.sum(0)[0] if want[3] else None,
            None,
        )


def _reference_grads(
    x: Tensor,
    dirs: Tensor | None,
    source: Tensor,
    canonical: Tensor,
    face: Tensor,
    options: FrameMapOptions,
    want: tuple[bool, ...],
    grad_points: Tensor,
    grad_dirs: Tensor | None,
) -> tuple[Tensor | None, ...]:
    """The gradient with a graph (create_graph=True): through the torch reference at the saved faces."""
    inputs = [x, dirs, source, canonical]
    wanted = [t for t, w in zip(inputs, want, strict=True) if w]
    points, out_dirs = options.reference(x, dirs, source, canonical, face.long())
    outputs = [points] + ([out_dirs] if out_dirs is not None and grad_dirs is not None else [])
    grads = [grad_points] + ([grad_dirs] if len(outputs) == 2 else [])
    found = iter(torch.autograd.grad(outputs, wanted, grads, create_graph=True, allow_unused=True))
    return tuple(next(found) if w else None for w in want)


def frame_map(
    x: Float[Tensor, "N 3"],
    dirs: Float[Tensor, "N 3"] | None,
    source: Float[Tensor, "B V 3"],
    canonical: Float[Tensor, "V 3"],
    options: FrameMapOptions,
) -> tuple[Float[Tensor, "N 3"], Float[Tensor, "N 3"] | None, Int[Tensor, " N"]]:
    """Each sample's nearest face on its frame's source mesh (-1 beyond ``max_distance``) and INSTA's frame map
    there: canonical points, unit directions (None without ``dirs``), faces (int64). ``x``, ``dirs``, ``source``
    and ``canonical`` share one dtype (float32 or float64) and are differentiable; dropped samples keep ``x``
    and their normalised ``dirs``."""
    if x.dtype not in kernels.WARP_SCALARS:
        raise TypeError(f"x: expected float32 or float64, got {x.dtype}")
    points, out_dirs, face = _FrameMap.apply(x, dirs, source, canonical, options)
    return points, out_dirs, face.long()
