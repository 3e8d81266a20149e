"""The README's quick start runs as written, and its primitive table marks as working only what is exported."""

import re
from pathlib import Path

import headfields.geometry

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_quick_start_runs_as_written():
    code = re.search(r"## Quick start\n\n```python\n(.*?)```", README, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md quick start", "exec"), scope)
    assert scope["q"].distance.shape == (1000,) and scope["k"].index.shape == (1000, 4)
    assert scope["points"].grad is not None and scope["points"].grad.abs().sum() > 0


def test_primitives_marked_working_are_exported():
    working = [row for row in README.splitlines() if row.startswith("| `") and "| working" in row]
    # The names a row is about stand before its colon; argument names may follow it.
    names = {name for row in working for name in re.findall(r"`([A-Za-z_]+)`", row.split("|")[1].split(":")[0])}
    assert names and names <= set(headfields.geometry.__all__)
