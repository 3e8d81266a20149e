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

    previous = sys.getprofile()
    sys.setprofile(hook)
    try:
        yield counts
    finally:
        sys.setprofile(previous)
