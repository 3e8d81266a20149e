"""A training step's peak tensor memory, measured on the CPU on CUDA's code paths (``headfields.device_paths.cuda_paths``):
what a GPU's ``torch.cuda.max_memory_allocated`` would report for the step, less the allocator's rounding, and what
holds the bytes at the peak (the tensors saved for backward, by module; the live bytes, by the operation that made them).

    python tools/step_memory.py --model hyper_neus --rays 32 64 128   # the paper recipe; extrapolated to --extrapolate
    python tools/step_memory.py --model hyper_neus --recipe cpu --rays 64 --json memory.json
    python tools/step_memory.py --model hyper_neus --render-rays 1024 2048   # one render call's peak instead

A torch dispatch mode (:class:`StorageTracker`) sees every tensor an operation returns, forward, backward and optimiser;
a storage it has not seen is counted live from then until a weakref finalizer on the storage says it was freed (torch
keeps one Python object per storage, so the finalizer fires when the memory goes back). The peak is the most live bytes
at any point of the counted step, plus what was live before the step began and stays: the parameters, the buffers and
the optimiser's state (the gradients are counted where backward makes them). Bytes a kernel allocates and frees inside
itself (workspaces) are not seen, nor tensors made outside torch's dispatcher. ``saved_tensors_hooks`` tag the storages
autograd saves, with the module whose forward was running (forward hooks on the tool's own model).

The model is built as ``step_anatomy.py`` builds it (its registry recipe, on the small synthetic video) and trained by
``headfields.training.train`` with the recipe's training defaults and ``--rays`` rays a step; the step after
``--warmup`` steps is counted, between torch's optimiser-step hooks. A peak linear in the rays (it is, where nothing
but the rays grows) is fitted over the ``--rays`` given and extrapolated.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import weakref
from collections import Counter
from pathlib import Path

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from headfields.cameras import image_pixels, pixel_rays
from headfields.device_paths import cuda_paths
from headfields.heads import tracked_head
from headfields.training import train

from step_anatomy import RowCounter, _Closed, build

GIB = float(1 << 30)
# A new peak is broken down (a pass over the live storages) only when it passes the last breakdown by this share.
BREAKDOWN_STEP = 0.01


class StorageTracker(TorchDispatchMode):
    """Live bytes of the storages that the operations inside the block return, and their peak. Each storage is tagged
    (the module running when it was made, the operation, the phase); :attr:`at_peak` breaks the peak down by tag
    (the last peak that passed the one before by BREAKDOWN_STEP: within 1% of the peak)."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, tuple[int, str, str]] = {}  # storage -> (bytes, module, operation)
        self.saved: set[int] = set()  # storages autograd saved for backward
        self.resident: set[int] = set()  # storages live before the block (parameters, optimiser state): not counted
        self.current = self.peak = 0
        self.modules: list[str] = []
        self.phase = "forward"
        self.at_peak: dict = {}
        self._broken_down = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # An output on an input's storage (a view, an in-place or out= operation) allocated nothing.
        inputs = {t.untyped_storage()._cdata for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage()._cdata not in inputs:
                self.track(t, func.overloadpacket.__name__)
        return out

    def track(self, t: torch.Tensor, operation: str) -> int:
        """Count ``t``'s storage live (once) and return its key."""
        storage = t.untyped_storage()
        key = storage._cdata
        if key not in self.live and key not in self.resident:
            nbytes = storage.nbytes()
            where = self.where()
            self.live[key] = (nbytes, where, operation)
            weakref.finalize(storage, self._free, key)
            self.current += nbytes
            if self.current > self.peak:
                self.peak = self.current
                if self.current > self._broken_down * (1 + BREAKDOWN_STEP):
                    self.at_peak = self.break_down()
        return key

    def where(self) -> str:
        """What is running: a backward node (autograd.grad's inside the step too), else the innermost module of the
        forward, else the phase."""
        node = torch._C._current_autograd_node()
        if node is not None:
            return f"backward {node.name()}"
        return self.modules[-1] if self.modules and self.phase == "forward" else self.phase

    def _free(self, key: int) -> None:
        entry = self.live.pop(key, None)
        self.saved.discard(key)
        if entry is not None:
            self.current -= entry[0]

    def break_down(self) -> dict:
        """The live bytes now: by where and what made them, and those saved for backward by where they were made."""
        self._broken_down = self.current
        saved, made = Counter(), Counter()
        for key, (nbytes, where, operation) in self.live.items():
            made[f"{where}: {operation}"] += nbytes
            if key in self.saved:
                saved[where] += nbytes
        return {"bytes": self.current, "where": self.where(), "saved_by_module": saved, "live_by_operation": made}

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        """``saved_tensors_hooks``' pack: tag the storage (a saved parameter is not the step's)."""
        if not isinstance(t, nn.Parameter):
            self.saved.add(self.track(t, "saved"))
        return t

    def watch(self, model: nn.Module) -> list:
        """Forward hooks that keep :attr:`modules` (the running module's name) on ``model``'s modules."""

        def enter(label: str):
            def hook(module, args) -> None:
                self.modules.append(label)

            return hook

        def leave(module, args, output) -> None:
            self.modules.pop()

        handles = []
        for name, module in model.named_modules():
            handles.append(module.register_forward_pre_hook(enter(name or type(model).__name__)))
            handles.append(module.register_forward_hook(leave, always_call=True))
        return handles


def resident(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[int, int]:
    """The bytes of each storage of the parameters, their gradients, the buffers and the optimiser state: live
    across the step (the gradients but until the step's ``zero_grad``, before its peak)."""
    tensors = [*model.parameters(), *model.buffers()]
    if optimizer is not None:
        tensors += [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]
    storages = {t.untyped_storage()._cdata: t.untyped_storage().nbytes() for t in tensors}
    grads = {p.grad.untyped_storage()._cdata: 0 for p in model.parameters() if p.grad is not None}
    return {**grads, **storages}


def step_memory(name: str = "hyper_neus", recipe: str = "paper", rays: int = 64, warmup: int = 1, resolution: int = 32) -> dict:
    """Train model ``name`` with ``rays`` rays a step on CUDA's paths and measure step ``warmup + 1``: its peak bytes
    (resident plus the step's), and the breakdown at the peak."""
    entry, model, subject = build(name, recipe, 14, resolution)
    config = dataclasses.replace(
        entry.training_defaults(recipe), rays_per_batch=rays, samples_per_batch=None, max_iterations=warmup + 2,
        max_minutes=None, eval_every=0, checkpoint_every=0, log_every=10**9,
    )  # fmt: skip
    tracker, state, rows = StorageTracker(), {"n": 0}, RowCounter(model)
    handles = tracker.watch(model)
    saving = torch.autograd.graph.saved_tensors_hooks(tracker.pack, lambda t: t)

    def after_step(optimizer, args_, kwargs_) -> None:
        state["n"] += 1
        if state["n"] == warmup:
            storages = resident(model, optimizer)
            state["resident"], tracker.resident = sum(storages.values()), set(storages)
            rows.on = True
            tracker.phase = "forward"
            tracker.__enter__()
            saving.__enter__()
        elif state["n"] == warmup + 1:
            rows.on = False
            saving.__exit__(None, None, None)
            tracker.__exit__(None, None, None)
            raise _Closed

    def optimizing(*args) -> None:
        tracker.phase = "optimizer"

    hooks = [register_optimizer_step_post_hook(after_step), register_optimizer_step_pre_hook(optimizing)]
    try:
        with tempfile.TemporaryDirectory() as out, cuda_paths():
            train(model, subject.train, subject.eval, Path(out) / "run", config, log=None)
    except _Closed:
        pass
    finally:
        for h in hooks + handles:
            h.remove()
    if "resident" not in state or state["n"] < warmup + 1:
        raise RuntimeError(f"the run ended after {state['n']} steps, before the counted step {warmup + 1}")
    top = lambda counter, k=12: [(key, b / GIB) for key, b in counter.most_common(k)]  # noqa: E731
    peak = tracker.at_peak
    return {
        "model": name,
        "recipe": recipe,
        "rays": rays,
        "deformer_rows": rows.rows[("step", "deformer")],
        "peak_gib": (state["resident"] + tracker.peak) / GIB,
        "resident_gib": state["resident"] / GIB,
        "step_peak_gib": tracker.peak / GIB,
        "peak_where": peak.get("where"),
        "saved_at_peak_gib": sum(peak.get("saved_by_module", {}).values()) / GIB,
        "saved_by_module": top(peak.get("saved_by_module", Counter())),
        "live_by_operation": top(peak.get("live_by_operation", Counter())),
    }


def render_memory(name: str = "hyper_neus", recipe: str = "paper", rays: int = 1024, resolution: int = 32) -> dict:
    """The peak bytes of one ``render_rays`` call of ``rays`` rays (the evaluation's and the render command's call, on
    CUDA's paths, without gradients; the untrained model's rays stop no earlier than a trained one's), parameters
    aside, and the recipe's ``render_chunk``: the rays such a call gets."""
    entry, model, subject = build(name, recipe, 14, resolution)
    cameras, pixels = subject.train.cameras, image_pixels(subject.train.cameras)
    pick = torch.randint(0, len(pixels), (rays,), generator=torch.Generator().manual_seed(0))
    tracker = StorageTracker()
    tracker.resident = set(resident(model, None))
    with cuda_paths(), torch.no_grad():
        head = tracked_head(model.parametric, subject.train)
        with tracker:
            model.render_rays(pixel_rays(cameras, 0, pixels[pick]), head)
    return {"model": name, "recipe": recipe, "rays": rays, "peak_gib": tracker.peak / GIB,
            "render_chunk": entry.training_defaults(recipe).render_chunk}  # fmt: skip


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of ``ys`` on ``xs``."""
    n, mx, my = len(xs), sum(xs) / len(xs), sum(ys) / len(ys)
    if n < 2:
        return 0.0, my / mx
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


def print_figures(f: dict) -> None:
    print(f"{f['model']} ({f['recipe']} recipe), {f['rays']} rays a step: peak {f['peak_gib']:.3f} GiB "
          f"({f['resident_gib']:.3f} resident + {f['step_peak_gib']:.3f} the step's, in {f['peak_where']})")  # fmt: skip
    print(f"  rows through the deformer in the step: {f['deformer_rows']:,}")
    print(f"  saved for backward at the peak: {f['saved_at_peak_gib']:.3f} GiB; by module, most first:")
    for key, gib in f["saved_by_module"]:
        print(f"    {gib:8.3f} GiB  {key}")
    print("  live at the peak by where and what made it, most first:")
    for key, gib in f["live_by_operation"]:
        print(f"    {gib:8.3f} GiB  {key}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="hyper_neus")
    parser.add_argument("--recipe", default="paper")
    parser.add_argument("--rays", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--extrapolate", type=int, default=512, help="the rays a step the fit is extrapolated to")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--render-rays", type=int, nargs="*", default=[], help="instead: one render call's peak at these rays")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.render_rays:
        for rays in args.render_rays:
            f = render_memory(args.model, args.recipe, rays)
            print(f"{f['model']} ({f['recipe']} recipe): a render call of {rays:,} rays peaks at {f['peak_gib']:.3f} GiB "
                  f"(the recipe renders {f['render_chunk']:,} rays a call)")  # fmt: skip
        return
    figures = []
    for rays in args.rays:
        figures.append(step_memory(args.model, args.recipe, rays, args.warmup))
        print_figures(figures[-1])
    intercept, slope = linear_fit([f["rays"] for f in figures], [f["peak_gib"] for f in figures])
    extrapolated = intercept + slope * args.extrapolate
    print(f"peak ~ {intercept:.3f} GiB + {1024 * slope:.2f} MiB a ray; at {args.extrapolate} rays: {extrapolated:.2f} GiB")
    if args.json is not None:
        fit = {"intercept_gib": intercept, "gib_per_ray": slope, "rays": args.extrapolate, "gib": extrapolated}
        args.json.write_text(json.dumps({"steps": figures, "fit": fit}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
