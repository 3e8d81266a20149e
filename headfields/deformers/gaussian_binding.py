"""GaussianAvatars' binding (Qian et al., CVPR 2024): 3D Gaussians rigged to the triangles of a tracked mesh.

Each Gaussian has a parent triangle and lives in that triangle's frame: origin ``T`` the mean of its corners,
rotation ``R = [e | n | e × n]`` (``e`` the unit first edge ``v1 − v0``, ``n`` the unit normal), scale ``k`` the mean
of the first edge's length and the triangle's height over it. The world Gaussian of a frame is

    μ = k R μ' + T,    r = q(R) ⊗ r',    s = k s'

(``ShenhanQian/GaussianAvatars``: ``utils/graphics_utils.py`` ``compute_face_orientation``;
``scene/flame_gaussian_model.py`` ``update_mesh_properties``; ``scene/gaussian_model.py`` ``get_xyz``,
``get_rotation``, ``get_scaling``). Quaternions are (w, x, y, z) and may be unnormalised: they are normalised
before they are chained, as ``get_rotation`` does. Density control lives in
:mod:`headfields.models.gaussian_avatars.density`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from ..checks import check_count, check_float, check_int, check_nonzero_rows, check_shape, checking_values
from ..geometry.triangles import _check_mesh, _corners, check_nondegenerate

# GaussianModel.create_from_pcd (pcd None, the FLAME model's init): opacity 0.1 through inverse_sigmoid.
INITIAL_OPACITY = 0.1


def quaternion_multiply(a: Float[Tensor, "*B 4"], b: Float[Tensor, "*B 4"]) -> Float[Tensor, "*B 4"]:
    """Hamilton product ``a ⊗ b`` of (w, x, y, z) quaternions: the rotation ``b`` first, then ``a``.

    >>> qz = torch.tensor([math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)])  # 90° about z
    >>> quaternion_multiply(qz, qz)  # ≈ (0, 0, 0, 1): 180° about z
    """
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    product = [
        aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw,
    ]  # fmt: skip
    return torch.stack(product, dim=-1)


def quaternion_to_matrix(q: Float[Tensor, "*B 4"]) -> Float[Tensor, "*B 3 3"]:
    """Rotation matrices of (w, x, y, z) quaternions; a quaternion of any non-zero length gives the rotation of
    its normalised self (the ``2 / |q|²`` factor), from 1e-30 to 1e30 in float32 alike: ``q`` is first divided by its
    largest magnitude, so ``|q|²`` neither overflows (a NaN matrix) nor underflows.

    >>> q = torch.tensor([math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)])
    >>> quaternion_to_matrix(q)  # [[0, -1, 0], [1, 0, 0], [0, 0, 1]]
    """
    q = q / q.abs().amax(-1, keepdim=True)  # R(q / m) = R(q): |q|² is then in [1, 4]
    w, x, y, z = q.unbind(-1)
    two_s = 2.0 / (q * q).sum(-1)
    rows = [
        1 - two_s * (y * y + z * z), two_s * (x * y - z * w), two_s * (x * z + y * w),
        two_s * (x * y + z * w), 1 - two_s * (x * x + z * z), two_s * (y * z - x * w),
        two_s * (x * z - y * w), two_s * (y * z + x * w), 1 - two_s * (x * x + y * y),
    ]  # fmt: skip
    return torch.stack(rows, dim=-1).reshape(*q.shape[:-1], 3, 3)


def matrix_to_quaternion(rotation: Float[Tensor, "*B 3 3"]) -> Float[Tensor, "*B 4"]:
    """Unit (w, x, y, z) quaternions of rotation matrices, with ``w ≥ 0``.

    The four candidates ``4 q_k² = 1 + tr`` (k = w) and ``1 + 2 R_kk − tr`` (k = x, y, z) are formed and the largest
    (≥ 1 for a rotation) divides the off-diagonal terms ``4 q_k q_j``: no cancellation at any angle. The choice is
    piecewise constant, so the result is differentiable wherever two candidates do not tie.

    >>> r = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # 90° about z
    >>> matrix_to_quaternion(r)  # (cos 45°, 0, 0, sin 45°)
    """
    r = rotation
    trace = r[..., 0, 0] + r[..., 1, 1] + r[..., 2, 2]
    squares = torch.stack(
        [1 + trace, 1 + 2 * r[..., 0, 0] - trace, 1 + 2 * r[..., 1, 1] - trace, 1 + 2 * r[..., 2, 2] - trace], -1
    )
    wx, wy, wz = r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]
    xy, xz, yz = r[..., 0, 1] + r[..., 1, 0], r[..., 0, 2] + r[..., 2, 0], r[..., 1, 2] + r[..., 2, 1]
    s = squares.unbind(-1)
    rows = [s[0], wx, wy, wz, wx, s[1], xy, xz, wy, xy, s[2], yz, wz, xz, yz, s[3]]  # row k = 4 q_k q
    rows = torch.stack(rows, dim=-1).reshape(*squares.shape, 4)
    k = squares.argmax(dim=-1, keepdim=True)
    best = rows.gather(-2, k[..., None].expand(*k.shape, 4)).squeeze(-2)
    q = best / (2 * squares.gather(-1, k).clamp_min(1e-12).sqrt())  # 4 q_k q / (4 |q_k|) = ±q
    return torch.where(q[..., :1] < 0, -q, q)


@dataclass
class FaceFrames:
    """GaussianAvatars' per-triangle frames: columns of ``rotation`` = unit first edge, normal, edge × normal."""

    rotation: Float[Tensor, "*B F 3 3"]
    origin: Float[Tensor, "*B F 3"]
    scale: Float[Tensor, "*B F"]


def face_frames(vertices: Float[Tensor, "*B V 3"], faces: Int[Tensor, "F 3"]) -> FaceFrames:
    """The frames of :mod:`this module <headfields.deformers.gaussian_binding>`: with ``e0 = v1 − v0``,
    ``a0 = e0 / |e0|``, ``n = normalize(a0 × (v2 − v0))``, ``a2 = a0 × n``: ``R = [a0 | n | a2]``, origin the corners'
    mean, scale ``(|e0| + |a2 · (v2 − v0)|) / 2`` (``compute_face_orientation``, ``update_mesh_properties``).
    Degenerate triangles raise (their frames are undefined), never NaN, unless values go unchecked
    (:func:`~headfields.checks.trusted_values`).

    >>> v = torch.tensor([[0.0, 0, 0], [2, 0, 0], [0, 1, 0]]); f = torch.tensor([[0, 1, 2]])
    >>> frames = face_frames(v, f)
    >>> frames.scale, frames.origin  # (2 + 1) / 2 and the centroid (2/3, 1/3, 0)
    """
    _check_mesh(vertices, faces)
    check_nondegenerate(vertices, faces)  # (not in a training step: a NaN loss there stops the run)
    a, b, c = _corners(vertices, faces)
    edge, other = b - a, c - a
    a0 = F.normalize(edge, dim=-1)
    normal = F.normalize(torch.linalg.cross(a0, other), dim=-1)
    # compute_face_orientation: a2 = -normalize(a1 × a0) = a0 × a1 (unit already; normalised as the code does).
    a2 = F.normalize(torch.linalg.cross(a0, normal), dim=-1)
    scale = (torch.linalg.vector_norm(edge, dim=-1) + (a2 * other).sum(-1).abs()) / 2
    return FaceFrames(rotation=torch.stack([a0, normal, a2], dim=-1), origin=(a + b + c) / 3, scale=scale)


@dataclass
class BoundGaussians:
    """World Gaussians of one frame: means, unit (w, x, y, z) rotations, positive scales (standard deviations)."""

    means: Float[Tensor, "N 3"]
    quats: Float[Tensor, "N 4"]
    scales: Float[Tensor, "N 3"]


def bind_gaussians(
    frames: FaceFrames,
    parent: Int[Tensor, " N"],
    local_means: Float[Tensor, "N 3"],
    local_quats: Float[Tensor, "N 4"],
    local_scales: Float[Tensor, "N 3"],
) -> BoundGaussians:
    """``μ = k R μ' + T``, ``r = q(R) ⊗ normalize(r')``, ``s = k s'`` with the frame of each Gaussian's parent face.

    >>> frames = face_frames(vertices, faces)  # one frame: vertices [V, 3]
    >>> world = bind_gaussians(frames, parent, local_means, local_quats, local_scales)
    >>> world.means.shape  # [N, 3]
    """
    if not isinstance(frames, FaceFrames):
        raise TypeError(f"frames: expected FaceFrames (from face_frames), got {type(frames).__name__}")
    check_float("frames.rotation", frames.rotation, [None, 3, 3])
    device, num_faces = frames.rotation.device, frames.rotation.shape[0]
    check_float("frames.origin", frames.origin, [num_faces, 3], device)
    check_float("frames.scale", frames.scale, [num_faces], device)
    check_int("parent", parent, [None], upper=num_faces, device=device)
    n = parent.shape[0]
    check_float("local_means", local_means, [n, 3], device)
    check_float("local_quats", local_quats, [n, 4], device)
    check_float("local_scales", local_scales, [n, 3], device)
    if checking_values() and bool((local_scales <= 0).any()):
        raise ValueError("local_scales: expected positive scales (standard deviations), found a value <= 0")
    check_nonzero_rows("local_quats", local_quats, "non-zero quaternions")
    parent = parent.long()
    rotation, k = frames.rotation[parent], frames.scale[parent, None]
    means = k * torch.einsum("nij,nj->ni", rotation, local_means) + frames.origin[parent]
    # get_rotation: both quaternions are normalised before they are chained (the face's via roma's rotmat_to_unitquat).
    quats = quaternion_multiply(matrix_to_quaternion(frames.rotation)[parent], F.normalize(local_quats, dim=-1))
    return BoundGaussians(means=means, quats=quats, scales=k * local_scales)


@dataclass
class PosedGaussians:
    """A :class:`GaussianSet` on one frame's mesh: what the rasteriser takes, and the faces' scales ``k`` (the
    density control's world scales are ``k[parent] · s'``, as ``get_scaling`` computes them)."""

    means: Float[Tensor, "N 3"]
    quats: Float[Tensor, "N 4"]
    scales: Float[Tensor, "N 3"]
    opacities: Float[Tensor, " N"]
    sh: Float[Tensor, "N K 3"]
    face_scale: Float[Tensor, " F"]


@dataclass
class Splats:
    """N 3D Gaussians with view-dependent colour, as 3D Gaussian Splatting renders them and its PLY file
    (:mod:`headfields.data.splat_ply`, which exports this class) holds them: a :class:`PosedGaussians`' values with unit
    quaternions, without the faces' scales."""

    means: Float[Tensor, "N 3"]  # centres, world units
    quats: Float[Tensor, "N 4"]  # rotations, w x y z, unit
    scales: Float[Tensor, "N 3"]  # standard deviations along the rotated axes, positive, world units (not logs)
    opacities: Float[Tensor, " N"]  # in (0, 1) (not logits)
    sh: Float[Tensor, "N K 3"]  # SH coefficients per colour channel, K = (degree + 1)^2: 1, 4, 9, 16 or 25

    @property
    def degree(self) -> int:
        return math.isqrt(self.sh.shape[1]) - 1


class GaussianSet(nn.Module):
    """The per-Gaussian parameters of a bound avatar (``GaussianModel`` with ``binding``): the buffer ``parent``
    and the parameters ``local_means``, ``local_quats``, ``local_log_scales``, ``opacity_logits``, ``sh_dc``,
    ``sh_rest`` (SH of degree ``sh_degree``, ``(sh_degree + 1)²`` coefficients a colour channel).

    >>> gaussians = GaussianSet.one_per_face(faces.shape[0])
    >>> posed = gaussians.bound(vertices, faces)  # vertices [V, 3] of one frame
    >>> posed.means.shape, posed.sh.shape  # [F, 3], [F, 16, 3]
    """

    parent: Tensor

    def __init__(
        self,
        parent: Int[Tensor, " N"],
        local_means: Float[Tensor, "N 3"],
        local_quats: Float[Tensor, "N 4"],
        local_log_scales: Float[Tensor, "N 3"],
        opacity_logits: Float[Tensor, " N"],
        sh_dc: Float[Tensor, "N 1 3"],
        sh_rest: Float[Tensor, "N R 3"],
        num_faces: int,
    ):
        super().__init__()
        self.num_faces = check_count("num_faces", num_faces, 1)
        check_int("parent", parent, [None], upper=self.num_faces)
        n, device = parent.shape[0], parent.device
        self.register_buffer("parent", parent.long().clone())
        params = {"local_means": (local_means, [n, 3]), "local_quats": (local_quats, [n, 4]), "sh_dc": (sh_dc, [n, 1, 3])}
        params |= {"local_log_scales": (local_log_scales, [n, 3]), "opacity_logits": (opacity_logits, [n])}
        for name, (value, shape) in (params | {"sh_rest": (sh_rest, [n, None, 3])}).items():
            check_float(name, value, shape, device)
            setattr(self, name, nn.Parameter(value.detach().clone()))
        self.sh_degree = math.isqrt(sh_rest.shape[1] + 1) - 1
        if (self.sh_degree + 1) ** 2 != sh_rest.shape[1] + 1:
            raise ValueError(f"sh_rest: expected (degree + 1)² - 1 coefficients a channel, got {sh_rest.shape[1]}")

    @classmethod
    def one_per_face(
        cls,
        num_faces: int,
        sh_degree: int = 3,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        generator: torch.Generator | None = None,
    ) -> GaussianSet:
        """GaussianAvatars' start (``GaussianModel.create_from_pcd`` with no point cloud, binding ``arange(F)``):
        one Gaussian a face at its origin (μ' = 0), local scale 1 (``log 1``: world scale ``k``), identity rotation,
        opacity 0.1, SH DC uniform in [0, 1/255) (``np.random.random / 255`` stored as SH as is: a near-grey
        0.5 + C0 · DC), higher SH 0. ``sh_degree`` 3: ``arguments/__init__.py`` ``ModelParams.sh_degree``.

        >>> g = GaussianSet.one_per_face(faces.shape[0], sh_degree=3)  # one Gaussian a triangle
        >>> g.num_gaussians, g.sh_rest.shape  # F, [F, 15, 3]
        """
        num_faces = check_count("num_faces", num_faces, 1)
        sh_degree = check_count("sh_degree", sh_degree, 0)
        f, kw = num_faces, {"device": device, "dtype": dtype}
        quats = torch.tensor([1.0, 0.0, 0.0, 0.0], **kw).expand(f, 4)
        at = generator.device if generator is not None else device
        dc = torch.rand(f, 1, 3, generator=generator, device=at, dtype=dtype).to(device) / 255.0
        logit = math.log(INITIAL_OPACITY / (1 - INITIAL_OPACITY))
        zeros, rest = torch.zeros(f, 3, **kw), torch.zeros(f, (sh_degree + 1) ** 2 - 1, 3, **kw)
        return cls(torch.arange(f, device=device), zeros, quats, zeros, torch.full((f,), logit, **kw), dc, rest, f)

    @property
    def num_gaussians(self) -> int:
        return self.parent.shape[0]

    def bound(self, vertices: Float[Tensor, "V 3"], faces: Int[Tensor, "F 3"]) -> PosedGaussians:
        """The Gaussians on one frame's mesh, with opacities ``sigmoid(logits)`` and SH ``[dc, rest]``.

        >>> posed = gaussians.bound(head.vertices[frame], head.faces)
        >>> posed.means.shape, posed.opacities.shape  # [N, 3], [N]
        """
        check_shape("vertices", vertices, [None, 3])
        check_shape("faces", faces, [self.num_faces, 3])
        frames = face_frames(vertices, faces)
        world = bind_gaussians(frames, self.parent, self.local_means, self.local_quats, self.local_log_scales.exp())
        sh = torch.cat([self.sh_dc, self.sh_rest], dim=1)
        return PosedGaussians(world.means, world.quats, world.scales, torch.sigmoid(self.opacity_logits), sh, frames.scale)


@dataclass(frozen=True)
class BindingRegulariserConfig:
    """The binding regularisers' defaults: ``arguments/__init__.py`` ``OptimizationParams``."""

    position_threshold: float = 1.0  # threshold_xyz (local units: the parent face's scale k)
    position_weight: float = 1e-2  # lambda_xyz
    scale_threshold: float = 0.6  # threshold_scale (local units)
    scale_weight: float = 1.0  # lambda_scale


def binding_regularisers(
    gaussians: GaussianSet, visible: Bool[Tensor, " N"] | None = None, config: BindingRegulariserConfig | None = None
) -> tuple[Float[Tensor, ""], Float[Tensor, ""]]:
    """GaussianAvatars' position and scale losses, weighted, as ``train.py`` computes them (``metric_xyz`` and
    ``metric_scale`` off, their defaults), over the Gaussians drawn in this view (``visible``: ``radii > 0``, the
    code's ``visibility_filter``; None: all):

        position = λ_xyz · mean(relu(‖μ'‖ − ε_xyz)),    scale = λ_scale · mean(‖relu(s' − ε_scale)‖)

    (the code thresholds the norm of μ' but each component of s', unlike the paper's ‖max(·, ε)‖). With no
    Gaussian visible both are 0 (the code's mean of nothing is NaN).

    >>> position, scale = binding_regularisers(gaussians, visible=radii > 0)
    >>> loss = photometric + position + scale
    >>> loss.backward()
    """
    config = config or BindingRegulariserConfig()
    means, scales = gaussians.local_means, gaussians.local_log_scales.exp()
    if visible is not None:
        check_shape("visible", visible, [gaussians.num_gaussians], gaussians.parent.device)
        if visible.dtype != torch.bool:
            raise TypeError(f"visible: expected a bool mask, got {visible.dtype}")
    # Weighted by the visible ones rather than indexed by them: the count stays on the device (no read-back).
    weight = means.new_ones(means.shape[0]) if visible is None else visible.to(means.dtype)
    count = weight.sum().clamp(min=1)
    position = (F.relu(means.norm(dim=-1) - config.position_threshold) * weight).sum() / count
    scale = (F.relu(scales - config.scale_threshold).norm(dim=-1) * weight).sum() / count
    return position * config.position_weight, scale * config.scale_weight
