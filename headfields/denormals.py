"""Denormal floats on the CPU: flushed to zero while a model trains, on every thread torch computes on.

A float32 below 1.2e-38 (float64: 2.2e-308) is denormal, and x86 CPUs compute with one many times slower than
with a normal number (a multiplication of 4M denormals: 1.8 ms against 0.25 ms on this project's CPU). Networks
with a sharp Softplus produce them: ``exp(beta x)`` of a pre-activation far below zero, and the products of such
slopes with small gradients in an eikonal term's double backward. Late in a hyper NeuS avatar's CPU training, 1.5%
of its activations are denormal, and its elementwise ops (softplus, sigmoid, the products) took 46 ms more a step
than with denormals flushed (``docs/benchmarks.md``). Flushing (x86's FTZ and DAZ modes, ``torch.set_flush_denormal``)
reads and writes every denormal as zero: a result that would be denormal loses less than the smallest normal
number, but a computation on denormal inputs sees zeros (a denormal divided by itself gives nan), which training
a network never relies on.

``torch.set_flush_denormal`` sets the mode of the calling thread alone, and torch's CPU ops called from that
thread also run on the threads of its OpenMP team, which inherit the mode only when they start after it (the
thread's first parallel op starts them). :func:`set_flush_denormal` also sets it on every thread of the calling
thread's team, through the OpenMP runtime torch loaded (``GOMP_parallel``: GNU's libgomp, which torch's Linux wheels
ship, or Intel's libiomp5); elsewhere (no such runtime, no x86 modes) it sets what it can and says so. Another
thread's team (OpenMP keeps one per thread that calls parallel code) is not reached.
:func:`~headfields.training.train` flushes denormals for its run on the CPU (:func:`denormals_flushed`) and
switches flushing off again after, unless the calling thread flushed before.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import torch

__all__ = ["denormals_flushed", "flushing_denormals", "set_flush_denormal"]

_TEAM_TASK = ctypes.CFUNCTYPE(None, ctypes.c_void_p)  # void fn(void *data), what GOMP_parallel runs on each thread


@cache
def _openmp_runtime() -> ctypes.CDLL | None:
    """The OpenMP runtime torch's threads belong to: one loaded in this process (GNU's libgomp, or Intel's
    libiomp5, which exports the same ``GOMP_parallel``), found in ``/proc/self/maps``, the copy in torch's own
    folder first (another extension may have loaded the system's beside it); None where there is none (another
    platform, a torch without OpenMP)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    loaded = {line.split()[-1] for line in maps.splitlines() if "libgomp" in line or "libiomp" in line}
    torch_folder = str(Path(torch.__file__).resolve().parent)
    for path in sorted(loaded, key=lambda path: (not path.startswith(torch_folder), path)):
        try:
            runtime = ctypes.CDLL(path)
        except OSError:
            continue
        if hasattr(runtime, "GOMP_parallel"):
            runtime.GOMP_parallel.argtypes = [_TEAM_TASK, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
            runtime.GOMP_parallel.restype = None
            return runtime
    return None


def flushing_denormals() -> bool:
    """Whether the calling thread flushes denormals (a denormal float32 times one comes out zero)."""
    return float(torch.tensor(1e-39, dtype=torch.float32) * 1.0) == 0.0


def set_flush_denormal(enabled: bool) -> bool:
    """Flush denormals to zero (``enabled``) or compute with them (the default), on the calling thread and on every
    thread of its OpenMP team (the threads torch's ops called from it run on). True where the team was reached;
    False where only the calling thread was (no OpenMP runtime found) or nothing was (a CPU without the modes)."""
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled: expected True or False, got {enabled!r}")
    if not torch.set_flush_denormal(enabled):
        return False
    runtime = _openmp_runtime()
    if runtime is None:
        return False
    # Each thread of a team (the caller among them) sets its own mode. As many threads as the CPU has, at least: a
    # team that torch.set_num_threads has since shrunk keeps its idle threads, and would use them again unchanged.
    task = _TEAM_TASK(lambda _: torch.set_flush_denormal(enabled))
    runtime.GOMP_parallel(task, None, max(torch.get_num_threads(), os.cpu_count() or 1), 0)
    return True


@contextlib.contextmanager
def denormals_flushed() -> Iterator[bool]:
    """Flush denormals within the block (:func:`set_flush_denormal`); after it, switch flushing off again unless the
    calling thread flushed on entry. Yields what :func:`set_flush_denormal` returned."""
    before = flushing_denormals()
    reached = set_flush_denormal(True)
    try:
        yield reached
    finally:
        if not before:
            set_flush_denormal(False)
