"""INSTA's frame under each of the inference renderer's knobs, in one process on one trained run: which change pays on
this device, measured before it is made.

    python benchmarks/frame_variants.py outputs/gpu/insta                  # the run benchmarks/gpu.py trained
    python benchmarks/frame_variants.py outputs/gpu/insta --size 512 --repeats 5 --only "as is" "rounds twice as large"
    python benchmarks/frame_variants.py outputs/gpu/insta --group fused    # "as is" and the fused decoders
    python benchmarks/frame_variants.py outputs/gpu/insta --device cpu --cuda-rules  # the GPU's rules, on the CPU

A variant patches module-level knobs while it renders and puts them back after (``unittest.mock.patch``): nothing is
changed for good. The variants take turns, a render each a round, so that a drift of the machine falls on all alike;
a warm-up render of each comes first, and a variant that fails there is left out and named. Each renders the
held-out camera resized to ``--size`` (``render.py``'s ``held_out_frame``: the run's chunk of rays a call) at the
scores' stop (transmittance 1e-4, float32) and as the viewer renders (1e-2, the MLPs' products in bfloat16). Printed
and written to ``--json``: the median milliseconds of each, and at the frame's own size the PSNR against the held-out
image and the largest pixel difference from "as is".
``--cuda-rules`` renders every variant under the GPU's rules (``render.cuda_rules``: the queries sorted, the GPU's
rounds): on the CPU, "as is" is then what a GPU runs, and the variants differ from it as they would there.

The variants, each a question a GPU has not answered yet (docs/results.md, "INSTA's 512² frame"):

- **queries unsorted**: the mesh queries that may come in any order (the deformer's, a shell's) walked as they come,
  the rays' order for a renderer's samples, instead of sorted along a Morton curve first (2% of the H200's frame); the
  k-nearest-vertex search keeps its sort, as on the CPU. The same image: each query's search is its own;
- **steps capped at 8**: instant-ngp's cap on a ray's steps a round, the rule before 179fecd (the CPU's rule);
- **rounds twice as large**: the round's budget of samples doubled, and the cap that bounds a GPU's uncapped round
  (the call's rays times ``MAX_ROUND_STEPS``) with it: on the CPU, 16 steps a ray a round;
- **float16 hash table**: the hash grid's kernels read a float16 rounding of the table (tiny-cuda-nn's default on
  CUDA), as ``HashGridConfig(table_dtype="float16")`` trains; a different image, to be weighed against the time;
- **BVH leaves of 2 (8) triangles**: Warp's BVHs of the posed mesh rebuilt with ``geometry.mesh.BVH_LEAF_SIZE`` 2 (8),
  where Warp's meshes hold 4, for the deformer's nearest-face search (a third of the H200's frame). Where a sample's
  nearest point is an edge or a vertex, its faces tie and the tree picks one: a slightly different image. The CPU
  searches its own wide BVH, so there the variant changes nothing but the build;
- **fused decoder**: the density and colour MLPs in one Warp kernel a tile of samples
  (``decoders.fused_nerf``, on the run's device: ``FUSED_DEVICE_TYPES``) instead of torch's layers, their
  concatenations and activations (the H200's products, ReLUs and concatenations: a quarter of its frame); the viewer's
  frame with its hidden layers' products on bfloat16 tiles, as torch's layers round them. The same image within
  float32 (bfloat16) rounding. On CUDA, which refuses the kernel's float32 products (wrong there for INSTA's
  decoder), the scored frame keeps torch's layers and only the viewer's takes it. **fused decoder, 32-sample
  tiles**: the same with blocks of 32 samples (``fused_nerf.TILE_ROWS``; 64 by default): half the shared memory a
  block, twice the reads of the weights.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import statistics
import sys
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import torch

import headfields.geometry.mesh as mesh_module
import headfields.renderers.inference as inference
from headfields.decoders import fused_nerf
from headfields.encoders import HashGrid
from headfields.geometry import TriangleMesh
from headfields.metrics import psnr
from headfields.networks import products_in
from headfields.renderers import INTERACTIVE_TRANSMITTANCE
from headfields.renderers.camera_paths import resized_cameras
from headfields.runs import load_run

from render import cuda_rules, held_out_frame, timed

Variant = Callable[[Any], contextlib.AbstractContextManager]  # of the loaded run (its model, its held-out head)
SETTINGS = ("scores", "viewer")


@contextlib.contextmanager
def _unsorted(run) -> Iterator[None]:
    sorted_order = TriangleMesh.query_order

    def as_they_come(mesh: TriangleMesh, queries: torch.Tensor, frame: torch.Tensor, always_sorted: bool = False):
        if always_sorted:  # the k-nearest search's warm start wants the sort
            return sorted_order(mesh, queries, frame, always_sorted)
        return torch.arange(queries.shape[0], device=queries.device)

    with mock.patch.object(TriangleMesh, "query_order", as_they_come):
        yield


@contextlib.contextmanager
def _capped(run) -> Iterator[None]:
    with mock.patch.object(inference, "_step_cap", lambda device: inference.MAX_ROUND_STEPS):
        yield


@contextlib.contextmanager
def _larger_rounds(run) -> Iterator[None]:
    # A GPU's uncapped round is bounded by the call's rays times MAX_ROUND_STEPS too: doubled with the budget (the
    # least round, budget / MAX_ROUND_STEPS, stays).
    with contextlib.ExitStack() as stack:
        for name in ("ROUND_SAMPLES", "ROUND_SAMPLES_GPU", "MAX_ROUND_STEPS"):
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


def _fused(rows: int) -> Variant:
    @contextlib.contextmanager
    def fused(run) -> Iterator[None]:
        device = run.model.field.decoder.density_net[0].weight.device.type
        with mock.patch.object(fused_nerf, "FUSED_DEVICE_TYPES", (device,)), mock.patch.object(fused_nerf, "TILE_ROWS", rows):
            yield

    return fused


def _leaves(size: int) -> Variant:
    # Each mesh's Warp BVHs of this leaf size, built on first use (no build in a timed render) and swapped in while the
    # variant renders. The held-out head's vertices never move, so neither set goes stale: a mesh refits only the set
    # it holds.
    built: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @contextlib.contextmanager
    def leaves(run) -> Iterator[None]:
        mesh = run.eval_head.posed_mesh  # the deformer's source mesh
        own = mesh._meshes, mesh._mesh_ids
        mesh._meshes, mesh._mesh_ids = built.get(mesh, ([], None))
        try:
            with mock.patch.object(mesh_module, "BVH_LEAF_SIZE", size):
                mesh.warp_mesh_ids()  # built on first use, before the render is timed
                built[mesh] = mesh._meshes, mesh._mesh_ids
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
    "fused decoder": _fused(fused_nerf.TILE_ROWS),
    "fused decoder, 32-sample tiles": _fused(32),
}


# Which variants --group runs: benchmarks/gpu.py runs the fused decoders apart, after the others, since their first
# call compiles cuBLASDx products whose time on a GPU is not known yet.
GROUPS: dict[str, Callable[[str], bool]] = {
    "all": lambda name: True,
    "knobs": lambda name: not name.startswith("fused decoder"),
    "fused": lambda name: name.startswith("fused decoder"),
}


def render(run, cameras, setting: str) -> torch.Tensor:
    """The frame at the scores' stop (float32) or as the viewer renders it (1e-2, bfloat16 products)."""
    if setting == "scores":
        return held_out_frame(run, cameras)
    with products_in("bfloat16"):
        return held_out_frame(run, cameras, None, INTERACTIVE_TRANSMITTANCE)


def warmed_up(run, names: list[str], size: int, device: torch.device) -> dict[str, str]:
    """Each variant rendered once at ``size`` in each setting (Warp's compilations, the BVHs' builds); a variant that
    raises is left out of what follows, and its error returned by name: one variant that fails to compile on a
    device (a kernel's tiles, say) costs its own row, not the run's table."""
    cameras = resized_cameras(run.subject.eval.cameras, size, size).to(device)
    failed = {}
    for name in names:
        try:
            for setting in SETTINGS:
                with VARIANTS[name](run):
                    render(run, cameras, setting)
        except Exception as error:  # noqa: BLE001 (reported, and the other variants go on)
            if name == "as is":
                raise
            failed[name] = f"{type(error).__name__}: {error}".splitlines()[0][:300]
            print(f"{name}: failed, left out ({failed[name]})", flush=True)
    return failed


def median_ms(run, names: list[str], size: int, repeats: int, device: torch.device) -> dict[tuple[str, str], float]:
    """Each variant's median ms a frame at ``size`` and each setting, the variants taking turns a render each (warmed up
    first: :func:`warmed_up`)."""
    cameras = resized_cameras(run.subject.eval.cameras, size, size).to(device)
    seconds: dict[tuple[str, str], list[float]] = {(n, s): [] for n in names for s in SETTINGS}
    for _ in range(repeats):
        for name in names:
            for setting in SETTINGS:
                with VARIANTS[name](run):
                    _, t = timed(functools.partial(render, run, cameras, setting))
                seconds[(name, setting)].append(t)
    return {key: 1000 * statistics.median(values) for key, values in seconds.items()}


def images(run, names: list[str], device: torch.device) -> dict:
    """Each variant's PSNR at the frame's own size against the held-out image, and its largest pixel difference from
    the first variant's image, by setting."""
    frames = run.subject.eval
    cameras, truth = frames.cameras.to(device), frames.images[0].float().to(device) / 255
    result: dict = {}
    for setting in SETTINGS:
        shown = {}
        for name in names:
            with VARIANTS[name](run):
                shown[name] = render(run, cameras, setting).clamp(0, 1)
        for name in names:
            difference = float((shown[name] - shown[names[0]]).abs().max())
            result.setdefault(name, {})[setting] = {"psnr": float(psnr(shown[name], truth)), "max_difference": difference}
    return result


def table(result: dict, size: int) -> list[str]:
    """The printed table: each variant's times, their ratios to "as is", its PSNR and differences."""
    lines = [
        f"| variant | scores ms ({size}²) | viewer ms | scores: vs as is | viewer: vs as is | PSNR (scores) | "
        "largest pixel difference (scores) | (viewer) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = result["as is"]
    for name, r in result.items():
        s, v = r["scores"], r["viewer"]
        ratios = f"{base['scores']['ms'] / s['ms']:.2f}x | {base['viewer']['ms'] / v['ms']:.2f}x"
        differences = f"{s['max_difference']:.1e} | {v['max_difference']:.1e}"
        lines.append(f"| {name} | {s['ms']:,.1f} | {v['ms']:,.1f} | {ratios} | {s['psnr']:.3f} dB | {differences} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a trained INSTA run folder (benchmarks/gpu.py's OUT/insta)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--only", nargs="+", choices=list(VARIANTS), default=None, help="these variants")
    which.add_argument("--group", choices=list(GROUPS), default="all", help="the variants of this group")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--cuda-rules", action="store_true", help="the GPU's rules on any device (render.cuda_rules)")
    parser.add_argument("--json", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    for flag, value in (("--size", args.size), ("--repeats", args.repeats)):
        if value < 1:
            parser.error(f"{flag}: expected a positive integer, got {value}")
    chosen = args.only if args.only is not None else [n for n in VARIANTS if GROUPS[args.group](n)]
    names = ["as is"] + [n for n in chosen if n != "as is"]  # "as is" first: the reference image
    device = torch.device(args.device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    rules = " under the GPU's rules" if args.cuda_rules else ""
    print(f"torch {torch.__version__}, {gpu or 'CPU'}, {torch.get_num_threads()} threads; {args.run}{rules}", flush=True)
    run = load_run(args.run, device)
    with cuda_rules() if args.cuda_rules else contextlib.nullcontext():
        failed = warmed_up(run, names, args.size, device)
        names = [n for n in names if n not in failed]
        times = median_ms(run, names, args.size, args.repeats, device)
        result = images(run, names, device)
    for (name, setting), ms in times.items():
        result[name][setting]["ms"] = ms
    print("\n" + "\n".join(table(result, args.size)))
    for name, error in failed.items():
        print(f"left out: {name} ({error})")
    if args.json is not None:
        info = {"device": gpu or "cpu", "size": args.size, "repeats": args.repeats, "run": str(args.run)}
        info["cuda_rules"] = args.cuda_rules
        args.json.write_text(json.dumps({"info": info, "variants": result, "failed": failed}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
