"""The CPU allocator: keep freed memory in the process, so that large tensors do not page-fault on every step.

torch's CPU tensors come from the C library's ``malloc``. glibc serves a block above its mmap threshold (at most
32 MiB, adjusted as blocks are freed) with a fresh ``mmap`` and returns it to the system on ``free``: every new
tensor that large then costs a page fault per 4 KiB page when it is first written, about as much as the
arithmetic that fills it. A render allocates many such tensors (135k samples x 64 features is 35 MB), so on a
2-core CPU the faults took 40% of a frame (see ``docs/benchmarks.md``). :func:`reuse_freed_memory` raises the
threshold and the trim threshold, so freed blocks stay in the heap and the next tensor reuses them, as
CUDA's caching allocator does on the GPU. The price: up to ``limit`` bytes of freed memory stay with the
process instead of going back to the system.

:func:`~headfields.training.train` and :func:`~headfields.runs.load_run` call it for the CPU; call it yourself
when you render on the CPU otherwise (a notebook). It changes the whole process's ``malloc``, once; on another
C library (macOS, Windows, musl) it does nothing. Where the environment already tunes glibc's ``malloc``
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, or ``glibc.malloc`` in ``GLIBC_TUNABLES``), that choice
stands and nothing is changed: ``MALLOC_TRIM_THRESHOLD_=131072`` keeps glibc's defaults, for a process that must
hand memory back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from functools import cache

__all__ = ["GLIBC_MALLOC_VARIABLES", "RETAINED_BYTES", "reuse_freed_memory"]

# Blocks below 1 GiB come from the heap, and up to 1 GiB of freed memory stays with the process.
RETAINED_BYTES = 1 << 30
# The environment's own tuning of glibc's malloc, which reuse_freed_memory leaves alone.
GLIBC_MALLOC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
# mallopt's parameter numbers (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


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


@cache
def reuse_freed_memory(limit: int = RETAINED_BYTES) -> bool:
    """Make glibc's ``malloc`` keep freed blocks below ``limit`` bytes for reuse (see the module docstring).
    True where it applied (glibc), False where it does nothing (another C library, or the environment tunes
    ``malloc`` itself); once per ``limit`` (later calls return the first answer)."""
    if not isinstance(limit, int):
        raise TypeError(f"limit: expected a number of bytes (an int), got {type(limit).__name__}")
    if isinstance(limit, bool) or not 0 < limit < 2**31:
        raise ValueError(f"limit: expected a number of bytes in (0, 2**31), got {limit!r}")
    libc = _glibc()
    tuned = any(name in os.environ for name in GLIBC_MALLOC_VARIABLES) or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "")
    if libc is None or tuned:
        return False
    # mallopt returns 1 on success; both settings must hold, else blocks are still returned to the system.
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(limit))) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(limit))
    )
