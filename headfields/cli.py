"""The command line every training example shares (``examples/*.py``): where the capture, the parametric model and
the outputs are, the device, the recipe, and a flag for every field of the model's configuration and of the
training configuration, generated from the dataclasses (:mod:`headfields.configs`):

    python examples/insta.py --recipe cpu --insta.hash-grid.levels 8 --eval-every 250 --max-minutes 5
    python examples/insta.py --config outputs/insta/config.json --max-minutes 30   # a saved run's settings
    python examples/insta.py --help                                                 # every flag, explained
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from types import ModuleType

import torch

from .configs import add_config_flags, config_from_flags
from .models.registry import model_entry
from .training import TrainingConfig

__all__ = [
    "RECIPES",
    "add_recipe_flag",
    "example_training",
    "recipe_config",
    "recipe_name",
    "rounded",
    "run_config",
    "run_training",
    "training_parser",
]

RECIPES = ("paper", "cpu")  # every paper model's module has paper_config() and cpu_config()
# The training flags' short names, kept from before the flags were generated.
TRAINING_ALIASES = {"max_iterations": "--iterations", "rays_per_batch": "--rays"}


def training_parser(
    description: str,
    model: str,
    out: str | Path,
    training: TrainingConfig,
    parametric: str = "FLAME",
    video: str = "the synthetic video",
) -> argparse.ArgumentParser:
    """The parser of a training example of ``model`` (a name of :data:`~headfields.models.registry.MODELS`):
    ``--data --model --regions --out --device --eval-split --recipe --config``, every field of ``training`` (the
    example's defaults) as a top-level flag (``--max-minutes``, ``--eval-every``, ...) and every field of the
    model's recipe as ``--{model}.{field}`` (``parametric``, ``video``: the names the help gives the parametric model
    and the default data). :func:`run_config` turns the parsed flags into the run."""
    if not isinstance(training, TrainingConfig):
        raise TypeError(f"training: expected a TrainingConfig (the example's defaults), got {type(training).__name__}")
    entry = model_entry(model)
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help=f"a capture folder (default: {video})")
    parser.add_argument(
        "--model", type=Path, default=None,
        help=f"{parametric} model folder (default: the dataset's own; a capture with tracked meshes needs none)",
    )  # fmt: skip
    parser.add_argument(
        "--regions", type=Path, default=None,
        help="a tracked-mesh capture's region file: regions.json or a mesh_masks/ folder (default: the capture's "
        "own, else from its segmentation)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path(out), help="the run folder (run again to resume)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--eval-split", default=None, choices=("val", "test"), help="the held-out split (default: test)")
    recipes = sorted(entry.recipes)
    parser.add_argument(
        "--recipe", choices=recipes, default=None,
        help="'paper': the paper's sizes and schedules; 'cpu': the sizes a CPU run of minutes affords (default: "
        "paper on CUDA, cpu on a CPU)" if "paper" in recipes else "the mix's one recipe",
    )  # fmt: skip
    parser.add_argument(
        "--config", type=Path, default=None,
        help="a saved config.json (or a run folder): its recipe, training settings and data are the start, the "
        "other flags change them",
    )  # fmt: skip
    add_config_flags(parser, training, "", aliases=TRAINING_ALIASES)
    add_config_flags(parser, entry.recipe(_default_recipe(recipes, parser.get_default("device"))), model)
    parser.set_defaults(run_model=model, run_training=training)
    return parser


def _default_recipe(recipes: list[str], device: str) -> str:
    return "paper" if "paper" in recipes and torch.device(device).type == "cuda" else "cpu"


def run_config(args: argparse.Namespace):
    """The :class:`~headfields.runs.RunConfig` of a :func:`training_parser`'s parsed flags: the recipe (``--recipe``,
    or ``--config``'s), the example's training defaults (or ``--config``'s), then every flag given; prints which
    recipe it started from."""
    from .runs import RunConfig, SubjectSource, read_run_config

    model = args.run_model
    entry = model_entry(model)
    if args.config is not None:
        if args.recipe is not None:
            raise ValueError("recipe: give --recipe or --config, not both (a saved config holds its recipe)")
        saved = read_run_config(args.config)
        if saved.model != model:
            raise ValueError(f"config: {args.config} is a {saved.model} run, not {model}")
        recipe, training, subject, name = saved.recipe, saved.training, saved.subject, None
        print(f"config: {args.config}")
    else:
        name = args.recipe or _default_recipe(sorted(entry.recipes), args.device)
        recipe, training, subject = entry.recipe(name), args.run_training, SubjectSource()
        print(f"recipe: {name} ({model})")
    video = entry.video() if entry.video is not None else None
    given = {k: str(getattr(args, k)) for k in ("data", "model", "regions", "eval_split") if getattr(args, k) is not None}
    if given or args.config is None:
        subject = SubjectSource(
            data=given.get("data", subject.data),
            model=given.get("model", subject.model),
            eval_split=given.get("eval_split", subject.eval_split),
            regions=given.get("regions", subject.regions),
            model_type=entry.model_type,
            video=video if given.get("data", subject.data) is None else None,
        )
    return RunConfig(
        model=model,
        recipe=config_from_flags(args, recipe, model),
        training=config_from_flags(args, training, ""),
        subject=subject,
        recipe_name=name,
    )


def run_training(args: argparse.Namespace) -> dict:
    """The whole of an example's training: :func:`run_config`, then :func:`~headfields.runs.train_run` on the
    device (under ``torchrun``: this rank's, in the process group), the metrics printed. Returns the metrics on
    rank 0 (the only rank, without torchrun) and None on the others, so what follows training runs once."""
    from .distributed import destroy_distributed, init_distributed, rank
    from .runs import train_run

    run = run_config(args)
    device = init_distributed(args.device)
    metrics = train_run(run, args.out, device)
    lead = rank() == 0
    if lead:
        print(rounded(metrics))
    destroy_distributed()
    return metrics if lead else None


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
    name = args.recipe or _default_recipe(list(RECIPES), args.device)
    if name not in RECIPES:
        raise ValueError(f"recipe: expected one of {RECIPES}, got {name!r}")
    return name


def recipe_config(args: argparse.Namespace, module: ModuleType, **overrides):
    """The model configuration of ``args.recipe`` (see :func:`add_recipe_flag`) from ``module``'s
    ``paper_config`` / ``cpu_config``, with ``overrides``; prints which recipe it is."""
    name = recipe_name(args)
    print(f"recipe: {name} ({module.__name__}.{name}_config)")
    return getattr(module, f"{name}_config")(**overrides)


def rounded(metrics: dict, digits: int = 4) -> dict:
    """``metrics`` with its floats rounded, for printing."""
    return {k: round(v, digits) if isinstance(v, float) else v for k, v in metrics.items()}


def example_training(**fields) -> TrainingConfig:
    """An example's training defaults: :class:`TrainingConfig` with ``fields``."""
    return dataclasses.replace(TrainingConfig(), **fields)
