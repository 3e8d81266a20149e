"""INSTA's frame under each of the inference renderer's knobs, in one process on one trained run: which change pays on
this device, measured before it is made.

    python benchmarks/frame_variants.py outputs/gpu/insta                  # the run benchmarks/gpu.py trained
    python benchmarks/frame_variants.py outputs/gpu/insta --size 512 --repeats 5 --only "as is" "rounds twice as large"

A variant patches module-level knobs while it renders and puts them back after (``unittest.mock.patch``): nothing is
changed for good. The variants take turns, a render each a round, so that a drift of the machine falls on all alike;
the first round is a warm-up. Each renders the held-out camera resized to ``--size`` (``render.py``'s
``held_out_frame``: the run's chunk of rays a call) at the scores' stop (transmittance 1e-4, float32) and as the
viewer renders (1e-2, the MLPs' products in bfloat16). Printed and written to ``--json``: the median milliseconds of
each, and at the frame's own size the PSNR against the held-out image and the largest pixel difference from "as is".

The variants, each a question a GPU has not answered yet (docs/benchmarks.md, "INSTA's 512² frame on a GPU"):

- **queries unsorted**: the deformer walks the samples in the rays' order, as the CPU does for packed samples, instead
  of sorting them along a Morton curve first (2% of the H200's frame);
- **steps capped at 8**: instant-ngp's cap on a ray's steps a round, the rule before 179fecd (on the CPU: as is);
- **rounds twice as large**: the round's budget of samples doubled (``ROUND_SAMPLES_GPU``, ``ROUND_SAMPLES``);
- **float16 hash table**: the hash grid's kernels read a float16 rounding of the table (tiny-cuda-nn's default on
  CUDA), as ``HashGridConfig(table_dtype="float16")`` trains; a different image, to be weighed against the time;
- **BVH leaves of 2 (8) triangles**: Warp's BVHs of the posed mesh rebuilt with ``geometry.mesh.BVH_LEAF_SIZE`` 2 (8),
  where Warp's meshes hold 4, for the deformer's nearest-face search (a third of the H200's frame). Where a sample's
  nearest point is an edge or a vertex, its faces tie and the tree picks one: a slightly different image. The CPU
  searches its own wide BVH, so there the variant changes nothing but the build.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import torch

import headfields.geometry.mesh as mesh_module
import headfields.renderers.inference as inference
from headfields.encoders import HashGrid
from headfields.geometry import TriangleMesh
from headfields.metrics import psnr
from headfields.networks import products_in
from headfields.renderers import INTERACTIVE_TRANSMITTANCE
from headfields.renderers.camera_paths import resized_cameras
from headfields.runs import load_run

from render import held_out_frame

Variant = Callable[[Any], contextlib.AbstractContextManager]  # of the loaded run (its model, its held-out head)


@contextlib.contextmanager
def _unsorted(run) -> Iterator[None]:
    def ray_order(mesh: TriangleMesh, queries: torch.Tensor, frame: torch.Tensor, always_sorted: bool = False):
        return torch.arange(queries.shape[0], device=queries.device)

    with mock.patch.object(TriangleMesh, "query_order", ray_order):
        yield


@contextlib.contextmanager
def _capped(run) -> Iterator[None]:
    with mock.patch.object(inference, "_step_cap", lambda device: inference.MAX_ROUND_STEPS):
        yield


@contextlib.contextmanager
def _larger_rounds(run) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for name in ("ROUND_SAMPLES", "ROUND_SAMPLES_GPU"):
            stack.enter_context(mock.patch.object(inference, name, 2 * getattr(inference, name)))
        yield


@contextlib.contextmanager
def _half_table(run) -> Iterator[None]:
    grids = [m for m in run.model.modules() if isinstance(m, HashGrid)]
    if not grids:
        raise ValueError("float16 hash table: the model has no HashGrid")
    with contextlib.ExitStack() as stack:
        for grid in grids:
            stack.enter_context(mock.patch.object(grid, "config", dataclasses.replace(grid.config, table_dtype="float16")))
        yield


def _leaves(size: int) -> Variant:
    built: dict[int, tuple] = {}  # the mesh's BVHs of this leaf size, built on first use: no build in a timed render

    @contextlib.contextmanager
    def leaves(run) -> Iterator[None]:
        mesh = run.eval_head.posed_mesh  # the deformer's source mesh
        own = mesh._meshes, mesh._mesh_ids
        mesh._meshes, mesh._mesh_ids = built.get(id(mesh), ([], None))
        try:
            with mock.patch.object(mesh_module, "BVH_LEAF_SIZE", size):
                mesh.warp_mesh_ids()  # built (or refit) here, before the render is timed
                built[id(mesh)] = mesh._meshes, mesh._mesh_ids
                yield
        finally:
            mesh._meshes, mesh._mesh_ids = own

    return leaves


VARIANTS: dict[str, Variant] = {
    "as is": lambda run: contextlib.nullcontext(),
    "queries unsorted": _unsorted,
    "steps capped at 8": _capped,
    "rounds twice as large": _larger_rounds,
    "float16 hash table": _half_table,
    "BVH leaves of 2 triangles": _leaves(2),
    "BVH leaves of 8 triangles": _leaves(8),
}
SETTINGS = ("scores", "viewer")


def render(run, cameras, setting: str) -> torch.Tensor:
    """The frame at the scores' stop (float32) or as the viewer renders it (1e-2, bfloat16 products)."""
    if setting == "scores":
        return held_out_frame(run, cameras)
    with products_in("bfloat16"):
        return held_out_frame(run, cameras, None, INTERACTIVE_TRANSMITTANCE)


def timed(run, cameras, setting: str, device: torch.device) -> float:
    """Seconds of one :func:`render`, the GPU's queue drained before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    render(run, cameras, setting)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def compare(run, names: list[str], size: int, repeats: int, device: torch.device) -> dict:
    """Each variant's median ms a frame at ``size`` (after a warm-up round), then its images at the frame's own size."""
    frames = run.subject.eval
    cameras = resized_cameras(frames.cameras, size, size).to(device)
    seconds: dict[tuple[str, str], list[float]] = {(n, s): [] for n in names for s in SETTINGS}
    for round_ in range(repeats + 1):
        for name in names:
            for setting in SETTINGS:
                with VARIANTS[name](run):
                    t = timed(run, cameras, setting, device)
                if round_ > 0:
                    seconds[(name, setting)].append(t)
    own, truth = frames.cameras.to(device), frames.images[0].float().to(device) / 255
    result = {}
    for setting in SETTINGS:
        images = {}
        for name in names:
            with VARIANTS[name](run):
                images[name] = render(run, own, setting).clamp(0, 1)
        reference = images[names[0]]
        for name in names:
            result.setdefault(name, {})[setting] = {
                "ms": 1000 * statistics.median(seconds[(name, setting)]),
                "psnr": float(psnr(images[name], truth)),
                "max_difference": float((images[name] - reference).abs().max()),
            }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a trained INSTA run folder (benchmarks/gpu.py's OUT/insta)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    if args.size < 1 or args.repeats < 1:
        parser.error("--size and --repeats: expected positive integers")
    names = ["as is"] + [n for n in args.only if n != "as is"]  # "as is" first: the reference image
    device = torch.device(args.device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    print(f"torch {torch.__version__}, {gpu or 'CPU'}, {torch.get_num_threads()} threads; {args.run}", flush=True)
    result = compare(load_run(args.run, device), names, args.size, args.repeats, device)
    print(f"\n| variant | scores ms ({args.size}²) | viewer ms | scores: vs as is | viewer: vs as is | PSNR (scores) | "
          "largest pixel difference (scores) | (viewer) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    base = result["as is"]
    for name in names:
        s, v = result[name]["scores"], result[name]["viewer"]
        print(f"| {name} | {s['ms']:,.1f} | {v['ms']:,.1f} | {base['scores']['ms'] / s['ms']:.2f}x | "
              f"{base['viewer']['ms'] / v['ms']:.2f}x | {s['psnr']:.3f} dB | {s['max_difference']:.1e} | "
              f"{v['max_difference']:.1e} |")  # fmt: skip
    if args.json is not None:
        info = {"device": gpu or "cpu", "size": args.size, "repeats": args.repeats, "run": str(args.run)}
        args.json.write_text(json.dumps({"info": info, "variants": result}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
