"""The hash grid's encoding in plain PyTorch, written from its definition (resolutions, dense and hashed layouts,
instant-ngp's hash, trilinear weights): the peer that benchmarks/hashgrid.py times on the same device and the
reference tests/unit/encoders/test_hashgrid.py checks the Warp kernels against (as gsplat keeps its torch implementation).

    features = reference_hash_grid(x, grid.table, grid.config)  # [N, levels * F], differentiable in x and table
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor

from .hashgrid import HashGridConfig

__all__ = ["HASH_PRIMES", "reference_hash_grid"]

HASH_PRIMES = (1, 2654435761, 805459861)  # instant-ngp's spatial hash
_UINT32 = 0xFFFFFFFF


def reference_hash_grid(x: Float[Tensor, "N 3"], table: Float[Tensor, "T F"], config: HashGridConfig) -> Float[Tensor, "N C"]:
    """Reference encoding in plain PyTorch (differentiable in ``x`` and ``table``): ``[N, levels * F]``. Each level's
    eight corners are read by one gather, so its backward adds into one table-sized gradient a level."""
    growth = math.exp((math.log(config.finest_resolution) - math.log(config.base_resolution)) / max(config.levels - 1, 1))
    size = 2**config.log2_table_size
    x = x.clamp(0.0, 1.0)
    corners = torch.tensor([[(corner >> d) & 1 for d in range(3)] for corner in range(8)], device=x.device)  # [8, 3]
    offset, out = 0, []
    for level in range(config.levels):
        res = math.floor(config.base_resolution * growth**level + 1e-9)
        dense = (res + 1) ** 3 <= size
        pos = x * res
        cell = torch.floor(pos).clamp(max=res - 1)
        frac = pos - cell
        vertex = cell.long()[:, None, :] + corners  # [N, 8, 3]
        weight = torch.where(corners.bool(), frac[:, None, :], 1.0 - frac[:, None, :]).prod(dim=-1)  # [N, 8]
        if dense:
            index = vertex[..., 0] + (res + 1) * (vertex[..., 1] + (res + 1) * vertex[..., 2])
        else:
            h = (vertex[..., 0] * HASH_PRIMES[0]) ^ (vertex[..., 1] * HASH_PRIMES[1]) ^ (vertex[..., 2] * HASH_PRIMES[2])
            index = (h & _UINT32) % size
        out.append((weight[..., None] * table[offset + index]).sum(dim=1))
        offset += (res + 1) ** 3 if dense else size
    return torch.cat(out, dim=1)
