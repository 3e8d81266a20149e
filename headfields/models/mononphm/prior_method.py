"""MonoNPHM's prior as a method (``python -m headfields train nphm_prior``, :func:`headfields.apps.runs.train_run`): an
NPHM prior (:class:`~headfields.models.mononphm.Nphm`) trained on the synthetic scan set of many identities, a fit
inside the run's :class:`~headfields.training.engine.Engine`, into a run folder that ``python -m headfields train
mononphm --mononphm.prior RUN/prior.pt`` fits to a video.

The recipe (:class:`NphmPriorConfig`) names the scan set, the prior's sizes and its training; the run's training
configuration gives the steps (``max_iterations``), the budget (``max_minutes``), the ``seed`` and ``log_every``,
which replace the recipe's :class:`~headfields.models.mononphm.PriorTrainingConfig` ones; every other training
field is refused when set, and so is a capture (``--data``): the scans are synthetic. :func:`fit` writes:

- ``config.json``: the :class:`~headfields.apps.runs.RunConfig`;
- ``prior.pt`` (:func:`~headfields.models.mononphm.save_prior`) and ``model/``, the synthetic FLAME the scans were
  made with;
- ``log.jsonl``: the logged losses, a line a logged step;
- ``metrics.json``: the scan set's size, the steps and seconds, the last losses.

    python -m headfields train nphm_prior --max-minutes 30 --out outputs/nphm_prior
    python -m headfields train mononphm --mononphm.prior outputs/nphm_prior/prior.pt --out outputs/mononphm
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ...configs import register_config
from ...fitting import StepHistory
from ...outputs import write_atomic
from ...parametric import load_model
from ...synthetic import ScanSetConfig, anchor_vertices, synthetic_scan_set, write_synthetic_flame
from ...training import LOG_NAME, TrainingConfig, seed_everything
from ...training.engine import Engine
from ...training.unused import check_unused, unused_fields
from ..method import Method, Recipe
from .prior import Nphm, NphmConfig, cpu_prior_config, save_prior
from .prior_training import PriorTrainingConfig, cpu_prior_training, train_prior

if TYPE_CHECKING:
    from ...data import Subject

__all__ = [
    "METHOD",
    "NphmPriorConfig",
    "PRIOR_NAME",
    "RUN_TRAINING_FIELDS",
    "UNREAD_TRAINING_FIELDS",
    "build",
    "cpu_config",
    "fit",
    "paper_config",
    "train_synthetic_prior",
    "unread_recipe_fields",
]

PRIOR_NAME = "prior.pt"
# The fields of the run's TrainingConfig the prior's training reads: they set PriorTrainingConfig's steps,
# max_minutes, seed and log_every (the recipe's own are refused when set, so that one flag says each).
RUN_TRAINING_FIELDS = {"max_iterations": "steps", "max_minutes": "max_minutes", "seed": "seed", "log_every": "log_every"}
UNREAD_TRAINING_FIELDS = unused_fields(RUN_TRAINING_FIELDS)  # refused when set (the registry's entry says so too)


@register_config
@dataclass(frozen=True)
class NphmPriorConfig:
    """A prior trained on synthetic scans: the scan set, the prior's sizes and its training (whose steps, budget,
    seed and logging the run's training configuration sets, :data:`RUN_TRAINING_FIELDS`)."""

    scans: ScanSetConfig = field(default_factory=ScanSetConfig)
    prior: NphmConfig = field(default_factory=NphmConfig)
    training: PriorTrainingConfig = field(default_factory=PriorTrainingConfig)

    def __post_init__(self) -> None:
        for name, kind in (("scans", ScanSetConfig), ("prior", NphmConfig), ("training", PriorTrainingConfig)):
            if not isinstance(getattr(self, name), kind):
                raise TypeError(f"{name}: expected a {kind.__name__}, got {type(getattr(self, name)).__name__}")


def unread_recipe_fields(config: NphmPriorConfig) -> dict[str, str]:
    """The recipe's fields the prior's training leaves unread (dotted name -> why; the registry refuses a change to
    them): the deformer's own regulariser weights (the prior's loss weighs its deformation: training.weights), and
    the global member's constant weight where it is a Gaussian weight at ``global_distance``."""
    why = "(the prior's loss weighs its deformation: --nphm-prior.training.weights.*)"
    unread = {"prior.deformer.offset_weight": why, "prior.deformer.hyper_weight": why}
    if config.prior.sdf.global_distance is not None:
        unread["prior.sdf.global_weight"] = f"with prior.sdf.global_distance={config.prior.sdf.global_distance}"
    return unread


def paper_config(**overrides) -> NphmPriorConfig:
    """MonoNPHM's prior and training (``NphmConfig()``, ``PriorTrainingConfig()``) on the default scan set."""
    return NphmPriorConfig(**overrides)


def cpu_config(**overrides) -> NphmPriorConfig:
    """The prior a 2-core CPU trains in half an hour (:func:`~headfields.models.mononphm.cpu_prior_config`,
    :func:`~headfields.models.mononphm.cpu_prior_training`), as ``benchmarks/ablations/nphm.py`` trains it."""
    return NphmPriorConfig(**{"prior": cpu_prior_config(), "training": cpu_prior_training(), **overrides})


def build(subject: Subject, config: NphmPriorConfig):
    """A prior renders no frames: a run of it is fitted to a video by MonoNPHM, not opened as an avatar."""
    raise ValueError(
        "model: nphm_prior is a prior, not an avatar: fit its prior.pt to a video "
        "(python -m headfields train mononphm --mononphm.prior RUN/prior.pt)"
    )


def train_synthetic_prior(
    folder: str | Path, config: NphmPriorConfig, device: str | torch.device | None = None
) -> tuple[Nphm, StepHistory, dict]:
    """The prior of ``config`` trained on its synthetic scan set: a synthetic FLAME written to ``folder/model``, the
    scans made with it, the prior (template anchors: the identities' mean; mirror pairs: :func:`anchor_vertices`;
    head-space centre: the neutral head's box centre) trained and saved as ``folder/prior.pt``. Seed the process
    first (:func:`~headfields.training.seed_everything`): the scans and the initial weights draw from it. Returns the
    prior, its training's history and what the run measured (the scan set, the steps and seconds)."""
    folder = Path(folder)
    device = torch.device(device if device is not None else "cpu")
    flame = load_model(write_synthetic_flame(folder / "model"), "flame", device=device)
    start = time.perf_counter()
    scans = synthetic_scan_set(flame, config.scans)
    scan_seconds = time.perf_counter() - start
    print(f"scan set: {scans.num_identities} identities x {config.scans.expressions} expressions in {scan_seconds:.0f} s")
    _, mirror = anchor_vertices(flame)
    neutral = flame().canonical_vertices
    center = (neutral.amin(0) + neutral.amax(0)) / 2
    prior = Nphm(scans.anchors.mean(0), mirror, center, scans.num_identities, scans.num_scans, config.prior).to(device)
    history = train_prior(prior, scans, config.training)
    last = {k: round(v, 4) if isinstance(v, float) else v for k, v in history.logs[-1].items()} if history.logs else {}
    print(f"prior: {history.steps} steps in {history.seconds / 60:.1f} min; last losses {last}")
    save_prior(prior, folder / PRIOR_NAME)
    measured = {
        "identities": scans.num_identities,
        "scans": scans.num_scans,
        "steps": history.steps,
        "seconds": history.seconds,
        "scan_seconds": scan_seconds,
    }
    return prior, history, measured


def _checked(run) -> NphmPriorConfig:
    """The recipe with the run's training fields in, after refusing what the run would not read."""
    config = run.recipe
    if not isinstance(config, NphmPriorConfig):
        raise TypeError(f"recipe: expected an NphmPriorConfig, got {type(config).__name__}")
    check_unused(run.training, UNREAD_TRAINING_FIELDS, "the prior's training (steps on synthetic scans)")
    defaults = PriorTrainingConfig()
    set_ = [
        f"training.{name}" for name in RUN_TRAINING_FIELDS.values() if getattr(config.training, name) != getattr(defaults, name)
    ]
    if set_:
        flags = ", ".join(f"--{flag.replace('_', '-')}" for flag in RUN_TRAINING_FIELDS)
        raise ValueError(f"nphm_prior: {', '.join(set_)}: set by the run's {flags}; leave them at their defaults")
    given = [name for name in ("data", "model", "regions") if getattr(run.subject, name) is not None]
    given += ["eval-split"] if run.subject.eval_split != "test" else []  # no held-out frames: nothing to score
    if given:
        raise ValueError(f"subject: the prior trains on synthetic scans, not on a capture: drop --{', --'.join(given)}")
    t = run.training
    values = dict(steps=t.max_iterations, max_minutes=t.max_minutes, seed=t.seed, log_every=t.log_every)
    return dataclasses.replace(config, training=dataclasses.replace(config.training, **values))


def fit(run, engine: Engine, device: str | torch.device | None = None) -> dict:
    """The prior run ``run`` inside ``engine`` (see the module docstring); returns its metrics. A finished run of the
    same configuration there is not trained again (with the engine's ``resume``): its metrics are returned; a folder
    holding another run is refused. ``run`` is a :class:`~headfields.apps.runs.RunConfig`, not annotated: the runs
    sit above the models."""
    config = _checked(run)
    device = torch.device(device if device is not None else "cpu")
    engine.open()
    done = engine.finished()
    if done is not None:
        return done
    engine.write_config()
    seed_everything(run.training.seed)
    _, history, measured = train_synthetic_prior(engine.path, config, device)
    write_atomic(engine.path / LOG_NAME, "".join(json.dumps(line) + "\n" for line in history.logs))
    last = history.logs[-1] if history.logs else {}
    return engine.finish({"recipe": run.recipe_name, **measured, "loss": last.get("loss"), "wall_seconds": engine.wall()})


# MonoNPHM's prior on synthetic scans, what mononphm fits: its paper's steps (PriorTrainingConfig().steps), a log line
# every 100; on a CPU the steps a half-hour budget reaches on 2 idle cores (~33 min for 2,400:
# benchmarks/ablations/nphm.py, docs/mononphm.md). Of the training settings it reads the steps, the budget, the seed
# and log_every; it reads no subject.
PRIOR_STEPS = 30_000
CPU_TRAINING = {"max_iterations": 2400, "max_minutes": 30.0}

METHOD = Method(
    "nphm_prior",
    build,
    {"paper": Recipe(paper_config), "cpu": Recipe(cpu_config, CPU_TRAINING)},
    NphmPriorConfig,
    training=TrainingConfig(max_iterations=PRIOR_STEPS, log_every=100),
    fit=fit,
    subject_flags=(),
    unread_training=UNREAD_TRAINING_FIELDS,
    unread_recipe=unread_recipe_fields,
)
