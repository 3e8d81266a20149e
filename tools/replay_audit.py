"""Whether a CUDA graph captured at one training step would replay the next ones faithfully, judged on the CPU.

A graph replays the kernels it captured with the arguments they had then: the same shapes, the same scalars (a
learning rate, a count, a flag) and the same memory for everything the step reads but did not make itself
(parameters, moments, the frames, the occupancy grid). A step whose Python hands a kernel a new scalar or a tensor
allocated elsewhere would train on stale values under replay, without an error. So each torch operation and Warp
launch of a step is written down with those arguments: tensors made earlier in the same step by their shape, dtype and
strides alone (a graph's own pool holds them), other tensors also by their address, Warp structs by their fields,
other arguments by value, and a random generator by its device alone (a graph registers its state and advances it at
each replay). Steps with one such *replay signature* would replay exactly; where two differ, :func:`differences`
names the operations, their arguments and the library lines.

    recorder = ReplayRecorder()
    with recorder, watched_launches(recorder):
        step()                          # a step: recorder.steps[-1] is its signature
        recorder.next_step()
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import inspect
import sys
from collections.abc import Iterator

import torch
import warp as wp
from torch.utils._python_dispatch import TorchDispatchMode

from calls import NO_KERNEL, profiled

__all__ = ["ReplayRecorder", "differences", "watched_launches"]

# Warp's kernel launch (launch_tiled forwards to it): its arguments are read from the call's frame as it starts.


def _site() -> str:
    """The innermost library line on the call stack (the operation's caller)."""
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_filename
        if "/headfields/" in name:
            return f"{name.split('/headfields/')[-1]}:{frame.f_lineno} ({frame.f_code.co_name})"
        frame = frame.f_back
    return "(outside the library: autograd's backward)"


class ReplayRecorder(TorchDispatchMode):
    """Each torch operation dispatched while ``recording``, with its arguments as a graph would replay them; the
    operations and launches of one step form ``current`` until :meth:`next_step` files it in ``steps``."""

    def __init__(self):
        super().__init__()
        self.recording = True
        self.steps: list[list[tuple]] = []
        self.current: list[tuple] = []
        self.sites: list[list[str]] = []
        self._sites: list[str] = []
        self._made: list[tuple[int, int]] = []  # the step's own storages: sorted (start, end) address ranges

    def next_step(self) -> None:
        self.steps.append(self.current)
        self.sites.append(self._sites)
        self.current, self._sites, self._made = [], [], []

    def _own(self, address: int) -> bool:
        i = bisect.bisect_right(self._made, (address, float("inf"))) - 1
        return i >= 0 and self._made[i][0] <= address < self._made[i][1]

    def _claim(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        start = storage.data_ptr()
        if not start:
            return
        end = start + max(storage.nbytes(), 1)
        # Merged with the ranges it meets: the allocator reuses a storage freed in the step for a larger one, whose
        # tail an earlier range would not cover.
        i = bisect.bisect_right(self._made, (start, float("inf")))
        if i > 0 and self._made[i - 1][1] >= start:
            i -= 1
            start, end = self._made[i][0], max(end, self._made[i][1])
        j = i
        while j < len(self._made) and self._made[j][0] <= end:
            end = max(end, self._made[j][1])
            j += 1
        self._made[i:j] = [(start, end)]

    def describe(self, value) -> object:
        """``value`` as a replay would see it."""
        if isinstance(value, torch.Tensor):
            where = "made in the step" if self._own(value.untyped_storage().data_ptr()) else ("at", value.data_ptr())
            return ("tensor", tuple(value.shape), str(value.dtype), tuple(value.stride()), where)
        if isinstance(value, wp.array):
            where = "made in the step" if self._own(value.ptr or 0) else ("at", value.ptr)
            return ("warp array", tuple(value.shape), str(value.dtype), where)
        if isinstance(value, torch.Generator):
            # Read through its state, which a graph registers and advances (or which is re-seeded) at each replay: no
            # argument baked in. (Its Python object is new at each dispatch: its identity cannot be compared here.)
            return ("generator", str(value.device))
        if isinstance(value, ctypes.Array):  # a Warp vector or matrix, passed by value
            return tuple(value)
        if isinstance(getattr(value, "value", None), (bool, int, float)):  # a Warp scalar (wp.int64(3))
            return (type(value).__name__, value.value)
        if hasattr(getattr(value, "_cls", None), "vars"):  # a Warp struct, passed by value: its fields
            return (value._cls.key, tuple((k, self.describe(getattr(value, k))) for k in value._cls.vars))
        if isinstance(value, (list, tuple)):
            return tuple(self.describe(v) for v in value)
        if isinstance(value, dict):
            return tuple((k, self.describe(v)) for k, v in sorted(value.items()))
        if value is None or isinstance(value, (bool, int, float, str, torch.dtype, torch.device, torch.layout)):
            return value
        if isinstance(value, torch.memory_format):
            return str(value)
        return (type(value).__name__, id(value))  # an object a kernel reads (a Warp struct, a mesh): by identity

    def record(self, name: str, arguments: object) -> None:
        self.current.append((name, self.describe(arguments)))
        self._sites.append(_site())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if self.recording and name not in NO_KERNEL:
            recorded = kwargs
            if name == "_fused_adam_" and isinstance(kwargs.get("lr"), float):  # a graphed step's rates are tensors,
                recorded = {**kwargs, "lr": "a rate filled before each replay"}  # (training.step_graph.StepGraph)
            self.record(name, (args, recorded))  # before the call: an in-place operation's input as it was found
        out = func(*args, **kwargs)
        if self.recording:
            for t in out if isinstance(out, (list, tuple)) else (out,):
                if isinstance(t, torch.Tensor):
                    self._claim(t)
        return out


@contextlib.contextmanager
def watched_launches(recorder: ReplayRecorder) -> Iterator[None]:
    """Within the block, each Warp launch that starts while ``recorder.recording``, recorded with its kernel, its
    dimensions and its inputs, and each BVH refit (by Python's profile hook: ``calls.profiled``)."""
    code = inspect.unwrap(wp.launch).__code__
    refits = {inspect.unwrap(f).__code__: f.__qualname__ for f in (wp.Mesh.refit, wp.Bvh.refit)}  # kernels inside Warp

    def hook(frame, event, arg):
        if event == "call" and frame.f_code is code and recorder.recording:
            f = frame.f_locals
            kernel = getattr(f["kernel"], "key", f["kernel"])
            recorder.record(f"warp:{kernel}", (f["dim"], list(f["inputs"]), list(f["outputs"]), f["block_dim"]))
        elif event == "call" and frame.f_code in refits and recorder.recording:
            recorder.record(f"warp:{refits[frame.f_code]}", frame.f_locals["self"])  # which BVH: by identity

    with profiled(hook):
        yield


def differences(recorder: ReplayRecorder, most: int = 12) -> list[dict]:
    """Where the first step whose signature differs from the first step's departs from it, one entry a library line
    (at most ``most``; none: every step alike)."""
    first = recorder.steps[0]
    for n, step in enumerate(recorder.steps[1:], start=1):
        if step == first:
            continue
        if len(step) != len(first):
            return [{"step": n, "operation": min(len(first), len(step)), "name": "(the number of operations)", "site": "",
                     "first": f"{len(first)} operations", "then": f"{len(step)} operations"}]  # fmt: skip
        found: dict[tuple, dict] = {}
        for i, (a, b) in enumerate(zip(first, step, strict=True)):
            site = recorder.sites[n][i]
            if a != b and (site, a[0]) not in found and len(found) < most:
                found[(site, a[0])] = {"step": n, "operation": i, "name": b[0], "site": site,
                                       "first": repr(a[1])[:300], "then": repr(b[1])[:300]}  # fmt: skip
        return list(found.values())
    return []
