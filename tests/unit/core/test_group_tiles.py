"""Rows in tiles of one group (headfields.group_tiles) against their definition: every row in exactly one slot, each
tile one group's and never longer than a tile, the count of tiles fixed by the rows alone, a product by each tile's
group's weights equal to the rows split by group, and nothing read back on CUDA's paths."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from headfields.checks import trusted_values
from headfields.device_paths import cuda_paths
from headfields.group_tiles import GROUP_TILE, ROW_COPIES, group_tiles, tile_rows

from helpers import raises_naming


@settings(max_examples=60, deadline=None)
@given(
    groups=st.lists(st.integers(0, 5), min_size=0, max_size=60),
    num_groups=st.integers(6, 8),
    tile=st.integers(1, 9),
)
def test_each_row_has_one_slot_in_a_tile_of_its_group(groups, num_groups, tile):
    group = torch.tensor(groups, dtype=torch.long)
    p = len(groups)
    tiles = group_tiles(group, num_groups, tile)
    assert tiles.source.shape == (math.ceil(p / tile) + num_groups, tile) and tiles.group.shape == tiles.source.shape[:1]
    assert sorted(tiles.place.tolist()) == sorted(set(tiles.place.tolist()))  # distinct slots
    rows = torch.arange(p)
    assert torch.equal(tiles.source.flatten()[tiles.place], rows)  # each row's slot reads that row
    assert torch.equal(tiles.group[tiles.place // tile], group)  # in a tile of its group
    x = torch.randn(p, 3, dtype=torch.float64)
    assert torch.equal(tiles.scatter(tiles.gather(x)), x)


def test_a_product_by_each_tile_s_group_is_the_rows_split_by_group(host_sync_spy):
    g = torch.Generator().manual_seed(0)
    group = torch.randint(0, 4, (50,), generator=g)
    x = torch.randn(50, 6, generator=g, dtype=torch.float64)
    weight = torch.randn(5, 6, 2, generator=g, dtype=torch.float64)  # group 4 has no rows
    with cuda_paths(), trusted_values(), host_sync_spy() as spy:
        tiles = group_tiles(group, 5, 8)
        got = tiles.scatter(torch.bmm(tiles.gather(x), weight[tiles.group]))
    assert spy.reads == {}, spy.report()
    want = torch.empty(50, 2, dtype=torch.float64)
    for k in range(4):
        want[group == k] = x[group == k] @ weight[k]
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_bad_input_names_the_argument():
    group = torch.tensor([0, 1, 2])
    with raises_naming("num_groups"):
        group_tiles(group, 0)
    with raises_naming("tile"):
        group_tiles(group, 3, 0)
    with raises_naming("group"):
        group_tiles(group, 2)
    with raises_naming("group"):
        group_tiles(group.float(), 3)


@pytest.mark.parametrize("p", [0, 1, 128, 129])
def test_the_tiles_follow_from_the_row_count(p):
    tiles = group_tiles(torch.zeros(p, dtype=torch.long), 3)
    assert tiles.source.shape == (math.ceil(p / 128) + 3, 128) and tiles.place.shape == (p,)


def test_the_tile_holds_the_least_values_a_layer():
    """``tile_rows``: the multiple of GROUP_TILE whose tiles (their weights' copies once, their rows ROW_COPIES times,
    padding included) hold the fewest values a layer, by brute force over the multiples; the hyper NeuS avatar's paper
    step (512 rays x 64 samples x 12 neighbours, 35 members 200 wide) takes 896-row tiles."""
    assert tile_rows(512 * 64 * 12, 35, 200) == 896 and tile_rows(0, 5, 64) == tile_rows(1000, 5, 64) == GROUP_TILE

    def held(rows, groups, width, tile):
        return (math.ceil(rows / tile) + groups) * (width + ROW_COPIES * tile) * width

    for rows, groups, width in ((10**5, 3, 64), (10**6, 39, 200), (123_457, 13, 96), (12_288, 35, 200)):
        tile = tile_rows(rows, groups, width)
        best = min(held(rows, groups, width, t) for t in range(GROUP_TILE, 64 * GROUP_TILE, GROUP_TILE))
        assert tile % GROUP_TILE == 0 and held(rows, groups, width, tile) <= 1.05 * best
    with raises_naming("groups"):
        tile_rows(10, 0, 8)
    with raises_naming("width"):
        tile_rows(10, 2, 0)
