"""The MediaPipe model files: where they live, the one-line error when they are missing, and the install from a
wheel (a small fake one built here, so the test needs neither the network nor the 35 MB wheel) that leaves the
whole set or nothing."""

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from headfields.apps.tracking import model_files as mf


def _fake_models(monkeypatch) -> dict[str, bytes]:
    """Small contents for the four models, and the table of their sizes and hashes swapped in for the real one."""
    contents = {name: f"fake {name} model".encode() * (i + 1) for i, name in enumerate(mf.MEDIAPIPE_MODELS)}
    table = {
        name: mf.ModelFile(entry.member, len(contents[name]), hashlib.sha256(contents[name]).hexdigest())
        for name, entry in mf.MEDIAPIPE_MODELS.items()
    }
    monkeypatch.setattr(mf, "MEDIAPIPE_MODELS", table)
    return contents


def _wheel(path: Path, contents: dict[str, bytes], members: dict[str, str], spoil: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mediapipe/__init__.py", "")
        for name, data in contents.items():
            archive.writestr(members[name], data + (b"!" if name == spoil else b""))
    return path


def _members() -> dict[str, str]:
    return {name: entry.member for name, entry in mf.MEDIAPIPE_MODELS.items()}


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_folder_and_missing_file(monkeypatch, tmp_path):
    monkeypatch.delenv(mf.FOLDER_VARIABLE, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert mf.mediapipe_folder() == tmp_path / "cache" / "headfields" / "mediapipe-0.10.21"
    monkeypatch.setenv(mf.FOLDER_VARIABLE, str(tmp_path / "models"))
    assert mf.mediapipe_folder() == tmp_path / "models"
    with pytest.raises(FileNotFoundError) as error:
        mf.mediapipe_model("face_landmark")
    message = str(error.value)
    assert "\n" not in message and str(tmp_path / "models" / "face_landmark.tflite") in message
    fix = 'run "python -m headfields.apps.tracking.model_files" (extracts them from the mediapipe==0.10.21 wheel on PyPI)'
    assert message.endswith(fix)
    with pytest.raises(ValueError, match="name: expected one of"):
        mf.mediapipe_model("face_mesh")


def test_install_from_a_wheel(monkeypatch, tmp_path):
    contents = _fake_models(monkeypatch)
    wheel = _wheel(tmp_path / "mediapipe-0.10.21-py3-none-any.whl", contents, _members())
    target = tmp_path / "store" / "mediapipe"
    assert mf.install_mediapipe_models(wheel, target) == target
    assert _leftovers(target.parent) == ["mediapipe"]  # no temporary folder left beside it
    assert _leftovers(target) == sorted(Path(m).name for m in _members().values())
    for name, data in contents.items():
        assert mf.mediapipe_model(name, target).read_bytes() == data
    monkeypatch.setenv(mf.FOLDER_VARIABLE, str(target))
    assert mf.mediapipe_model("selfie_segmentation") == target / "selfie_segmentation.tflite"
    # Installed: a second install returns at once, neither reading the wheel nor downloading one.
    with monkeypatch.context() as patch:
        patch.setattr(zipfile, "ZipFile", None)
        patch.setattr(mf.subprocess, "run", None)
        assert mf.install_mediapipe_models(wheel, target) == target
        assert mf.install_mediapipe_models(None, target) == target
    # A damaged install (a file cut short): refused at use, replaced whole by the next install.
    (target / "face_landmark.tflite").write_bytes(b"cut")
    with pytest.raises(FileNotFoundError, match="wrong size"):
        mf.mediapipe_model("face_landmark", target)
    mf.install_mediapipe_models(_wheel(tmp_path / "again.whl", contents, _members()), target)
    assert (target / "face_landmark.tflite").read_bytes() == contents["face_landmark"]


def test_failed_install_leaves_nothing(monkeypatch, tmp_path):
    contents = _fake_models(monkeypatch)
    target = tmp_path / "store" / "mediapipe"
    spoiled = _wheel(tmp_path / "spoiled.whl", contents, _members(), spoil="iris_landmark")
    with pytest.raises(ValueError, match="iris_landmark.tflite .* fails its sha256 check"):
        mf.install_mediapipe_models(spoiled, target)
    assert _leftovers(tmp_path / "store") == []
    # Interrupted while extracting (after two of the four files): nothing at the target either.
    good = _wheel(tmp_path / "good.whl", contents, _members())
    reads = []
    real_read = zipfile.ZipFile.read

    def interrupted(self, name, *args):
        reads.append(name)
        if len(reads) == 3:
            raise KeyboardInterrupt
        return real_read(self, name, *args)

    monkeypatch.setattr(zipfile.ZipFile, "read", interrupted)
    with pytest.raises(KeyboardInterrupt):
        mf.install_mediapipe_models(good, target)
    assert _leftovers(tmp_path / "store") == []
    monkeypatch.setattr(zipfile.ZipFile, "read", real_read)
    with pytest.raises(ValueError, match="has no mediapipe/modules/face_detection"):
        mf.install_mediapipe_models(_wheel(tmp_path / "other.whl", {}, {}), target)
    with pytest.raises(ValueError, match="wheel: expected a mediapipe==0.10.21 wheel"):
        mf.install_mediapipe_models(tmp_path / "spoiled.txt", target)
    assert _leftovers(tmp_path / "store") == []


def test_install_downloads_with_pip(monkeypatch, tmp_path):
    """Without a wheel, ``python -m pip download --no-deps mediapipe==0.10.21`` into a temporary folder."""
    contents = _fake_models(monkeypatch)
    commands = []

    def pip(command, **kwargs):
        commands.append(command)
        folder = Path(command[command.index("-d") + 1])
        _wheel(folder / "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl", contents, _members())
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(mf.subprocess, "run", pip)
    target = tmp_path / "mediapipe"
    mf.install_mediapipe_models(folder=target)
    (command,) = commands
    assert command[:4] == [sys.executable, "-m", "pip", "download"] and "--no-deps" in command
    assert command[-1] == "mediapipe==0.10.21"
    assert mf.mediapipe_model("face_detection_short_range", target).read_bytes() == contents["face_detection_short_range"]
    assert _leftovers(tmp_path) == ["mediapipe"]  # the downloaded wheel went with the temporary folder

    def offline(command, **kwargs):
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution found for mediapipe==0.10.21\n")

    monkeypatch.setattr(mf.subprocess, "run", offline)
    with pytest.raises(RuntimeError, match="pip could not download mediapipe==0.10.21: ERROR: No matching"):
        mf.install_mediapipe_models(folder=tmp_path / "other")
    assert _leftovers(tmp_path) == ["mediapipe"]


def test_command(monkeypatch, tmp_path, capsys):
    contents = _fake_models(monkeypatch)
    wheel = _wheel(tmp_path / "mediapipe.whl", contents, _members())
    assert mf.main(["--wheel", str(wheel), "--folder", str(tmp_path / "models")]) == 0
    assert str(tmp_path / "models") in capsys.readouterr().out
    assert mf.main(["--wheel", str(tmp_path / "missing.whl"), "--folder", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: wheel: expected") and err.count("\n") == 1
    # As a user runs it: one line, exit 2, no traceback.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "headfields.apps.tracking.model_files",
            "--wheel",
            str(tmp_path / "missing.whl"),
            "--folder",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "error: wheel: expected a mediapipe==0.10.21 wheel file" in done.stderr


def test_installed_models_match_the_table():
    """The files ``make setup`` installed (from the real wheel) hash to the table's sha256."""
    for name, entry in mf.MEDIAPIPE_MODELS.items():
        data = mf.mediapipe_model(name).read_bytes()
        assert len(data) == entry.size and hashlib.sha256(data).hexdigest() == entry.sha256, name
