"""MonoNPHM's appearance: an albedo MLP fed with the SDF network's geometry features, shaded by spherical-harmonics
lighting of the surface normal (PAPERS.md, "MonoNPHM").

The colour of a sample is ``albedo(x, sdf features, code) * shading(normal)``; the model multiplies the two. Reading
a projection of the SDF's last hidden layer ties colour to geometry, so photometric gradients reach the geometry
codes. The lighting is second-order SH: the 9 real functions of orders ``l <= 2`` (``encoders.SphericalHarmonics``
at degree 3), with 3 coefficients (RGB) each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from ..checks import check_count, check_float, check_int, checking_values
from ..encoders.frequency import MAX_FREQUENCIES, FrequencyEncoding
from ..encoders.spherical_harmonics import UNIT_TOLERANCE, SphericalHarmonics
from ..networks import mlp
from .sdf import _check_input  # one check of optional per-point inputs for the decoders

# MonoNPHM's colour MLP (PAPERS.md): 4 x 200 ReLU -> RGB, fed with a 16-d projection of the SDF MLP's last hidden layer.
MONONPHM_COLOR_HIDDEN = 200
MONONPHM_COLOR_LAYERS = 4
MONONPHM_SDF_FEATURES = 16
# Second-order SH lighting: orders l = 0, 1, 2, i.e. SphericalHarmonics(degree=3) with 9 functions.
SH_LIGHTING_DEGREE = 3
# Y_00 = 1 / (2 sqrt(pi)) is constant, so this DC coefficient gives shading 1 everywhere (ambient light).
AMBIENT_COEFFICIENT = 2.0 * math.sqrt(math.pi)


class SHLighting(nn.Module):
    """Shading ``[N, 3] = sum_i Y_i(normal) C[i, :]`` with coefficients ``C [9, 3]`` initialised to ambient (shading 1).

    ``num_sets``: None for one set (``coefficients [9, 3]``, forward takes no ``set``); an integer S for S sets,
    e.g. one per frame (``coefficients [S, 9, 3]``, forward picks each sample's set: an integer or ``[N]``).
    Normals must be unit vectors (the basis is orthonormal on the sphere only).
    """

    def __init__(self, num_sets: int | None = None) -> None:
        super().__init__()
        self.num_sets = None if num_sets is None else check_count("num_sets", num_sets, 1)
        self.basis = SphericalHarmonics(SH_LIGHTING_DEGREE)
        shape = (self.basis.out_dim, 3) if num_sets is None else (num_sets, self.basis.out_dim, 3)
        coefficients = torch.zeros(shape)
        coefficients[..., 0, :] = AMBIENT_COEFFICIENT
        self.coefficients = nn.Parameter(coefficients)

    def forward(self, normals: Float[Tensor, "N 3"], set: Int[Tensor, " N"] | int | None = None) -> Float[Tensor, "N 3"]:
        check_float("normals", normals, [None, 3], device=self.coefficients.device)
        if normals.dtype != self.coefficients.dtype:
            raise TypeError(f"normals: expected {self.coefficients.dtype} (the coefficients'), got {normals.dtype}")
        length = torch.linalg.vector_norm(normals.detach(), dim=-1)
        if checking_values() and normals.shape[0] and float((length - 1.0).abs().max()) > UNIT_TOLERANCE:
            lo, hi = float(length.min()), float(length.max())
            raise ValueError(f"normals: expected unit vectors, got lengths in [{lo:.6g}, {hi:.6g}]")
        basis = self.basis(normals)  # [N, 9]
        if self.num_sets is None:
            if set is not None:
                raise ValueError("set: expected None (one coefficient set; pass num_sets for several), got a value")
            return basis @ self.coefficients
        if set is None:
            raise ValueError(f"set: expected a set index in [0, {self.num_sets}) or a tensor [N] of them, got None")
        if isinstance(set, Tensor):
            check_int("set", set, [normals.shape[0]], upper=self.num_sets, device=normals.device)
            return torch.einsum("ni,nic->nc", basis, self.coefficients[set.long()])
        index = check_count("set", set, 0, self.num_sets - 1)
        return basis @ self.coefficients[index]


@dataclass(frozen=True)
class AppearanceConfig:
    """The albedo MLP. Defaults: MonoNPHM's colour network (PAPERS.md)."""

    hidden_dim: int = MONONPHM_COLOR_HIDDEN
    hidden_layers: int = MONONPHM_COLOR_LAYERS
    feature_dim: int = MONONPHM_SDF_FEATURES  # width of the linear projection of the SDF features
    position_frequencies: int = 0  # NeRF encoding bands of the input point (0: the point alone)

    def __post_init__(self) -> None:
        check_count("hidden_dim", self.hidden_dim, 1)
        check_count("hidden_layers", self.hidden_layers, 0)
        check_count("feature_dim", self.feature_dim, 1)
        check_count("position_frequencies", self.position_frequencies, 0, MAX_FREQUENCIES)


class AppearanceField(nn.Module):
    """Albedo in (0, 1) from ``[PE(x), projection(sdf_features), code]``: a ReLU MLP with a sigmoid output.

    ``in_dim``: width of the canonical point (3 plus the hyper coordinates); ``sdf_feature_dim``: width of the SDF
    network's last hidden layer (``SdfMlp.feature_dim``); ``code_dim``: appearance code width (0: forward takes
    ``code=None``).
    """

    def __init__(self, in_dim: int, sdf_feature_dim: int, code_dim: int = 0, config: AppearanceConfig | None = None) -> None:
        super().__init__()
        self.in_dim = check_count("in_dim", in_dim, 1)
        self.sdf_feature_dim = check_count("sdf_feature_dim", sdf_feature_dim, 1)
        self.code_dim = check_count("code_dim", code_dim, 0)
        self.config = config = config if config is not None else AppearanceConfig()
        bands = config.position_frequencies
        self.encoding = FrequencyEncoding(in_dim, bands) if bands else None
        self.projection = nn.Linear(sdf_feature_dim, config.feature_dim)
        width = in_dim * (1 + 2 * bands) + config.feature_dim + code_dim
        self.net = mlp(width, config.hidden_dim, config.hidden_layers, 3)

    def forward(
        self, x: Float[Tensor, "N D"], sdf_features: Float[Tensor, "N F"], code: Float[Tensor, "N C"] | None = None
    ) -> Float[Tensor, "N 3"]:
        like = self.projection.weight
        _check_input("x", x, self.in_dim, None, like)
        n = x.shape[0]
        _check_input("sdf_features", sdf_features, self.sdf_feature_dim, n, like)
        _check_input("code", code, self.code_dim, n, like)
        parts = [self.encoding(x) if self.encoding is not None else x, self.projection(sdf_features)]
        if code is not None:
            parts.append(code)
        return torch.sigmoid(self.net(torch.cat(parts, dim=-1)))
