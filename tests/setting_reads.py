"""Which fields of a configuration a piece of code reads: ``reads(config, fn)`` runs ``fn()`` with the attribute reads
of ``config``'s dataclasses (nested ones included) traced, and returns the dotted names read. Reads that only copy,
compare, serialise or validate a configuration are not counted (``dataclasses``' generated methods, ``__post_init__``,
the config files and checkpoints, the unread-settings check); a copy made with ``dataclasses.replace`` is traced as
the original (a model that builds its network from ``replace(config.local, radius=...)`` reads ``local``'s fields)."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import Any

# Frames whose reads are bookkeeping, not use: generated methods, copies, config files, checkpoints' comparison of
# configurations, and the check that refuses the unread settings (it compares every one).
NOT_USES = (
    "dataclasses.py",
    "<string>",
    "copy.py",
    "headfields/configs.py",
    "headfields/training/checkpoints.py",
    "headfields/training/unused.py",
)


def leaves(config: Any, prefix: str = "") -> dict[str, Any]:
    """Every field of ``config`` that is not itself a dataclass, by dotted name, with its value."""
    out = {}
    for f in dataclasses.fields(config):
        value = object.__getattribute__(config, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out |= leaves(value, f"{prefix}{f.name}.")
        else:
            out[prefix + f.name] = value
    return out


def reads(config: Any, fn: Callable[[], Any]) -> set[str]:
    """The dotted names of ``config``'s fields that ``fn()`` reads (see the module docstring)."""
    prefixes: dict[int, list[str]] = {}
    keep = []  # the traced objects (and their copies) stay alive, so that no other object takes their id

    def index(obj: Any, prefix: str) -> None:
        prefixes.setdefault(id(obj), []).append(prefix)
        keep.append(obj)
        for f in dataclasses.fields(obj):
            value = object.__getattribute__(obj, f.name)
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                index(value, f"{prefix}{f.name}.")

    index(config, "")
    classes = {type(obj) for obj in keep}
    found: set[str] = set()

    def traced(cls: type):
        names = {f.name for f in dataclasses.fields(cls)}

        def getattribute(self, name):
            if name in names and id(self) in prefixes:
                caller = sys._getframe(1).f_code
                if caller.co_name != "__post_init__" and not caller.co_filename.replace("\\", "/").endswith(NOT_USES):
                    found.update(prefix + name for prefix in prefixes[id(self)])
            return object.__getattribute__(self, name)

        return getattribute

    original_replace = dataclasses.replace

    def replace(obj, /, **changes):
        new = original_replace(obj, **changes)
        if id(obj) in prefixes:
            prefixes.setdefault(id(new), []).extend(prefixes[id(obj)])
            keep.append(new)
        return new

    patched = [cls for cls in classes if "__getattribute__" not in vars(cls)]
    for cls in patched:
        cls.__getattribute__ = traced(cls)
    dataclasses.replace = replace
    try:
        fn()
    finally:
        dataclasses.replace = original_replace
        for cls in patched:
            del cls.__getattribute__
    return found
