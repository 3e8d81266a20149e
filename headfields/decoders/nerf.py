"""NeRF field decoder: a density MLP (density + geometry features) followed by a view-dependent colour MLP.

The layout is instant-ngp's, as INSTA uses it (see ../shared/PAPERS.md, INSTA "Network"): the density MLP reads
the encoder's features (and optional conditioning, such as INSTA's 16 lips-only expression coefficients) and
outputs one raw density plus 15 geometry features; the colour MLP reads those geometry features and the encoded
view direction (spherical harmonics of degree 4: 16 values) and outputs rgb through a sigmoid. Which samples get
which conditioning is the model's business; the decoder only takes ``cond [N, cond_dim]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from ..checks import check_count, check_float
from ..networks import mlp

# INSTA's network (PAPERS.md): density MLP 64 wide with 2 hidden layers, 15 geometry features; colour MLP 64 wide
# with 3 hidden layers.
INSTA_HIDDEN = 64
INSTA_DENSITY_LAYERS = 2
INSTA_COLOR_LAYERS = 3
INSTA_GEOMETRY_DIM = 15
# trunc_exp: the backward pass evaluates exp at most at this argument (instant-ngp / torch-ngp), so a large raw
# density cannot blow up the gradient even where the forward value overflows.
TRUNC_EXP_MAX = 15.0


class _TruncExp(torch.autograd.Function):
    """exp(x) forward; gradient exp(min(x, TRUNC_EXP_MAX)) backward."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=TRUNC_EXP_MAX))


def trunc_exp(x: Float[Tensor, "*shape"]) -> Float[Tensor, "*shape"]:
    """``exp(x)`` whose gradient is ``exp(min(x, 15))``: finite where ``exp`` overflows (instant-ngp's density)."""
    return _TruncExp.apply(x)


DensityActivation = Literal["trunc_exp", "softplus"]
_DENSITY_ACTIVATIONS = {"trunc_exp": trunc_exp, "softplus": F.softplus}


@dataclass(frozen=True)
class NerfDecoderConfig:
    """Sizes of the two MLPs (the input widths are the decoder's arguments). Defaults: INSTA's network (PAPERS.md)."""

    hidden_dim: int = INSTA_HIDDEN
    density_layers: int = INSTA_DENSITY_LAYERS  # hidden layers of the density MLP
    color_layers: int = INSTA_COLOR_LAYERS  # hidden layers of the colour MLP
    color_hidden_dim: int | None = None  # width of the colour MLP (None: hidden_dim; MonoAvatar: 64 under 128)
    geometry_dim: int = INSTA_GEOMETRY_DIM  # features passed from the density to the colour MLP
    density_activation: DensityActivation = "trunc_exp"
    cond_to_color: bool = False  # also append cond to the colour-MLP input (INSTA: no)
    cond_to_density: bool = True  # append cond to the density-MLP input (False: cond conditions the colour only)

    def __post_init__(self) -> None:
        check_count("hidden_dim", self.hidden_dim, 1)
        check_count("density_layers", self.density_layers, 0)
        check_count("color_layers", self.color_layers, 0)
        if self.color_hidden_dim is not None:
            check_count("color_hidden_dim", self.color_hidden_dim, 1)
        check_count("geometry_dim", self.geometry_dim, 0)
        if self.density_activation not in _DENSITY_ACTIVATIONS:
            choices = sorted(_DENSITY_ACTIVATIONS)
            raise ValueError(f"density_activation: expected one of {choices}, got {self.density_activation!r}")


@dataclass
class DecoderOutput:
    """What a NeRF decoder returns for N samples (a field wraps it in a :class:`~headfields.fields.FieldOutput`)."""

    density: Float[Tensor, " N"]  # volume density, >= 0
    rgb: Float[Tensor, "N 3"]  # colour in [0, 1]
    extras: dict[str, Tensor] = field(default_factory=dict)  # decoder-specific outputs (here "geometry" [N, 15])


class NerfDecoder(nn.Module):
    """Density MLP on ``[features, cond?]`` -> (raw density, geometry); colour MLP on ``[geometry, dirs, cond?]`` -> rgb
    (where cond goes: ``cond_to_density``, ``cond_to_color`` of the config)."""

    def __init__(self, feature_dim: int, dir_dim: int, cond_dim: int = 0, config: NerfDecoderConfig | None = None) -> None:
        """``feature_dim``: encoder output width (INSTA's hash grid: 16 levels x 2 = 32); ``dir_dim``: encoded view
        direction width (SH degree 4: 16); ``cond_dim``: conditioning appended to the density-MLP input (INSTA: 16
        expression coefficients; 0: none, forward takes ``cond=None``)."""
        super().__init__()
        self.feature_dim = check_count("feature_dim", feature_dim, 1)
        self.dir_dim = check_count("dir_dim", dir_dim, 0)
        self.cond_dim = check_count("cond_dim", cond_dim, 0)
        self.config = config = config if config is not None else NerfDecoderConfig()
        if config.cond_to_color and cond_dim == 0:
            raise ValueError("config: cond_to_color expects cond_dim > 0 (there is no conditioning to pass on)")
        if cond_dim > 0 and not (config.cond_to_density or config.cond_to_color):
            raise ValueError("config: expected cond_to_density or cond_to_color with cond_dim > 0 (cond would be unused)")
        density_in = feature_dim + (cond_dim if config.cond_to_density else 0)
        # Density and colour from features: their products may run in bfloat16 (networks.reduced_precision).
        self.density_net = mlp(density_in, config.hidden_dim, config.density_layers, 1 + config.geometry_dim, reducible=True)
        color_in = config.geometry_dim + dir_dim + (cond_dim if config.cond_to_color else 0)
        color_hidden = config.hidden_dim if config.color_hidden_dim is None else config.color_hidden_dim
        self.color_net = mlp(color_in, color_hidden, config.color_layers, 3, reducible=True)
        self._activation = _DENSITY_ACTIVATIONS[config.density_activation]

    def _check(self, name: str, x: Tensor, width: int, n: int | None) -> None:
        weight = self.density_net[0].weight
        check_float(name, x, [n, width], device=weight.device)
        if x.dtype != weight.dtype:
            raise TypeError(f"{name}: expected {weight.dtype} (the decoder's parameters), got {x.dtype}")

    def _check_inputs(self, features: Tensor, cond: Tensor | None, reads_cond: bool) -> None:
        """``features`` and ``cond`` as the decoder takes them (``cond`` checked where ``reads_cond``)."""
        self._check("features", features, self.feature_dim, None)
        if self.cond_dim == 0:
            if cond is not None:
                raise ValueError(f"cond: expected None (cond_dim is 0), got a tensor of shape {list(cond.shape)}")
        elif reads_cond:
            self._check_cond(cond, features.shape[0])

    def _density_input(self, features: Tensor, cond: Tensor | None) -> Tensor:
        self._check_inputs(features, cond, self.config.cond_to_density)  # the colour MLP checks its own
        return torch.cat([features, cond], dim=-1) if self.cond_dim and self.config.cond_to_density else features

    def _check_cond(self, cond: Tensor | None, n: int) -> None:
        if cond is None:
            raise ValueError(f"cond: expected a tensor of shape [{n}, {self.cond_dim}] (cond_dim > 0), got None")
        self._check("cond", cond, self.cond_dim, n)

    def density(self, features: Float[Tensor, "N F"], cond: Float[Tensor, "N C"] | None = None) -> Float[Tensor, " N"]:
        """Density alone (for occupancy-grid updates): skips the colour MLP."""
        raw = self.density_net(self._density_input(features, cond))
        return self._activation(raw[:, 0])

    def forward(
        self, features: Float[Tensor, "N F"], dirs_encoded: Float[Tensor, "N Dd"], cond: Float[Tensor, "N C"] | None = None
    ) -> DecoderOutput:
        out = self.density_net(self._density_input(features, cond))
        self._check("dirs_encoded", dirs_encoded, self.dir_dim, features.shape[0])
        # Split, not indexed: the gradients come back in one concatenation, not a zero-filled copy each and an add.
        raw, geometry = out.split([1, out.shape[1] - 1], dim=1)
        color_in = [geometry, dirs_encoded]
        if self.config.cond_to_color:
            self._check_cond(cond, features.shape[0])
            color_in.append(cond)
        rgb = torch.sigmoid(self.color_net(torch.cat(color_in, dim=-1)))
        return DecoderOutput(density=self._activation(raw.squeeze(1)), rgb=rgb, extras={"geometry": geometry})
