"""``python -m headfields inspect CAPTURE``: a capture checked before training on it. Every split is read as
training reads it, and the report says what was found (frames per split, image size, intrinsics, label codes,
expression width, tracked meshes, the subject's model), which registered models can train on it, and each problem
on a line naming the file and the field; the exit status is 1 when there is any.

    python -m headfields inspect data/me                      # a capture in INSTA's layout
    python -m headfields inspect data/subject --model FLAME2020   # with the parametric model's folder
    python -m headfields inspect data/remeshed --regions regions.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ...data.inspect import inspect_capture
from ...models.registry import MODELS
from ._common import command_parser

__all__ = ["add_parser", "inspect"]


def add_parser(commands) -> None:
    parser = command_parser(commands, "inspect", "check a capture before training on it", __doc__)
    parser.add_argument("capture", type=Path, help="the capture's folder (transforms_*.json or transforms.json)")
    parser.add_argument("--model", type=Path, default=None, help="the parametric model folder (default: the capture's own)")
    parser.add_argument("--regions", type=Path, default=None, help="a tracked-mesh capture's region file")
    parser.set_defaults(command=inspect)


def inspect(args: argparse.Namespace) -> int:
    """Print the report; 1 when it found a problem. Each registered model is built at its CPU recipe (the cheapest)."""
    builders = {name: (lambda subject, entry=entry: entry.build(subject, entry.recipe("cpu"))) for name, entry in MODELS.items()}
    report = inspect_capture(args.capture, args.model, args.regions, models=builders)
    print(report)
    return 1 if report.problems else 0
