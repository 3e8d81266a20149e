"""Self-describing runs: what a run folder holds, and :func:`load_run`, which rebuilds a trained avatar from it.

A run folder (``train(..., run=RunConfig)``, every example script) holds:

- ``config.json``: the :class:`RunConfig`, i.e. the model's name and its whole configuration (the recipe), the
  training configuration and where the subject came from (also inside the checkpoint);
- ``checkpoint.pt``: the weights, their moving average, the optimiser (:mod:`headfields.training.checkpoints`); a model
  with a fit of its own (MonoNPHM: :mod:`headfields.models.mononphm.method`) writes the same files;
- ``log.jsonl``: a line per logged step; ``metrics.json`` and ``renders/`` once training has finished.

    run = load_run("outputs/insta", device="cpu")  # the model with its evaluation (EMA) weights, in eval mode
    rgb = render_image(run.model, run.subject.eval, 0, 8192, run.device, head=run.eval_head)
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checks import check_device
from ..configs import CLASS_KEY, added_field, config_from_dict, config_to_dict
from ..data import Subject, load_subject
from ..heads import tracked_head
from ..models.registry import build_model, model_entry
from ..parametric import Head
from ..synthetic import SyntheticVideoConfig, synthetic_subject
from ..training import CHECKPOINT_NAME, CONFIG_NAME, METRICS_NAME, AvatarModel, TrainingConfig
from ..training.checkpoints import (
    RESUMABLE_SETTINGS,
    CheckpointError,
    check_fingerprint,
    check_run_folder,
    frozen_state_keys,
    load_checkpoint,
    run_fingerprint,
)
from ..training.ema import ExponentialMovingAverage
from ..training.engine import Engine
from ..training.unused import check_unread_settings, check_unused

__all__ = ["Run", "RunConfig", "SubjectSource", "load_run", "read_run_config", "run_checkpoint", "train_run"]


@dataclass(frozen=True)
class SubjectSource:
    """Where a run's subject comes from: the capture folder ``data`` (None: the synthetic video ``video``, or the
    default one), its parametric model folder ``model`` (None: the capture's own), the held-out split, a
    tracked-mesh capture's ``regions`` file and the model type a capture that names none is read with. Paths
    (strings, as config.json holds them) are stored absolute, so a run loads from any working directory.
    ``all_held_out``: the capture's other held-out split loaded too and scored beside ``eval_split`` (GaussianAvatars'
    novel views and self-reenactment in one run); a config.json written before it loads False, as it was trained."""

    data: str | None = None
    model: str | None = None
    eval_split: str = "test"
    regions: str | None = None
    model_type: str = "flame"
    video: SyntheticVideoConfig | None = None
    all_held_out: bool = added_field(True, before=False)

    def __post_init__(self) -> None:
        for name in ("data", "model", "regions"):
            value = getattr(self, name)
            if value is not None:
                if not isinstance(value, str):
                    raise TypeError(f"{name}: expected a path as a string, or None, got {value!r}")
                object.__setattr__(self, name, str(Path(value).expanduser().absolute()))

    def load(self, device: str | torch.device | None = None, pixels: bool = True) -> Subject:
        """The subject, on ``device``; ``pixels=False`` reads no capture image (:func:`~headfields.data.load_subject`)."""
        options = dict(
            model=self.model, eval_split=self.eval_split, model_type=self.model_type, device=device, regions=self.regions
        )
        options.update(pixels=pixels, all_held_out=self.all_held_out)
        if self.data is None:  # no capture folder: the synthetic video, as config.json has always meant
            return synthetic_subject(self.video, **options)
        return load_subject(self.data, **options)


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run: the model (a name of :data:`~headfields.models.registry.MODELS`) and its
    configuration ``recipe``, the ``training`` configuration and the ``subject``; ``recipe_name`` says which named
    recipe it started from ("paper", "cpu"; None: a saved config)."""

    model: str
    recipe: Any
    training: TrainingConfig = field(default_factory=TrainingConfig)
    subject: SubjectSource = field(default_factory=SubjectSource)
    recipe_name: str | None = None

    def __post_init__(self) -> None:
        model_entry(self.model)  # a known name
        if not dataclasses.is_dataclass(self.recipe) or isinstance(self.recipe, type):  # a config.json's {} without __class__
            raise TypeError(
                f"recipe: expected {self.model}'s configuration (a dataclass instance; in a config file an object "
                f"with its {CLASS_KEY!r}), got {type(self.recipe).__name__}"
            )
        if not isinstance(self.training, TrainingConfig):
            raise TypeError(f"training: expected a TrainingConfig, got {type(self.training).__name__}")
        if not isinstance(self.subject, SubjectSource):
            raise TypeError(f"subject: expected a SubjectSource, got {type(self.subject).__name__}")

    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        return config_from_dict(data, cls)


def read_run_config(path: str | Path) -> RunConfig:
    """The :class:`RunConfig` saved as ``path`` (a ``config.json``, or a run folder holding one)."""
    path = Path(path)
    file = path / CONFIG_NAME if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"config: no {CONFIG_NAME} in {path} (a run folder that train wrote, or its config.json)")
    return _run_config(_read_json(file, "config"), f"config: {file}")


def _read_json(file: Path, what: str) -> Any:
    try:
        return json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{what}: {file} is not JSON ({error})") from None
    except RecursionError:
        raise ValueError(f"{what}: {file} nests too deeply to be a {what} file") from None


def _run_config(data: Any, where: str) -> RunConfig:
    """The RunConfig ``data`` (a decoded config.json) describes; errors start with ``where`` (the file)."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected an object of RunConfig's fields, got a JSON {type(data).__name__}")
    try:
        return RunConfig.from_dict(data)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{where}: {error}") from None


def train_run(run: RunConfig, out: str | Path, device: str | torch.device | None = None, **train_options) -> dict:
    """The run ``run`` into ``out``: the subject loaded, the weights seeded and built, then
    :func:`~headfields.training.train` (which writes ``out/config.json`` first and resumes from a checkpoint of
    the same run). ``train_options``: ``train``'s other arguments (``resume``, ``log``, ``force``). A method with a
    fit of its own (``Method.fit``: MonoNPHM's tracking of a frozen prior, the prior's training) runs it inside the
    same :class:`~headfields.training.engine.Engine`, into the same files."""
    from ..training import seed_everything, train

    device = check_device("device", device)  # before anything is written into ``out``
    check_run_folder(out, train_options.get("force", False))  # before minutes of loading: the user's own folder
    entry = model_entry(run.model)
    check_unused(run.training, entry.unread_training, f"{run.model}'s run")  # before the subject loads
    if entry.unread_recipe is not None and not (Path(out) / CHECKPOINT_NAME).is_file():  # (a resumed run: its own)
        check_unread_settings(run.recipe, entry.unread_recipe(run.recipe), _recipes(run, entry), run.model)
    if entry.fit is not None:
        resume, force = train_options.get("resume", True), train_options.get("force", False)
        described = json.dumps(run.to_dict(), indent=2)
        with Engine(out, described, resume=resume, force=force, log=train_options.get("log")) as engine:
            return entry.fit(run, engine, device)
    subject = run.subject.load(device)
    for note in subject.notes:  # what a capture without model files was read as
        print(note)
    seed_everything(run.training.seed)  # the initial weights
    model = build_model(run.model, subject, run.recipe).to(device)
    more = subject.more_held_out
    return train(model, subject.train, subject.eval, out, run.training, device=device, run=run, more_eval=more, **train_options)


def _recipes(run: RunConfig, entry) -> list:
    """What an unread setting of ``run`` may hold: a value its method ``entry``'s recipes or its configuration class
    give it (the recipe it names first). A configuration built in code may start from any of them."""
    names = sorted(entry.recipes, key=lambda name: name != run.recipe_name)
    return [*(entry.recipe(name) for name in names), type(run.recipe)()]


@dataclass
class Run:
    """A trained run, loaded: its model in eval mode with its evaluation weights, the subject it was trained on
    and the tracked heads of its splits (carrying what the model fitted per frame, where it did: MonoNPHM's codes
    and pose corrections, the Gaussian avatar's fine-tuned timesteps), on ``device``. :meth:`head`, :meth:`frames`
    and :meth:`split_metrics` take any split the subject has ("train", ``subject.held_out``)."""

    path: Path
    config: RunConfig
    model: nn.Module
    subject: Subject
    train_head: Head
    eval_head: Head
    device: torch.device
    step: int  # training steps the weights had
    metrics: dict | None  # metrics.json, once training finished
    more_heads: dict[str, Head] = field(default_factory=dict)  # the other held-out splits' heads, made when asked

    def head(self, split: str) -> Head:
        """The tracked head of ``split`` ("train" or a held-out split the subject has: ``subject.held_out``), with
        what the model fitted per frame; another held-out split's is made on first asking."""
        if split == "train":
            return self.train_head
        if split == self.subject.eval.split:
            return self.eval_head
        if split not in self.more_heads:
            frames = self.frames(split)
            try:
                self.more_heads[split] = _fitted(self.model, frames, split)
            except ValueError as error:  # the model's own refusal: it fitted per-frame codes to two splits (MonoNPHM)
                if not str(error).startswith("split:"):
                    raise
                fitted = f"'train' and {self.subject.eval.split!r}"
                raise ValueError(
                    f"split: this {self.config.model} run fitted what it renders with to the frames of {fitted} alone, "
                    f"not {split!r}: give --split train or --split {self.subject.eval.split}"
                ) from None
        return self.more_heads[split]

    def frames(self, split: str):
        """The frames of ``split`` ("train" or a held-out split the subject has)."""
        splits = {"train": self.subject.train, **self.subject.held_out}
        if split not in splits:
            raise ValueError(f"split: expected one of {', '.join(map(repr, splits))}, got {split!r}")
        return splits[split]

    def split_metrics(self, split: str) -> dict | None:
        """``split``'s scores in ``metrics.json`` (a held-out split's, under ``"splits"``; the top level's for a run
        written before it scored more than one), or None where the run has none."""
        if self.metrics is None:
            return None
        splits = self.metrics.get("splits")
        if isinstance(splits, dict):
            return splits.get(split)
        return self.metrics if split == self.subject.eval.split else None


def _fitted(model: AvatarModel, frames, split: str) -> Head:
    """The tracked head of ``frames`` with what ``model`` fitted per frame of them (``model.fitted_head``: the
    Gaussian avatar's fine-tuned training timesteps; MonoNPHM's codes of its "held_out" split)."""
    head = tracked_head(model.parametric, frames)
    with torch.no_grad():  # the heads a loaded run renders with: no graph back to the weights
        return model.fitted_head(head, split)


def run_checkpoint(path: str | Path) -> Path:
    """The checkpoint of the run folder ``path``, or a FileNotFoundError saying what is missing: what
    :func:`load_run` checks first, for a command to check before it writes anything (``render``'s default video
    folder lies inside the run: a mistyped run folder was made, with a ``videos`` folder in it, then refused)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"run: {path} is not a folder (give the --out folder of a training run)")
    checkpoint = path / CHECKPOINT_NAME
    if not checkpoint.is_file():
        raise FileNotFoundError(f"run: no {CHECKPOINT_NAME} in {path}: has the run written one yet?")
    return checkpoint


def _checkpoints_config(file: Path, checkpoint: Path, config: RunConfig, inside: RunConfig) -> RunConfig:
    """``inside`` (the checkpoint's configuration), where ``config`` (``file``'s) differs from it in settings a
    resumed run may change alone (a rerun that changed its budget and stopped before its next checkpoint, which
    would have carried it; said in a warning); else a CheckpointError saying what differs."""
    ours, theirs = dataclasses.asdict(config.training), dataclasses.asdict(inside.training)
    changed = sorted(k for k in ours if ours[k] != theirs[k])
    if dataclasses.replace(config, training=inside.training) != inside or not set(changed) <= RESUMABLE_SETTINGS:
        named = [k for k in changed if k not in RESUMABLE_SETTINGS] or ["the model, recipe or subject"]
        raise CheckpointError(f"run: {file} differs from the configuration inside {checkpoint} ({', '.join(named)})")
    settings = ", ".join(f"{k} {theirs[k]!r} (config.json: {ours[k]!r})" for k in changed)
    warnings.warn(
        f"run: {checkpoint} is intact; its training settings {settings} are the weights' own (a rerun changed them and "
        "stopped before its next checkpoint): loading with them",
        stacklevel=3,
    )
    return inside


def load_run(path: str | Path, device: str | torch.device | None = None, pixels: bool = True) -> Run:
    """The run in folder ``path`` (see the module docstring), on ``device`` (default: CUDA when torch sees one, else
    the CPU): the subject loaded from where the run recorded it, the model rebuilt from ``config.json`` and the
    checkpoint's weights put in, the moving average's where the run kept one (the weights it evaluates with). A
    model with ``fitted_head(head, split)`` gives each split's head ("train", "held_out") what it fitted per frame.
    The process is left as it was (no allocator or floating-point mode is changed).

    ``pixels=False`` reads none of the capture's images (for a command that neither scores nor shows them: a
    render along a camera path, an export): the subject's frames hold zeros in their place (``FrameSet.pixels``),
    and the checkpoint's frames are checked by their count, not by the digest of their images, cameras and
    tracking, which would read every image (a capture changed in place to as many frames goes unnoticed then)."""
    path = Path(path)
    checkpoint = run_checkpoint(path)
    device = check_device("device", device)
    state = load_checkpoint(checkpoint, device)
    saved = state.get("run")
    if (path / CONFIG_NAME).is_file():
        config = read_run_config(path)
        # Compared as configs, not as text: a field added since (with its default) is no difference.
        inside = None if saved is None else _run_config(json.loads(saved), f"checkpoint: {checkpoint}")
        if inside is not None and inside != config:
            config = _checkpoints_config(path / CONFIG_NAME, checkpoint, config, inside)
    elif saved is not None:
        config = _run_config(json.loads(saved), f"checkpoint: {checkpoint}")
    else:
        raise CheckpointError(f"run: {path} has no {CONFIG_NAME} and its checkpoint no configuration (trained without one)")

    subject = config.subject.load(device, pixels)
    model = build_model(config.model, subject, config.recipe).to(device)
    # The same frames, model files and recipe as the checkpoint was made with, or a clear error saying what differs.
    current = run_fingerprint(model, subject.train, config.training, without_pixels=not pixels)
    check_fingerprint(checkpoint, state.get("fingerprint"), current)
    try:
        missing, unexpected = model.load_state_dict(state["model"], strict=False)
    except RuntimeError as error:  # a tensor of another shape (a prior or recipe that changed since)
        raise CheckpointError(f"checkpoint: {checkpoint} does not fit the model ({error})") from None
    if unexpected or set(missing) - frozen_state_keys(model):
        raise CheckpointError(f"checkpoint: {checkpoint} does not fit the model (missing {missing}, unexpected {unexpected})")
    if state.get("ema") is not None:
        average = ExponentialMovingAverage(model, state["ema"]["decay"])
        average.load_state_dict(state["ema"])
        average.copy_to()
    model.eval()
    metrics_file = path / METRICS_NAME
    metrics = _read_json(metrics_file, "metrics") if metrics_file.is_file() else None
    if metrics is not None and not isinstance(metrics, dict):
        raise ValueError(f"metrics: {metrics_file} holds a JSON {type(metrics).__name__}, not the run's metrics")
    # A model that fitted something per frame of each split (MonoNPHM's codes and poses) renders with it.
    train_head, eval_head = _fitted(model, subject.train, "train"), _fitted(model, subject.eval, "held_out")
    return Run(
        path=path,
        config=config,
        model=model,
        subject=subject,
        train_head=train_head,
        eval_head=eval_head,
        device=device,
        step=int(state["step"]),
        metrics=metrics,
    )
