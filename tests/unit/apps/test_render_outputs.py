"""Issue 96: ``render --png`` writes its frames' folder whole (headfields.outputs.atomic_folder): it holds exactly one
render's frames, a render that stops mid-way leaves the earlier render's frames whole, a killed writer's temporary
folder is swept by the next, and a folder there that no render wrote (a capture's ``images/``) is refused by name
before the run is loaded. The session's tiny INSTA run, loaded once, its frames drawn flat: what is under test is what
the command writes, not the drawing (tests/e2e/test_commands.py renders real PNGs). The PNG folder is held with the
video: a second writer is refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from headfields.apps.commands import main
from headfields.apps.commands import render as render_command
from headfields.apps.commands.render import PNG_MARKER
from headfields.apps.runs import load_run
from headfields.outputs import atomic_folder, hold, remove_folder

ORBIT = ["--camera", "orbit", "--device", "cpu"]


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def frames(count: int) -> list[str]:
    return [f"{k:05d}.png" for k in range(count)]


class Drawing:
    """render_view's stand-in: frame ``k`` a flat image of ``shade``; a Ctrl-C at frame ``stop_at``."""

    def __init__(self) -> None:
        self.shade, self.stop_at = 0.5, None

    def __call__(self, model, cameras, k, *args) -> torch.Tensor:
        if k == self.stop_at:
            raise KeyboardInterrupt
        return torch.full((cameras.height, cameras.width, 3), self.shade)


@pytest.fixture(scope="module")
def loaded_run(tiny_insta_run):
    return load_run(tiny_insta_run[0], "cpu", pixels=False)  # as render loads it for a camera path


@pytest.fixture
def drawing(tiny_insta_run, loaded_run, monkeypatch) -> Drawing:
    drawing = Drawing()
    monkeypatch.setattr(render_command, "load_run", lambda *args, **kwargs: loaded_run)
    monkeypatch.setattr(render_command, "render_view", drawing)
    return drawing


def render(run: Path, out: Path, count: int) -> int:
    argv = ["render", str(run), *ORBIT, "--frames", str(count), "--resolution", "8"]
    return main([*argv, "--out", str(out), "--png"])


def test_the_png_folder_holds_exactly_one_renders_frames(tiny_insta_run, drawing, tmp_path, capsys):
    out = tmp_path / "o.mp4"
    assert render(tiny_insta_run[0], out, 4) == 0
    assert listing(tmp_path / "o") == sorted([PNG_MARKER, *frames(4)])
    assert render(tiny_insta_run[0], out, 2) == 0  # fewer frames: none of the first render's left among them
    assert listing(tmp_path / "o") == sorted([PNG_MARKER, *frames(2)])
    assert json.loads((tmp_path / "o" / PNG_MARKER).read_text()) == {"video": "o.mp4", "frames": 2}
    assert listing(tmp_path) == ["o", "o.mp4"]  # no temporary folder, no lock


def test_the_png_folder_is_held_with_the_video(tiny_insta_run, drawing, tmp_path, capsys):
    with hold(tmp_path / "o", "png"):  # another process's render writing the frames of o.mp4
        assert render(tiny_insta_run[0], tmp_path / "o.mp4", 2) == 2
    assert f"png: {tmp_path / 'o'} is being written by another process ({os.getpid()})" in capsys.readouterr().err
    assert listing(tmp_path) == []


@pytest.mark.parametrize("kind", ["capture_images", "a_file_of_the_users", "a_file", "no_marker"])
def test_a_folder_no_render_wrote_is_refused_before_the_run_is_loaded(tiny_insta_run, tmp_path, monkeypatch, capsys, kind):
    # --out CAPTURE/images.mp4 --png: the capture's images/ (00000.png, ... as VHAP names them) is not the render's.
    monkeypatch.setattr(render_command, "load_run", lambda *a, **k: pytest.fail("the run was loaded"))
    folder = tmp_path / "images"
    if kind == "a_file":
        folder.write_bytes(b"not a folder")
    else:
        folder.mkdir()
        (folder / "00000.png").write_bytes(b"a capture's image")
        if kind == "a_file_of_the_users":  # a render's folder the user put a file in: still theirs
            (folder / PNG_MARKER).write_text("{}")
            (folder / "notes.txt").write_text("mine")
        elif kind == "capture_images":
            (folder / "transforms.json").write_text("{}")
    before = {p.name: p.read_bytes() for p in folder.iterdir()} if folder.is_dir() else folder.read_bytes()
    assert render(tiny_insta_run[0], tmp_path / "images.mp4", 2) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and f"png: {folder} (the frames' folder of --out) is not an earlier render's" in error[0]
    assert "notes.txt" in error[0] if kind == "a_file_of_the_users" else True
    after = {p.name: p.read_bytes() for p in folder.iterdir()} if folder.is_dir() else folder.read_bytes()
    assert after == before and listing(tmp_path) == ["images"]  # nothing written: no video, no lock


def test_a_render_stopped_mid_way_leaves_the_earlier_frames_whole(tiny_insta_run, drawing, tmp_path):
    out = tmp_path / "o.mp4"
    assert render(tiny_insta_run[0], out, 3) == 0
    earlier = {name: (tmp_path / "o" / name).read_bytes() for name in listing(tmp_path / "o")}
    drawing.shade, drawing.stop_at = 0.9, 2  # other frames, and a Ctrl-C at the third
    assert render(tiny_insta_run[0], out, 4) == 130
    assert {name: (tmp_path / "o" / name).read_bytes() for name in listing(tmp_path / "o")} == earlier
    assert listing(tmp_path) == ["o", "o.mp4"]
    # A writer killed mid-way leaves its hidden temporary folder: the next render of o sweeps it.
    killed = tmp_path / ".o.4242.0badcafe.tmpdir"
    killed.mkdir()
    (killed / "00000.png").write_bytes(b"half")
    drawing.stop_at = None
    assert render(tiny_insta_run[0], out, 1) == 0
    assert listing(tmp_path) == ["o", "o.mp4"] and listing(tmp_path / "o") == sorted([PNG_MARKER, *frames(1)])


def test_a_folder_written_whole_replaces_the_previous_one_only_when_complete(tmp_path):
    target = tmp_path / "frames"
    with atomic_folder(target) as folder:
        assert folder.parent == tmp_path and folder.name.startswith(".frames.") and folder.name.endswith(".tmpdir")
        (folder / "a").write_text("1")
        assert not target.exists()
    assert listing(target) == ["a"]
    for error in (RuntimeError("failed"), KeyboardInterrupt()):
        with pytest.raises(type(error)), atomic_folder(target) as folder:
            (folder / "b").write_text("half")
            raise error
        assert listing(target) == ["a"] and listing(tmp_path) == ["frames"]
    (tmp_path / "scratch").mkdir()
    with atomic_folder(target, scratch=tmp_path / "scratch") as folder:  # the temporary elsewhere, swapped in all the same
        assert folder.parent == tmp_path / "scratch"
        (folder / "c").write_text("2")
    assert listing(target) == ["c"] and listing(tmp_path / "scratch") == []
    others = [".frames2.4242.0badcafe.tmpdir", ".frames.v2.4242.0badcafe.tmpdir"]  # other folders' temporaries
    for other in others:
        (tmp_path / other).mkdir()
    with atomic_folder(target):
        assert all((tmp_path / other).is_dir() for other in others)  # not this writer's to sweep
    remove_folder(target)
    assert listing(tmp_path) == sorted([*others, "scratch"])
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError, match=r"png: .*file is in the way: not a folder"), atomic_folder(tmp_path / "file", "png"):
        pass
    assert (tmp_path / "file").is_file() and listing(tmp_path) == sorted([*others, "file", "scratch"])
