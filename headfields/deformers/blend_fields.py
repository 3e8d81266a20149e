"""The 360° portrait avatar's personalised blend basis (Nehvi et al. 2023): K displacement fields over a canonical
box whose coefficients a mapping network predicts from the jaw pose and the expression,

    x' = x + Σ_k c_k(z) B_k(x),    z = [expression, jaw pose],

"blending deformation fields beats blending colour". One network gives all K fields at once (3K outputs), on a
hash grid or a positional encoding of ``x`` normalised into the box; a second MLP maps the condition to the K
coefficients.

The basis network's output layer starts at zero, so the deformation starts as the identity exactly. The
coefficients do not start at zero, so that output layer gets a gradient on the first backward; the mapping
network gets one once the basis has moved off zero (after one optimiser step).

Points outside the box are, by default, clamped onto it before the basis reads them: a point outside is
displaced as its nearest point on the box is (rays reach far beyond the head), with no gradient along the
clamped axes. With ``outside="identity"`` they are not displaced at all and the networks skip them: a box around
the face then saves the work on every sample of the torso, which expressions do not move. The displacement then
fades to zero towards the box's faces (a smoothstep over ``taper`` of the box at each face), so there is no seam.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from .. import kernels
from ..checks import check_count, check_float
from ..device_paths import takes_cuda_path
from ..encoders.frequency import MAX_FREQUENCIES, FrequencyEncoding
from ..encoders.hashgrid import HashGrid, HashGridConfig
from ..networks import mlp
from ..parametric import Head
from .base import Canonical, Deformer
from .regularisers import magnitude_loss

# 360° Volumetric Portrait Avatar (PAPERS.md): a blend basis of K displacement fields in canonical space, with
# coefficients from a mapping network on jaw pose + expression. PAPERS.md gives no sizes: the ones below are
# ours, small because the fields are smooth corrections on top of skinning and the coarse triangle deformation.
NUM_FIELDS = 8  # K
HIDDEN = 64
HIDDEN_LAYERS = 2
POSITION_FREQUENCIES = 6  # NeRF PE bands of the normalised point (the "mlp" field)
MAGNITUDE_WEIGHT = 1e-2  # weight of the mean ‖Δx‖² regulariser (as MonoAvatar's correction-field magnitude)
TAPER = 0.1  # the identity-outside displacement fades out over this fraction of the box at each face
JAW_JOINT = "jaw"  # SMPL-X's and FLAME's name of the jaw joint (smplx's joint order)
# A coarse hash grid: 8 levels of 2 features, resolutions 4 to 64, 2^14 rows a level (the coarse levels dense).
BLEND_GRID = HashGridConfig(levels=8, features_per_level=2, log2_table_size=14, base_resolution=4, finest_resolution=64)

FieldKind = Literal["mlp", "hashgrid"]
Outside = Literal["clamp", "identity"]


@dataclass(frozen=True)
class BlendFieldConfig:
    """Sizes and regulariser weight of :class:`BlendFieldDeformer` (the paper's structure, our sizes)."""

    num_fields: int = NUM_FIELDS  # K: displacement fields in the basis
    field: FieldKind = "hashgrid"  # what the basis network reads: a hash grid, or a PE ("mlp")
    hashgrid: HashGridConfig = BLEND_GRID  # frozen, so one shared default is safe
    mlp_hidden_dim: int = HIDDEN  # basis MLP width (after the hash grid or the PE)
    mlp_layers: int = HIDDEN_LAYERS  # basis MLP hidden layers
    position_frequencies: int = POSITION_FREQUENCIES  # PE bands for field="mlp"
    mapping_hidden_dim: int = HIDDEN
    mapping_layers: int = HIDDEN_LAYERS
    jaw_joint: str = JAW_JOINT  # joint whose pose joins the default condition
    magnitude_weight: float = MAGNITUDE_WEIGHT
    outside: Outside = "clamp"  # points outside the box: displaced as their nearest point on it, or not at all
    taper: float = TAPER  # with outside="identity": fraction of the box over which the displacement fades out

    def __post_init__(self) -> None:
        check_count("num_fields", self.num_fields, 1)
        if self.field not in ("mlp", "hashgrid"):
            raise ValueError(f"field: expected 'mlp' or 'hashgrid', got {self.field!r}")
        if self.outside not in ("clamp", "identity"):
            raise ValueError(f"outside: expected 'clamp' or 'identity', got {self.outside!r}")
        if isinstance(self.taper, bool) or not isinstance(self.taper, int | float) or not 0 < self.taper <= 0.5:
            raise ValueError(f"taper: expected a fraction of the box in (0, 0.5], got {self.taper!r}")
        if not isinstance(self.hashgrid, HashGridConfig):
            raise TypeError(f"hashgrid: expected a HashGridConfig, got {type(self.hashgrid).__name__}")
        check_count("mlp_hidden_dim", self.mlp_hidden_dim, 1)
        check_count("mlp_layers", self.mlp_layers, 0)
        check_count("position_frequencies", self.position_frequencies, 0, MAX_FREQUENCIES)
        check_count("mapping_hidden_dim", self.mapping_hidden_dim, 1)
        check_count("mapping_layers", self.mapping_layers, 0)
        if not isinstance(self.jaw_joint, str):
            raise TypeError(f"jaw_joint: expected a joint name, got {self.jaw_joint!r}")
        w = self.magnitude_weight
        if isinstance(w, bool) or not isinstance(w, int | float) or not 0 <= w < math.inf:
            raise ValueError(f"magnitude_weight: expected a finite non-negative number, got {w!r}")


class BlendFieldDeformer(Deformer):
    """``x -> x + Σ_k c_k(condition) B_k(x)`` over the canonical box ``bounds`` (see the module docstring).

    ``condition_dim``: width C of the condition (by default ``[expression (E), jaw pose (3)]``, so C = E + 3).
    ``bounds``: ``[min corner, max corner]`` of the box the fields cover. ``joint_names``: the head model's joint
    order (``ParametricModel.joint_names``); the Head carries poses but not names, so the jaw's index is found
    here, once. Without it :meth:`forward` needs an explicit ``condition``.

    The networks run in the parameters' dtype; results come in the promoted dtype of inputs and parameters. The
    hash grid's table must stay float32 (its Warp kernels), so for a float64 module use ``field="mlp"``.
    """

    def __init__(
        self,
        condition_dim: int,
        bounds: Float[Tensor, "2 3"],
        config: BlendFieldConfig | None = None,
        joint_names: Sequence[str] | None = None,
    ):
        super().__init__()
        self.condition_dim = check_count("condition_dim", condition_dim, 1)
        self.config = config = config if config is not None else BlendFieldConfig()
        check_float("bounds", bounds, [2, 3])
        if not (bounds[1] > bounds[0]).all():
            raise ValueError(f"bounds: expected min < max on every axis, got {bounds.tolist()}")
        self.register_buffer("bounds", bounds.detach().clone())
        self.jaw_index = None if joint_names is None else jaw_index(joint_names, config)
        k = config.num_fields
        if config.field == "hashgrid":
            self.encoding: nn.Module = HashGrid(config.hashgrid)
        else:
            self.encoding = FrequencyEncoding(3, config.position_frequencies)
        self.basis_net = mlp(self.encoding.out_dim, config.mlp_hidden_dim, config.mlp_layers, 3 * k)
        # The basis starts at zero: the identity exactly, whatever the coefficients.
        nn.init.zeros_(self.basis_net[-1].weight)
        nn.init.zeros_(self.basis_net[-1].bias)
        self.mapping = mlp(self.condition_dim, config.mapping_hidden_dim, config.mapping_layers, k)

    @property
    def num_fields(self) -> int:
        return self.config.num_fields

    def _dtype(self) -> torch.dtype:
        return self.basis_net[-1].weight.dtype

    def normalize(self, x: Float[Tensor, "N 3"]) -> Float[Tensor, "N 3"]:
        """``x`` mapped into ``[0, 1]^3`` by the box, points outside clamped onto it."""
        check_float("x", x, [None, 3], device=self.bounds.device)
        lo, hi = self.bounds.to(x.dtype)
        return ((x - lo) / (hi - lo)).clamp(0.0, 1.0)

    def coefficients(self, condition: Float[Tensor, "N C"]) -> Float[Tensor, "N K"]:
        """The mapping network's blend coefficients ``c(condition)``."""
        check_float("condition", condition, [None, self.condition_dim], device=self.bounds.device)
        out = self.mapping(condition.to(self._dtype()))
        return out.to(torch.promote_types(condition.dtype, out.dtype))

    def basis(self, x: Float[Tensor, "N 3"]) -> Float[Tensor, "N K 3"]:
        """The K displacement fields at canonical points ``x``: ``basis[n, k] = B_k(x_n)``."""
        u = self.normalize(x)
        features = self.encoding(u if self.config.field == "hashgrid" else u.to(self._dtype()))
        out = self.basis_net(features.to(self._dtype()))
        return out.to(torch.promote_types(x.dtype, out.dtype)).reshape(x.shape[0], self.num_fields, 3)

    def displacement(self, x: Float[Tensor, "N 3"], condition: Float[Tensor, "N C"]) -> Float[Tensor, "N 3"]:
        """``Σ_k c_k(condition) B_k(x)`` per point."""
        check_float("x", x, [None, 3], device=self.bounds.device)
        check_float("condition", condition, [x.shape[0], self.condition_dim], device=x.device)
        return _blend(self.coefficients(condition), self.basis(x))

    def head_condition(self, head: Head, frame: Int[Tensor, " N"]) -> Float[Tensor, "N C"]:
        """The default condition ``[head.expression[frame], head.pose[frame, jaw]]`` (needs ``joint_names``)."""
        if self.jaw_index is None:
            raise ValueError(
                "condition: expected one; the default (expression and jaw pose) needs the deformer built with joint_names"
            )
        if self.jaw_index >= head.pose.shape[1]:
            raise ValueError(f"head: expected at least {self.jaw_index + 1} joints (the jaw's index), got {head.pose.shape[1]}")
        width = head.expression.shape[1] + 3
        if width != self.condition_dim:
            raise ValueError(
                f"condition: expected one for a deformer with condition_dim={self.condition_dim}; the default "
                f"(expression and jaw pose) has {width} values"
            )
        return expression_and_jaw(head, frame, self.jaw_index)

    def canonicalize(
        self,
        x: Float[Tensor, "N 3"],
        head: Head,
        frame: Int[Tensor, " N"],
        dirs: Float[Tensor, "N 3"] | None,
        condition: Float[Tensor, "N C"] | None = None,
    ) -> Canonical:
        """Canonical points ``x + Σ_k c_k B_k(x)``; ``condition`` defaults to :meth:`head_condition` (cast to the
        dtype of ``x``).

        ``dirs`` pass through unchanged: the fields are small corrections, and the exact direction map (the
        inverse of the displacement's Jacobian) would cost three more backward passes for a small change.
        ``valid`` is all True, ``face`` None.
        """
        if condition is not None:
            check_float("condition", condition, [x.shape[0], self.condition_dim], device=x.device)
        # On CUDA's paths nothing is read back: the networks see every point (the window is 0 outside the box, so
        # those stay where they are, exactly) and the mapping every frame of the head (a few rows). The CPU's own
        # paths skip the points outside and map the frames present (their read-backs cost nothing there).
        gpu = takes_cuda_path(x.device)
        inside = None  # the points the basis displaces: all of them, or those in the box
        if self.config.outside == "identity":
            check_float("x", x, [None, 3], device=self.bounds.device)
            if not gpu:
                lo, hi = self.bounds.to(x.dtype)
                inside = ((x > lo) & (x < hi)).all(dim=-1).nonzero().squeeze(-1)
        picked = x if inside is None else x[inside]
        if condition is None:  # one mapping per frame, not per sample: a batch holds a few frames' samples
            frame = frame if inside is None else frame[inside]
            if gpu:
                frames, inverse = kernels.row_numbers(head.num_frames, x.device), frame
            else:
                frames, inverse = torch.unique(frame, return_inverse=True)
            # In the points' dtype: a float64 head does not turn float32 samples into float64.
            coefficients = self.coefficients(self.head_condition(head, frames).to(x.dtype))[inverse]
        else:
            coefficients = self.coefficients(condition if inside is None else condition[inside])
        offset = _blend(coefficients, self.basis(picked))
        if self.config.outside == "identity":
            offset = offset * self.window(picked)[:, None].to(offset.dtype)
        points = x.to(torch.promote_types(x.dtype, offset.dtype))
        points = points + offset if inside is None else points.index_add(0, inside, offset.to(points.dtype))
        valid = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        return Canonical(points=points, dirs=dirs, valid=valid, face=None)

    def window(self, x: Float[Tensor, "N 3"]) -> Float[Tensor, " N"]:
        """1 inside the box away from its faces, falling smoothly to 0 at them (a smoothstep over ``taper`` of
        the box per axis and side, multiplied over the axes); 0 outside."""
        u = self.normalize(x)
        edge = torch.minimum(u, 1 - u) / self.config.taper  # 0 at a face, >= 1 past the taper
        t = edge.clamp(0.0, 1.0)
        return (t * t * (3 - 2 * t)).prod(dim=-1)

    def regularizer(self, displacement: Float[Tensor, "N 3"]) -> Float[Tensor, ""]:
        """``magnitude_weight`` times the mean over samples of ``‖Δx‖²`` (0 on no samples): keeps the basis a
        correction, not a replacement, of the skinning and triangle deformation."""
        return self.config.magnitude_weight * magnitude_loss(displacement)

    def extra_repr(self) -> str:
        return f"condition_dim={self.condition_dim}, num_fields={self.num_fields}, field={self.config.field!r}"


def jaw_index(joint_names: Sequence[str], config: BlendFieldConfig) -> int:
    """The index of ``config.jaw_joint`` among ``joint_names``, whose pose joins the default condition."""
    names = list(joint_names)
    if config.jaw_joint not in names:
        raise ValueError(f"joint_names: expected one named {config.jaw_joint!r} (config.jaw_joint), got {names}")
    return names.index(config.jaw_joint)


def expression_and_jaw(head: Head, frame: Int[Tensor, " N"], jaw_index: int) -> Float[Tensor, "N C"]:
    """The blend basis' default condition of frames ``frame``: ``[head.expression, head.pose[:, jaw_index]]``."""
    if jaw_index >= head.pose.shape[1]:
        raise ValueError(f"head: expected at least {jaw_index + 1} joints (the jaw's index), got {head.pose.shape[1]}")
    return torch.cat([head.expression[frame], head.pose[frame, jaw_index]], dim=-1)


def _blend(coefficients: Float[Tensor, "N K"], basis: Float[Tensor, "N K 3"]) -> Float[Tensor, "N 3"]:
    """``Σ_k c_k B_k`` per point, in the promoted dtype of the two."""
    dtype = torch.promote_types(basis.dtype, coefficients.dtype)
    return torch.einsum("nk,nkd->nd", coefficients.to(dtype), basis.to(dtype))
