"""INSTA's frame under each of the inference renderer's knobs, in one process on one trained run: which change pays on
this device, measured before it is made.

    python tools/frame_variants.py outputs/gpu/insta                  # the run tools/gpu.py trained
    python tools/frame_variants.py outputs/gpu/insta --size 512 --repeats 5 --only "as is" "rounds twice as large"
    python tools/frame_variants.py outputs/gpu/insta --group fused    # "as is" and the fused decoders

A variant sets the library's own settings while it renders and puts them back after: a config field of the model's
hash grids, or a public module setting that the library reads at each call (``inference.ROUND_SAMPLES``,
``fused_nerf.TILE_ROWS``, ``geometry.mesh.BVH_LEAF_SIZE``; :func:`module_settings` refuses any other name). No
function of the library is replaced. The variants take turns, a render each a round, so that a drift of the machine
falls on all alike; a warm-up render of each comes first, and a variant that fails there is left out and named. Each
renders the held-out camera resized to ``--size`` (as ``benchmarks/render.py`` renders its frame: the run's chunk of
rays a call) at the scores' stop (transmittance 1e-4, float32) and as the viewer renders (1e-2, the MLPs' products in
bfloat16). Printed and written to ``--json``: the median milliseconds of each, and at the frame's own size the PSNR
against the held-out image and the largest pixel difference from "as is".

The variants, each a question a GPU has not answered yet (docs/results.md, "INSTA's 512² frame"):

- **rounds twice as large**: the round's budget of samples doubled, and the cap that bounds a GPU's uncapped round
  (the call's rays times ``MAX_ROUND_STEPS``) with it: on the CPU, 16 steps a ray a round;
- **float16 hash table**: the hash grid's kernels read a float16 rounding of the table (tiny-cuda-nn's default on
  CUDA), as ``HashGridConfig(table_dtype="float16")`` trains; a different image, to be weighed against the time;
- **BVH leaves of 2 (8) triangles**: the held-out head built again with ``geometry.mesh.BVH_LEAF_SIZE`` 2 (8), where
  Warp's meshes hold 4, for the deformer's nearest-face search (a third of the H200's frame). Where a sample's
  nearest point is an edge or a vertex, its faces tie and the tree picks one: a slightly different image. The CPU
  searches its own wide BVH, so there the variant changes nothing but the build;
- **fused decoder**: the density and colour MLPs in one Warp kernel a tile of samples
  (``experimental.fused_nerf``, the run's decoder opted in by ``fused_inference``) instead of torch's layers, their
  concatenations and activations (the H200's products, ReLUs and concatenations: a quarter of its frame); the viewer's
  frame with its hidden layers' products on bfloat16 tiles, as torch's layers round them. The same image within
  float32 (bfloat16) rounding. On CUDA, which refuses the kernel's float32 products (wrong there for INSTA's
  decoder), the scored frame keeps torch's layers and only the viewer's takes it. **fused decoder, 32-sample
  tiles**: the same with blocks of 32 samples (``fused_nerf.TILE_ROWS``; 64 by default): half the shared memory a
  block, twice the reads of the weights.

Two questions it asked before are answered or wait for a library argument: a cap of 8 steps a round on a GPU (the
H200's frame took 111 ms capped, 81 ms uncapped: ``renderers/inference.py``), and the mesh queries walked unsorted on
a GPU (the order is chosen inside ``TriangleMesh.query_order``, which has no switch a caller can set).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import statistics
import sys
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

import headfields.geometry.mesh as mesh_module
import headfields.renderers.inference as inference
from headfields.apps.runs import load_run
from headfields.cameras import resized_cameras
from headfields.encoders import HashGrid
from headfields.experimental import fused_nerf
from headfields.heads import tracked_head
from headfields.metrics import psnr
from headfields.networks import products_in
from headfields.parametric import Head
from headfields.renderers import EARLY_STOP_TRANSMITTANCE, INTERACTIVE_TRANSMITTANCE
from headfields.training.evaluation import render_pixels

# A variant: of the loaded run, a context within which it renders, giving the head it renders (the run's held-out head,
# or one built for it).
Variant = Callable[[Any], contextlib.AbstractContextManager[Head]]
SETTINGS = ("scores", "viewer")


@contextlib.contextmanager
def module_settings(module: ModuleType, **values: Any) -> Iterator[None]:
    """``module``'s public settings set to ``values`` within the block, put back after. Only a setting the library
    reads at each call and names in upper case (``TILE_ROWS``, ``ROUND_SAMPLES``): a private name, a function or a
    name the module lacks is refused, so that a variant can change a knob but never replace the library's code."""
    for name in values:
        if name.startswith("_") or not name.isupper() or not hasattr(module, name) or callable(getattr(module, name)):
            raise ValueError(f"{module.__name__}.{name}: not a public setting of the module")
    old = {name: getattr(module, name) for name in values}
    try:
        for name, value in values.items():
            setattr(module, name, value)
        yield
    finally:
        for name, value in old.items():
            setattr(module, name, value)


@contextlib.contextmanager
def _as_is(run) -> Iterator[Head]:
    yield run.eval_head


@contextlib.contextmanager
def _larger_rounds(run) -> Iterator[Head]:
    # A GPU's uncapped round is bounded by the call's rays times MAX_ROUND_STEPS too: doubled with the budget (the
    # least round, budget / MAX_ROUND_STEPS, stays).
    names = ("ROUND_SAMPLES", "ROUND_SAMPLES_GPU", "MAX_ROUND_STEPS")
    with module_settings(inference, **{name: 2 * getattr(inference, name) for name in names}):
        yield run.eval_head


@contextlib.contextmanager
def _half_table(run) -> Iterator[Head]:
    # HashGridConfig.table_dtype, which the grid reads at each call: the trained table, read in float16.
    grids = [m for m in run.model.modules() if isinstance(m, HashGrid)]
    if not grids:
        raise ValueError("float16 hash table: the model has no HashGrid")
    configs = [grid.config for grid in grids]
    try:
        for grid, config in zip(grids, configs, strict=True):
            grid.config = dataclasses.replace(config, table_dtype="float16")
        yield run.eval_head
    finally:
        for grid, config in zip(grids, configs, strict=True):
            grid.config = config


def _fused(rows: int) -> Variant:
    @contextlib.contextmanager
    def fused(run) -> Iterator[Head]:
        with module_settings(fused_nerf, TILE_ROWS=rows), fused_nerf.fused_inference(run.model.field.decoder):
            yield run.eval_head

    return fused


def _leaves(size: int) -> Variant:
    # The held-out head built again, once, its mesh's Warp BVHs built under this leaf size (BVH_LEAF_SIZE is read when
    # a mesh builds them) before any render is timed. Its vertices never move, so the BVHs are never rebuilt.
    heads: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # the run's model -> its head of this leaf size

    @contextlib.contextmanager
    def leaves(run) -> Iterator[Head]:
        if run.model not in heads:
            with module_settings(mesh_module, BVH_LEAF_SIZE=size):
                head = tracked_head(run.model.parametric, run.subject.eval)
                head.posed_mesh.warp_mesh_ids()
            heads[run.model] = head
        yield heads[run.model]

    return leaves


VARIANTS: dict[str, Variant] = {
    "as is": _as_is,
    "rounds twice as large": _larger_rounds,
    "float16 hash table": _half_table,
    "BVH leaves of 2 triangles": _leaves(2),
    "BVH leaves of 8 triangles": _leaves(8),
    "fused decoder": _fused(fused_nerf.TILE_ROWS),
    "fused decoder, 32-sample tiles": _fused(32),
}


# Which variants --group runs: tools/gpu.py runs the fused decoders apart, after the others, since their first
# call compiles cuBLASDx products whose time on a GPU is not known yet.
GROUPS: dict[str, Callable[[str], bool]] = {
    "all": lambda name: True,
    "knobs": lambda name: not name.startswith("fused decoder"),
    "fused": lambda name: name.startswith("fused decoder"),
}


def frame(run, head: Head, cameras, early_stop: float = EARLY_STOP_TRANSMITTANCE) -> torch.Tensor:
    """The inference renderer's image through camera 0 of ``cameras`` (the held-out cameras, resized) of held-out frame
    0 of ``head``, the run's ``render_chunk`` rays a call: the frame ``benchmarks/render.py`` times."""

    def render(rays):  # camera 0 sees held-out frame 0's head
        return run.model.render_rays(dataclasses.replace(rays, frame=torch.zeros_like(rays.frame)), head, early_stop)

    return render_pixels(render, cameras, 0, run.config.training.render_chunk)


def render(run, head: Head, cameras, setting: str) -> torch.Tensor:
    """The frame at the scores' stop (float32) or as the viewer renders it (1e-2, bfloat16 products)."""
    if setting == "scores":
        return frame(run, head, cameras)
    with products_in("bfloat16"):
        return frame(run, head, cameras, INTERACTIVE_TRANSMITTANCE)


def timed(work: Callable[[], Any]) -> float:
    """``work()``'s seconds, the GPU's queue drained before and after (its kernels run after the call returns)."""
    synchronize = torch.cuda.synchronize if torch.cuda.is_available() and torch.cuda.is_initialized() else lambda: None
    synchronize()
    start = time.perf_counter()
    work()
    synchronize()
    return time.perf_counter() - start


def warmed_up(run, names: list[str], size: int, device: torch.device) -> dict[str, str]:
    """Each variant rendered once at ``size`` in each setting (Warp's compilations, the BVHs' builds); a variant that
    raises is left out of what follows, and its error returned by name: one variant that fails to compile on a
    device (a kernel's tiles, say) costs its own row, not the run's table."""
    cameras = resized_cameras(run.subject.eval.cameras, size, size).to(device)
    failed = {}
    for name in names:
        try:
            for setting in SETTINGS:
                with VARIANTS[name](run) as head:
                    render(run, head, cameras, setting)
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
                with VARIANTS[name](run) as head:
                    seconds[(name, setting)].append(timed(functools.partial(render, run, head, cameras, setting)))
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
            with VARIANTS[name](run) as head:
                shown[name] = render(run, head, cameras, setting).clamp(0, 1)
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
    parser.add_argument("run", type=Path, help="a trained INSTA run folder (tools/gpu.py's OUT/insta)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--only", nargs="+", choices=list(VARIANTS), default=None, help="these variants")
    which.add_argument("--group", choices=list(GROUPS), default="all", help="the variants of this group")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    for flag, value in (("--size", args.size), ("--repeats", args.repeats)):
        if value < 1:
            parser.error(f"{flag}: expected a positive integer, got {value}")
    chosen = args.only if args.only is not None else [n for n in VARIANTS if GROUPS[args.group](n)]
    names = ["as is"] + [n for n in chosen if n != "as is"]  # "as is" first: the reference image
    device = torch.device(args.device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    print(f"torch {torch.__version__}, {gpu or 'CPU'}, {torch.get_num_threads()} threads; {args.run}", flush=True)
    run = load_run(args.run, device)
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
        args.json.write_text(json.dumps({"info": info, "variants": result, "failed": failed}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
