"""Progress with rate and time left: a tqdm bar on a terminal, plain lines (a log file, CI, a notebook's captured
output) otherwise, so a long step never runs silent and a log never fills with carriage returns.

    with Progress(total=48, desc="render", unit="frame") as bar:
        for frame in range(48):
            ...
            bar.set_values(psnr=31.2)  # shown beside the bar / on the line
            bar.update(1)
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from tqdm import tqdm

__all__ = ["LineSink", "Progress", "TextSink", "format_seconds"]


@runtime_checkable
class TextSink(Protocol):
    """Where progress goes: a text file, a stream, or anything with ``write(str)``."""

    def write(self, text: str, /) -> object: ...


class LineSink:
    """A :class:`TextSink` that hands each line written to ``log`` (a stream's writer feeding a caller's line logger:
    the training loop inside the video tracker)."""

    def __init__(self, log: Callable[[str], object]) -> None:
        self.log, self.pending = log, ""

    def write(self, text: str) -> None:
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            if line.strip():
                self.log(line)

    def flush(self) -> None:  # print(..., flush=True) asks; each line went out whole already
        pass


PLAIN_EVERY_SECONDS = 30.0  # plain lines: one at most this often (and at the first and last update)


def format_seconds(seconds: float) -> str:
    """``seconds`` as ``1:02:03``, ``2:03`` or ``4.2s``."""
    if not math.isfinite(seconds):
        return "?"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """``total`` units of work (None: unknown) written to ``file`` (default stderr): a tqdm bar when ``file`` is a
    terminal, else a line ``desc: done/total (percent), rate, elapsed, time left`` every ``every`` seconds.
    ``enabled=False`` writes nothing (another rank's copy of the loop)."""

    def __init__(
        self,
        total: float | None,
        desc: str,
        unit: str = "it",
        file: TextSink | None = None,
        every: float = PLAIN_EVERY_SECONDS,
        enabled: bool = True,
        initial: float = 0,
    ):
        """``unit="s"`` counts a time budget: the bar shows seconds spent of it and time left, no rate."""
        self.file = file if file is not None else sys.stderr
        self.total, self.desc, self.unit, self.every, self.enabled = total, desc, unit, every, enabled
        self._counted = False
        self.done, self.start, self.last = initial, time.monotonic(), -math.inf
        self.initial = initial
        self.values: dict[str, object] = {}
        terminal = enabled and hasattr(self.file, "isatty") and self.file.isatty()
        timed = {"bar_format": "{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]"} if unit == "s" else {}
        self._bar = (
            tqdm(total=total, desc=desc, unit=unit, file=self.file, initial=initial, dynamic_ncols=True, **timed)
            if terminal
            else None
        )

    def set_values(self, **values) -> None:
        """Values (e.g. the step and the loss) shown with the progress from now on."""
        self.values = values
        if self._bar is not None:
            self._bar.set_postfix({k: _short(v) for k, v in values.items()}, refresh=False)

    def update(self, amount: float = 1) -> None:
        """``amount`` more units done."""
        self.done += amount
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(amount)
            return
        now = time.monotonic()
        finished = self.total is not None and self.done >= self.total
        if now - self.last >= self.every or finished or self.last == -math.inf:
            self.last = now
            print(self.line(), file=self.file, flush=True)

    def line(self) -> str:
        """The plain line of the current state."""
        elapsed = time.monotonic() - self.start
        rate = (self.done - self.initial) / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.desc}: {_short(self.done)}"]
        if self.total is not None:
            parts[0] += f"/{_short(self.total)} ({100 * self.done / self.total:.0f}%)" if self.total else ""
            left = (self.total - self.done) / rate if rate > 0 else math.inf
            speed = "" if self.unit == "s" else f"{rate:.3g} {self.unit}/s, "  # a budget's seconds: no rate
            parts.append(f"{speed}{format_seconds(elapsed)} elapsed, {format_seconds(left)} left")
        else:
            parts.append(f"{rate:.3g} {self.unit}/s, {format_seconds(elapsed)} elapsed")
        parts += [f"{k} {_short(v)}" for k, v in self.values.items()]
        return "  ".join(parts)

    def write(self, text: str) -> None:
        """A message that does not break the bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text, file=self.file)
        else:
            print(text, file=self.file, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled and self.total is None and self.done > self.initial and not self._counted:
            self._counted = True  # with no total no line says it finished: the final count, once
            print(self.line(), file=self.file, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
