"""One run's folder and record, whatever trains in it: the folder held while the run is (:class:`RunFolder`),
``config.json``, whether the folder's finished run is this one, the checkpoint and ``metrics.json``. The loop's ray
and frame steps (:func:`~headfields.training.train`) and a method's fit (:attr:`Method.fit
<headfields.models.method.Method>`: MonoNPHM's tracking of a frozen prior, the prior's own training) run inside one,
so every run folder is written, resumed and refused alike.

    with Engine("outputs/run", described, resume=True) as engine:
        engine.open()  # after the run's checks
        done = engine.finished(fingerprint)  # a finished run of this configuration: its metrics
        if done is None:
            engine.write_config()
            ...  # the steps
            engine.save(state)
            done = engine.finish(metrics)
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..outputs import write_atomic
from ..progress import TextSink
from .checkpoints import RunFolder, check_fingerprint, load_checkpoint, save_checkpoint
from .config import CHECKPOINT_NAME, CONFIG_NAME, METRICS_NAME

__all__ = ["Engine"]


class Engine:
    """The run folder ``out`` held by this run while the block runs (a context manager). ``described``: the run's
    ``config.json`` text (None: a run built in code writes none); ``resume``: a finished run of the same
    configuration in ``out`` is returned, not run again; ``force``: ``out`` may hold files that are no run's
    (:class:`RunFolder`); ``log``: where the block's printed lines go (None: standard output). ``lead``: whether this
    process writes (rank 0 of a process group; the others hold nothing)."""

    def __init__(
        self,
        out: str | Path,
        described: str | None,
        *,
        resume: bool = True,
        force: bool = False,
        log: TextSink | None = None,
        lead: bool = True,
    ):
        self.folder, self.described, self.resume, self.lead = RunFolder(out, force), described, resume, lead
        self.log = log
        self.began = time.monotonic()
        self._stack = contextlib.ExitStack()
        self._held = False

    @property
    def path(self) -> Path:
        return self.folder.path

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_NAME

    def __enter__(self) -> Engine:
        if self.log is not None and self.log is not sys.stdout:
            self._stack.enter_context(contextlib.redirect_stdout(self.log))
        self.began = time.monotonic()
        return self

    def open(self) -> Engine:
        """Hold the folder: made, probe-written and locked, after the run's checks (a refused run writes nothing) and
        before its work (a bad folder fails now, not at the end). Held until the block ends."""
        if self.lead and not self._held:
            self._stack.enter_context(self.folder)
            self._held = True
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()
        self._held = False

    def wall(self) -> float:
        """Seconds since the run (this process's part of it) began."""
        return time.monotonic() - self.began

    def finished(self, fingerprint: Mapping[str, Any] | None = None) -> dict | None:
        """The metrics of this run where it has finished in the folder (with ``resume``), else None. A folder holding
        another run is refused: a checkpoint of other weights or frames (``fingerprint``:
        :func:`~headfields.training.checkpoints.run_fingerprint`'s), or another configuration's ``config.json``."""
        if fingerprint is not None and self.resume and self.checkpoint.is_file():
            check_fingerprint(self.checkpoint, load_checkpoint(self.checkpoint, "cpu").get("fingerprint"), fingerprint)
        config = self.path / CONFIG_NAME
        if fingerprint is None and self.described is not None and config.is_file():
            if config.read_text() != self.described + "\n":
                raise ValueError(f"out: {self.path} holds another run's {CONFIG_NAME}; give another --out")
        metrics = self.path / METRICS_NAME
        if not (self.resume and metrics.is_file()):
            return None
        print(f"{self.path}: this run has finished: its metrics")
        return json.loads(metrics.read_text())

    def write_config(self) -> None:
        """``config.json``: the run's configuration (a new run's before its work; nothing for a run built in code)."""
        if self.lead and self.described is not None:
            write_atomic(self.path / CONFIG_NAME, self.described + "\n")

    def save(self, state: Mapping[str, Any]) -> None:
        """The checkpoint, ``state`` with the run's configuration inside (what :func:`headfields.load_run` reads
        when ``config.json`` is gone)."""
        if self.lead:
            save_checkpoint({**state, "run": self.described}, self.checkpoint)

    def finish(self, metrics: Mapping[str, Any]) -> dict:
        """``metrics.json``: the finished run's measures; returns them."""
        if self.lead:
            write_atomic(self.path / METRICS_NAME, json.dumps(metrics, indent=2) + "\n")
        return dict(metrics)
