"""Benchmark the Warp hash grid against a plain PyTorch implementation of the same encoding.

Run it from the repository root::

    python benchmarks/hashgrid.py                      # INSTA's grid and the 2-feature grid, 2^18 points, CPU
    python benchmarks/hashgrid.py --grids insta --threads 1
    python benchmarks/hashgrid.py --points 65536 --repeats 3 --device cuda --table-dtype float16

Grids: ``insta`` is INSTA's (``headfields.models.insta.INSTA_HASH_GRID``: 16 levels x 8 features, 2^18 rows a
level, resolutions 16 to 2048), ``ngp`` the library default (the same with 2 features a level). Both encoders
run on the same uniformly random points in the unit cube, with the same table. Timed: the forward alone, and
forward + backward of ``(features * weights).sum()`` with gradients for the table only (training) and for the
table and the points (normals, eikonal terms). Each case gets one untimed warm-up (Warp compiles its kernels),
then ``--repeats`` timed runs of each encoder in the same process; the table reports median throughputs and
their ratio. The PyTorch reference (``headfields.encoders.hashgrid_reference``, which tests/unit/encoders/test_hashgrid.py
checks the kernels against): its features and table gradient are compared with the Warp ones before timing (with
``--table-dtype float16`` the reference gets the table rounded to float16, which is what the Warp kernels read).

First, each grid's table gradient alone: the kernel's runs of consecutive points against a thread a point and level
(``table_gradient_runs``: on a GPU, where each of those threads adds into the table with atomics, the figure that
says what the runs buy).

On the CPU the forward of a grid of up to ``hashgrid_lanes.MAX_FEATURES`` features a level runs in SIMD lanes
(``headfields.backends.cpu.hashgrid_lanes``), as every caller's does; which CPU kernel encodes is the library's choice,
and the benchmark times what a user gets.

On a loaded 2-core machine torch's two-thread element-wise operations slow down far more than Warp's launches
(each waits for both threads); ``--threads 1`` gives the steadier comparison.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
from collections.abc import Callable

import torch

from headfields.encoders import HashGrid, HashGridConfig, hashgrid
from headfields.encoders.hashgrid_reference import reference_hash_grid
from headfields.kernels import num_cpu_threads
from headfields.models.insta import INSTA_HASH_GRID

from avatars import median_seconds  # the timer every benchmark here shares

GRIDS = {"insta": ("INSTA 16 x 8", INSTA_HASH_GRID), "ngp": ("16 x 2", HashGridConfig())}
CHECK_POINTS = 4096
Step = Callable[[], None]
Encode = Callable[[torch.Tensor], torch.Tensor]


def cases(config: HashGridConfig, x: torch.Tensor, gen: torch.Generator) -> list[tuple[str, Step, Step]]:
    """(name, Warp step, reference step) of each timed pass, after checking that both encoders agree."""
    device = x.device
    grid = HashGrid(config, generator=gen)
    with torch.no_grad():  # features of order one rather than the tiny initial ones, for the comparison
        grid.table.uniform_(-1.0, 1.0, generator=gen)
    grid.to(device)
    weights = torch.randn(x.shape[0], grid.out_dim, generator=gen).to(device)
    # The table the Warp kernels read (the float16 rounding, if any), as the reference's parameter.
    read_dtype = torch.float16 if config.table_dtype == "float16" else torch.float32
    ref_table = grid.table.detach().to(read_dtype).float().requires_grad_()

    check(grid, ref_table, x[:CHECK_POINTS], weights[:CHECK_POINTS])

    def reference(points: torch.Tensor) -> torch.Tensor:
        return reference_hash_grid(points, ref_table, config)

    def training_step(encode: Encode, table: torch.Tensor, points_grad: bool) -> Step:
        def step() -> None:
            table.grad = None
            (encode(x.requires_grad_(points_grad)) * weights).sum().backward()

        return step

    def forward_only(encode: Encode) -> Step:
        def step() -> None:
            with torch.no_grad():
                encode(x.requires_grad_(False))

        return step

    return [
        ("forward", forward_only(grid), forward_only(reference)),
        ("forward + backward (table)", training_step(grid, grid.table, False), training_step(reference, ref_table, False)),
        ("forward + backward (table, points)", training_step(grid, grid.table, True), training_step(reference, ref_table, True)),
    ]


def check(grid: HashGrid, ref_table: torch.Tensor, x: torch.Tensor, weights: torch.Tensor) -> None:
    """Print how far the Warp features and table gradient are from the reference's on ``x``."""
    config = grid.config
    grid.table.grad = ref_table.grad = None
    (grid(x) * weights).sum().backward()
    (reference_hash_grid(x, ref_table, config) * weights).sum().backward()
    with torch.no_grad():
        feature_err = float((grid(x) - reference_hash_grid(x, ref_table, config)).abs().max())
    grad_err = float((grid.table.grad - ref_table.grad).abs().max())
    print(f"check on {x.shape[0]} points: max |features diff| {feature_err:.2e}, max |table grad diff| {grad_err:.2e}")


def table_gradient_runs(config: HashGridConfig, points: int, repeats: int, device: torch.device, gen: torch.Generator) -> None:
    """The table's gradient alone, as the kernel runs it (a thread adds up ``TABLE_GRADIENT_RUN`` consecutive points of
    a level before adding into the table) against a thread a point and level (run 1, the kernel before), on a ray's
    samples (64 a ray from points in the cube's middle, at instant-ngp's smallest step, sqrt(3) / 1024) and on random
    points; the two gradients are compared first."""
    rays = max(points // 64, 1)
    origins = (torch.rand(rays, 3, generator=gen) * 0.6 + 0.2)[:, None]
    directions = torch.nn.functional.normalize(torch.randn(rays, 3, generator=gen), dim=-1)[:, None]
    steps = (torch.arange(64) * (3**0.5 / 1024))[None, :, None]
    layouts = {
        "a ray's samples": (origins + steps * directions).reshape(-1, 3).clamp(0, 1),
        "random": torch.rand(rays * 64, 3, generator=gen),
    }
    grid = HashGrid(config).to(device)
    k, levels, shape = hashgrid._kernels(config.features_per_level, config.table_dtype), grid.level_table, grid.table.shape
    grad = torch.randn(rays * 64, config.levels, config.features_per_level, generator=gen).to(device)
    run = hashgrid.TABLE_GRADIENT_RUN
    for layout, x in layouts.items():
        x = x.to(device)
        gradients = [hashgrid._table_gradient(k, levels, x, grad, shape, r) for r in (run, 1)]
        err = float((gradients[0] - gradients[1]).abs().max())
        seconds = [
            median_seconds(lambda r=r, x=x: hashgrid._table_gradient(k, levels, x, grad, shape, r), repeats, device)
            for r in (run, 1)
        ]
        print(
            f"  table gradient, {layout}: a run of {run} {1e3 * seconds[0]:.2f} ms, a point a thread {1e3 * seconds[1]:.2f} ms, "
            f"{seconds[1] / seconds[0]:.2f}x (max |gradient diff| {err:.1e})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=2**18)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--grids", nargs="+", choices=list(GRIDS), default=list(GRIDS), help="which grid sizes, in order")
    parser.add_argument("--table-dtype", choices=["float32", "float16"], default="float32", help="the table Warp reads")
    parser.add_argument("--threads", type=int, default=None, help="torch (and so Warp CPU) threads")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(args.points, 3, generator=gen).to(device)
    threads = num_cpu_threads() if device.type == "cpu" else "-"
    print(
        f"HashGrid (Warp) vs PyTorch reference: {args.points} points, device {device}, {threads} threads, "
        f"{platform.processor() or platform.machine()}, table read as {args.table_dtype}, median of {args.repeats}"
    )
    rows = []
    for key in args.grids:
        label, config = GRIDS[key]
        config = dataclasses.replace(config, table_dtype=args.table_dtype)
        print(f"{label}: ", end="")
        for name, warp_fn, torch_fn in cases(config, x, gen):
            warp_s = median_seconds(warp_fn, args.repeats, device)
            torch_s = median_seconds(torch_fn, args.repeats, device)
            rows.append((label, name, warp_s, torch_s))
    for key in args.grids:
        label, config = GRIDS[key]
        print(f"{label}, {x.shape[0]} points:")
        table_gradient_runs(dataclasses.replace(config, table_dtype=args.table_dtype), x.shape[0], args.repeats, device, gen)
    print(f"\n{'grid':<13} {'pass':<36} {'Warp Mpts/s':>12} {'PyTorch Mpts/s':>15} {'speed-up':>9}")
    n = args.points / 1e6
    for label, name, warp_s, torch_s in rows:
        print(f"{label:<13} {name:<36} {n / warp_s:>12.3g} {n / torch_s:>15.3g} {torch_s / warp_s:>8.1f}x")


if __name__ == "__main__":
    main()
