"""``python -m headfields COMMAND`` (or ``headfields COMMAND``): ``train`` trains a registered model into a run
folder; ``render`` makes videos of a run (replay, reenactment, camera paths), ``export`` writes coloured meshes,
``view`` serves a live viewer in the browser; ``python -m headfields COMMAND --help`` explains each flag."""

from __future__ import annotations

import argparse
import sys

from ..checkpoints import CheckpointError
from ..outputs import OutputBusyError
from . import export, render, view

__all__ = ["main", "parser"]


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m headfields", description=__doc__.split("\n")[0])
    commands = top.add_subparsers(title="commands", dest="name", required=True)
    # train's flags depend on its model (tyro builds them): listed here, parsed by headfields.commands.train.
    commands.add_parser("train", help="train a model: python -m headfields train MODEL --help", add_help=False)
    for module in (render, export, view):
        module.add_parser(commands)
    return top


def main(argv: list[str] | None = None) -> int:
    """Run the command of ``argv`` (default: the command line); a bad argument exits with its message, status 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    name = argv[0] if argv else None
    try:
        if name == "train":
            from . import train

            return train.main(argv[1:])
        args = parser().parse_args(argv)
        args.command(args)
    # Bad input, or a folder it cannot write (a read-only run: give --out elsewhere): its message, not a traceback.
    except (ValueError, OSError, ImportError, CheckpointError, OutputBusyError) as error:
        print(f"python -m headfields {name}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: what was being written was discarded (headfields.outputs)
        print(f"python -m headfields {name}: interrupted", file=sys.stderr)
        return 130
    return 0
