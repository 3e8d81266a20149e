"""``python -m headfields train MODEL``: train a registered model (``insta``, ``monoavatar``, ``portrait360``,
``hyper_neus``, ``mononphm``, the mixes) on the built-in synthetic video or on a capture, into a run folder that
``render``, ``export`` and ``view`` open. A flag for every field of the model's recipe and of the training
configuration, generated from the dataclasses by tyro.

    python -m headfields train insta --out outputs/insta --max-minutes 15      # --recipe cpu on a CPU, paper on CUDA
    python -m headfields train insta --recipe paper --data /path/to/capture    # INSTA's layout, VHAP's, IMavatar's
    python -m headfields train insta --insta.hash-grid.levels 8 --eval-every 250   # any recipe or training field
    python -m headfields train insta --config outputs/insta/config.json --out outputs/insta_b   # a saved run's settings
    python -m headfields train hyper_neus --help                               # every flag, explained

Run it again with the same ``--out`` to resume: with no ``--config`` or ``--recipe``, the run there is the start.
``--iterations`` and ``--rays`` are short for ``--max-iterations``
and ``--rays-per-batch``. Under ``torchrun`` it trains data-parallel (:mod:`headfields.training.distributed`).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import tyro

from ...checks import check_device
from ...models.registry import MODELS, SUBJECT_FLAGS, model_entry
from ...training import CONFIG_NAME, METRICS_NAME, TrainingConfig
from ..runs import RunConfig, SubjectSource, read_run_config

__all__ = ["main", "run_config", "summary", "train"]

# Short names of two training flags, kept from the examples' command line.
ALIASES = {"--iterations": "--max-iterations", "--rays": "--rays-per-batch"}
LOWER_CASE = {"true": "True", "false": "False", "none": "None"}
# Booleans take a value (--balance-views False), as every other flag does.
CONVENTIONS = (tyro.conf.FlagConversionOff,)


def main(argv: list[str] | None = None) -> int:
    """``python -m headfields train MODEL [flags]`` (``argv``: what follows ``train``; default: the command line's).
    Prints the metrics; under torchrun, rank 0 alone does."""
    argv = sys.argv[2:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: python -m headfields train MODEL [--help] [flags]\n\nMODEL: one of {', '.join(MODELS)}\n\n{__doc__}")
        return 0 if argv else 2
    train(argv[0], argv[1:])
    return 0


def train(model: str, argv: list[str]) -> tuple[dict | None, Path, torch.device]:
    """Train ``model`` as ``python -m headfields train model *argv`` does: the run of :func:`run_config` trained
    (:func:`~headfields.apps.runs.train_run`), under torchrun in the process group. Returns the metrics (None on the
    ranks but rank 0, so what follows training runs once), the run folder and the device."""
    from ...training.distributed import destroy_distributed, init_distributed, rank
    from ..runs import train_run

    run, flags = _parsed(model, argv)
    out, device = flags.out, flags.device
    if hasattr(run.recipe, "schedule"):  # a recipe that states its own schedule (the Gaussian avatar's)
        print(f"schedule: {run.recipe.schedule(run.training.max_iterations, run.training.max_minutes)}")
    device = init_distributed(device)
    metrics = train_run(run, out, device, force=flags.force)
    lead = rank() == 0
    if lead:
        print(summary(metrics, out / METRICS_NAME))
    destroy_distributed()
    return (metrics if lead else None), out, device


def run_config(model: str, argv: list[str]) -> tuple[RunConfig, Path, str]:
    """The run that ``python -m headfields train model *argv`` trains, its folder and its device.

    Where each setting starts: ``--config``'s saved run (its recipe, training settings and subject), else, without
    ``--recipe``, the run ``--out`` holds (a rerun resumes with its own settings), else the recipe ``--recipe``
    names (default: "paper" on CUDA, "cpu" on a CPU) and the model's training defaults; the
    flags given then change it. Example: ``run_config("insta", ["--max-minutes", "1"])[0].training.max_minutes``."""
    run, flags = _parsed(model, argv)
    return run, flags.out, flags.device


def _parsed(model: str, argv: list[str]) -> tuple[RunConfig, Any]:
    """:func:`run_config`'s run, and the flags it was made from."""
    entry = model_entry(model)
    start = _starting_point(model, entry, argv)
    flags = tyro.cli(
        _flags_type(model, entry, start),
        args=[_unaliased(word) for word in argv],
        prog=f"python -m headfields train {model}",
        description=f"Train {model} into a run folder: where the data is, a flag for every training setting and for "
        f"every field of the recipe (--{model.replace('_', '-')}.*). Run again with the same --out to resume.",
        config=CONVENTIONS,
    )
    unread = [name for name in SUBJECT_FLAGS if name not in entry.subject_flags and getattr(flags, name) is not None]
    if unread:
        named = ", ".join("--" + name.replace("_", "-") for name in unread)
        reads = ", ".join("--" + name.replace("_", "-") for name in entry.subject_flags) or "none"
        raise ValueError(f"{unread[0]}: {model} does not read {named}: leave it out (of the subject flags it reads {reads})")
    if flags.template is not None and (flags.video is None or entry.model_type != "smplx"):
        raise ValueError(f"template: expected --video and a model of SMPL-X (portrait360) with --template, got {model}'s")
    if flags.video is not None:
        if flags.data is not None:
            raise ValueError("video: expected either --video or --data, got both")
        if flags.template is not None:  # the 360-degree portrait's chain: the turn's template, the video against it
            from ..tracking.template_video import templated_capture

            flags = dataclasses.replace(flags, data=templated_capture(flags.video, flags.template, smplx=flags.model))
        else:
            from ..tracking.video_tracker import tracked_capture

            flags = dataclasses.replace(flags, data=tracked_capture(flags.video, flame=flags.model))  # the model it trains
    given = {k: str(getattr(flags, k)) for k in ("data", "model", "regions", "eval_split") if getattr(flags, k) is not None}
    subject = start.subject
    if flags.all_held_out is not None:
        subject = dataclasses.replace(subject, all_held_out=flags.all_held_out)
    elif "all_held_out" not in entry.subject_flags:  # what the run does: one held-out split, said in config.json
        subject = dataclasses.replace(subject, all_held_out=False)
    if given or start.saved is None:
        data = given.get("data", subject.data)
        subject = SubjectSource(
            data=data,
            model=given.get("model", subject.model),
            eval_split=given.get("eval_split", subject.eval_split),
            regions=given.get("regions", subject.regions),
            model_type=entry.model_type,
            video=(entry.video() if entry.video is not None else None) if data is None else None,
            all_held_out=subject.all_held_out,
        )
    return RunConfig(model, getattr(flags, model), flags.training, subject, start.recipe_name), flags


def _flags_type(model: str, entry, start: _Start) -> type:
    """The dataclass whose fields are the command's flags: the options, the training fields (no prefix) and the
    recipe's (``--{model}.``), each defaulting to where the run starts."""
    recipes = tuple(sorted(entry.recipes))
    fields: list[tuple[str, Any, dataclasses.Field]] = [
        _option("out", Path, Path(f"outputs/{model}"), "the run folder (run again to resume)"),
        _option(
            "force", bool, False, "train into --out even where it holds files but no run (by default refused: your own folder)"
        ),
        _option("data", Path | None, None, "a capture folder (None: the model's synthetic video)"),
        _option(
            "video", Path | None, None, "a video of a face, tracked first (python -m headfields track; cached by its content)"
        ),
        _option(
            "template",
            Path | None,
            None,
            "with --video: a video of the subject turning once (python -m headfields template), the video tracked against "
            "its template (SMPL-X: portrait360; both cached by their content)",
        ),
        _option(
            "model",
            Path | None,
            None,
            "the parametric model's folder (FLAME, SMPL-X; None: the capture's own; a capture with tracked meshes needs none)",
        ),
        _option(
            "regions",
            Path | None,
            None,
            "a tracked-mesh capture's region file: regions.json or a mesh_masks/ folder (None: the capture's "
            "own, else from its segmentation)",
        ),
        _option("device", str, start.device, "cuda, cuda:1, cpu (its default: cuda when torch sees one)"),
        _option("eval_split", Literal["val", "test"] | None, None, "the held-out split (None: test)"),
        _option(
            "all_held_out",
            bool | None,
            None,
            "score the capture's other held-out split too, GaussianAvatars' val and test (None: yes, or a saved run's)",
        ),
        _option(
            "recipe",
            Literal[recipes] | None,  # type: ignore[valid-type]
            None,
            "'paper': the paper's sizes and schedules; 'cpu': what a CPU run of minutes affords (None: paper on "
            "CUDA, cpu on a CPU)",
        ),
        _option("config", Path | None, None, "a saved config.json or run folder: the start, which the other flags change"),
        ("training", Annotated[TrainingConfig, tyro.conf.arg(name="")], dataclasses.field(default=start.training)),
        (model, type(start.recipe), dataclasses.field(default=start.recipe)),
    ]
    return dataclasses.make_dataclass("TrainFlags", fields, frozen=True)


@dataclasses.dataclass(frozen=True)
class _Start:
    recipe: Any
    training: TrainingConfig
    subject: SubjectSource
    recipe_name: str | None
    device: str
    saved: RunConfig | None


def _starting_point(model: str, entry, argv: list[str], quiet: bool = False) -> _Start:
    """What the flags change: ``--config``'s run; else the run ``--out`` holds, when no ``--recipe`` is given (a rerun
    resumes with the settings it was trained with, not today's defaults: a field added since, or a default changed,
    would make another run of it, which the checkpoint refuses); else ``--recipe``'s (its default from ``--device``)."""
    first = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    first.add_argument("--recipe", default=None)
    first.add_argument("--config", type=Path, default=None)
    first.add_argument("--out", type=Path, default=Path(f"outputs/{model}"))
    first.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    known, _ = first.parse_known_args(argv)
    if known.config is None and known.recipe is None and (known.out / CONFIG_NAME).is_file():
        saved = read_run_config(known.out)
        if saved.model != model:
            raise ValueError(f"out: {known.out} holds a {saved.model} run, not {model}: give another --out")
        if not quiet and "--help" not in argv and "-h" not in argv:
            print(f"config: {known.out / CONFIG_NAME} (the run in --out, resumed)")
        return _Start(saved.recipe, saved.training, saved.subject, saved.recipe_name, known.device, saved)
    if known.config is not None:
        if known.recipe is not None:
            raise ValueError("recipe: give --recipe or --config, not both (a saved config holds its recipe)")
        saved = read_run_config(known.config)
        if saved.model != model:
            raise ValueError(f"config: {known.config} is a {saved.model} run, not {model}")
        print(f"config: {known.config}")
        return _Start(saved.recipe, saved.training, saved.subject, None, known.device, saved)
    recipes = sorted(entry.recipes)
    cuda = check_device("device", known.device, present=False).type == "cuda"  # the GPU's presence: when training
    name = known.recipe or ("paper" if "paper" in recipes and cuda else "cpu" if "cpu" in recipes else recipes[0])
    if name not in recipes:
        raise ValueError(f"recipe: expected one of {recipes} for {model}, got {name!r}")
    training = entry.training_defaults(name)
    if not quiet and "--help" not in argv and "-h" not in argv:
        print(f"recipe: {name} ({model})")
    return _Start(entry.recipe(name), training, SubjectSource(), name, known.device, None)


def _unaliased(word: str) -> str:
    """``word`` with a short flag name spelled out (``--rays=64`` -> ``--rays-per-batch=64``) and the words
    ``true``, ``false`` and ``none`` as tyro reads them (``True``, ...), as the examples' flags took them."""
    if word in LOWER_CASE:
        return LOWER_CASE[word]
    flag, equals, value = word.partition("=")
    return ALIASES.get(flag, flag) + equals + LOWER_CASE.get(value, value)


def _option(name: str, kind: Any, default: Any, help: str) -> tuple[str, Any, dataclasses.Field]:
    return name, Annotated[kind, tyro.conf.arg(help=help)], dataclasses.field(default=default)


# The scores the end of a run shows, in this order where a split has them (metrics.json holds every figure).
SUMMARY_SCORES = ("psnr", "psnr_head", "ssim", "lpips", "lpips_vgg", "chamfer_mm")
SUMMARY_RUN = ("iterations", "steps", "train_seconds", "wall_seconds", "loss")  # the run's own, where it has them


def summary(metrics: dict, file: Path) -> str:
    """A short table of ``metrics`` (a run's ``metrics.json``, written to ``file``): a row per held-out split with
    its scores, a line of the run's steps and seconds, and where the full figures are."""
    splits = metrics.get("splits") if isinstance(metrics.get("splits"), dict) else None
    if splits is None:
        splits = {str(metrics.get("eval_split", "held out")): metrics} if any(k in metrics for k in SUMMARY_SCORES) else {}
    columns = [k for k in SUMMARY_SCORES if any(isinstance(v.get(k), int | float) for v in splits.values())]
    lines = []
    if columns:
        rows = [["split", *columns]]
        for name, scores in splits.items():
            frames = f"  ({scores['eval_frames']} frames)" if isinstance(scores.get("eval_frames"), int) else ""
            rows.append([name, *(_figure(scores.get(k)) for k in columns)])
            rows[-1][-1] += frames
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    run = [f"{k} {_figure(metrics[k])}" for k in SUMMARY_RUN if isinstance(metrics.get(k), int | float)]
    if run:
        lines.append(", ".join(run))
    lines.append(f"every figure: {file}")
    return "\n".join(lines)


def _figure(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"
    return str(value)
