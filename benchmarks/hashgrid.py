"""Benchmark the Warp hash grid against a plain PyTorch implementation of the same encoding.

Run it from the repository root::

    python benchmarks/hashgrid.py                      # INSTA's config, 2^18 points, CPU
    python benchmarks/hashgrid.py --points 65536 --repeats 3 --device cuda

Both encoders run INSTA's configuration (16 levels x 2 features, 2^18 rows a level, resolutions 16 to 2048)
on the same uniformly random points in the unit cube, with the same table. Timed: forward + backward of
``(features * weights).sum()``, with gradients for the table only (training) and for the table and the points
(normals, eikonal terms). Each case gets one untimed warm-up (Warp compiles its kernels), then ``--repeats``
timed runs; the table reports the median throughput. The PyTorch reference is tests/test_hashgrid.py's
``torch_hash_grid``; its features and table gradient are compared with the Warp ones before timing.
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from headfields.encoders import HashGrid, HashGridConfig
from headfields.kernels import num_cpu_threads

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_hashgrid import torch_hash_grid  # noqa: E402  (the tests' independent reference)

from avatars import median_seconds  # noqa: E402  (the timer every benchmark here shares)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=2**18)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch (and so Warp CPU) threads")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    config = HashGridConfig()  # INSTA
    gen = torch.Generator().manual_seed(0)
    grid = HashGrid(config, generator=gen)
    with torch.no_grad():  # features of order one rather than the tiny initial ones, for the comparison
        grid.table.uniform_(-1.0, 1.0, generator=gen)
    grid.to(device)
    x = torch.rand(args.points, 3, generator=gen).to(device)
    weights = torch.randn(args.points, grid.out_dim, generator=gen).to(device)
    ref_table = grid.table.detach().clone().requires_grad_()

    # Same answers first.
    x_ref = x[:4096]
    (grid(x_ref) * weights[:4096]).sum().backward()
    (torch_hash_grid(x_ref, ref_table, config) * weights[:4096]).sum().backward()
    with torch.no_grad():
        feature_err = float((grid(x_ref) - torch_hash_grid(x_ref, ref_table, config)).abs().max())
    grad_err = float((grid.table.grad - ref_table.grad).abs().max())
    print(f"check on 4096 points: max |features diff| {feature_err:.2e}, max |table grad diff| {grad_err:.2e}")

    def warp_step(points_grad: bool) -> Callable[[], None]:
        def step() -> None:
            grid.table.grad = None
            (grid(x.requires_grad_(points_grad)) * weights).sum().backward()

        return step

    def torch_step(points_grad: bool) -> Callable[[], None]:
        def step() -> None:
            ref_table.grad = None
            (torch_hash_grid(x.requires_grad_(points_grad), ref_table, config) * weights).sum().backward()

        return step

    def forward_only(encode: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], None]:
        def step() -> None:
            with torch.no_grad():
                encode(x.requires_grad_(False))

        return step

    cases = [
        ("forward", forward_only(grid), forward_only(lambda p: torch_hash_grid(p, ref_table, config))),
        ("forward + backward (table)", warp_step(False), torch_step(False)),
        ("forward + backward (table, points)", warp_step(True), torch_step(True)),
    ]
    threads = num_cpu_threads() if device.type == "cpu" else "-"
    print(
        f"\nHashGrid (Warp) vs PyTorch reference: INSTA config, {args.points} points, device {device}, "
        f"{threads} threads, {platform.processor() or platform.machine()}, median of {args.repeats}"
    )
    print(f"{'pass':<36} {'Warp Mpts/s':>12} {'PyTorch Mpts/s':>15} {'speed-up':>9}")
    for name, warp_fn, torch_fn in cases:
        warp_s = median_seconds(warp_fn, args.repeats, device)
        torch_s = median_seconds(torch_fn, args.repeats, device)
        n = args.points / 1e6
        print(f"{name:<36} {n / warp_s:>12.2f} {n / torch_s:>15.2f} {torch_s / warp_s:>8.1f}x")


if __name__ == "__main__":
    main()
