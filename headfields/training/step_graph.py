"""A training step captured as one CUDA graph and replayed (``TrainingConfig.cuda_graph``): a GPU then runs the
step's hundreds of kernels from one launch, and Python's time a step no longer bounds the GPU's (issue 78).

A graph replays its kernels with the arguments they were captured with. So a step is graphed only where it is the
same from step to step: fixed shapes (``TrainingConfig.fixed_shapes``), nothing read back to the host, the same
tensors read (updated in place: weights, moments, the occupancy grid) and the same scalars. The step's *key* (its
rays, its march slots and the model's :meth:`graph_phase`, what its Python decides by the step number) names what the
capture depends on; a new key captures again (the last ``GRAPHS_KEPT`` graphs are kept by key and replayed when their
key returns), and a phase of None runs the step eagerly (no graph yet). What changes
between steps stays outside the graph: the learning rate (a tensor the graph reads, filled before the replay), the
step's jitter seed (the generator is registered with the graph, which reads its seed and offset at each replay: the
same draws as an eager step), the occupancy refresh, the moving average and the host copies of the loss and counts.
``tools/step_anatomy.py`` checks on the CPU that a step does not change between steps in any way a replay would miss
(its *replay signatures*).

Torch's recipe: a few eager steps on a side stream (lazy state made outside the capture), then the capture, on the
same stream. A capture that fails in Python, its capture ended, warns once and leaves the run eager (the step is run
again, eagerly); one that CUDA ends (a read-back, a copy from pageable memory inside the step) leaves CUDA's random
generators and allocator mid-capture, so the run stops there, naming the step's error.
"""

from __future__ import annotations

import gc
import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch

from .contract import AvatarModel

__all__ = ["GRAPHS_KEPT", "WARMUP_STEPS", "StepGraph", "check_graph", "step_graph"]

WARMUP_STEPS = 3  # eager steps on the capture's stream before each capture (torch's CUDA graph recipe)
# Graphs kept by key: a sample budget that moves between a few ray counts, or a phase that returns, replays the graph
# it captured before instead of warming up and capturing again. Each holds its own memory pool (graphs replayed in
# any order cannot share one), so a few, not all.
GRAPHS_KEPT = 3
WARMING_KEYS = 16  # keys whose warm-up counts are kept (shapes still settling step to step are not worth a capture)


class StepGraph:
    """``step()`` on ``device`` run eagerly, ``WARMUP_STEPS`` times for each new key, then captured and replayed
    while the key holds. ``optimizer`` (torch's Adam) is made capturable for the capture and given its learning rates
    as tensors; ``generators`` (CUDA generators the step draws from) are registered with the graph.

    The outputs of a replayed step are the graph's own tensors, overwritten by the next replay: read them before it."""

    def __init__(self, device: torch.device, optimizer: torch.optim.Optimizer, generators: Sequence[torch.Generator]):
        self.device, self.optimizer, self.generators = device, optimizer, list(generators)
        self.stream = torch.cuda.Stream(device)
        # The graphs kept, by key, least recently replayed first: each with its outputs (and its own memory pool).
        self.graphs: OrderedDict[Hashable, tuple[torch.cuda.CUDAGraph, Any]] = OrderedDict()
        # The eager steps each key not yet captured has had (a few keys: keys that alternate warm up in turn).
        self.warm: OrderedDict[Hashable, int] = OrderedDict()
        self.failed, self.captures = False, 0
        # Adam's rate as a 0-d tensor each group (fused Adam reads a tensor rate on the device): set before a replay.
        self.rates = [torch.zeros((), device=device) for _ in optimizer.param_groups]

    def __call__(self, key: Hashable, step: Callable[[], Any]) -> Any:
        """``step()``'s outputs, by a replay where a graph of ``key`` is captured."""
        if self.failed:
            return step()
        kept = self.graphs.get(key)
        if kept is not None:
            self.graphs.move_to_end(key)
            self._set_rates()
            kept[0].replay()
            return kept[1]
        warm = self.warm.pop(key, 0)  # a new shape or phase: warmed up, then captured
        if warm < WARMUP_STEPS:
            self.warm[key] = warm + 1
            while len(self.warm) > WARMING_KEYS:
                self.warm.popitem(last=False)
            return self._on_stream(step)
        return self._capture(key, step)

    def _on_stream(self, step: Callable[[], Any]) -> Any:
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            out = step()
        current.wait_stream(self.stream)
        return out

    def _set_rates(self) -> None:
        for rate, group in zip(self.rates, self.optimizer.param_groups, strict=True):
            rate.fill_(float(group["lr"]))  # (a fill kernel with the rate as its argument: no copy from the host)

    def _capture(self, key: Hashable, step: Callable[[], Any]) -> Any:
        if len(self.graphs) >= GRAPHS_KEPT:  # before the capture: never more than GRAPHS_KEPT graphs' memory at once
            self.graphs.popitem(last=False)
        self._set_rates()
        graph = torch.cuda.CUDAGraph()
        for generator in self.generators:
            graph.register_generator_state(generator)
        groups = self.optimizer.param_groups
        floats = [group["lr"] for group in groups]
        for group, rate in zip(groups, self.rates, strict=True):
            group["capturable"], group["lr"] = True, rate
        failure = None
        gc.collect()  # no collection inside the capture: a Warp object freed there would end it (cudaFree)
        gc.disable()
        try:  # (the outer block restores the stream where a failed capture's exit stops short)
            with torch.cuda.stream(self.stream), torch.cuda.graph(graph, stream=self.stream):
                outputs = step()
        except Exception as error:  # noqa: BLE001 (any failure of the capture is said, below)
            failure = error
        finally:
            gc.enable()
            for group, rate in zip(groups, floats, strict=True):
                group["capturable"], group["lr"] = False, rate
        if failure is not None:
            self.failed, self.graphs = True, OrderedDict()  # eager from here: the kept graphs' memory goes back
            cause = failure.__context__ or failure  # (where the capture's end failed, the step's own error)
            said = f"cuda_graph: the training step could not be captured as a CUDA graph ({type(cause).__name__}: {cause})"
            if not _ended(graph):  # CUDA's generators and allocator are left mid-capture: nothing can run after it
                raise RuntimeError(f"{said}; train with cuda_graph=False (--cuda-graph False)") from cause
            warnings.warn(f"{said}; training goes on without one", RuntimeWarning, stacklevel=3)
            return step()  # (the capture ran no kernel: the step is still to do, eagerly)
        self.graphs[key] = (graph, outputs)
        self.captures += 1
        graph.replay()  # the capture recorded the step; the replay runs it
        return outputs


def _ended(graph: torch.cuda.CUDAGraph) -> bool:
    """Whether ``graph``'s capture ended (its memory pool exists only then)."""
    try:
        graph.pool()
    except RuntimeError:
        return False
    return True


def check_graph(model: AvatarModel, device: torch.device, ranks: int) -> None:
    """Refuse ``TrainingConfig.cuda_graph`` where a graph cannot be taken (before anything is written)."""
    if not model.captures_graph:
        raise ValueError(
            "cuda_graph: expected a model whose step says what its Python decides by the step number (graph_phase), "
            f"got {type(model).__name__}"
        )
    if ranks > 1:
        raise ValueError(f"cuda_graph: expected one process (a data-parallel step waits on the others), got {ranks}")
    if device.type != "cuda":
        raise ValueError(f"cuda_graph: expected training on a CUDA device, got {device}")


def step_graph(device: torch.device, optimizer: torch.optim.Optimizer, generators: Sequence[torch.Generator]) -> StepGraph | None:
    """The graph of a model's ray steps (:func:`check_graph` passed), or None, said, where it cannot be captured: the
    frames not on the device (their pixels would be copied from the host at every step), an optimiser that is not
    torch's fused Adam (whose step count a capture finds on the device)."""
    warning = None
    if any(g.device.type != "cuda" for g in generators):
        warning = "the training frames are not on the GPU (too large for it)"
    elif not getattr(optimizer, "defaults", {}).get("fused"):
        warning = f"the optimiser is not torch's fused Adam (got {type(optimizer).__name__})"
    if warning is not None:
        warnings.warn(f"cuda_graph: {warning}: the run trains without a graph", RuntimeWarning, stacklevel=3)
        return None
    return StepGraph(device, optimizer, generators)
