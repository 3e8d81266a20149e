"""Denormal floats computed by every thread of torch's team, and a count of those kept: the CPU backend's flushing
tests and the inference renderer's share them."""

from __future__ import annotations

import torch

DENORMAL_BITS = 0xAE398  # float32 1e-39, below its smallest normal number (1.18e-38)
MANY = 1 << 22


def product_of_denormals() -> torch.Tensor:
    """4M denormals times one, computed by every thread of torch's team (the threads already started). The
    denormals are written as bits: converting the number 1e-39 to float32 on a flushing thread gives zero."""
    return torch.full((MANY,), DENORMAL_BITS, dtype=torch.int32).view(torch.float32) * 1.0


def kept(x: torch.Tensor) -> int:
    """How many values are not zero, read from their bits: a float comparison on a thread that treats denormal
    inputs as zero (DAZ) would count a denormal as zero."""
    return int(torch.count_nonzero(x.view(torch.int32) & 0x7FFFFFFF))
