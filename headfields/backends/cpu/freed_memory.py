"""The CPU allocator: keep freed memory in the process, so that large tensors do not page-fault every time.

torch's CPU tensors come from the C library's ``malloc``. glibc serves a block above its mmap threshold with a fresh
``mmap`` and returns it to the system on ``free`` (the threshold starts at 128 KiB and follows the blocks freed, up
to 32 MiB): every new tensor that large then costs a page fault per 4 KiB page when it is first written, about as
much as the arithmetic that fills it. A render allocates many such tensors (135k samples x 64 features is 35 MB):
a 96² MonoAvatar frame faulted about a million pages, 40% of its time on this project's 2-core CPU
(``docs/results.md``, "The CPU's tunings"). :func:`reuse_freed_memory` raises the mmap and trim thresholds, so
freed blocks stay in the heap and the next tensor reuses them, as CUDA's caching allocator does on the GPU.

What it buys and costs, measured: renders, not training steps. An 8,192-ray chunk of a held-out 96² MonoAvatar
frame (untrained weights; three alternating pairs of fresh processes on a quiet 2-core machine) faulted 875-884k pages
in 3.4-4.2 s by default, 0-334k pages in 1.5-2.7 s tuned, with 2.7-3.8 s of kernel time against 0-1.3 s; its
resident peak grew from 1.34-1.39 to 1.74-1.91 GB. Training steps gain nothing (INSTA 528 -> 529 ms, MonoAvatar
835 -> 829 ms, measured when ``tune_malloc`` landed, 1890c38). Up to ``limit`` bytes of freed memory stay with the
process instead of going back to the system.

The change is process-wide, and glibc has no getter for it. So no library call makes it unasked:
:func:`freed_memory_reused` applies it for a block and afterwards puts back what it can (see there), which is what
:func:`~headfields.backends.cpu.process_tuning.process_tuning` uses when a training run asks for it
(``TrainingConfig.tune_malloc``); call :func:`reuse_freed_memory` yourself for a whole process that renders on the CPU
(a notebook, a script of yours);
the ``render`` and ``view`` commands keep freed memory while they render (``--no-keep-freed-memory``: not).
On another C library (macOS, Windows, musl) both do nothing. Where the environment already tunes glibc's ``malloc``
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, or ``glibc.malloc`` in ``GLIBC_TUNABLES``), that choice
stands and nothing is changed.

```python
run = load_run("outputs/insta", device="cpu")
with freed_memory_reused():  # the renders' large tensors reuse freed memory, within the block
    rgb = render_image(run.model, run.subject.eval, 0, 8192, run.device, head=run.eval_head)
```
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
from collections.abc import Iterator
from functools import cache

__all__ = ["GLIBC_DEFAULT_THRESHOLD", "GLIBC_MALLOC_VARIABLES", "RETAINED_BYTES", "freed_memory_reused", "reuse_freed_memory"]

# Blocks below 1 GiB come from the heap, and up to 1 GiB of freed memory stays with the process.
RETAINED_BYTES = 1 << 30
# The environment's own tuning of glibc's malloc, which reuse_freed_memory leaves alone.
GLIBC_MALLOC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
# glibc's documented starting values of both thresholds (mallopt(3): M_MMAP_THRESHOLD, M_TRIM_THRESHOLD).
GLIBC_DEFAULT_THRESHOLD = 128 * 1024
# mallopt's parameter numbers (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

# The limit this module's last call put in force in this process; None: none (never called, or put back).
_in_force: int | None = None


@cache
def _glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (it has ``gnu_get_libc_version``), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt") else None


def _environment_tunes_malloc() -> bool:
    return any(name in os.environ for name in GLIBC_MALLOC_VARIABLES) or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "")


def _set_thresholds(libc: ctypes.CDLL, value: int) -> bool:
    # mallopt returns 1 on success; both settings must hold, else blocks are still returned to the system.
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(value))) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(value))
    )


def reuse_freed_memory(limit: int = RETAINED_BYTES) -> bool:
    """Make glibc's ``malloc`` keep freed blocks below ``limit`` bytes for reuse, for the rest of the process (see the
    module docstring; :func:`freed_memory_reused` for a block). True where it applied (glibc), False where it does
    nothing (another C library, or the environment tunes ``malloc`` itself).

    ```python
    reuse_freed_memory()  # a notebook that renders on the CPU: large tensors stop page-faulting
    ```
    """
    global _in_force
    if not isinstance(limit, int):
        raise TypeError(f"limit: expected a number of bytes (an int), got {type(limit).__name__}")
    if isinstance(limit, bool) or not 0 < limit < 2**31:
        raise ValueError(f"limit: expected a number of bytes in (0, 2**31), got {limit!r}")
    libc = _glibc()
    if libc is None or _environment_tunes_malloc():
        return False
    applied = _set_thresholds(libc, limit)
    _in_force = limit if applied else _in_force
    return applied


def _put_back(previous: int | None) -> None:
    """Put back the thresholds in force before a :func:`freed_memory_reused` block: this module's earlier limit, or
    glibc's documented defaults, then hand the freed memory kept above them back to the system."""
    global _in_force
    libc = _glibc()
    if libc is None:
        return
    if previous is not None:
        _set_thresholds(libc, previous)
    else:
        _set_thresholds(libc, GLIBC_DEFAULT_THRESHOLD)
        if hasattr(libc, "malloc_trim"):
            libc.malloc_trim(ctypes.c_size_t(0))
    _in_force = previous


@contextlib.contextmanager
def freed_memory_reused(limit: int = RETAINED_BYTES) -> Iterator[bool]:
    """:func:`reuse_freed_memory` within the block; yields what it returned. After the block, what can be put back is:

    - if this module had a limit in force before the block (an earlier :func:`reuse_freed_memory`), that limit;
    - else glibc's documented defaults (``GLIBC_DEFAULT_THRESHOLD``, 128 KiB, for both thresholds), and the freed
      memory kept above them goes back to the system (``malloc_trim``).

    What cannot be: glibc's sliding mmap threshold (from 128 KiB up to 32 MiB, following the blocks freed), which any
    ``mallopt`` of it turns off for the rest of the process: after the block, blocks between 128 KiB and 32 MiB are
    mapped afresh each time instead of reusing freed memory; and thresholds another library set with its own
    ``mallopt`` before the block (glibc has no getter), which become glibc's defaults. Where the call did nothing
    (no glibc, the environment's own tuning), nothing is put back either.

    ```python
    with freed_memory_reused() as applied:
        ...  # CPU renders; applied is False off glibc
    ```
    """
    previous = _in_force
    applied = reuse_freed_memory(limit)
    try:
        yield applied
    finally:
        if applied:
            _put_back(previous)
