"""NeRF positional encoding (Mildenhall et al. 2020): sines and cosines of the input at octave frequencies."""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor, nn

from .._checks import check_count, check_float

MAX_FREQUENCIES = 32  # 2^31 pi x already aliases for any float32 x


class FrequencyEncoding(nn.Module):
    """``[x, sin(2^0 pi x), cos(2^0 pi x), ..., sin(2^(K-1) pi x), cos(2^(K-1) pi x)]`` for ``K = num_frequencies``.

    Each block holds all ``in_dim`` coordinates; ``x`` itself comes first when ``include_input``.
    ``out_dim = in_dim * (include_input + 2 K)``.
    """

    def __init__(self, in_dim: int, num_frequencies: int, include_input: bool = True):
        super().__init__()
        self.in_dim = check_count("in_dim", in_dim, 1)
        self.num_frequencies = check_count("num_frequencies", num_frequencies, 0, MAX_FREQUENCIES)
        self.include_input = bool(include_input)
        if self.num_frequencies == 0 and not self.include_input:
            raise ValueError("num_frequencies: expected at least 1 when include_input is False, got 0")
        self.out_dim = self.in_dim * (int(self.include_input) + 2 * self.num_frequencies)
        self.register_buffer(
            "frequencies", math.pi * 2.0 ** torch.arange(self.num_frequencies, dtype=torch.float64), persistent=False
        )

    def forward(self, x: Float[Tensor, "N D"]) -> Float[Tensor, "N E"]:
        check_float("x", x, [None, self.in_dim], device=self.frequencies.device)
        angles = x[:, None, :] * self.frequencies.to(x.dtype)[:, None]  # [N, K, D]
        waves = torch.stack([torch.sin(angles), torch.cos(angles)], dim=2).reshape(x.shape[0], -1)  # [N, K*2*D]
        return torch.cat([x, waves], dim=1) if self.include_input else waves

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, num_frequencies={self.num_frequencies}, include_input={self.include_input}"
