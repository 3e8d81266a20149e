"""MonoAvatar's UV-space CNNs (Bai et al. 2023, see ../shared/PAPERS.md, "MonoAvatar"): feature maps over the
FLAME UV layout, later sampled at the vertices to give each vertex a 64-d feature.

- :class:`UVUNet`, the paper's variant "D": a residual U-Net on the UV map of vertex displacements
  ``V(expr, pose) - V(0, 0)`` (3 channels).
- :class:`UVCodeDecoder`, variant "C": transposed convolutions from the expression + pose code alone.

Initialisation (both): every convolution followed by LeakyReLU gets He (Kaiming) normal weights for that slope,
with the fan-in that a transposed convolution really has (``in_channels (k / stride)^2``), and zero biases, so
activations keep their scale through the depth. The second convolution of each residual branch is scaled by
``RESIDUAL_INIT_SCALE`` (each block starts close to the identity, yet all its weights get gradients: a zero
initialisation would leave the branch's first convolution without any), and the output convolution by
``OUTPUT_INIT_SCALE``, so the features start small (about 1e-2 of the activations) but non-zero and the
per-neighbour MLP downstream first sees mostly the position encoding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from ..checks import check_count, check_float

# MonoAvatar (PAPERS.md): 64-d features per vertex, a 256 x 256 UV map, 6 levels of 8/16/32/64/128/256 channels,
# LeakyReLU 0.2; the U-Net's input is the 3-channel vertex displacement map.
MONOAVATAR_FEATURES = 64
MONOAVATAR_RESOLUTION = 256
MONOAVATAR_CHANNELS = (8, 16, 32, 64, 128, 256)
MONOAVATAR_SLOPE = 0.2
DISPLACEMENT_CHANNELS = 3
# See the module docstring.
RESIDUAL_INIT_SCALE = 0.1
OUTPUT_INIT_SCALE = 1e-2
# Strided (transposed) convolutions: 4x4, stride 2, padding 1 exactly halve (double) an even size.
_KERNEL, _STRIDE, _PADDING = 4, 2, 1


def _check_channels(name: str, channels: object) -> tuple[int, ...]:
    if not isinstance(channels, tuple) or len(channels) == 0:
        raise ValueError(f"{name}: expected a non-empty tuple of channel counts, got {channels!r}")
    for c in channels:
        check_count(name, c, 1)
    return channels


def _check_slope(slope: object) -> None:
    if isinstance(slope, bool) or not isinstance(slope, int | float) or not 0 <= slope < 1:
        raise ValueError(f"negative_slope: expected a number in [0, 1), got {slope!r}")


def _he_init(layer: nn.Conv2d | nn.ConvTranspose2d | nn.Linear, fan_in: int, slope: float, scale: float = 1.0) -> None:
    """He normal weights for a LeakyReLU of ``slope`` (times ``scale``) and zero biases."""
    std = scale * math.sqrt(2.0 / (1.0 + slope**2) / fan_in)
    with torch.no_grad():
        layer.weight.normal_(0.0, std)
        if layer.bias is not None:
            layer.bias.zero_()


def _conv(in_channels: int, out_channels: int, slope: float, scale: float = 1.0) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
    _he_init(conv, in_channels * 9, slope, scale)
    return conv


def _down(in_channels: int, out_channels: int, slope: float) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, _KERNEL, stride=_STRIDE, padding=_PADDING)
    _he_init(conv, in_channels * _KERNEL**2, slope)
    return conv


def _up(in_channels: int, out_channels: int, slope: float) -> nn.ConvTranspose2d:
    conv = nn.ConvTranspose2d(in_channels, out_channels, _KERNEL, stride=_STRIDE, padding=_PADDING)
    # Each output texel of a stride-2 transposed convolution sees (k / 2)^2 input texels per channel.
    _he_init(conv, in_channels * (_KERNEL // _STRIDE) ** 2, slope)
    return conv


def _check_input(name: str, x: Tensor, shape: list[int | None], weight: Tensor) -> None:
    check_float(name, x, shape, device=weight.device)
    if x.dtype != weight.dtype:
        raise TypeError(f"{name}: expected {weight.dtype} (the network's parameters), got {x.dtype}")


class _ResidualBlock(nn.Module):
    """``act(x + conv(act(conv(x))))``: two 3x3 convolutions and an identity skip."""

    def __init__(self, channels: int, slope: float) -> None:
        super().__init__()
        self.conv1 = _conv(channels, channels, slope)
        self.conv2 = _conv(channels, channels, slope, RESIDUAL_INIT_SCALE)
        self.slope = slope

    def forward(self, x: Tensor) -> Tensor:
        h = F.leaky_relu(self.conv1(x), self.slope)
        return F.leaky_relu(x + self.conv2(h), self.slope)


@dataclass(frozen=True)
class UVUNetConfig:
    """Residual U-Net sizes; the defaults are MonoAvatar's variant D (PAPERS.md)."""

    in_channels: int = DISPLACEMENT_CHANNELS  # the vertex displacement map (x, y, z)
    out_channels: int = MONOAVATAR_FEATURES
    channels: tuple[int, ...] = MONOAVATAR_CHANNELS  # one per level, finest first; levels - 1 halvings
    negative_slope: float = MONOAVATAR_SLOPE  # LeakyReLU

    def __post_init__(self) -> None:
        check_count("in_channels", self.in_channels, 1)
        check_count("out_channels", self.out_channels, 1)
        _check_channels("channels", self.channels)
        _check_slope(self.negative_slope)

    @property
    def levels(self) -> int:
        return len(self.channels)

    @property
    def size_multiple(self) -> int:
        """What the input height and width must be divisible by: ``2^(levels - 1)``."""
        return 2 ** (self.levels - 1)


class UVUNet(nn.Module):
    """Residual U-Net over UV maps (MonoAvatar's variant D): ``[B, in_channels, H, W] -> [B, out_channels, H, W]``.

    Encoder: a 3x3 stem to ``channels[0]``, then per level a residual block, with a 4x4 stride-2 convolution
    (to the next level's channels) between levels. Decoder: from the coarsest level up, a 4x4 stride-2
    transposed convolution back to the finer level's channels, then the encoder's output at that level is
    *added* (an additive skip: as cheap as the residual blocks and keeps the decoder's widths) and a residual
    block follows. A 1x1 convolution maps ``channels[0]`` to ``out_channels``. ``H`` and ``W`` must be
    divisible by ``2^(levels - 1)`` (32 for the six default levels).
    """

    def __init__(self, config: UVUNetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config if config is not None else UVUNetConfig()
        c, slope = config.channels, config.negative_slope
        self.stem = _conv(config.in_channels, c[0], slope)
        self.encoder = nn.ModuleList(_ResidualBlock(ch, slope) for ch in c)
        self.down = nn.ModuleList(_down(c[i], c[i + 1], slope) for i in range(len(c) - 1))
        self.up = nn.ModuleList(_up(c[i + 1], c[i], slope) for i in range(len(c) - 1))
        self.decoder = nn.ModuleList(_ResidualBlock(c[i], slope) for i in range(len(c) - 1))
        self.head = nn.Conv2d(c[0], config.out_channels, 1)
        _he_init(self.head, c[0], slope, OUTPUT_INIT_SCALE)

    @property
    def in_channels(self) -> int:
        return self.config.in_channels

    @property
    def out_channels(self) -> int:
        return self.config.out_channels

    def forward(self, x: Float[Tensor, "B Cin H W"]) -> Float[Tensor, "B Cout H W"]:
        _check_input("x", x, [None, self.config.in_channels, None, None], self.stem.weight)
        m = self.config.size_multiple
        if x.shape[2] % m or x.shape[3] % m:
            raise ValueError(
                f"x: expected height and width divisible by {m} (2^(levels - 1), levels = {self.config.levels}), "
                f"got {x.shape[2]} x {x.shape[3]}"
            )
        slope = self.config.negative_slope
        h = F.leaky_relu(self.stem(x), slope)
        skips = []
        for level, block in enumerate(self.encoder):
            if level > 0:
                h = F.leaky_relu(self.down[level - 1](h), slope)
            h = block(h)
            skips.append(h)
        for level in reversed(range(len(self.decoder))):
            h = F.leaky_relu(self.up[level](h), slope) + skips[level]
            h = self.decoder[level](h)
        return self.head(h)


@dataclass(frozen=True)
class UVCodeDecoderConfig:
    """Sizes of the code-to-UV-map decoder; the defaults are MonoAvatar's variant C at 256 x 256 (PAPERS.md).

    The map starts at ``start_resolution`` (default: derived, ``resolution / 2^(len(channels) - 1)``, 8 for the
    defaults) with ``channels[0]`` channels; each further entry of ``channels`` is one doubling.
    """

    out_channels: int = MONOAVATAR_FEATURES
    resolution: int = MONOAVATAR_RESOLUTION
    channels: tuple[int, ...] = tuple(reversed(MONOAVATAR_CHANNELS))  # coarsest first
    start_resolution: int | None = None
    negative_slope: float = MONOAVATAR_SLOPE  # LeakyReLU

    def __post_init__(self) -> None:
        check_count("out_channels", self.out_channels, 1)
        check_count("resolution", self.resolution, 1)
        _check_channels("channels", self.channels)
        _check_slope(self.negative_slope)
        doublings = 2 ** (len(self.channels) - 1)
        if self.start_resolution is None:
            if self.resolution % doublings:
                raise ValueError(
                    f"resolution: expected a multiple of {doublings} (2^(len(channels) - 1) doublings from the start "
                    f"grid), got {self.resolution}"
                )
        else:
            check_count("start_resolution", self.start_resolution, 1)
            if self.start_resolution * doublings != self.resolution:
                raise ValueError(
                    f"resolution: expected start_resolution * 2^(len(channels) - 1) = {self.start_resolution} * "
                    f"{doublings} = {self.start_resolution * doublings}, got {self.resolution}"
                )

    @property
    def start(self) -> int:
        """The side of the first grid."""
        return self.resolution // 2 ** (len(self.channels) - 1)


class UVCodeDecoder(nn.Module):
    """Code to UV feature map (MonoAvatar's variant C): ``[B, code_dim] -> [B, out_channels, R, R]``.

    A linear layer makes a ``[channels[0], s, s]`` grid (``s = start``), LeakyReLU; then per further entry of
    ``channels`` a 4x4 stride-2 transposed convolution and LeakyReLU, doubling the side up to ``resolution``;
    then a 3x3 convolution to ``out_channels``.
    """

    def __init__(self, code_dim: int, config: UVCodeDecoderConfig | None = None) -> None:
        """``code_dim``: width of the code (expression + pose: FLAME's 50 + 15 in MonoAvatar's set-up, say)."""
        super().__init__()
        self.code_dim = check_count("code_dim", code_dim, 1)
        self.config = config = config if config is not None else UVCodeDecoderConfig()
        c, slope, s = config.channels, config.negative_slope, config.start
        self.linear = nn.Linear(code_dim, c[0] * s * s)
        _he_init(self.linear, code_dim, slope)
        self.up = nn.ModuleList(_up(c[i], c[i + 1], slope) for i in range(len(c) - 1))
        self.head = nn.Conv2d(c[-1], config.out_channels, 3, padding=1)
        _he_init(self.head, c[-1] * 9, slope, OUTPUT_INIT_SCALE)

    @property
    def out_channels(self) -> int:
        return self.config.out_channels

    def forward(self, code: Float[Tensor, "B E"]) -> Float[Tensor, "B Cout R R"]:
        _check_input("code", code, [None, self.code_dim], self.linear.weight)
        c, slope, s = self.config.channels, self.config.negative_slope, self.config.start
        h = F.leaky_relu(self.linear(code), slope).reshape(code.shape[0], c[0], s, s)
        for up in self.up:
            h = F.leaky_relu(up(h), slope)
        return self.head(h)
