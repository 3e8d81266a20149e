"""The command line every training example shares (``examples/*.py``): where the capture, the parametric model and
the outputs are, the time budget, the batch, the device and the held-out split. An example adds its own flags to
the parser :func:`training_parser` returns."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

from .checks import check_count, check_positive
from .training import TrainingConfig

__all__ = [
    "RECIPES",
    "add_recipe_flag",
    "recipe_config",
    "recipe_name",
    "rounded",
    "run_example",
    "training_config",
    "training_parser",
]


def training_parser(
    description: str, out: str | Path, minutes: float, rays: int, model: str = "FLAME", video: str = "the synthetic video"
) -> argparse.ArgumentParser:
    """``--data --model --regions --out --max-minutes --iterations --rays --device --eval-split --seed`` with these defaults
    (``model``, ``video``: the names the help gives the parametric model and the default data)."""
    check_positive("minutes", minutes)
    check_count("rays", rays, 1)
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", type=Path, default=None, help=f"an INSTA-format folder (default: {video})")
    parser.add_argument(
        "--model", type=Path, default=None,
        help=f"{model} model folder (default: the dataset's own; a capture with tracked meshes needs none)",
    )  # fmt: skip
    parser.add_argument(
        "--regions", type=Path, default=None,
        help="a tracked-mesh capture's region file: regions.json or a mesh_masks/ folder (default: the capture's "
        "own, else from its segmentation)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path(out))
    parser.add_argument("--max-minutes", type=float, default=minutes, help="training time budget")
    parser.add_argument("--iterations", type=int, default=TrainingConfig.max_iterations)
    parser.add_argument("--rays", type=int, default=rays, help="rays per batch")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--eval-split", default="test", choices=("val", "test"))
    parser.add_argument("--seed", type=int, default=0, help="seeds the initial weights and the sampling")
    return parser


RECIPES = ("paper", "cpu")  # every paper model's module has paper_config() and cpu_config()


def add_recipe_flag(parser: argparse.ArgumentParser) -> None:
    """``--recipe paper|cpu``: the paper's sizes and schedules, or those a CPU run affords (default: the paper's
    on CUDA, the CPU's on a CPU)."""
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


def training_config(args: argparse.Namespace, **fields) -> TrainingConfig:
    """The loop's configuration from the parsed shared flags, plus an example's own ``fields``."""
    return TrainingConfig(
        max_iterations=args.iterations, max_minutes=args.max_minutes, rays_per_batch=args.rays, seed=args.seed, **fields
    )


def rounded(metrics: dict, digits: int = 4) -> dict:
    """``metrics`` with its floats rounded, for printing."""
    return {k: round(v, digits) if isinstance(v, float) else v for k, v in metrics.items()}


def run_example(
    doc: str,
    build: Callable,
    out: str | Path,
    minutes: float,
    rays: int,
    frames_per_batch: int | None = None,
    **training_fields,
) -> dict:
    """The whole of a mix's script: the shared flags (``doc``'s first line as the description), the subject
    (``--data``, default the synthetic video), ``build(parametric, train_frames)`` on the device, :func:`train`
    with ``frames_per_batch`` and ``training_fields``, the metrics printed. Runs under ``torchrun`` too."""
    from .data import load_subject
    from .distributed import destroy_distributed, init_distributed
    from .training import seed_everything, train

    args = training_parser(doc.strip().split("\n")[0], out, minutes=minutes, rays=rays).parse_args()
    device = init_distributed(args.device)  # under torchrun: this rank's device, in the process group
    subject = load_subject(args.data, args.model, args.eval_split, device=device, regions=args.regions)
    print(*subject.notes, sep="\n")
    seed_everything(args.seed)
    model = build(subject.parametric, subject.train).to(device)
    config = training_config(args, frames_per_batch=frames_per_batch, **training_fields)
    metrics = train(model, subject.train, subject.eval, args.out, config, device=device)
    print(rounded(metrics))
    destroy_distributed()
    return metrics
