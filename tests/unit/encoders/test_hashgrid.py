"""Hash grid encoding: the Warp kernels against the straightforward PyTorch implementation written from the
encoding's definition (headfields.encoders.hashgrid_reference: resolutions, dense/hashed layout, instant-ngp hash,
trilinear weights), and gradcheck."""

import dataclasses
import json
import math

import pytest
import torch

from headfields.device_paths import cuda_paths
from headfields.encoders import HashGrid, HashGridConfig
from headfields.encoders.hashgrid_reference import HASH_PRIMES as PRIMES
from headfields.encoders.hashgrid_reference import reference_hash_grid as torch_hash_grid

from helpers import raises_naming

# Small config with dense levels (resolutions 4, 8) and hashed ones (16, 32: (r+1)^3 > 2^10).
SMALL = HashGridConfig(levels=4, features_per_level=2, log2_table_size=10, base_resolution=4, finest_resolution=32)


def random_grid(config: HashGridConfig, device: torch.device, seed: int = 0) -> HashGrid:
    grid = HashGrid(config, generator=torch.Generator().manual_seed(seed)).to(device)
    with torch.no_grad():  # features of order one, so that errors are not hidden by the tiny initial scale
        grid.table.uniform_(-1.0, 1.0, generator=torch.Generator(device=device).manual_seed(seed + 1))
    return grid


def test_config_resolutions_default():
    config = HashGridConfig()
    res = config.resolutions()
    assert res[0] == 16 and res[-1] == 2048 and len(res) == 16
    assert config.per_level_scale == pytest.approx(1.3819, abs=1e-4)  # instant-ngp's / INSTA's "per-level scale ~1.38"
    assert all(b > a for a, b in zip(res, res[1:], strict=False))
    # Dense while (r+1)^3 <= 2^18, i.e. r <= 63: resolutions 16, 22, 30, 42, 58.
    assert config.dense() == [r <= 63 for r in res] and sum(config.dense()) == 5
    grid = HashGrid(config)
    assert grid.out_dim == 32 and grid.in_dim == 3
    assert grid.table.shape == (sum(config.level_rows()), 2) and grid.table.dtype == torch.float32
    assert grid.table.abs().max() <= 1e-4


def test_insta_recipe_grid():
    """INSTA's grid (configs/nerf/main.json: 16 levels x 8 features, 2^18 rows, base 16) with instant-ngp's
    per-level scale for a finest 2048 over the unit cube (testbed.cu: exp(log(2048 * 1 / 16) / 15))."""
    from headfields.models.insta import INSTA_HASH_GRID, InstaConfig, cpu_config

    config = InstaConfig().hash_grid
    assert config == INSTA_HASH_GRID
    assert (config.levels, config.features_per_level, config.table_size, config.base_resolution) == (16, 8, 2**18, 16)
    assert config.finest_resolution == 2048 and config.out_dim == 128
    assert config.per_level_scale == pytest.approx(math.exp(math.log(2048 / 16) / 15), rel=1e-12)
    assert config.per_level_scale == pytest.approx(1.3819128799677, rel=1e-12)
    assert cpu_config().hash_grid == HashGridConfig()  # the CPU recipe: 2 features a level, all else the same
    assert (HashGridConfig().levels, HashGridConfig().features_per_level) == (16, 2)  # other models' default kept


# Three features a level and a hashed level whose resolution (40) is not a power of two.
ODD = HashGridConfig(levels=3, features_per_level=3, log2_table_size=8, base_resolution=2, finest_resolution=40)
# INSTA's 8 features a level, on a small grid (dense 2 and 8, hashed 40).
EIGHT = HashGridConfig(levels=3, features_per_level=8, log2_table_size=8, base_resolution=2, finest_resolution=40)


@pytest.mark.parametrize("config", [SMALL, ODD, EIGHT])
def test_forward_matches_torch(config, device):
    grid = random_grid(config, device)
    assert any(config.dense()) and not all(config.dense())
    x = torch.rand(5000, 3, generator=torch.Generator().manual_seed(2))
    x[:4] = torch.tensor([[0, 0, 0], [1, 1, 1], [1, 0, 0.5], [0.25, 0.5, 1]])  # on the cube's faces and corners
    x = x.to(device)
    torch.testing.assert_close(grid(x), torch_hash_grid(x, grid.table, config), atol=1e-5, rtol=0)


@pytest.mark.parametrize("features", [2, 4])  # the CPU recipes' rows and the widest the lanes take (a build each)
def test_cpu_lanes_are_warp_s_kernel_to_the_bit(features, monkeypatch):
    """On the CPU rows of up to MAX_FEATURES float32 features are encoded eight points a thread in SIMD lanes
    (hashgrid_lanes): the values of Warp's kernel to the bit, for point counts around a block's eight, points outside
    the cube and on its faces, dense and hashed levels; INSTA's rows of 8 and the float16 table keep Warp's kernel."""
    from headfields.backends.cpu import hashgrid_lanes
    from headfields.encoders import hashgrid

    config = dataclasses.replace(SMALL, features_per_level=features)
    grid = random_grid(config, torch.device("cpu"))
    x = torch.rand(1003, 3, generator=torch.Generator().manual_seed(5)) * 1.4 - 0.2  # some outside [0, 1]^3
    x[:4] = torch.tensor([[0, 0, 0], [1, 1, 1], [1, 0, 0.5], [0.25, 0.5, 1]])
    ran = []
    monkeypatch.setattr(hashgrid, "encode_in_lanes", lambda *a: ran.append(1) or hashgrid_lanes.encode_in_lanes(*a))
    with torch.no_grad():
        lanes = {n: grid(x[:n]) for n in (1, 7, 8, 9, 1003)}
        assert len(ran) == 5
        monkeypatch.setattr(hashgrid, "lane_kernel", lambda *a: None)  # Warp's kernel
        for n, out in lanes.items():
            assert torch.equal(out, grid(x[:n])), n
    torch.testing.assert_close(lanes[1003], torch_hash_grid(x, grid.table, config), atol=1e-5, rtol=0)
    assert hashgrid_lanes.lane_kernel(8, *PRIMES[1:]) is None  # wider rows: Warp's kernel
    ran.clear()
    monkeypatch.undo()
    monkeypatch.setattr(hashgrid, "encode_in_lanes", lambda *a: ran.append(1))
    with torch.no_grad():
        HashGrid(dataclasses.replace(config, table_dtype="float16"))(x)
        HashGrid(dataclasses.replace(config, features_per_level=8))(x)
    assert not ran


def test_a_warp_that_cannot_build_the_lanes_keeps_its_kernel_with_a_warning(monkeypatch):
    from headfields.backends.cpu import hashgrid_lanes

    def fails(*args, **kwargs):
        raise Exception("clang: error")  # as Warp reports a failed CPU build

    hashgrid_lanes.lane_kernel.cache_clear()
    monkeypatch.setattr(hashgrid_lanes.wp, "load_module", fails)
    try:
        with pytest.warns(RuntimeWarning, match="could not build the hash grid's SIMD encoding"):
            assert hashgrid_lanes.lane_kernel(2, *PRIMES[1:]) is None
    finally:
        hashgrid_lanes.lane_kernel.cache_clear()  # the next call builds (or reads Warp's cache) again


HALF_ROUNDING = 2.0**-11  # float16's relative rounding error (10 stored mantissa bits, round to nearest)


@pytest.mark.parametrize("config", [SMALL, EIGHT])
def test_half_table_is_the_float32_grid_with_the_rounded_table(config, device):
    """table_dtype="float16": a float32 parameter, whose float16 rounding the kernels read; features and both
    gradients are float32 and equal the float32 grid's with the rounded table."""
    half = random_grid(dataclasses.replace(config, table_dtype="float16"), device)
    rounded = HashGrid(config).to(device)
    with torch.no_grad():
        rounded.table.copy_(half.table.half().float())
    assert half.table.dtype == torch.float32 and not torch.equal(rounded.table, half.table)
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(20000, 3, generator=gen).to(device)  # several chunks on CPU
    weights = torch.randn(x.shape[0], half.out_dim, generator=gen).to(device)
    x_half, x_rounded = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_half, y_rounded = half(x_half), rounded(x_rounded)
    assert y_half.dtype == torch.float32
    torch.testing.assert_close(y_half, y_rounded, atol=1e-6, rtol=0)
    # Within float16 rounding of the unrounded float32 encoding (the trilinear weights sum to one, |table| <= 1).
    error = (y_half - torch_hash_grid(x, half.table.detach(), config)).abs().max()
    assert 0 < error <= HALF_ROUNDING
    (y_half * weights).sum().backward()
    (y_rounded * weights).sum().backward()
    assert half.table.grad.dtype == torch.float32
    # Each table entry sums hundreds of contributions, in another order on every CUDA run (atomic adds): equal up
    # to float32 summation error, a small multiple of eps times the sum of the magnitudes added into the entry,
    # which is the gradient of the same features weighted by |weights| (the trilinear weights are >= 0).
    magnitude = HashGrid(config).to(device)
    with torch.no_grad():
        magnitude.table.copy_(rounded.table)
    (magnitude(x) * weights.abs()).sum().backward()
    summation_error = 64 * torch.finfo(torch.float32).eps * magnitude.table.grad + 1e-7
    assert ((half.table.grad - rounded.table.grad).abs() <= summation_error).all()
    # A point's levels add their shares with atomic adds, on CUDA in another order each run, and each grid's kernel
    # (float16 or float32 reads) sums the shares' terms in its own order: equal up to float32 summation error, as for
    # the table, a small multiple of eps times the sum of the terms' sizes. Along an axis a level's terms add up to at
    # most 2 x its resolution x its features' |weights| (the corners' weights change by +-res, |table| <= 1). They
    # cancel, so the gradient can be far smaller than what was summed: the largest gradient as the scale failed on an
    # H200 (64 ulps of a gradient of 111).
    levels = torch.tensor(config.resolutions(), dtype=torch.float32, device=device)
    per_level = weights.abs().reshape(len(x), config.levels, config.features_per_level).sum(dim=2)
    terms = 2 * (per_level * levels).sum(dim=1, keepdim=True)  # [N, 1]
    summation = 64 * torch.finfo(torch.float32).eps * terms
    assert ((x_half.grad - x_rounded.grad).abs() <= summation).all()


def test_half_table_config_round_trips():
    from headfields.configs import config_from_dict, config_to_dict

    config = dataclasses.replace(EIGHT, table_dtype="float16")
    assert config_from_dict(json.loads(json.dumps(config_to_dict(config)))) == config
    assert "table_dtype=float16" in repr(HashGrid(config))


def test_outside_points_are_clamped(device):
    grid = random_grid(SMALL, device)
    x = torch.tensor([[-0.5, 0.3, 1.7], [2.0, -1.0, 0.5]], device=device, requires_grad=True)
    clamped = x.detach().clamp(0, 1)
    torch.testing.assert_close(grid(x), torch_hash_grid(clamped, grid.table, SMALL), atol=1e-5, rtol=0)
    grid(x).sum().backward()
    assert (x.grad[0, [0, 2]] == 0).all() and (x.grad[1, :2] == 0).all()
    assert (x.grad[0, 1] != 0) and (x.grad[1, 2] != 0)


@pytest.mark.parametrize("n", [3000, 40000])  # 40000 rows are split over threads on CPU
def test_gradients_match_torch(n, device):
    grid = random_grid(SMALL, device)
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(n, 3, generator=gen).to(device).requires_grad_()
    # Few distinct cells on the coarse levels, so concurrent chunks add into the same table rows.
    weights = torch.randn(n, grid.out_dim, generator=gen).to(device)
    (grid(x) * weights).sum().backward()
    table = grid.table.detach().clone().requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    (torch_hash_grid(x_ref, table, SMALL) * weights).sum().backward()
    torch.testing.assert_close(grid.table.grad, table.grad, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-4, rtol=1e-4)


def test_table_gradient_only(device):
    grid = random_grid(SMALL, device)
    x = torch.rand(100, 3, device=device)  # no grad wanted for the points
    grid(x).pow(2).sum().backward()
    table = grid.table.detach().clone().requires_grad_()
    torch_hash_grid(x, table, SMALL).pow(2).sum().backward()
    torch.testing.assert_close(grid.table.grad, table.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("carry", [False, True], ids=["own path", "cuda path"])
@pytest.mark.parametrize("config", [SMALL, EIGHT, dataclasses.replace(SMALL, log2_table_size=4)])
def test_table_gradient_of_ray_samples(config, carry, device):
    """A ray's samples come one after another and share cells on the coarse levels, where the table's gradient adds
    a run of them up before adding into the table (hashgrid.TABLE_GRADIENT_RUN), and on CUDA's path keeps the rows
    the next cell shares: the reference's gradient whatever the runs (rays of 1 to 40 samples, some leaving the
    cube, a point count no multiple of a run, hashed levels of 16 rows whose cells share rows)."""
    gen = torch.Generator().manual_seed(7)
    lengths = torch.randint(1, 41, (40,), generator=gen)
    origins = torch.rand(40, 3, generator=gen) * 1.2 - 0.1
    directions = torch.nn.functional.normalize(torch.randn(40, 3, generator=gen), dim=-1)
    ray = torch.repeat_interleave(torch.arange(40), lengths)
    t = torch.cat([torch.arange(k) * 0.013 for k in lengths.tolist()])
    x = origins[ray] + t[:, None] * directions[ray]
    assert len(x) % 16 != 0
    cells = torch.floor(x.clamp(0, 1) * config.base_resolution).clamp(max=config.base_resolution - 1)
    assert (cells[1:] == cells[:-1]).all(-1).float().mean() > 0.8  # the coarsest level's runs: what is tested
    weights = torch.randn(len(x), config.levels * config.features_per_level, generator=gen).to(device)
    grid, x = random_grid(config, device), x.to(device)
    with cuda_paths(carry):
        (grid(x) * weights).sum().backward()
    table = grid.table.detach().clone().requires_grad_()
    (torch_hash_grid(x, table, config) * weights).sum().backward()
    torch.testing.assert_close(grid.table.grad, table.grad, atol=1e-5, rtol=1e-5)


def test_float64_points_get_float64_gradients(device):
    grid = random_grid(SMALL, device)
    x = torch.rand(50, 3, dtype=torch.float64, device=device, requires_grad=True)
    y = grid(x)
    assert y.dtype == torch.float32
    y.sum().backward()
    assert x.grad.dtype == torch.float64 and x.grad.abs().sum() > 0


def test_reattached_features_train_the_table_as_encoding_again(device):
    """Early termination's encoding, made without autograd, given back with the table's gradient: the same values,
    and the table gradient of torch's reference encoding (the points get none); bad input named."""
    grid = random_grid(SMALL, device)
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(300, 3, generator=gen).to(device)
    weights = torch.randn(300, grid.out_dim, generator=gen).to(device)
    with torch.no_grad():
        given = grid(x)
    features = grid.reattach(x, given)
    assert torch.equal(features, given) and features.data_ptr() != given.data_ptr()
    (features * weights).sum().backward()
    table = grid.table.detach().clone().requires_grad_()
    (torch_hash_grid(x, table, SMALL) * weights).sum().backward()
    torch.testing.assert_close(grid.table.grad, table.grad, atol=1e-5, rtol=1e-5)
    with raises_naming("x"):
        grid.reattach(x.requires_grad_(), given)
    with raises_naming("features"):
        grid.reattach(x.detach(), given[:, :-1])


@pytest.mark.filterwarnings("ignore:Input #.*double precision")  # float32 on purpose: the kernels are float32
def test_gradcheck(device):
    """Finite differences in float32 on a tiny grid, with respect to the points and the table: points away
    from cell faces (the encoding is only piecewise smooth), eps well above float32 rounding."""
    config = HashGridConfig(levels=2, features_per_level=2, log2_table_size=5, base_resolution=2, finest_resolution=4)
    grid = random_grid(config, device)
    x = torch.tensor([[0.1, 0.6, 0.3], [0.85, 0.4, 0.7], [0.35, 0.15, 0.9]], device=device, requires_grad=True)
    table = grid.table.detach().clone().requires_grad_()

    def encode(points, table_):  # the module's encoding with gradcheck's (perturbed) table in place of its own
        return torch.func.functional_call(grid, {"table": table_}, (points,))

    assert torch.autograd.gradcheck(encode, (x, table), eps=1e-3, atol=2e-3, rtol=1e-2)


def test_double_backward_is_refused():
    grid = random_grid(SMALL, torch.device("cpu"))
    x = torch.rand(10, 3, requires_grad=True)
    with pytest.raises(RuntimeError, match="second derivatives are not supported"):
        torch.autograd.grad(grid(x).sum(), x, create_graph=True)


def test_empty_input(device):
    grid = random_grid(SMALL, device)
    out = grid(torch.zeros(0, 3, device=device))
    assert out.shape == (0, grid.out_dim)


def test_bad_inputs():
    grid = HashGrid(SMALL)
    with raises_naming("x"):
        grid(torch.rand(4, 2))
    with raises_naming("x"):
        grid(torch.tensor([[0.1, float("nan"), 0.2]]))
    with raises_naming("x"):
        grid(torch.ones(3, 3, dtype=torch.long))
    with raises_naming("x"):
        grid(torch.full((1, 3), 1e300, dtype=torch.float64))
    with raises_naming("levels"):
        HashGridConfig(levels=0)
    with raises_naming("finest_resolution"):
        HashGridConfig(base_resolution=32, finest_resolution=16)
    with raises_naming("log2_table_size"):
        HashGridConfig(log2_table_size=40)
    with raises_naming("features_per_level"):
        HashGridConfig(features_per_level=2.0)
    with raises_naming("table_dtype"):
        HashGridConfig(table_dtype="bfloat16")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_wrong_device():
    grid = HashGrid(SMALL).to("cuda")
    with raises_naming("x"):
        grid(torch.rand(4, 3))
