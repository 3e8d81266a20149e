"""Outputs written whole (headfields.outputs) and the commands' outputs under faults: Ctrl-C, SIGKILL, a full disk, a
read-only folder, two writers, sizes that would not fit. Each case of issue 38's probe is a test here."""

from __future__ import annotations

import errno
import io
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from headfields import outputs
from headfields.apps.commands import ctrl_c_kept, main
from headfields.apps.export import write_ply
from headfields.apps.media import video_info, write_video
from headfields.apps.runs import RunConfig, read_run_config
from headfields.configs import CLASS_KEY, config_classes, config_from_dict, register_config
from headfields.outputs import OutputBusyError, atomic_path, hold, is_temporary, probe_folder, write_atomic

ROOT = Path(__file__).resolve().parents[3]


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def frames(count: int, size: int = 16) -> np.ndarray:
    return np.stack([np.full((size, size, 3), 40 * k % 256, np.uint8) for k in range(count)])


# --- the module: one file whole, or the previous one ------------------------------------------------------------


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    path = write_atomic(tmp_path / "metrics.json", '{"psnr": 30}')
    for error in (RuntimeError("render failed"), KeyboardInterrupt()):
        with pytest.raises(type(error)):
            with atomic_path(path) as temporary:
                temporary.write_text('{"psnr": ')  # half of the new file
                raise error
        assert path.read_text() == '{"psnr": 30}' and listing(tmp_path) == ["metrics.json"]


def test_the_temporary_file_is_hidden_beside_the_target_and_keeps_its_suffix(tmp_path):
    with atomic_path(tmp_path / "mesh.ply") as temporary:
        assert temporary.parent == tmp_path and temporary.name.startswith(".mesh.") and temporary.suffix == ".ply"
        assert is_temporary(temporary.name) and temporary.exists() and not (tmp_path / "mesh.ply").exists()
        temporary.write_bytes(b"ply")
    assert listing(tmp_path) == ["mesh.ply"] and not is_temporary("mesh.ply")


def test_a_new_file_gets_the_permissions_of_the_callers_umask(tmp_path):
    write_atomic(tmp_path / "a.json", "{}")
    (tmp_path / "b.json").write_text("{}")  # what open() gives
    assert (tmp_path / "a.json").stat().st_mode == (tmp_path / "b.json").stat().st_mode


class FillingDisk(io.RawIOBase):
    """A file on a disk with ``room`` bytes left: the write that crosses it fails with ENOSPC, as the kernel's."""

    def __init__(self, path: Path, room: int):
        self.file, self.room = open(path, "wb"), room  # noqa: SIM115 (closed by close())

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        data = bytes(data)
        if len(data) > self.room:
            self.file.write(data[: self.room])
            self.file.flush()
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.file.write(data)

    def close(self) -> None:
        self.file.close()
        super().close()


@pytest.fixture
def disk_fills_while_writing(monkeypatch):
    """Temporary .ply files opened for writing get 8 KB of disk; everything else (the probe) writes as usual."""
    opened = pathlib.Path.open

    def limited(self, mode="r", *args, **kwargs):
        if "w" in mode and is_temporary(self.name) and self.suffix == ".ply":
            return FillingDisk(self, 8192)
        return opened(self, mode, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "open", limited)


def test_a_mesh_on_a_disk_that_fills_leaves_the_previous_mesh_and_names_the_file(tmp_path, disk_fills_while_writing):
    vertices, faces = torch.rand(2000, 3), torch.randint(0, 2000, (3000, 3))
    path = tmp_path / "canonical.ply"
    path.write_bytes(b"the previous mesh")
    with pytest.raises(OSError, match=f"path: could not write {path} .*No space left"):
        write_ply(path, vertices, faces)
    assert path.read_bytes() == b"the previous mesh" and listing(tmp_path) == ["canonical.ply"]


def test_a_full_disk_or_a_file_in_the_way_fails_the_probe_naming_the_folder(tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(OSError, match=f"out: cannot write in {tmp_path / 'a_file' / 'meshes'}"):
        probe_folder(tmp_path / "a_file" / "meshes")

    def full(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(outputs.os, "fsync", full)
    with pytest.raises(OSError, match=f"out: cannot write in {tmp_path / 'meshes'} .No space left"):
        probe_folder(tmp_path / "meshes")
    assert listing(tmp_path / "meshes") == []  # no probe left behind


HOLDER = """
import sys, time
from headfields.outputs import hold
with hold(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_one_writer_per_output_across_processes_and_the_lock_goes_with_the_process(tmp_path):
    path = tmp_path / "orbit.mp4"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputBusyError, match=rf"out: {path} is being written by another process \({holder.pid}\)"):
            with hold(path):
                pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        holder.kill()
    with hold(path):  # the killed holder's lock went with it
        pass
    assert listing(tmp_path) == []  # the lock file goes with its last holder


def test_holding_an_output_sweeps_what_killed_writers_left(tmp_path):
    stale = tmp_path / ".orbit.4242.0badcafe.tmp.mp4"
    stale.write_bytes(b"half a video")
    others = [tmp_path / ".track.4242.0badcafe.tmp.mp4", tmp_path / ".orbit.1.4242.0badcafe.tmp.mp4"]
    for other in others:  # other outputs' (track.mp4, orbit.1.mp4): not this writer's to remove
        other.write_bytes(b"half a video")
    with hold(tmp_path / "orbit.mp4"):
        assert not stale.exists() and all(other.exists() for other in others)


# --- configs: classes from a list -----------------------------------------------------------------------------


def test_a_config_naming_a_module_to_import_is_refused_without_importing_it(tmp_path):
    """``headfields.__main__`` would run the command line on the caller's arguments if imported."""
    from headfields.models.insta import InstaConfig

    sys.modules.pop("headfields.__main__", None)
    data = RunConfig("insta", InstaConfig()).to_dict()
    data["recipe"] = {CLASS_KEY: "headfields.__main__.X"}
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"config: {tmp_path / 'config.json'}: .*refusing __class__ 'headfields.__main__.X'"):
        read_run_config(tmp_path)
    assert "headfields.__main__" not in sys.modules


def test_config_classes_are_the_librarys_and_the_registered(monkeypatch):
    from dataclasses import dataclass, is_dataclass

    from headfields import configs
    from headfields.models.insta import InstaConfig

    monkeypatch.setattr(configs, "_REGISTERED", [])  # this test's registration ends with it
    known = config_classes()
    assert known["headfields.models.insta.InstaConfig"] is InstaConfig
    assert known["headfields.training.config.TrainingConfig"].__name__ == "TrainingConfig"
    assert not any(name.startswith("headfields.__main__") for name in known)
    assert all(is_dataclass(cls) for cls in known.values())

    @dataclass(frozen=True)
    class MyInstaConfig(InstaConfig):
        extra_layers: int = 2

    data = {CLASS_KEY: f"{MyInstaConfig.__module__}.{MyInstaConfig.__qualname__}", "extra_layers": 3}
    with pytest.raises(ValueError, match="register_config"):
        config_from_dict(data)
    register_config(MyInstaConfig)
    assert config_from_dict(data) == MyInstaConfig(extra_layers=3)


def test_a_config_source_adds_its_classes_and_the_librarys_needs_no_import_of_the_models(monkeypatch):
    from dataclasses import dataclass

    from headfields import configs

    @dataclass(frozen=True)
    class Sourced:
        size: int = 1

    name = f"{Sourced.__module__}.{Sourced.__qualname__}"
    monkeypatch.setattr(configs, "_SOURCES", list(configs._SOURCES))  # this test's source ends with it
    assert name not in config_classes()
    assert configs.register_config_source(lambda: [Sourced]) is not None
    assert config_from_dict({CLASS_KEY: name, "size": 2}) == Sourced(size=2)
    # configs imports no model: the package's __init__ registers the library's classes, so they are known to a
    # process that imported nothing but configs.
    code = (
        "import sys; from headfields.configs import config_classes; assert 'headfields.apps.runs' not in sys.modules; "
        "known = config_classes(); assert known['headfields.apps.runs.RunConfig'].__name__ == 'RunConfig'; "
        "assert 'headfields.models.insta.InstaConfig' in known and 'headfields.models.mononphm.model.MonoNphmConfig' in known"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(("text", "match"), [("[]", "expected an object of RunConfig's fields, got a JSON list"),
                                             ("[" * 100_000, "nests too deeply"), ("{", "is not JSON")])  # fmt: skip
def test_a_malformed_config_json_names_its_file(tmp_path, text, match):
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ValueError, match=rf"config: {tmp_path / 'config.json'}.*{match}"):
        read_run_config(tmp_path)


# --- the commands under faults --------------------------------------------------------------------------------


def render_process(folder: Path, out: Path, frames: int = 10000) -> subprocess.Popen:
    """``python -m headfields render`` of a camera path long enough to be caught mid-way."""
    command = [sys.executable, "-m", "headfields", "render", str(folder), "--camera", "orbit", "--frames", str(frames)]
    command += ["--resolution", "32", "--out", str(out), "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_frames(out: Path, process: subprocess.Popen, timeout: float = 120) -> Path:
    """The render's temporary file, once it holds encoded frames."""
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        pending = [p for p in out.parent.glob(f".{out.stem}.*.tmp.mp4") if p.stat().st_size > 0]
        if pending:
            return pending[0]
        time.sleep(0.02)
    process.kill()
    raise AssertionError(f"the render wrote no frames: {process.communicate()[1][-2000:]}")


def test_ctrl_c_during_a_render_leaves_no_video(tiny_insta_run, tmp_path):
    out = tmp_path / "o.mp4"
    render = render_process(tiny_insta_run[0], out)
    try:
        wait_for_frames(out, render)
        render.send_signal(signal.SIGINT)
        _, err = render.communicate(timeout=60)
    finally:
        render.kill()
    assert render.returncode == 130 and "interrupted" in err
    assert listing(tmp_path) == []  # no video, no temporary file, no lock


class _InterruptedFinalizer:
    def __del__(self):
        raise KeyboardInterrupt  # as a Ctrl-C landing while a finalizer runs


def test_a_ctrl_c_inside_a_finalizer_still_stops_the_command():
    """Python drops a KeyboardInterrupt raised in ``__del__`` (it prints it as ignored); the commands raise it again in
    the main thread, so a render caught there still stops, and the caller's hook is back afterwards."""
    before = sys.unraisablehook
    with pytest.raises(KeyboardInterrupt), ctrl_c_kept():
        _InterruptedFinalizer()  # finalized at once: the interrupt dropped, then raised again
        for _ in range(10**7):  # the work that would have gone on
            pass
    assert sys.unraisablehook is before


def test_a_render_killed_over_a_complete_video_leaves_that_video(tiny_insta_run, tmp_path):
    out = tmp_path / "o.mp4"
    write_video(out, frames(5), fps=5)
    before = out.read_bytes()
    render = render_process(tiny_insta_run[0], out)
    try:
        pending = wait_for_frames(out, render)
        render.send_signal(signal.SIGKILL)
        render.wait(timeout=60)
    finally:
        render.kill()
    assert out.read_bytes() == before and video_info(out).frames == 5  # the complete video, untouched
    assert pending.exists()  # SIGKILL leaves a hidden temporary file, which the next render of o.mp4 sweeps
    assert main(["render", str(tiny_insta_run[0]), "--frames", "2", "--out", str(out), "--device", "cpu"]) == 0
    assert not pending.exists() and video_info(out).frames == 2 and listing(tmp_path) == ["o.mp4"]


def test_a_second_render_into_one_output_is_refused_and_the_first_wins_whole(tiny_insta_run, tmp_path, capsys):
    out = tmp_path / "o.mp4"
    first = render_process(tiny_insta_run[0], out, frames=100)  # x264 holds ~40 frames before its first packet
    try:
        wait_for_frames(out, first)
        assert main(["render", str(tiny_insta_run[0]), "--frames", "2", "--out", str(out), "--device", "cpu"]) == 2
        assert f"out: {out} is being written by another process ({first.pid})" in capsys.readouterr().err
        stdout, err = first.communicate(timeout=300)
    finally:
        first.kill()
    assert first.returncode == 0, err[-2000:]
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["frames"] == video_info(out).frames == 100 and listing(tmp_path) == ["o.mp4"]


def test_render_into_a_folder_it_cannot_write_fails_before_loading_the_run(tiny_insta_run, tmp_path, monkeypatch, capsys):
    from headfields.apps.commands import render

    monkeypatch.setattr(render, "load_run", lambda *a: pytest.fail("the run was loaded before the folder was probed"))
    if os.geteuid() == 0:  # root writes anywhere: a file stands where the folder should be
        (tmp_path / "videos").write_text("")
    else:
        (tmp_path / "videos").mkdir(mode=0o555)
    out = tmp_path / "videos" / "o.mp4"
    assert main(["render", str(tiny_insta_run[0]), "--out", str(out), "--device", "cpu"]) == 2
    assert f"out: cannot write in {out.parent}" in capsys.readouterr().err


def test_export_on_a_disk_that_fills_names_the_mesh_and_leaves_the_previous_one(
    tiny_neus_run, tmp_path, capsys, disk_fills_while_writing
):
    (tmp_path / "meshes").mkdir()
    previous = tmp_path / "meshes" / "canonical.ply"
    previous.write_bytes(b"the previous mesh")
    command = ["export", str(tiny_neus_run[0]), "--out", str(tmp_path / "meshes"), "--frames", "none"]
    assert main([*command, "--resolution", "32", "--device", "cpu"]) == 2
    assert f"could not write {previous} (No space left on device)" in capsys.readouterr().err
    assert previous.read_bytes() == b"the previous mesh" and listing(tmp_path / "meshes") == ["canonical.ply"]


@pytest.mark.parametrize("command", ["render", "export"])
def test_a_resolution_that_would_not_fit_in_memory_is_refused_with_what_it_needs(tiny_insta_run, tmp_path, capsys, command):
    out = tmp_path / ("o.mp4" if command == "render" else "meshes")
    assert main([command, str(tiny_insta_run[0]), "--resolution", "100000", "--out", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert re.search(r"resolution: .*needs [\d.]+ [TP]B .* more than the [\d.]+ [KMGT]?B available", err), err
    assert not out.exists() or listing(out) == []
