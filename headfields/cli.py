"""``--recipe`` for a script outside the model registry. Training goes through ``python -m headfields train``
(:mod:`headfields.commands.train`)."""

from __future__ import annotations

import argparse
from types import ModuleType

import torch

__all__ = ["RECIPES", "add_recipe_flag", "recipe_config", "recipe_name", "rounded"]

RECIPES = ("paper", "cpu")  # every paper model's module has paper_config() and cpu_config()


def add_recipe_flag(parser: argparse.ArgumentParser) -> None:
    """``--recipe paper|cpu`` for a script outside the registry (MonoNPHM's tracking): the paper's sizes and
    schedules, or those a CPU run affords (default: the paper's on CUDA, the CPU's on a CPU)."""
    parser.add_argument(
        "--recipe", choices=RECIPES, default=None,
        help="'paper': the paper's sizes and schedules; 'cpu': the sizes a CPU run of minutes affords "
        "(default: paper on CUDA, cpu on a CPU)",
    )  # fmt: skip


def recipe_name(args: argparse.Namespace) -> str:
    """``args.recipe``, or its default: the paper's on CUDA (``args.device``), the CPU's on a CPU."""
    name = args.recipe or ("paper" if torch.device(args.device).type == "cuda" else "cpu")
    if name not in RECIPES:
        raise ValueError(f"recipe: expected one of {RECIPES}, got {name!r}")
    return name


def recipe_config(args: argparse.Namespace, module: ModuleType, **overrides):
    """The model configuration of ``args.recipe`` (see :func:`add_recipe_flag`) from ``module``'s
    ``paper_config`` / ``cpu_config``, with ``overrides``; prints which recipe it is."""
    name = recipe_name(args)
    print(f"recipe: {name} ({module.__name__}.{name}_config)")
    return getattr(module, f"{name}_config")(**overrides)


from .commands.train import rounded  # noqa: E402  (one definition; kept importable here)
