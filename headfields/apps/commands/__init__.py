"""``python -m headfields COMMAND`` (or ``headfields COMMAND``): ``train`` trains a registered model into a run
folder; ``render`` makes videos of a run (replay, reenactment, camera paths), ``export`` writes coloured meshes,
``view`` serves a live viewer in the browser, ``inspect`` checks a capture before training on it, ``track``
turns a video of a face into a capture, ``template`` a video of a turn into a personal template;
``python -m headfields COMMAND --help`` explains each flag."""

from __future__ import annotations

import _thread
import argparse
import contextlib
import sys
import threading
from collections.abc import Iterator

from ...checks import check_device
from ...outputs import OutputBusyError
from ...training.checkpoints import CheckpointError
from . import export, inspect, render, template, track, view

__all__ = ["ctrl_c_kept", "main", "parser"]

INTERRUPT_AGAIN_AFTER = 0.01  # seconds: a dropped Ctrl-C is raised again once the finalizer and the hook returned


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m headfields", description=__doc__.split("\n")[0])
    commands = top.add_subparsers(title="commands", dest="name", required=True)
    # train's flags depend on its model (tyro builds them): listed here, parsed by headfields.apps.commands.train.
    commands.add_parser("train", help="train a model: python -m headfields train MODEL --help", add_help=False)
    for module in (render, export, view, inspect, track, template):
        module.add_parser(commands)
    return top


@contextlib.contextmanager
def ctrl_c_kept() -> Iterator[None]:
    """Inside, a Ctrl-C that lands while a finalizer runs (a Warp array's ``__del__``, between two frames) is raised
    again in the main thread: Python prints such a ``KeyboardInterrupt`` as "ignored" and drops it, and a render of
    thousands of frames then went on. ``sys.unraisablehook`` is the caller's again after the block."""
    previous = sys.unraisablehook

    def hook(unraisable) -> None:
        previous(unraisable)
        if issubclass(unraisable.exc_type, KeyboardInterrupt):
            # From another thread, a moment later: raised inside the hook it would be dropped again. The main thread
            # raises it at its next instruction after the finalizer (or, dropped once more, it comes back here).
            threading.Timer(INTERRUPT_AGAIN_AFTER, _thread.interrupt_main).start()

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


def main(argv: list[str] | None = None) -> int:
    """Run the command of ``argv`` (default: the command line); a bad argument exits with its message, status 2."""
    with ctrl_c_kept():
        return _main(sys.argv[1:] if argv is None else list(argv))


def _main(argv: list[str]) -> int:
    name = argv[0] if argv else None
    try:
        if name == "train":
            from . import train

            return train.main(argv[1:])
        args = parser().parse_args(argv)
        if getattr(args, "device", None) is not None:  # before a folder is probed or a run loaded
            args.device = check_device("device", args.device)
        status = args.command(args)  # an exit status (inspect: 1 when the capture has a problem), or a summary
    # Bad input, or a folder it cannot write (a read-only run: give --out elsewhere): its message, not a traceback.
    except (ValueError, OSError, ImportError, CheckpointError, OutputBusyError) as error:
        print(f"python -m headfields {name}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: what was being written was discarded (headfields.outputs)
        print(f"python -m headfields {name}: interrupted", file=sys.stderr)
        return 130
    return status if isinstance(status, int) else 0
