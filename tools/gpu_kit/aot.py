"""Warp's sm_90 kernels of headfields compiled ahead, on a machine without a GPU (Warp carries NVRTC), into a kernel
cache the lent GPU machine reads (``WARP_CACHE_PATH``), so a lease's minutes measure rather than compile. Every
module of the package is imported (its kernels defined) and the per-size variants the recipes use are made; each
Warp module that holds kernels is then compiled for ``--arch`` with its default options. A variant made only on the
GPU (another block size, a generic kernel's other types) is still compiled there, on first use.

    python tools/gpu_kit/aot.py --cache .gpu_kit/kernels          # prepare.sh runs it; about a minute on 2 cores
    WARP_CACHE_PATH=/tmp/kit/kernels python ...                    # on the GPU machine (unpack.sh sets it)
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time
from pathlib import Path


def define_kernels() -> None:
    """Import every module of headfields, then make the kernels its factories make on first use: the hash grid's by
    features and table type, and the float32 kernels of the GPU's paths (each its own Warp module)."""
    import warp as wp

    import headfields
    from headfields.encoders import hashgrid, spherical_harmonics
    from headfields.renderers import early_stop, gaussian_blocks, gaussian_kernels, round_kernels

    for found in pkgutil.walk_packages(headfields.__path__, "headfields."):
        if ".experimental" not in found.name and not found.name.endswith("__main__"):  # (__main__ runs the CLI)
            importlib.import_module(found.name)
    for features in (1, 2, 4, 8):
        for dtype in hashgrid.TABLE_DTYPES:
            hashgrid._kernels(features, dtype)
    factories = (
        spherical_harmonics._kernel, gaussian_kernels.pixel_kernels, gaussian_blocks.block_kernels,
        early_stop._kernels, round_kernels._kernels,
    )  # fmt: skip
    for factory in factories:
        factory(wp.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, required=True, help="the kernel cache folder to fill (carried to the GPU)")
    parser.add_argument("--arch", type=int, default=90, help="the GPU architecture (90: H100, H200)")
    parser.add_argument("--only", default="headfields", help="the kernels of Python modules whose names start so")
    args = parser.parse_args(argv)
    import warp as wp

    wp.config.kernel_cache_dir = str(args.cache.resolve())  # before init: the cache this run fills
    wp.config.quiet = True
    wp.init()
    define_kernels()
    from warp._src.context import user_modules  # Warp's registry of the modules that define kernels

    start, compiled, failed = time.perf_counter(), [], []
    for name, module in sorted(user_modules.items()):
        sources = {kernel.func.__module__ for kernel in module.kernels.values()}  # (a factory's kernel: its own module)
        if not any(s.startswith(args.only) and ".experimental" not in s for s in sources):
            continue
        try:
            wp.compile_aot_module(module, arch=args.arch)
            compiled.append(name)
        except Exception as error:  # noqa: BLE001 (one module that does not compile leaves it to the GPU)
            failed.append(f"{name}: {type(error).__name__}: {error}")
    files = list(args.cache.rglob(f"*.sm{args.arch}.cubin")) + list(args.cache.rglob(f"*.sm{args.arch}.ptx"))
    size = sum(f.stat().st_size for f in files)
    seconds = time.perf_counter() - start
    print(f"{len(compiled)} modules for sm_{args.arch} in {seconds:.0f} s: {len(files)} binaries, {size / 1e6:.1f} MB")
    for line in failed:
        print("not compiled:", line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
