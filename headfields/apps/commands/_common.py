"""What every command over a run shares: its parser with the run folder and the device, and the refusal of a flag
that the run's model has no use for."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...models.registry import model_entry
from ...networks import PRECISIONS
from ...training import CONFIG_NAME
from ..runs import read_run_config


def command_parser(commands, name: str, help: str, doc: str) -> argparse.ArgumentParser:
    """Subcommand ``name`` of ``commands``, described by the first paragraph of ``doc``, its examples after it."""
    return commands.add_parser(
        name,
        help=help,
        description=doc.split("\n\n")[0],
        epilog="examples:\n" + doc.split("\n\n", 1)[1] if "\n\n" in doc else None,
        formatter_class=_Formatter,
    )


def add_video_cues(parser: argparse.ArgumentParser) -> None:
    """The flags of a command that reads a video with the video tracker's ingest (``track``, ``template``): its frame
    rate, trimmed seconds, and the user's own landmarks and masks."""
    parser.add_argument("--fps", type=float, default=25.0, help="frames a second the video is resampled to")
    parser.add_argument("--trim-start", type=float, default=0.0, help="seconds dropped at the start")
    parser.add_argument("--trim-end", type=float, default=0.0, help="seconds dropped at the end")
    parser.add_argument(
        "--landmarks", type=Path, default=None, help="your own landmarks: a folder, one file a frame (iBUG-68 or MediaPipe ids)"
    )
    parser.add_argument(
        "--landmarks-first", type=int, default=0, help="the number in the first landmark file's name (1: ffmpeg's %%05d)"
    )
    parser.add_argument("--masks", type=Path, default=None, help="your own foreground masks: a folder of PNGs, one a frame")


def run_parser(commands, name: str, help: str, doc: str) -> argparse.ArgumentParser:
    """:func:`command_parser` with the positional run folder and ``--device``."""
    parser = command_parser(commands, name, help, doc)
    parser.add_argument("run", type=Path, help="a training run's folder (its --out)")
    parser.add_argument("--device", default=None, help="default: cuda when torch sees one, else cpu")
    return parser


def add_render_options(parser: argparse.ArgumentParser, early_stop: float, precision: str) -> None:
    """The flags of a command that renders a run's rays (``render``, ``view``): rays a call, each ray's stop, the
    MLPs' products, with the command's defaults, and whether the process keeps freed memory on the CPU (the command
    owns its process, unlike the library's calls: :mod:`headfields.backends.cpu.process_tuning`)."""
    parser.add_argument("--chunk", type=int, default=None, help="rays rendered at once (default: the run's render_chunk)")
    parser.add_argument(
        "--early-stop", type=float, default=early_stop,
        help="stop a ray once its transmittance falls below this (the scores: 1e-4; instant-ngp's interactive renderer: 1e-2)",
    )  # fmt: skip
    parser.add_argument(
        "--precision", choices=PRECISIONS, default=precision,
        help="the density and colour MLPs' products on the CPU (bfloat16: oneDNN's, AMX where the CPU has it)",
    )  # fmt: skip
    parser.add_argument(
        "--keep-freed-memory", action=argparse.BooleanOptionalAction, default=True,
        help="on the CPU, glibc's malloc keeps freed blocks for the renders' large tensors while the command runs "
        "(headfields.backends.cpu.freed_memory, TrainingConfig.tune_malloc's setting: no page fault per fresh tensor; "
        "up to 1 GiB kept)",
    )  # fmt: skip


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """The examples kept as written; a flag's default added to its help unless the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default is argparse.SUPPRESS
        if "default" in text or unset or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def ray_flags(early_stop: float, precision: str) -> dict[str, tuple[Any, str]]:
    """The flags of :func:`add_render_options` for a field's rays, with a command's defaults: each flag's name in
    ``args`` -> its default and what it sets (what :func:`refuse_unused_flags` takes)."""
    return {
        "chunk": (None, "the rays rendered at once"),
        "early_stop": (early_stop, "the transmittance a ray stops at"),
        "precision": (precision, "the field MLPs' products"),
    }


def run_model(run: str | Path) -> str | None:
    """The model that the ``config.json`` of run folder ``run`` names, read without loading the run; None without one
    (a run whose checkpoint alone holds its configuration: its model is known once it is loaded)."""
    run = Path(run)
    return read_run_config(run).model if (run / CONFIG_NAME).is_file() else None


def refuse_unused_flags(args: argparse.Namespace, model: str | None, flags: Mapping[str, tuple[Any, str]]) -> None:
    """Refuse the first of ``flags`` (each flag's name in ``args`` -> its default and what it sets) that ``args``
    gives another value than its default, when ``model`` (a name of the registry; None: not known yet) is rasterised
    (``Method.rasterised``, :mod:`headfields.models.method`): the flag would change nothing."""
    if model is None or not model_entry(model).rasterised:
        return
    for name, (default, sets) in flags.items():
        if getattr(args, name) != default:
            raise ValueError(
                f"--{name.replace('_', '-')}: sets {sets}, and {model} draws whole images with a rasteriser (no field): "
                "it changes nothing for this run; leave it out"
            )
