"""Settings a run does not read are refused by name when set, rather than ignored: the
:class:`~headfields.training.TrainingConfig` fields a pipeline of its own has no use for (``--eval-every 100`` on a
run that never evaluates midway), and the recipe fields a model's mode leaves unread (MonoAvatar's code decoder
when its features are the displacement U-Net's), each declared by the model that does not read them."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from .config import TrainingConfig

__all__ = ["check_unread_settings", "check_unused", "unused_fields"]


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


_ABSENT = object()  # a reference recipe without the setting (its sub-configuration is None there)


def check_unread_settings(recipe: Any, unread: Mapping[str, str], references: Sequence[Any], model: str) -> None:
    """A ValueError naming the first setting of ``recipe`` in ``unread`` (a dotted field or sub-configuration ->
    the mode that leaves it unread) whose value is in none of ``references`` (the model's recipes, the run's own
    first): changing it would change nothing the run computes. The message names the first field that differs from
    the reference it differs from least, and the train command's flag for it."""
    for name, why in unread.items():
        value = _dotted(recipe, name)
        if any(_dotted(reference, name) == value for reference in references):
            continue
        found = [(_differences(name, value, _dotted(reference, name)), reference) for reference in references]
        differences, closest = min(found, key=lambda pair: len(pair[0]))  # (the first of equals: the run's own recipe)
        field, given = differences[0]
        flag, expected = f"--{model}.{field}".replace("_", "-"), _dotted(closest, field)
        raise ValueError(f"{field}: {model} does not read it {why}; got {given!r}: leave {flag} at the recipe's {expected!r}")


def _dotted(config: Any, name: str) -> Any:
    for part in name.split("."):
        config = getattr(config, part, _ABSENT) if dataclasses.is_dataclass(config) else _ABSENT
    return config


def _differences(name: str, value: Any, reference: Any) -> list[tuple[str, Any]]:
    """The dotted names and values of the leaves under ``name`` where ``value`` differs from ``reference``."""
    if not (dataclasses.is_dataclass(value) and type(value) is type(reference)):
        return [(name, value)]
    found = []
    for f in dataclasses.fields(value):
        mine, theirs = getattr(value, f.name), getattr(reference, f.name)
        if mine != theirs:
            found += _differences(f"{name}.{f.name}", mine, theirs)
    return found
