"""Deprecated: ``tracked_head``, ``mesh_depth`` and ``present_regions`` moved to :mod:`headfields.heads` (the training
loop builds each split's head once and hands it to the model). This alias goes in the next release."""

from __future__ import annotations

import warnings
from typing import Any

_MOVED = ("mesh_depth", "present_regions", "tracked_head")


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"headfields.models.tracking.{name} moved to headfields.heads; this alias goes in the next release",
        DeprecationWarning,
        stacklevel=2,
    )
    from .. import heads

    return getattr(heads, name)
