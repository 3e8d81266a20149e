"""Rows of many groups (an ensemble's members) in tiles of one group each, for one batched product a layer whose shapes
follow from the row count alone: nothing read back to size the groups (``torch.split`` by counts needs them on the
host), so a CUDA graph can hold it. A mixture-of-experts layer pads its tokens the same way.

    tiles = group_tiles(member, num_members)  # member [P]: each row's group
    x = tiles.gather(rows)  # [J, T, D], J = ceil(P / T) + num_members
    y = torch.baddbmm(bias[tiles.group][:, None], x, weight[tiles.group])  # each tile by its group's weights
    out = tiles.scatter(y)  # [P, H], row by row as ``rows``

The rows sorted by group are cut at every ``tile``-th row and at every group's first row, so each piece is one group's
and at most ``tile`` rows long; a piece's unused rows repeat a real row and are dropped by :meth:`GroupTiles.scatter`.
Every group adds at most one partial tile. Each tile also reads a copy of its group's weights, so the tile grows with
the rows (:func:`tile_rows`): larger tiles copy fewer weights and pad more rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor

from .checks import check_count, check_int

__all__ = ["GROUP_TILE", "ROW_COPIES", "GroupTiles", "group_tiles", "tile_rows"]

# Rows a tile, at least, and their multiple: a block of a batched product on tensor cores.
GROUP_TILE = 128
# A training step holds a layer's rows about this many times to its weights' copy once (an SDF's double backward keeps
# the product, its Softplus and the Softplus' derivative): measured on the hyper NeuS avatar's step at 16 rays, 128-row
# tiles held the least, as this weighting says.
ROW_COPIES = 3


@dataclass(frozen=True)
class GroupTiles:
    """Where ``P`` rows go in ``J`` tiles of ``T`` rows: ``source [J, T]`` (the row each tile slot reads), ``group
    [J]`` (each tile's group) and ``place [P]`` (each row's slot in the flattened tiles)."""

    source: Int[Tensor, "J T"]
    group: Int[Tensor, " J"]
    place: Int[Tensor, " P"]

    def gather(self, rows: Tensor) -> Tensor:
        """``rows [P, ...]`` in tiles ``[J, T, ...]`` (zeros where there are no rows)."""
        if rows.shape[0] == 0:
            return rows.new_zeros(*self.source.shape, *rows.shape[1:])
        return rows[self.source]

    def scatter(self, tiled: Tensor) -> Tensor:
        """``tiled [J, T, ...]`` back to rows ``[P, ...]``, in the rows' order (the tiles' padding left out)."""
        return tiled.flatten(0, 1)[self.place]


def tile_rows(rows: int, groups: int, width: int) -> int:
    """The rows of a tile for ``rows`` rows in ``groups`` groups whose layers are ``width`` wide: the multiple of
    ``GROUP_TILE`` nearest ``sqrt(rows width / (ROW_COPIES groups))``, at least ``GROUP_TILE``. A layer over the tiles
    holds ``J (width + ROW_COPIES tile) width`` values, ``J = rows / tile + groups`` tiles each with its copy of a
    ``width x width`` weight and its rows, padding included; this tile makes that least. (The hyper NeuS avatar's paper
    step, 393k rows of 35 members 200 wide: 896-row tiles, 474 of them.)"""
    rows, groups, width = check_count("rows", rows, 0), check_count("groups", groups, 1), check_count("width", width, 1)
    return max(GROUP_TILE, round(math.sqrt(rows * width / (ROW_COPIES * groups)) / GROUP_TILE) * GROUP_TILE)


def group_tiles(group: Int[Tensor, " P"], num_groups: int, tile: int = GROUP_TILE) -> GroupTiles:
    """The tiles of rows whose groups are ``group`` (each in ``[0, num_groups)``): ``ceil(P / tile) + num_groups``
    tiles of ``tile`` rows (:func:`tile_rows` chooses one), a size that depends on ``P`` alone."""
    num_groups = check_count("num_groups", num_groups, 1)
    tile = check_count("tile", tile, 1)
    check_int("group", group, [None], upper=num_groups)
    p, device = group.shape[0], group.device
    with torch.no_grad():
        order = torch.argsort(group, stable=True)
        ordered = group[order]
        # Each piece starts at a tile's first row or a group's first row; empty pieces (a group without rows, or a
        # group starting on a tile boundary) repeat a start and hold nothing.
        firsts = torch.searchsorted(ordered, torch.arange(num_groups, device=device, dtype=ordered.dtype))
        starts = torch.sort(torch.cat([torch.arange(0, p, tile, device=device), firsts])).values
        last = max(p - 1, 0)
        slots = torch.arange(tile, device=device)
        source = order[(starts[:, None] + slots).clamp(max=last)] if p else starts.new_zeros(len(starts), tile)
        tile_group = ordered[starts.clamp(max=last)] if p else starts.new_zeros(len(starts))
        # A row's piece: the last start at or before it (of equal starts, the piece that holds rows).
        piece = torch.searchsorted(starts, torch.arange(p, device=device), right=True) - 1
        place_sorted = piece * tile + (torch.arange(p, device=device) - starts[piece])
        place = torch.empty_like(place_sorted).index_copy_(0, order, place_sorted)
    return GroupTiles(source, tile_group, place)
