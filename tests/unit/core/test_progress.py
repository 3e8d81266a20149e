"""Progress reporting: plain lines to a file that is no terminal (when, and what they say, on a fake clock), a tqdm
bar on one, nothing when disabled, and ``format_seconds``."""

from __future__ import annotations

import io
import math
import re

import pytest

from headfields import progress as progress_module
from headfields.progress import LineSink, Progress, format_seconds


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(progress_module.time, "monotonic", clock)
    return clock


class TextFile(io.TextIOWrapper):
    """An in-memory text file that is no terminal, with ``name`` and ``mode`` like open()'s files.

    Not io.StringIO: the type checker the tests run under rejects it for ``file: IO[str]`` (see
    test_a_string_buffer_is_a_file), which would hide every other check here behind that one failure."""

    name = "<memory>"
    mode = "w"

    def __init__(self):
        super().__init__(io.BytesIO(), encoding="utf-8", newline="")  # newline="": written as is

    def getvalue(self) -> str:
        self.flush()
        return self.buffer.getvalue().decode("utf-8")


class Terminal(TextFile):
    """An in-memory text file that says it is a terminal."""

    def isatty(self) -> bool:
        return True


class StringTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def lines_of(file: TextFile) -> list[str]:
    return file.getvalue().splitlines()


# ---------------------------------------------------------------- plain lines


def test_plain_lines_first_throttled_last(clock):
    out = TextFile()
    bar = Progress(total=10, desc="render", unit="frame", file=out, every=30.0)
    clock.now += 2.0
    bar.update(1)
    assert len(lines_of(out)) == 1, "the first update writes a line"
    for _ in range(7):  # 8 of 10 done, 9 s in: within `every` of the first line
        clock.now += 1.0
        bar.update(1)
    assert len(lines_of(out)) == 1, "updates within `every` seconds write nothing"
    clock.now += 31.0  # past `every`: one more line
    bar.update(1)
    assert len(lines_of(out)) == 2
    clock.now += 0.5
    bar.update(1)  # the last (10 of 10) writes even within `every`
    lines = lines_of(out)
    assert len(lines) == 3
    assert lines[0].startswith("render: 1/10 (10%)")
    assert lines[1].startswith("render: 9/10 (90%)")
    assert lines[2].startswith("render: 10/10 (100%)")
    assert "\r" not in out.getvalue()
    bar.close()
    assert len(lines_of(out)) == 3, "close writes nothing more in plain mode"


def test_plain_line_contents(clock):
    """Rate, elapsed and time left from the fake clock, and the values given."""
    out = TextFile()
    bar = Progress(total=8, desc="train", unit="step", file=out, every=0)
    bar.set_values(step=2, loss=0.123456789)
    clock.now += 4.0
    bar.update(2)  # 2 steps in 4 s: 0.5 step/s, 6 left -> 12 s
    (line,) = lines_of(out)
    assert line.startswith("train: 2/8 (25%)"), line
    assert "0.5 step/s" in line
    assert "4.0s elapsed" in line
    assert "12.0s left" in line
    assert "step 2" in line and "loss 0.1235" in line
    bar.set_values(psnr=31.25)  # replaces the values shown
    clock.now += 116.0
    bar.update(2)  # 4 in 120 s: 2:00 elapsed, 4 left at 1/30 step/s -> 2:00 left
    line = lines_of(out)[-1]
    assert line.startswith("train: 4/8 (50%)"), line
    assert "2:00 elapsed" in line and "2:00 left" in line
    assert "psnr 31.25" in line and "loss" not in line


def test_every_zero_writes_each_update(clock):
    out = TextFile()
    with Progress(total=5, desc="x", file=out, every=0) as bar:
        for _ in range(5):
            clock.now += 0.1
            bar.update()
    lines = lines_of(out)
    assert [re.match(r"x: (\d+)/5", line).group(1) for line in lines] == ["1", "2", "3", "4", "5"]
    assert "\r" not in out.getvalue()


def test_plain_at_the_first_instant(clock):
    """No time elapsed yet: no rate, the time left unknown (no division by zero)."""
    out = TextFile()
    bar = Progress(total=4, desc="x", file=out)
    bar.update(1)
    (line,) = lines_of(out)
    assert "? left" in line and "0 it/s" in line


def test_plain_initial_counts_from_there(clock):
    """A resumed run: ``initial`` units done before; the rate counts only this run's."""
    out = TextFile()
    bar = Progress(total=100, desc="train", unit="step", file=out, every=0, initial=60)
    clock.now += 10.0
    bar.update(20)  # 20 steps in 10 s: 2 step/s, 20 left -> 10 s
    (line,) = lines_of(out)
    assert line.startswith("train: 80/100 (80%)"), line
    assert "2 step/s" in line and "10.0s left" in line


def test_plain_unknown_total(clock):
    out = TextFile()
    bar = Progress(total=None, desc="scan", unit="file", file=out, every=0)
    clock.now += 2.0
    bar.update(3)
    (line,) = lines_of(out)
    assert line.startswith("scan: 3  "), line
    assert "1.5 file/s" in line and "left" not in line and "%" not in line


def test_plain_unknown_total_ends_with_its_count(clock):
    """No line can say 100%: closing writes the final count once (a log shows how many there were)."""
    out = TextFile()
    with Progress(total=None, desc="scan", unit="file", file=out, every=10.0) as bar:
        for _ in range(5):
            clock.now += 1.0
            bar.update(1)
        bar.close()
    lines = lines_of(out)
    assert len(lines) == 2 and lines[0].startswith("scan: 1  ") and lines[1].startswith("scan: 5  "), lines


def test_time_budget_has_no_rate(clock):
    """unit="s": seconds spent of a budget; a rate of s/s would be meaningless."""
    out = TextFile()
    bar = Progress(total=60.0, desc="budget", unit="s", file=out, every=0)
    clock.now += 15.0
    bar.update(15.0)
    (line,) = lines_of(out)
    assert "s/s" not in line
    assert line.startswith("budget: 15/60 (25%)"), line
    assert "45.0s left" in line


def test_plain_write(clock):
    out = TextFile()
    bar = Progress(total=3, desc="x", file=out, every=0)
    bar.update()
    bar.write("a message")
    bar.update()
    lines = lines_of(out)
    assert len(lines) == 3 and lines[1] == "a message"
    assert lines[0].startswith("x: 1/3") and lines[2].startswith("x: 2/3")


def test_plain_line_by_itself(clock):
    bar = Progress(total=10, desc="eval", file=TextFile())
    bar.done = 5
    clock.now += 5.0
    line = bar.line()
    assert line.startswith("eval: 5/10 (50%)") and "5.0s left" in line
    assert bar.file.getvalue() == "", "line() only formats"


# ---------------------------------------------------------------- disabled, terminal


def test_disabled_writes_nothing(clock):
    for file in (TextFile(), Terminal()):
        with Progress(total=3, desc="x", file=file, every=0, enabled=False) as bar:
            bar.set_values(loss=1.0)
            for _ in range(3):
                clock.now += 1.0
                bar.update()
            bar.write("hidden")
        assert file.getvalue() == ""
        assert bar.done == 3, "a disabled bar still counts"


def test_terminal_gets_a_tqdm_bar():
    out = Terminal()
    with Progress(total=4, desc="render", unit="frame", file=out) as bar:
        bar.set_values(psnr=30.5)
        for _ in range(4):
            bar.update()
    text = out.getvalue()
    assert "\r" in text, "tqdm redraws the bar in place"
    assert "render" in text and "4/4" in text and "100%" in text
    assert "psnr=30.5" in text


def test_terminal_write_keeps_the_bar():
    out = Terminal()
    bar = Progress(total=4, desc="render", file=out)
    bar.update(2)
    bar.write("halfway there")
    bar.update(2)
    bar.close()
    text = out.getvalue()
    assert "halfway there\n" in text
    after = text[text.index("halfway there") :]
    assert "4/4" in after, "the bar is drawn again after the message"
    assert text.count("halfway there") == 1


def test_terminal_time_budget():
    out = Terminal()
    with Progress(total=60.0, desc="budget", unit="s", file=out) as bar:
        bar.update(30.0)
        bar.update(30.0)
    text = out.getvalue()
    assert "60/60 s" in text and "s/s" not in text
    assert "\r" in text


# ---------------------------------------------------------------- io.StringIO


def test_a_string_buffer_is_a_file(clock):
    """io.StringIO is the usual in-memory log (training's ``log``, a notebook's captured output)."""
    out = io.StringIO()
    try:
        bar = Progress(total=2, desc="x", file=out, every=0)
    except TypeError as error:  # jaxtyping.TypeCheckError is a TypeError
        raise AssertionError(
            "BUG in headfields/progress.py: Progress(file=io.StringIO()) is rejected by the runtime type checker the "
            "tests run under: `file: IO[str] | None` is checked as beartype's TextIO protocol, which io.StringIO "
            "(no `mode`/`name`) fails, and so does train(..., log=io.StringIO()) (training.py passes its log on). "
            f"Fix: type `file` as `io.TextIOBase | None` or a runtime-checkable write/flush protocol ({type(error).__name__})"
        ) from error
    clock.now += 1.0
    bar.update()
    bar.update()
    assert [line.split("  ")[0] for line in out.getvalue().splitlines()] == ["x: 1/2 (50%)", "x: 2/2 (100%)"]
    assert "\r" not in out.getvalue()


def test_a_string_buffer_terminal_gets_a_bar():
    out = StringTerminal()
    try:
        bar = Progress(total=2, desc="x", file=out)
    except TypeError as error:
        raise AssertionError(
            "BUG in headfields/progress.py: Progress(file=<io.StringIO subclass>) is rejected by the runtime type "
            "checker (`file: IO[str]`); see test_a_string_buffer_is_a_file"
        ) from error
    bar.update(2)
    bar.write("message")
    bar.close()
    assert "\r" in out.getvalue() and "2/2" in out.getvalue() and "message\n" in out.getvalue()


# ---------------------------------------------------------------- format_seconds


@pytest.mark.parametrize(
    "seconds, text",
    [
        (4.2, "4.2s"),
        (0.0, "0.0s"),
        (59.4, "59.4s"),
        (60, "1:00"),
        (125, "2:05"),
        (3599, "59:59"),
        (3600, "1:00:00"),
        (3723, "1:02:03"),
        (90061, "25:01:01"),
        (math.inf, "?"),
        (math.nan, "?"),
    ],
)
def test_format_seconds(seconds, text):
    assert format_seconds(seconds) == text


def test_a_line_sink_hands_on_whole_lines_only():
    lines = []
    sink = LineSink(lines.append)
    sink.write("train: 1/3")
    assert lines == []  # not a line yet
    sink.write(" step 1\nfinal  psnr 30\n\n")
    sink.flush()
    assert lines == ["train: 1/3 step 1", "final  psnr 30"]  # the blank line dropped
    with Progress(2, "refit", "frame", file=sink, every=0.0) as bar:
        bar.update(2)
    assert lines[-1].startswith("refit: 2/2 (100%)")
