"""A pipeline of its own reads some of :class:`~headfields.training.TrainingConfig`'s fields: those it does not read
are refused by name when set, rather than ignored (``--eval-every 100`` on a run that never evaluates midway)."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

from .config import TrainingConfig

__all__ = ["check_unused", "unused_fields"]


def unused_fields(used: Collection[str]) -> tuple[str, ...]:
    """The fields of :class:`TrainingConfig` not in ``used`` (each of which must name one)."""
    names = [f.name for f in dataclasses.fields(TrainingConfig)]
    unknown = sorted(set(used) - set(names))
    if unknown:
        raise ValueError(f"used: expected fields of TrainingConfig, got {unknown}")
    return tuple(name for name in names if name not in used)


def check_unused(training: TrainingConfig, unused: Collection[str], who: str) -> None:
    """A ValueError naming every field of ``training`` in ``unused`` that is not at its default; ``who``: what does
    not read them, for the message."""
    defaults = TrainingConfig()
    set_ = [f"{name}={getattr(training, name)!r}" for name in unused if getattr(training, name) != getattr(defaults, name)]
    if set_:
        raise ValueError(f"training: {who} does not use {', '.join(set_)}: leave them at their defaults")
