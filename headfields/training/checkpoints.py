"""A run's folder and its checkpoints: held by one process, written atomically, verified when read.

- :class:`RunFolder` makes the folder, probe-writes it (a read-only or full folder fails before training, not
  at the first checkpoint) and locks it: a second run into the same folder fails at once, naming the process
  that holds it.
- :func:`save_checkpoint` writes through :func:`headfields.outputs.atomic_path`: a temporary file, synced and
  renamed over the checkpoint; on any failure the temporary file is removed and the error names the checkpoint.
- :func:`load_checkpoint` verifies the archive (the CRC-32 of every member of torch's zip format), loads it
  with ``weights_only=True`` (a checkpoint cannot run code) and checks that every floating-point tensor is finite.
- :func:`run_fingerprint` says what a checkpoint was made for (model recipe, training settings, frames, model
  files, static offsets); :func:`check_fingerprint` refuses to resume into anything else and says what differs. The recipe and
  the settings are compared as configurations read through today's dataclasses, as ``load_run`` compares
  ``config.json``: a field added since, at its default, is no difference (checkpoints that wrote them as their
  ``repr`` before this release are read the same way). A capture's static offsets (VHAP's) have their own entry,
  so a checkpoint made before the model carried them, which has none, still loads.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import os
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from ..configs import CLASS_KEY, config_classes, config_from_dict, config_to_dict, same_library_class
from ..data import FrameSet
from ..outputs import atomic_path, is_temporary, lock_file, probe_folder
from .config import CHECKPOINT_NAME
from .contract import AvatarModel

__all__ = [
    "PIXELS_NOT_READ",
    "CheckpointError",
    "RunFolder",
    "check_fingerprint",
    "check_run_folder",
    "frozen_state_keys",
    "is_run_folder",
    "load_checkpoint",
    "run_fingerprint",
    "save_checkpoint",
]

LOCK_NAME = ".run.lock"
# The parametric model's buffer of a capture's static offsets (ParametricModel.with_static_offset).
STATIC_OFFSET = "static_offset"
# A fingerprint's frames entry for frames loaded without their pixels: they are compared by their count alone.
PIXELS_NOT_READ = "pixels not read"
# Training settings a resumed run may change: its budget and how often it checkpoints, evaluates and logs.
RESUMABLE_SETTINGS = frozenset(
    {"max_iterations", "max_minutes", "eval_every", "checkpoint_every", "checkpoint_minutes", "log_every"}
    | {"eval_frames", "render_chunk", "eval_regions", "lpips_weights", "lpips_vgg_weights", "log"}  # no effect on the weights
    | {"flush_denormals", "tune_malloc"}  # the process's CPU modes: denormals (below 1.2e-38) read as zero, or not
)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: unreadable, corrupt, non-finite, or made for another run."""


class RunFolder:
    """``path`` held by this process while open (a context manager): made, probe-written, then locked with
    ``flock`` on ``path/.run.lock`` (released when closed or when the process dies, even by SIGKILL). A folder that
    holds files but no run (neither the lock file every run leaves nor a checkpoint: the user's own folder, the
    current one of an unset ``--out $OUT``) is refused before anything is written into it, unless ``force``."""

    def __init__(self, path: str | Path, force: bool = False):
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"out: expected a folder path, got {type(path).__name__}")
        self.path, self.force = Path(path), force
        self._lock = None

    def open(self) -> RunFolder:
        check_run_folder(self.path, self.force)
        probe_folder(self.path, "out")
        self._lock = lock_file(
            self.path / LOCK_NAME,
            lambda holder: f"out: {self.path} is in use by another run (process {holder}); wait for it, or give another folder",
        )
        for stale in self.path.iterdir():  # a killed run's half-written files: nobody else writes here now
            if is_temporary(stale.name):
                stale.unlink(missing_ok=True)
        return self

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the descriptor releases the flock
            self._lock = None

    def __enter__(self) -> RunFolder:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()


def is_run_folder(path: str | Path) -> bool:
    """Whether ``path`` is absent, empty, or a run's: it holds the lock file every run leaves, or a checkpoint."""
    path = Path(path)
    if not path.is_dir():
        return not path.exists()
    return (path / LOCK_NAME).exists() or (path / CHECKPOINT_NAME).exists() or next(path.iterdir(), None) is None


def check_run_folder(path: str | Path, force: bool = False) -> None:
    """Refuse ``path`` as a run's ``out`` where it holds files but no run (see :class:`RunFolder`), unless ``force``.
    (A file in the way is left to the folder's probe, which names it. An empty path is the current folder, as
    ``Path("")`` is: refused so when it holds files, named as the current folder.)"""
    path = Path(path)
    if not force and path.is_dir() and not is_run_folder(path):
        shown = f"{path} (the current folder)" if path.absolute() == Path.cwd() else str(path)
        raise ValueError(
            f"out: {shown} holds files but no run (no {LOCK_NAME} or {CHECKPOINT_NAME}): give a new or empty folder, "
            "or --force (force=True) to train into it"
        )


def save_checkpoint(state: Mapping, path: str | Path) -> None:
    """``state`` to ``path`` atomically (see the module docstring): ``path`` is the old checkpoint or the new one,
    never a part of one. A state holding a non-finite float is refused (:class:`CheckpointError` naming the entry)
    and the previous checkpoint kept: :func:`load_checkpoint` would refuse it, and no command could open the run."""
    path = Path(path)
    floats = [(name, t) for name, t in _tensors(dict(state)) if t.is_floating_point() and t.numel()]
    if floats:  # one read-back for all of them
        finite = torch.stack([torch.isfinite(t).all().to(floats[0][1].device) for _, t in floats])
        if not bool(finite.all()):
            name = floats[int((~finite).nonzero()[0])][0]
            raise CheckpointError(
                f"checkpoint: not written: {name} holds non-finite values (a rate or a weight too large for float32?); "
                f"{path} keeps the last finite checkpoint, if any"
            )
    try:
        with atomic_path(path, "checkpoint") as temporary:
            torch.save(dict(state), temporary)
    except RuntimeError as error:  # torch's zip writer on a full disk
        raise OSError(f"checkpoint: could not write {path} ({error})") from error


def load_checkpoint(path: str | Path, device: torch.device | str | None = None) -> dict:
    """The verified state saved at ``path`` (see the module docstring), on ``device``."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint: {path} is {'empty' if path.is_file() else 'not a file'}")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise CheckpointError(f"checkpoint: {path} is not a readable torch checkpoint ({type(error).__name__})") from error
    if bad is not None:
        raise CheckpointError(f"checkpoint: {path} is corrupt (member {bad} fails its CRC check)")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # torch raises many types on a foreign archive; none may escape unnamed
        raise CheckpointError(f"checkpoint: {path} cannot be loaded safely ({type(error).__name__}: {error})") from error
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint: {path} holds a {type(state).__name__}, not a training state")
    for name, tensor in _tensors(state):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"checkpoint: {path} holds non-finite values in {name}")
    return state


def _tensors(value, name: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(value, torch.Tensor):
        yield name, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _tensors(item, f"{name}.{key}" if name else str(key))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _tensors(item, f"{name}[{i}]")


def frozen_state_keys(model: AvatarModel) -> set[str]:
    """The state-dict keys of the model's frozen parametric model (``model.parametric``): the subject's model
    files, not training state; a checkpoint neither stores nor restores them (its fingerprint does)."""
    return {key for key in model.state_dict() if key.startswith("parametric.")}


def _digest(*tensors: torch.Tensor | None) -> str:
    h = hashlib.blake2b(digest_size=16)
    for t in tensors:
        if t is not None:
            t = t.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def run_fingerprint(model: AvatarModel, frames: FrameSet, training_config, without_pixels: bool = False) -> dict[str, str]:
    """What a checkpoint of this run is for: the model's class and recipe, the training settings a resume
    may not change, the training frames (their images, cameras and tracking) and the parametric model's files.

    Frames loaded without their pixels (``FrameSet.pixels`` False: a run loaded to render along a camera path or
    export, :func:`headfields.apps.runs.load_run`) are refused unless ``without_pixels``; then they are said by their
    count alone (:data:`PIXELS_NOT_READ`), which :func:`check_fingerprint` compares with a checkpoint's count."""
    if not frames.pixels and not without_pixels:
        raise ValueError("frames: loaded without their pixels (pixels=False), which a run trains and scores on")
    recipe = model.config
    settings = {k: v for k, v in config_to_dict(training_config).items() if k not in RESUMABLE_SETTINGS}
    tracking = frames.params.expression if frames.params is not None else frames.mesh_vertices
    # A capture's static offsets apart from the model files, whose digest stays what it was before models carried them.
    state = model.parametric.state_dict()
    offsets = state.pop(STATIC_OFFSET, None)
    files = _digest(*state.values())
    described = _json(config_to_dict(recipe)) if dataclasses.is_dataclass(recipe) else repr(recipe)  # an instance or None
    return {
        "model": f"{type(model).__module__}.{type(model).__qualname__}: {described}",
        "training": _json(settings),
        "frames": f"{len(frames)} frames, "
        + (_digest(frames.images, frames.cameras.camera_to_world, tracking) if frames.pixels else PIXELS_NOT_READ),
        "model files": files,
        "static offsets": "none" if offsets is None else _digest(offsets),
    }


def check_fingerprint(path: Path, stored: Mapping[str, str] | None, current: Mapping[str, str]) -> None:
    """Refuse to resume from ``path`` when it was made for another run, naming what differs."""
    if stored is None:
        raise CheckpointError(f"checkpoint: {path} has no fingerprint (an older format): start afresh or move it away")
    # A checkpoint without the static offsets' entry predates them: it was made for the model files alone.
    differs = [key for key in current if key in stored or key != "static offsets"]
    differs = [key for key in differs if not _same(key, stored.get(key), current[key])]
    if differs:
        detail = "; ".join(_difference(key, stored.get(key), current[key]) for key in differs)
        raise CheckpointError(
            f"checkpoint: {path} was made for another run ({', '.join(differs)} differ: {detail}); give another --out, "
            "or remove the checkpoint to start afresh"
        )


def _difference(key: str, stored: str | None, current: str) -> str:
    """What differs in one fingerprint entry: the settings by name where both sides are JSON configurations
    (``training: seed 0 -> 1``), else both texts, shortened."""
    try:
        old, new = (json.loads(text.split(": ", 1)[1] if key == "model" else text) for text in (stored, current))
    except (ValueError, TypeError, AttributeError, IndexError):
        old = new = None
    if isinstance(old, dict) and isinstance(new, dict):
        changed = [f"{name} {_shown(a)} -> {_shown(b)}" for name, a, b in _changed(old, new)]
        if changed:
            return f"{key}: " + ", ".join(changed)
    old_part, new_part = _where_they_differ(str(stored), current)
    return f"{key}: checkpoint {old_part}, now {new_part}"


def _shown(value: object) -> str:
    return repr(value) if value is _ABSENT else _short(json.dumps(value), 40)


def _where_they_differ(old: str, new: str, limit: int = 160) -> tuple[str, str]:
    """``old`` and ``new`` shortened to ``limit`` characters about where they first differ (texts cut at one place
    read the same when they differ past it: the refusal showed two identical truncated texts)."""
    start = next((i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b), min(len(old), len(new)))
    start = max(0, start - limit // 4) if max(len(old), len(new)) > limit else 0
    return tuple(("..." if start else "") + _short(text[start:], limit) for text in (old, new))


def _changed(old: dict, new: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted name, old value, new value) of each setting that differs, nested configurations walked into."""
    out = []
    for name in sorted(old.keys() | new.keys()):
        a, b = old.get(name, _ABSENT), new.get(name, _ABSENT)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _changed(a, b, f"{prefix}{name}.")
        elif a != b:
            out.append((prefix + name, a, b))
    return out


class _Absent:
    """A setting one side does not have (written before the field existed): said so, not as null."""

    def __repr__(self) -> str:
        return "(absent)"


_ABSENT = _Absent()


def _json(data: dict) -> str:
    return json.dumps(data, sort_keys=True, allow_nan=False)


def _same(key: str, stored: str | None, current: str) -> bool:
    """Whether a fingerprint's entry matches: the same text, or for the recipe and the training settings the same
    configuration once both are read through today's dataclasses (their defaults fill what the checkpoint lacks);
    frames read without their pixels, the same count."""
    if stored == current:
        return True
    if key == "frames" and stored is not None and current.endswith(PIXELS_NOT_READ):
        return stored.split(",")[0] == current.split(",")[0]
    if stored is None or key not in ("model", "training"):
        return False
    try:
        if key == "model":
            stored_class, stored_text = stored.split(": ", 1)
            current_class, current_text = current.split(": ", 1)
            now = config_from_dict(json.loads(current_text))
            return same_library_class(stored_class, current_class) and _read(stored_text, type(now)) == now
        now = json.loads(current)
        cls = config_classes()[now[CLASS_KEY]]
        return _read(stored, cls, settings=True) == config_from_dict(now)
    except (ValueError, TypeError, KeyError, SyntaxError):  # not a configuration this reads
        return False


def _read(text: str, cls: type, settings: bool = False) -> object:
    """The configuration of class ``cls`` a fingerprint's text describes: JSON (config_to_dict's), or the ``repr``
    older checkpoints wrote (the recipe's, or the settings' sorted ``(name, value)`` pairs with ``settings``)."""
    if text.startswith("{"):
        data = json.loads(text)
    else:
        value = _literal(ast.parse(text, mode="eval").body, {c.__qualname__: n for n, c in config_classes().items()})
        data = dict(value) if settings else value
        if not isinstance(data, dict):
            raise ValueError("not a configuration")
    data.pop(CLASS_KEY, None)
    return config_from_dict(data, cls)


def _literal(node: ast.AST, classes: dict[str, str]) -> object:
    """A value of a configuration's ``repr``, as config_to_dict would write it: constants, negative numbers, lists,
    tuples, dicts, paths, the non-finite floats, and dataclasses (``Name(field=...)``: a dict of the fields, with its
    class where a configuration class has that name). Anything else is refused: nothing is evaluated."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _literal(node.operand, classes)
        if value == "inf" or (isinstance(value, int | float) and not isinstance(value, bool)):
            return "-inf" if value == "inf" else -value
    if isinstance(node, ast.Tuple | ast.List):
        return [_literal(item, classes) for item in node.elts]
    if isinstance(node, ast.Dict) and None not in node.keys:
        return {_literal(k, classes): _literal(v, classes) for k, v in zip(node.keys, node.values, strict=True)}
    if isinstance(node, ast.Name) and node.id in ("inf", "nan"):
        return node.id
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        if node.func.id.endswith("Path") and len(node.args) == 1 and not node.keywords:
            return _literal(node.args[0], classes)
        if not node.args:
            data = {k.arg: _literal(k.value, classes) for k in node.keywords}
            if node.func.id in classes:
                data[CLASS_KEY] = classes[node.func.id]
            return data
    raise ValueError(f"not a configuration's value: {ast.dump(node)[:80]}")


def _short(text: str | None, limit: int = 160) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
