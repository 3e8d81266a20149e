"""The README's snippets run as written, its figures are the results page's, the results page holds today's figures
only, and the primitive table of docs/index.md marks as working only what is exported."""

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text()
INDEX = (ROOT / "docs" / "index.md").read_text()
RESULTS = (ROOT / "docs" / "results.md").read_text()


def _snippet(text: str, heading: str) -> str:
    """The first python block under ``heading``, before the next heading."""
    return re.search(rf"{re.escape(heading)}\n\n(?:(?!\n#).)*?```python\n(.*?)```", text, re.S).group(1)


def test_readme_is_a_front_page():
    assert len(README.splitlines()) < 200
    assert "make demo" in README and "make test" in README  # the two commands; CI calls make test
    assert "have not yet run on a GPU" not in README
    assert not re.search(r"\b(later|earlier|previous|this) session\b|\bcommit [0-9a-f]{7}\b|\bissue \d+", README)


def test_quick_start_runs_as_written():
    scope: dict = {}
    exec(compile(_snippet(README, "## Quick start"), "README.md quick start", "exec"), scope)
    assert scope["q"].distance.shape == (1000,) and scope["k"].index.shape == (1000, 4)
    assert scope["points"].grad is not None and scope["points"].grad.abs().sum() > 0


def test_heads_data_and_rays_run_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the snippet writes its files under the working directory
    scope: dict = {}
    exec(compile(_snippet(README, "### Heads, data and rays"), "README.md heads, data and rays", "exec"), scope)
    assert scope["head"].vertices.shape[0] == 4
    assert len(scope["rays"]) == 1024 and scope["rays"].frame.max() < len(scope["train"])


def test_avatar_from_primitives_trains_as_written(tmp_path, monkeypatch):
    code = _snippet(README, "### An avatar from primitives")
    assert len([line for line in code.splitlines() if line.strip()]) <= 35  # the promise: about 30 lines
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md an avatar from primitives", "exec"), scope)
    assert scope["metrics"]["iterations"] == 30 and scope["metrics"]["psnr"] > 10
    assert (tmp_path / "outputs" / "mine" / "metrics.json").is_file()


def test_docs_index_getting_started_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    code = _snippet(INDEX, "## Getting started: a head, rays and a render")
    exec(compile(code, "docs/index.md getting started", "exec"), scope)
    assert scope["image"].shape == (64, 64, 3) and scope["depth"].shape == (64, 64)
    assert scope["depth"].max() > 0  # the camera sees the head


def test_readme_models_table_figures_are_on_the_results_page():
    section = README.split("## Models")[1].split("## Command line")[0]
    table = section.split("\n\n")[2]
    header, rows = table.splitlines()[0], [row for row in table.splitlines() if row.startswith("| `")]
    assert len(rows) == 10
    kinds = [cell.split(":")[0].strip() for cell in header.split("|")[3:-1]]  # each figure column names its run
    assert kinds[0] == "GPU" and kinds == sorted(kinds, key=("GPU", "CPU").index), kinds  # the GPU's columns first
    assert not re.search(r"[*†‡]", table), "a footnote mark in the models table: say it in the notes"
    for row in rows:
        for cell in row.split("|")[3:-1]:  # the figures, after the model's key and what it is
            for figure in re.findall(r"\d[\d,]*\.\d+|\d{1,3}(?:,\d{3})+", cell):
                assert figure in RESULTS, f"{figure} of {row.split('|')[1].strip()} is not in docs/results.md"
    notes = section.replace(table, "")
    assert "e0f7527" in notes and "2026-11-27" in notes and "2026-11-23" in notes  # each column's commit and date
    for figure in ("35.39 dB", "35.84 dB", "1.98 mm", "1.15 mm", "37.4"):  # the notes' figures too
        assert figure in notes and figure in RESULTS


MAX_QUESTIONS = 16  # sections of docs/results.md: one a question
MAX_ENTRIES = 7  # a section's entries of figures: a bold-titled block or a table each (GPU, CPU, their counts)


def test_results_page_holds_todays_figures():
    """One section per question, each with a few entries of figures (a bold-titled block or a table: a table stays a
    table, however many rows), each naming a command and a date; no log of what was tried. The cap counts questions
    and entries, not lines: a new figure replaces the old one, a new question earns its section."""
    assert not re.search(r"(?i)\btried\b|not landed|since commit|what does less work", RESULTS)
    sections = RESULTS.split("\n## ")[1:]
    assert 10 <= len(sections) <= MAX_QUESTIONS, len(sections)
    for section in sections:
        title = section.splitlines()[0]
        entries = len(re.findall(r"^\*\*[^*]+\*\*", section, flags=re.M)) + len(re.findall(r"^\|---", section, flags=re.M))
        assert entries <= MAX_ENTRIES, f"{title}: {entries} entries of figures (today's figures, not a history)"
        assert re.search(r"`(python|pytest|make) ", section), f"{title}: no command"
        assert re.search(r"\b2026-\d\d-\d\d\b", section), f"{title}: no date"
        if "**GPU" in section and "**CPU" in section:
            assert section.index("**GPU") < section.index("**CPU"), f"{title}: the CPU's figures before the GPU's"


def test_readme_command_line_names_every_registered_model():
    from headfields.models.registry import MODELS

    section = README.split("## Command line")[1].split("\n## ")[0]
    assert all(f"`{name}`" in section for name in MODELS), [name for name in MODELS if f"`{name}`" not in section]
    models = README.split("## Models")[1].split("## Command line")[0]
    assert all(f"| `{name}` |" in models for name in MODELS)


def test_primitives_marked_working_are_exported():
    working = [row for row in INDEX.splitlines() if row.startswith("| `") and "| working" in row]
    assert len(working) > 20
    for row in working:
        cells = row.split("|")
        module = importlib.import_module(re.search(r"`([a-z_][a-z0-9_.]*)`", cells[2]).group(1))
        # The names a row is about stand before its colon; argument names may follow it. Methods name their class.
        names = {name.split(".")[0] for name in re.findall(r"`([A-Za-z_][A-Za-z0-9_.]*)`", cells[1].split(":")[0])}
        assert names, row
        assert names <= set(module.__all__), f"{row}: {names - set(module.__all__)} not exported by {module.__name__}"
