"""Denormal floats on the CPU: flushed to zero within a block (a training run that asks for it), on every thread
torch computes on, and the modes put back after.

A float32 below 1.2e-38 (float64: 2.2e-308) is denormal, and x86 CPUs compute with one many times slower than
with a normal number (a multiplication of 4M denormals: 1.8 ms against 0.25 ms on this project's CPU). Networks
with a sharp Softplus produce them: ``exp(beta x)`` of a pre-activation far below zero, and the products of such
slopes with small gradients in an eikonal term's double backward. Late in a hyper NeuS avatar's CPU training, 1.5%
of its activations are denormal, and its elementwise ops (softplus, sigmoid, the products) took 46 ms more a step
than with denormals flushed: its step took 223-225 ms against 201-209 ms flushed (``docs/results.md``, "The CPU's
tunings").
Flushing (x86's FTZ and DAZ modes, ``torch.set_flush_denormal``) reads and writes every denormal as zero: a result
that would be denormal loses less than the smallest normal number, but a computation on denormal inputs sees zeros
(a denormal divided by itself gives nan), which training a network never relies on.

``torch.set_flush_denormal`` sets the mode of the calling thread alone, and torch's CPU ops called from that
thread also run on the threads of its OpenMP team, which inherit the mode only when they start after it (the
thread's first parallel op starts them). :func:`set_flush_denormal` also sets it on every thread of the calling
thread's team, through the OpenMP runtime torch loaded (``GOMP_parallel``: GNU's libgomp, which torch's Linux wheels
ship, or Intel's libiomp5); elsewhere (no such runtime, no x86 modes) it sets what it can and says so. Another
thread's team (OpenMP keeps one per thread that calls parallel code) is not reached.

Nothing in headfields flushes unasked: :func:`denormals_flushed` flushes for a block and puts back the mode each
thread of the team had before it, which :func:`~headfields.backends.cpu.process_tuning.process_tuning` uses for a CPU
training run that asks for it (``TrainingConfig.flush_denormals``). Whether the calling thread flushes is
:func:`headfields.kernels.flushing_denormals` (the launcher's thread pool follows it).

```python
with denormals_flushed():  # an SDF model's training steps, denormals read and written as zero
    loss.backward()
```
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

import torch

from ...kernels import flushing_denormals

__all__ = ["denormals_flushed", "set_flush_denormal"]

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


def _team_size() -> int:
    """As many threads as the CPU has, at least: a team that torch.set_num_threads has since shrunk keeps its idle
    threads, and would use them again unchanged."""
    return max(torch.get_num_threads(), os.cpu_count() or 1)


def _on_each_thread_of_team(task: Callable[[], object]) -> bool:
    """Run ``task`` on every thread of the calling thread's OpenMP team, the caller among them; False (nothing run)
    where no OpenMP runtime was found. What ``task`` raises on any thread, and what interrupts the calling thread
    while it runs its share (a Ctrl-C), is raised once the team is done (every other thread ran its share)."""
    runtime = _openmp_runtime()
    if runtime is None:
        return False
    raised: list[BaseException] = []

    def run(_) -> None:
        try:
            task()
        except BaseException as error:
            raised.append(error)

    # ctypes prints and drops what a callback raises. The try above keeps what task raises, but not a Ctrl-C that
    # CPython raises at the callback's entry (its check for signals as a Python function starts) or after the try: a
    # render interrupted while its OpenMP team was starting went on rendering (CI's test_ctrl_c_during_a_render_...
    # timed out in 4 of 20 runs beside a busy core; each child's stderr: ctypes' "Exception ignored" at the def line).
    with _raising_what_ctypes_drops(run, raised):
        runtime.GOMP_parallel(_TEAM_TASK(run), None, _team_size(), 0)
    if raised:
        raise raised[0]
    return True


# sys.unraisablehook while team calls are in flight: by the thread that made each call, its callback and the list
# that keeps what ctypes drops from it on that thread (a signal's exception is raised on the main thread alone).
_DROPS_LOCK = threading.Lock()
_watched: dict[int, tuple[Callable, list[BaseException]]] = {}
_hook_before = sys.unraisablehook  # what _keep_drop forwards to: the hook it replaced


def _keep_drop(unraisable) -> None:
    """Keep what ctypes dropped from a watched callback on the thread that called it; forward the rest."""
    watched = _watched.get(threading.get_ident())
    if watched is not None and _dropped_from(unraisable, watched[0]):
        error = unraisable.exc_value
        watched[1].append(error if error is not None else unraisable.exc_type())
    else:
        _hook_before(unraisable)


def _dropped_from(unraisable, callback: Callable) -> bool:
    """Whether ctypes dropped ``unraisable`` from ``callback``: ctypes names the callback as the unraisable's object
    up to Python 3.12 (3.13 only in its message), and the traceback starts in the callback's frame (3.10 to 3.13, an
    exception raised at its entry included). tests/unit/backends/test_denormals.py fails loudly if neither holds."""
    if unraisable.object is callback:
        return True
    trace = unraisable.exc_traceback
    return trace is not None and trace.tb_frame.f_code is callback.__code__


@contextlib.contextmanager
def _raising_what_ctypes_drops(callback: Callable, raised: list[BaseException]) -> Iterator[None]:
    """Within the block, what ctypes drops from ``callback`` on the calling thread is appended to ``raised`` instead
    of printed: sys.unraisablehook is :func:`_keep_drop` while any thread's block runs, and the caller's hook after."""
    global _hook_before
    me = threading.get_ident()
    with _DROPS_LOCK:
        outer = _watched.get(me)  # a team call from within a task on this thread: the inner one watches until done
        _watched[me] = (callback, raised)
        if sys.unraisablehook is not _keep_drop:
            _hook_before, sys.unraisablehook = sys.unraisablehook, _keep_drop
    try:
        yield
    finally:
        with _DROPS_LOCK:
            if outer is None:
                del _watched[me]
            else:
                _watched[me] = outer
            if not _watched and sys.unraisablehook is _keep_drop:  # another may have replaced it since: theirs stays
                sys.unraisablehook = _hook_before


def _team_modes() -> dict[int, bool]:
    """Whether each thread of the calling thread's team flushes, by thread id (the caller alone without a runtime)."""
    modes: dict[int, bool] = {}

    def read() -> None:
        modes[threading.get_ident()] = flushing_denormals()

    if not _on_each_thread_of_team(read):
        read()
    return modes


def set_flush_denormal(enabled: bool) -> bool:
    """Flush denormals to zero (``enabled``) or compute with them (the default), on the calling thread and on every
    thread of its OpenMP team (the threads torch's ops called from it run on). True where the team was reached;
    False where only the calling thread was (no OpenMP runtime found) or nothing was (a CPU without the modes).
    The change lasts until it is set again: :func:`denormals_flushed` sets it for a block.

    ```python
    set_flush_denormal(True)  # every thread torch computes on for this thread reads denormals as zero
    ```
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled: expected True or False, got {enabled!r}")
    if not torch.set_flush_denormal(enabled):
        return False
    return _on_each_thread_of_team(lambda: torch.set_flush_denormal(enabled))


@contextlib.contextmanager
def denormals_flushed() -> Iterator[bool]:
    """Flush denormals within the block (:func:`set_flush_denormal`), then put back the mode each thread of the calling
    thread's team had on entry, read thread by thread (a thread that joined the team within the block gets the calling
    thread's mode on entry). Yields what :func:`set_flush_denormal` returned. Exact for the calling thread's team;
    other threads' teams are neither changed nor put back.

    ```python
    with denormals_flushed() as reached:  # reached: False where only the calling thread could be set
        ...
    ```
    """
    caller = flushing_denormals()
    modes = _team_modes()
    try:  # a Ctrl-C while the team is being set still puts every thread's mode back
        yield set_flush_denormal(True)
    finally:
        torch.set_flush_denormal(caller)
        _on_each_thread_of_team(lambda: torch.set_flush_denormal(modes.get(threading.get_ident(), caller)))
