"""MediaPipe's face and selfie models, read from the ``mediapipe==0.10.21`` wheel on PyPI (Apache-2.0).

The wheel's Python package pins numpy<2, so it is never installed or imported: only four ``.tflite`` files are
taken out of it, checked against the sha256 below and put in :func:`mediapipe_folder` once, at set-up. Nothing
is fetched at run time and no weights live in this repository::

    python -m headfields.apps.tracking.model_files              # pip downloads the wheel, extracts the four files
    python -m headfields.apps.tracking.model_files --wheel mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl

    from headfields.apps.tracking.model_files import mediapipe_model
    path = mediapipe_model("face_landmark")  # FileNotFoundError naming the command above when not installed
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ...data.capture_cache import cache_folder

__all__ = [
    "MEDIAPIPE_MODELS",
    "MEDIAPIPE_REQUIREMENT",
    "ModelFile",
    "install_mediapipe_models",
    "main",
    "mediapipe_folder",
    "mediapipe_model",
]

MEDIAPIPE_REQUIREMENT = "mediapipe==0.10.21"
FOLDER_VARIABLE = "HEADFIELDS_MEDIAPIPE"
_FIX = 'run "python -m headfields.apps.tracking.model_files" (extracts them from the mediapipe==0.10.21 wheel on PyPI)'


@dataclass(frozen=True)
class ModelFile:
    """One model inside the wheel: where it is there, and what it must hash to (the same bytes on every platform)."""

    member: str
    size: int
    sha256: str

    @property
    def filename(self) -> str:
        return self.member.rsplit("/", 1)[-1]


# Measured on mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl.
MEDIAPIPE_MODELS: dict[str, ModelFile] = {
    "face_detection_short_range": ModelFile(
        "mediapipe/modules/face_detection/face_detection_short_range.tflite",
        229714,
        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
    ),
    "face_landmark": ModelFile(
        "mediapipe/modules/face_landmark/face_landmark.tflite",
        1242398,
        "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
    ),
    "iris_landmark": ModelFile(
        "mediapipe/modules/iris_landmark/iris_landmark.tflite",
        2640568,
        "d1744d2a09c25f501d39eba4faff47e53ecca8852c5ce19bce8eeac39357521f",
    ),
    "selfie_segmentation": ModelFile(
        "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite",
        249505,
        "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c",
    ),
}


def mediapipe_folder() -> Path:
    """Where the extracted models live: ``$HEADFIELDS_MEDIAPIPE`` if set, else the user cache folder."""
    override = os.environ.get(FOLDER_VARIABLE)
    return Path(override) if override else cache_folder() / "mediapipe-0.10.21"


def _check_name(name: str) -> ModelFile:
    if not isinstance(name, str) or name not in MEDIAPIPE_MODELS:
        raise ValueError(f"name: expected one of {sorted(MEDIAPIPE_MODELS)}, got {name!r}")
    return MEDIAPIPE_MODELS[name]


def mediapipe_model(name: str, folder: Path | None = None) -> Path:
    """The installed file of model ``name``. Only its size is checked here (the sha256 was checked at install):
    loading a model must not cost a hash of megabytes."""
    entry = _check_name(name)
    path = Path(folder if folder is not None else mediapipe_folder()) / entry.filename
    if not path.is_file():
        raise FileNotFoundError(f"MediaPipe model {name!r} not found at {path}: {_FIX}")
    if path.stat().st_size != entry.size:
        raise FileNotFoundError(f"MediaPipe model {name!r} at {path} has the wrong size (a damaged install): {_FIX}")
    return path


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _installed(folder: Path) -> bool:
    """Whether every model is in ``folder`` at its size (what an earlier, verified install left)."""
    paths = [(folder / m.filename, m.size) for m in MEDIAPIPE_MODELS.values()]
    return all(path.is_file() and path.stat().st_size == size for path, size in paths)


def _download_wheel(into: Path) -> Path:
    """``pip download --no-deps`` of the pinned wheel, for this interpreter's platform."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(into), MEDIAPIPE_REQUIREMENT]
    done = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(into.glob("mediapipe-*.whl"))
    if done.returncode != 0 or not wheels:
        last = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise RuntimeError(f"pip could not download {MEDIAPIPE_REQUIREMENT}: {last}")
    return wheels[0]


def _extract(wheel: Path, into: Path) -> None:
    """The models out of ``wheel`` into ``into``, each checked against its sha256 before it is written."""
    try:
        archive = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as error:
        raise ValueError(f"wheel: expected a {MEDIAPIPE_REQUIREMENT} wheel (a zip file), got {str(wheel)!r}: {error}") from None
    with archive:
        names = set(archive.namelist())
        for entry in MEDIAPIPE_MODELS.values():
            if entry.member not in names:
                raise ValueError(f"wheel: {str(wheel)!r} has no {entry.member} (expected the {MEDIAPIPE_REQUIREMENT} wheel)")
            data = archive.read(entry.member)
            if len(data) != entry.size or _sha256(data) != entry.sha256:
                raise ValueError(
                    f"wheel: {entry.member} in {str(wheel)!r} fails its sha256 check (expected {MEDIAPIPE_REQUIREMENT})"
                )
            (into / entry.filename).write_bytes(data)


def install_mediapipe_models(wheel: Path | None = None, folder: Path | None = None) -> Path:
    """Extracts the four models into ``folder`` (default :func:`mediapipe_folder`) and returns it. Without ``wheel``
    pip downloads it into a temporary folder. The files are written and checked in a hidden folder beside the
    target, which is then renamed into place: an interrupted or failed install leaves no part of one. Returns at
    once when the models are already there."""
    if wheel is not None and not Path(wheel).is_file():
        raise ValueError(f"wheel: expected a {MEDIAPIPE_REQUIREMENT} wheel file, {str(wheel)!r} is not a file")
    target = Path(folder if folder is not None else mediapipe_folder())
    if _installed(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent) as scratch:
        scratch = Path(scratch)
        source = Path(wheel) if wheel is not None else _download_wheel(scratch)
        staged = scratch / "models"
        staged.mkdir()
        _extract(source, staged)
        if target.exists():  # a damaged folder (files missing or cut short): replaced whole
            shutil.rmtree(target)
        try:
            os.replace(staged, target)
        except OSError:
            if not _installed(target):  # else another process installed them meanwhile
                raise
    return target


def main(argv: list[str] | None = None) -> int:
    """``python -m headfields.apps.tracking.model_files [--wheel PATH] [--folder DIR]``: errors are one line, exit 2."""
    parser = argparse.ArgumentParser(prog="python -m headfields.apps.tracking.model_files", description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", type=Path, help=f"a local {MEDIAPIPE_REQUIREMENT} wheel (default: pip downloads it)")
    parser.add_argument("--folder", type=Path, help=f"where the models go (default: ${FOLDER_VARIABLE} or {mediapipe_folder()})")
    args = parser.parse_args(argv)
    try:
        folder = install_mediapipe_models(args.wheel, args.folder)
    except (OSError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"MediaPipe models ({MEDIAPIPE_REQUIREMENT}) in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
