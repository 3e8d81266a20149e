"""The hash grid's encoding on the CPU, eight points of a level at a time: :mod:`~headfields.encoders.hashgrid`'s
``encode`` kernel as a native snippet (``hashgrid_lanes.cpp``) written with clang's vector extensions (as
:mod:`~headfields.backends.cpu.wide_bvh`'s walk is), which Warp's CPU compiler turns into SSE / AVX instructions.
Warp's kernel language has no vector type wider than its scalar code: there each (level, point) is one thread of scalar
code. Here one thread computes the cells, the trilinear weights and the spatial hash of eight points in SIMD lanes, and
reads their corners' rows lane by lane.

The values are the Warp kernel's to the bit: the same operations in the same order (each product and sum its own
statement, so neither is fused into an FMA where the kernel's are not), and the modulo by a hashed level's rows, a
power of two, taken as a mask (the same remainder; a vector modulo is eight scalar divisions).

Rows of up to ``MAX_FEATURES`` features: the CPU recipes' grids (2 a level). Wider rows (INSTA's 8) keep Warp's kernel,
where a row is one vector load and the lanes' reads, feature by feature, measured slower. The float16 table keeps it
too. Measured on 1,048,576 points of INSTA's 512² frame in the unit box (the CPU recipe's grid: 16 levels of 2, 2^18
rows), this project's 2-core Intel Xeon, 2026-11-27, medians of 5 in one process: 3.5-3.9 against 1.9-2.3 M points a
second (lanes of 4: 3.7; of 16: 2.7).

What the snippet takes from Warp beyond its public Python API is :mod:`~headfields.backends.cpu.wide_bvh`'s (clang on
the CPU, ``wp::array_t``'s ``.data``, ``__CUDA_ARCH__``). Where Warp cannot build it, a ``RuntimeWarning`` says so once and
the encoding keeps Warp's kernel.
"""

from __future__ import annotations

import warnings
from functools import cache
from typing import no_type_check

import torch
import warp as wp
from jaxtyping import Float, Int
from torch import Tensor

from ... import kernels
from .native import native_sections

LANES = 8  # points a thread: one AVX register of float32
MAX_FEATURES = 4  # features a row the lanes read; wider rows keep Warp's kernel


@cache
def lane_kernel(features: int, prime_y: int, prime_z: int) -> wp.Kernel | None:
    """The lanes' kernel for rows of ``features`` and the hash's primes (built at the first call: seconds, then
    Warp's kernel cache), or None: rows wider than MAX_FEATURES, or a Warp that cannot build it (a RuntimeWarning)."""
    if features > MAX_FEATURES:
        return None
    snippet = native_sections("hashgrid_lanes.cpp")["encode"]
    snippet = snippet.replace("LANES", str(LANES)).replace("FEATURES", str(features))
    snippet = snippet.replace("PRIME_Y", str(prime_y)).replace("PRIME_Z", str(prime_z))

    @no_type_check  # Warp parameter types are not Python type hints; keep the jaxtyping checker off them.
    @wp.func_native(snippet)
    def encode_lanes(
        table: wp.array(dtype=wp.float32),
        levels: wp.array2d(dtype=wp.int32),
        points: wp.array(dtype=wp.float32),
        encoded: wp.array(dtype=wp.float32),
        n: int,
        count: int,
        level: int,
        block: int,
    ): ...

    @no_type_check
    @wp.kernel(module=f"headfields_hashgrid_lanes_f{features}", enable_backward=False)
    def encode(
        table: wp.array(dtype=wp.float32),  # [rows * features]
        levels: wp.array2d(dtype=wp.int32),
        points: wp.array(dtype=wp.float32),  # [n * 3]
        encoded: wp.array(dtype=wp.float32),  # [n * levels * features]
        n: int,
        count: int,
        level0: int,
        block0: int,
    ):
        lv, b = wp.tid()
        encode_lanes(table, levels, points, encoded, n, count, level0 + lv, block0 + b)

    try:
        wp.load_module(encode.module, device="cpu")
    except Exception as error:  # Warp raises a bare Exception when its CPU build fails
        warnings.warn(
            f"headfields.backends.cpu.hashgrid_lanes: Warp {wp.__version__} could not build the hash grid's SIMD encoding "
            f"({error}); the CPU encodes with Warp's kernel (about half as fast).",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    return encode


def encode_in_lanes(
    kernel: wp.Kernel,
    table: Float[Tensor, "R F"],
    levels: Int[Tensor, "L 4"],
    points: Float[Tensor, "N 3"],
    out: Float[Tensor, "N L F"],
) -> None:
    """Write the encoding of ``points`` (contiguous float32 on the CPU, checked by the caller) into ``out`` by
    ``kernel`` (:func:`lane_kernel`): each level's blocks of LANES points split over the CPU's threads."""
    n, count = points.shape[0], levels.shape[0]
    shared = [table.reshape(-1), levels, points.reshape(-1), out.view(-1), n, count]
    kernels.launch_grid(kernel, count, -(-n // LANES), shared, torch.device("cpu"), split="rows")
