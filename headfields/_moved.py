"""Deprecated aliases of names that moved to another package: a package's module-level ``__getattr__`` returns
the object from its new home with a DeprecationWarning that names the new location."""

from __future__ import annotations

import importlib
import warnings
from typing import Any


def moved(package: str, name: str, new_package: str) -> Any:
    """``new_package.name``, with a DeprecationWarning that ``package.name`` is an alias of it. Imported on
    first use, so ``new_package`` may import ``package`` without a cycle."""
    warnings.warn(
        f"{package}.{name} moved to {new_package}; this alias goes in the next release (use {new_package}.{name})",
        DeprecationWarning,
        stacklevel=3,  # the caller of the package's __getattr__
    )
    return getattr(importlib.import_module(new_package), name)
