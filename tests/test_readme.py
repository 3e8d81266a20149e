"""The README's quick start runs as written, and its primitive table marks as working only what is exported."""

import importlib
import re
from pathlib import Path

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_quick_start_runs_as_written():
    code = re.search(r"## Quick start\n\n```python\n(.*?)```", README, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md quick start", "exec"), scope)
    assert scope["q"].distance.shape == (1000,) and scope["k"].index.shape == (1000, 4)
    assert scope["points"].grad is not None and scope["points"].grad.abs().sum() > 0


def test_heads_data_and_rays_run_as_written(tmp_path, monkeypatch):
    code = re.search(r"### Heads, data and rays\n\n```python\n(.*?)```", README, re.S).group(1)
    monkeypatch.chdir(tmp_path)  # the snippet writes its files under the working directory
    scope: dict = {}
    exec(compile(code, "README.md heads, data and rays", "exec"), scope)
    assert scope["head"].vertices.shape[0] == 4
    assert len(scope["rays"]) == 1024 and scope["rays"].frame.max() < len(scope["train"])


def test_primitives_marked_working_are_exported():
    working = [row for row in README.splitlines() if row.startswith("| `") and "| working" in row]
    assert working
    for row in working:
        cells = row.split("|")
        module = importlib.import_module(re.search(r"`([a-z_][a-z0-9_.]*)`", cells[2]).group(1))
        # The names a row is about stand before its colon; argument names may follow it. Methods name their class.
        names = {name.split(".")[0] for name in re.findall(r"`([A-Za-z_][A-Za-z0-9_.]*)`", cells[1].split(":")[0])}
        assert names <= set(module.__all__), f"{row}: {names - set(module.__all__)} not exported by {module.__name__}"
