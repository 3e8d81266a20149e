"""A tracker's run beside its output: its stages kept in a work folder while it runs (an interrupted run resumes from
them), its result written there and renamed into place, so the output path holds a whole result or nothing; bad input
leaves nothing at all. The video tracker's and the template tracker's."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

__all__ = ["move_into_place", "staged"]


@contextlib.contextmanager
def staged(work: Path) -> Iterator[Path]:
    """``work``, a run's folder of stages beside its output: kept when the run is interrupted (a rerun resumes from
    it), removed when the run ends or its input is refused (a ``ValueError`` or a missing file: nothing is left)."""
    work.mkdir(parents=True, exist_ok=True)
    try:
        yield work
    except (ValueError, FileNotFoundError):
        shutil.rmtree(work, ignore_errors=True)
        raise
    shutil.rmtree(work, ignore_errors=True)


def move_into_place(folder: Path, out: Path) -> None:
    """The finished ``folder`` renamed to ``out`` (new, or an empty folder: checked before the run), so ``out`` holds a
    whole result or nothing."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.rmdir()
    folder.rename(out)
