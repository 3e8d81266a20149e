"""Calls of chosen library functions counted while a block runs, by Python's profile hook (``sys.setprofile``): it
watches each call as it starts, and replaces nothing, so the library runs as it always does.

    with counted_calls(kernels.launch_rows, kernels.launch_grid) as counts:
        render()
    counts["launch_rows"]  # calls within the block, on this thread
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections import Counter
from collections.abc import Callable, Iterator

# torch operations that do no work of their own on a GPU: views, metadata and allocations (an allocation comes from
# torch's caching allocator, not a kernel), the dtype rules and the profiler's range marks. launches.py counts an
# operation where none of those it calls counts; step_anatomy.py counts the operations torch dispatches, which are
# those already.
NO_KERNEL = frozenset(
    "alias as_strided chunk contiguous detach detach_ empty empty_like empty_strided expand expand_as flatten "
    "lift_fresh movedim narrow new_empty numpy_T permute reshape resize_ resolve_conj resolve_neg select set_ "
    "slice split split_with_sizes squeeze t to transpose unbind unflatten unsqueeze view view_as _reshape_alias "
    "_unsafe_view promote_types result_type _record_function_enter _record_function_enter_new _record_function_exit".split()
)


@contextlib.contextmanager
def counted_calls(*functions: Callable, when: Callable[[], bool] = lambda: True) -> Iterator[Counter]:
    """Within the block, the calls of each of ``functions`` that start on this thread while ``when()`` holds, by the
    function's ``__name__``. The hook runs at every Python call, which slows the block: count, do not time, within it."""
    codes = {inspect.unwrap(f).__code__: f.__name__ for f in functions}
    counts: Counter = Counter()

    def hook(frame, event, arg):
        if event == "call":
            name = codes.get(frame.f_code)
            if name is not None and when():
                counts[name] += 1

    with profiled(hook):
        yield counts


@contextlib.contextmanager
def profiled(hook: Callable) -> Iterator[None]:
    """``hook(frame, event, arg)`` called at each Python call and return on this thread within the block (Python's
    profile hook), then any hook already set: hooks nest."""
    previous = sys.getprofile()

    def chained(frame, event, arg):
        hook(frame, event, arg)
        if previous is not None:
            previous(frame, event, arg)

    sys.setprofile(chained)
    try:
        yield
    finally:
        sys.setprofile(previous)
