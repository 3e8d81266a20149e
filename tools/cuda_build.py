"""INSTA's fused decoder kernels (``experimental.fused_nerf``), or the Gaussian rasteriser's block-cooperative blend
(``renderers.gaussian_blocks``), compiled for a GPU ahead of time, on any machine: Warp ships NVRTC and cuBLASDx, so no
GPU is needed. For each kernel: whether it builds for the architecture, how long the compile took, and the shared
memory a block asks against what the architecture lets a block have.

    python tools/cuda_build.py                            # INSTA's paper decoder for sm_90 (H100, H200)
    python tools/cuda_build.py --arch 89 --recipe cpu     # a GeForce RTX 40 card, the CPU recipe's decoder
    python tools/cuda_build.py --kernels gaussians        # the rasteriser's blend, forward and backward, both precisions
    python tools/cuda_build.py --cache /tmp/wc            # into a Warp kernel cache that a GPU machine reads

A GPU compiles these kernels at their first launch, a minute or more each on a 2-core VM (cuBLASDx's products are
linked in), which on a lent GPU is device time spent compiling. ``--cache DIR`` writes them, as PTX and as cubin
(Warp picks one by the driver's version), into the Warp kernel cache under ``DIR``: the same code and Warp version on
the GPU machine, run with ``WARP_CACHE_PATH=DIR``, then load them instead of compiling them. The kernels are those
``tools/frame_variants.py --group fused`` renders with: the lips condition gathered, density and colour, at the
scores' float32 and the viewer's bfloat16, for each ``--rows`` (not the density-only kernels, which INSTA's frame does
not ask for). A kernel that does not build is reported with its error, and the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

# A block's shared memory at most, opted in, by compute capability (the CUDA C++ Programming Guide's table of
# technical specifications, "Maximum amount of shared memory per thread block"), in KB: the architectures Warp 1.19's
# NVRTC compiles for (from sm_75).
BLOCK_SHARED_KB = {75: 64, 80: 163, 86: 99, 87: 163, 89: 99, 90: 227, 100: 227, 120: 99}


def decoder_shape(recipe: str):
    """The ``fused_nerf`` shape of INSTA's decoder as ``recipe``'s config builds it (the model's own arithmetic:
    the hash grid's width, the spherical harmonics', the expression's)."""
    from headfields.decoders import NerfDecoder
    from headfields.encoders import HashGrid, SphericalHarmonics
    from headfields.experimental.fused_nerf import _shape
    from headfields.models.insta import cpu_config, paper_config

    c = paper_config() if recipe == "paper" else cpu_config()
    grid, directions = HashGrid(c.hash_grid), SphericalHarmonics(c.sh_degree)
    return _shape(NerfDecoder(grid.out_dim, directions.out_dim, c.expression_dims, c.decoder))


def fits(shared_bytes: int, arch: int, threads: int | None = None) -> bool:
    """Whether a block asking ``shared_bytes`` for its tiles fits ``arch``, by ``fused_nerf``'s own rule (the rule that
    picks its tile on a GPU: Warp's static 4 bytes a thread on top), for a block of ``threads`` (None: the fused
    decoder's); an architecture the table does not name raises."""
    from headfields.experimental.fused_nerf import BLOCK_THREADS, _fits_block

    if arch not in BLOCK_SHARED_KB:
        raise ValueError(f"arch: expected one of {sorted(BLOCK_SHARED_KB)}, got {arch}")
    extra = 0 if threads is None else 4 * (threads - BLOCK_THREADS)  # _fits_block counts the decoder's block
    return _fits_block(shared_bytes + extra, BLOCK_SHARED_KB[arch] * 1024)


def _compile(module, block_dim: int, arch: int, cache: Path | None) -> dict:
    """Compile ``module`` at ``block_dim`` for ``arch`` (cubin; with ``cache``, PTX and cubin into it): the seconds and
    the shared memory a block of it asks (from the metadata the compile wrote), or the error where it does not build."""
    import warp as wp

    folder = None if cache is not None else tempfile.mkdtemp(prefix="cuda_build_")
    block = module.options["block_dim"]
    module.options["block_dim"] = block_dim  # the block the launches load it at: part of its hash
    start = time.perf_counter()
    try:
        for use_ptx in (True, False) if cache is not None else (False,):
            (binary,) = wp.compile_aot_module(module, arch=arch, module_dir=folder, use_ptx=use_ptx)
        meta = json.loads(next(Path(binary).parent.glob("*.meta")).read_text())
        shared = max(v for k, v in meta.items() if k.endswith("_forward_smem_bytes"))
        return {"seconds": round(time.perf_counter() - start, 1), "shared_bytes": shared}
    except Exception as error:  # a kernel that does not build is a finding, not the end of the run
        return {"error": f"{type(error).__name__}: {error}"}
    finally:
        module.options["block_dim"] = block
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def build(recipe: str, archs: list[int], rows: list[int], cache: Path | None) -> list[dict]:
    """Compile each fused decoder kernel for each architecture (cubin; with ``cache``, PTX and cubin into it, the
    seconds of both, none where the cache had them); a row each, a kernel that does not build named with its error."""
    from headfields.experimental.fused_nerf import BLOCK_THREADS, _kernel

    shape, out = decoder_shape(recipe), []
    for arch in archs:
        for r in rows:
            for reduced in (False, True):
                module = _kernel(shape, True, r, reduced, True).module
                row = {"recipe": recipe, "rows": r, "precision": "bfloat16" if reduced else "float32", "arch": arch}
                row |= _compile(module, BLOCK_THREADS, arch, cache)
                if "error" not in row:
                    row["fits"] = fits(row["shared_bytes"], arch)
                print(json.dumps(row), flush=True)
                out.append(row)
    return out


def build_gaussians(archs: list[int], cache: Path | None) -> list[dict]:
    """Compile the Gaussian rasteriser's block-cooperative kernels (forward and backward, float32 and float64) for each
    architecture at the block they launch at, as :func:`build` does the decoder's; a row each."""
    import warp as wp

    from headfields.renderers.gaussian_blocks import BLOCK, block_kernels

    out = []
    for arch in archs:
        for scalar in (wp.float32, wp.float64):
            for name, kernel in zip(("forward", "backward"), block_kernels(scalar), strict=True):
                row = {"recipe": "gaussians", "rows": name, "precision": scalar.__name__, "arch": arch}
                row |= _compile(kernel.module, BLOCK, arch, cache)
                if "error" not in row:
                    row["fits"] = fits(row["shared_bytes"], arch, BLOCK)
                print(json.dumps(row), flush=True)
                out.append(row)
    return out


def table(rows: list[dict]) -> str:
    """The rows as a markdown table (a decoder's recipe and tile, or "gaussians" and the pass)."""
    lines = ["| kernels | tile or pass | precision | arch | compile | shared memory a block | the arch's most | fits |"]
    lines.append("|---|---:|---|---:|---:|---:|---:|---|")
    for r in rows:
        head = f"| {r['recipe']} | {r['rows']} | {r['precision']} | sm_{r['arch']} |"
        most = f"{BLOCK_SHARED_KB[r['arch']]} KB"
        if "error" in r:
            lines.append(f"{head} does not build: {r['error'][:200]} | | {most} | |")
        else:
            fit = "yes" if r["fits"] else "no"
            lines.append(f"{head} {r['seconds']:.0f} s | {r['shared_bytes']:,} B | {most} | {fit} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=int, nargs="+", default=[90], choices=sorted(BLOCK_SHARED_KB))
    parser.add_argument("--kernels", choices=("decoder", "gaussians"), default="decoder", help="which kernels to build")
    parser.add_argument("--recipe", choices=("paper", "cpu"), default="paper", help="INSTA's config whose decoder")
    parser.add_argument("--rows", type=int, nargs="+", default=[64, 32], help="samples a tile (fused_nerf.TILE_ROWS)")
    parser.add_argument("--cache", type=Path, help="a Warp kernel cache folder to write into (WARP_CACHE_PATH)")
    args = parser.parse_args(argv)
    if any(r < 1 for r in args.rows):
        parser.error(f"--rows: expected positive sizes, got {args.rows}")
    if args.cache is not None:  # read when Warp initialises, which importing headfields does
        if "warp" in sys.modules:
            raise RuntimeError("--cache: Warp is imported already; run this script in a process of its own")
        os.environ["WARP_CACHE_PATH"] = str(args.cache)
    if args.kernels == "gaussians":
        rows = build_gaussians(args.arch, args.cache)
    else:
        rows = build(args.recipe, args.arch, args.rows, args.cache)
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()
