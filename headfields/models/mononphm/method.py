"""MonoNPHM's method (``python -m headfields train mononphm``, :func:`headfields.apps.runs.train_run`): a fit of its own,
not the loop's steps, inside the run's :class:`~headfields.training.engine.Engine`, which writes the run folder every
other model writes, so that :func:`headfields.load_run`, ``render``, ``export`` and ``view`` open it.

The recipe (:class:`~headfields.models.mononphm.MonoNphmConfig`) names the prior file, the tracking and what is
measured; the run's training configuration gives the budget (``max_minutes``, ``budget``), the ``seed``, the
held-out frames measured (``eval_frames``), the render chunk and the CPU tunings for the run
(:mod:`headfields.backends.cpu.process_tuning`). :func:`fit` loads the subject and the prior, runs
:func:`~headfields.models.mononphm.reconstruct` and writes:

- ``config.json``: the :class:`~headfields.apps.runs.RunConfig` (also inside the checkpoint);
- ``checkpoint.pt`` (:func:`~headfields.training.checkpoints.save_checkpoint`, the loop's format): the fitted model's state
  (identity and appearance codes, lighting, each split's expression codes and pose corrections, and the prior's
  weights it was fitted with), the tracking's steps and seconds, the run's fingerprint;
- ``metrics.json``, ``renders/`` (render | truth | error of the measured held-out frames) and, with true meshes,
  ``mesh_XXXXX.obj``.

    python -m headfields train mononphm --mononphm.prior outputs/nphm/prior.pt --max-minutes 10 --out outputs/mononphm
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ...data import held_out_splits
from ...data.detected_landmarks import LANDMARKS_FOLDER, load_detected_landmarks
from ...training import TrainingConfig
from ...training.checkpoints import (
    frozen_state_keys,
    run_fingerprint,
)
from ...training.engine import Engine
from ...training.unused import check_unused, unused_fields
from ..method import SUBJECT_FLAGS, Method, Recipe
from .model import MonoNphm, MonoNphmConfig, cpu_config, paper_config
from .prior import load_prior
from .reconstruction import reconstruct

# The training settings the tracking reads: the budget, the seed, the held-out frames measured, the render chunk and
# the CPU tunings; every other one is refused by name when set.
RUN_TRAINING_FIELDS = ("max_minutes", "budget", "seed", "eval_frames", "render_chunk", "flush_denormals", "tune_malloc")
UNREAD_TRAINING_FIELDS = unused_fields(RUN_TRAINING_FIELDS)  # refused when set (the registry's entry says so too)

if TYPE_CHECKING:
    from ...data import Subject

__all__ = [
    "METHOD",
    "RUN_TRAINING_FIELDS",
    "UNREAD_TRAINING_FIELDS",
    "build",
    "fit",
    "unread_recipe_fields",
]

# The recipe's fields the tracking leaves unread (the registry refuses a change to them): the NeuS fields a frozen
# prior has no use for, and the stages' weights and rates for what a stage does not fit.
_FROZEN = "(the prior is frozen: the tracking's stages fit codes, pose and lighting at their own rates)"
_FIRST_FRAME = "(one frame: no neighbours to be smooth with)"
_PER_FRAME = "(one frame at a time, its expression and pose alone: the identity, colour, lighting and scale stay)"
UNREAD_RECIPE_FIELDS = {
    "eikonal_points": _FROZEN,
    "eikonal_weight": _FROZEN,
    "silhouette_weight": "(the stages weigh the mask: tracking.*.mask)",
    "optimization": _FROZEN,
    **dict.fromkeys(("tracking.first_frame.smooth_expression", "tracking.first_frame.smooth_pose"), _FIRST_FRAME),
    **{f"tracking.per_frame.{name}": _PER_FRAME for name in ("smooth_expression", "smooth_pose", "code_rate")},
    **{f"tracking.per_frame.{name}": _PER_FRAME for name in ("colour_rate", "lighting_rate", "scale_rate")},
}


def unread_recipe_fields(config: MonoNphmConfig) -> dict[str, str]:
    """:data:`UNREAD_RECIPE_FIELDS` (the same for every MonoNPHM recipe)."""
    return dict(UNREAD_RECIPE_FIELDS)


def build(subject: Subject, config: MonoNphmConfig) -> MonoNphm:
    """The model a run of ``config`` fits to ``subject``: the prior ``config.prior`` (on the CPU), a table of
    per-frame codes and poses for each split."""
    prior = load_prior(_prior_file(config))
    return MonoNphm(prior, subject.parametric, len(subject.train), config, held_out_frames=len(subject.eval))


def _prior_file(config: MonoNphmConfig) -> Path:
    if not isinstance(config, MonoNphmConfig):
        raise TypeError(f"recipe: expected a MonoNphmConfig, got {type(config).__name__}")
    if config.prior is None:
        raise ValueError(
            "mononphm.prior: expected the prior to fit, a file save_prior wrote (python -m headfields train nphm_prior "
            "--out DIR trains one: --mononphm.prior DIR/prior.pt), got none"
        )
    path = Path(config.prior)
    if not path.is_file():
        raise FileNotFoundError(f"mononphm.prior: no file {path} (train one: python -m headfields train nphm_prior --out DIR)")
    return path


def _check_one_held_out(source, more: list[str] | None = None) -> None:
    """Refuse a subject whose other held-out splits would be loaded to be scored (``all_held_out``): MonoNPHM's
    tracking fits and scores one. ``more``: the splits loaded (None: the capture's, read from its listing)."""
    if more is None:
        found = held_out_splits(source.data) if source.data is not None and source.all_held_out else []
        more = [split for split in found if split != source.eval_split]
    if more:
        raise ValueError(
            f"subject: all_held_out: MonoNPHM's tracking scores one held-out split ({source.eval_split}), and the "
            f"capture has {', '.join(more)} too: give all_held_out=False (--all-held-out left out)"
        )


def _landmarks(config: MonoNphmConfig, subject: Subject) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The detected landmarks of the train and the held-out frames: ``--mononphm.landmarks``'s, else those a capture
    from our tracker holds, else None (the tracked head's, projected)."""
    splits = ("train", subject.eval.split)
    folder = Path(config.landmarks) if config.landmarks is not None else subject.root / LANDMARKS_FOLDER
    if config.landmarks is None and not all((folder / f"{split}.npy").is_file() for split in splits):
        return None
    try:
        return tuple(load_detected_landmarks(folder, split) for split in splits)
    except FileNotFoundError as error:  # the reader's "landmarks: no X.npy in DIR", named by the flag
        raise FileNotFoundError(f"mononphm.{error} (train.npy and {splits[1]}.npy)") from None


def fit(run, engine: Engine, device: str | torch.device | None = None) -> dict:
    """The MonoNPHM run ``run`` inside ``engine`` (see the module docstring); returns its metrics. A finished run of
    the same configuration there is not tracked again (with the engine's ``resume``): its metrics are returned; a
    checkpoint of another run there is refused. ``run`` is a :class:`~headfields.apps.runs.RunConfig`, not
    annotated: the runs sit above the models."""
    from ...backends.cpu.process_tuning import process_tuning
    from ...synthetic import load_ground_truth
    from ...training import seed_everything

    config, training = run.recipe, run.training
    # A field the tracking never reads (a ray budget, an evaluation schedule, ...) is refused, not ignored.
    check_unused(training, UNREAD_TRAINING_FIELDS, "MonoNPHM's tracking (its own stages, not the loop)")
    _prior_file(config)  # before the subject loads: a missing prior fails at once
    _check_one_held_out(run.subject)
    device = torch.device(device if device is not None else "cpu")
    engine.open()  # writable and ours before minutes of tracking, not after
    subject = run.subject.load(device)
    _check_one_held_out(run.subject, list(subject.more_held_out))  # (the synthetic video's, loaded)
    for note in subject.notes:
        print(note)
    model = build(subject, config).to(device)
    fingerprint = run_fingerprint(model, subject.train, training)
    done = engine.finished(fingerprint)
    if done is not None:
        return done
    engine.write_config()
    seed_everything(training.seed)
    root = subject.root
    truth = load_ground_truth(root, subject.eval.split) if (root / "ground_truth.npz").is_file() else None
    # The CPU tunings the training configuration asks for, for the tracking and its measures only (the subject and
    # the model are loaded as load_run loads them: the same model files, bit for bit).
    with process_tuning(device, flush_denormals=training.flush_denormals, tune_malloc=training.tune_malloc):
        result = reconstruct(
            model.prior, subject.train, subject.eval, subject.parametric, config,
            truth=truth, out=engine.path, landmarks=_landmarks(config, subject), eval_frames=training.eval_frames,
            max_minutes=training.max_minutes, budget=training.budget, seed=training.seed, chunk=training.render_chunk,
        )  # fmt: skip
    model, steps = result.model, result.metrics["tracking_steps"]
    frozen = frozen_state_keys(model)
    state = {
        "model": {k: v for k, v in model.state_dict().items() if k not in frozen},
        "optimizer": None,  # the tracking's optimisers live per stage; a finished fit needs none
        "ema": None,
        "step": sum(steps.values()),
        "elapsed": result.metrics["tracking_seconds"],
        "wall": engine.wall(),
        "config": asdict(training),
        "fingerprint": fingerprint,
    }
    engine.save(state)
    metrics = engine.finish({"recipe": run.recipe_name, **result.metrics, "wall_seconds": engine.wall()})
    psnr = f"psnr {metrics['psnr']:.2f} (mean codes {metrics['psnr_mean_codes']:.2f})"
    chamfer = "" if metrics["chamfer"] is None else f"  chamfer {metrics['chamfer_mm']:.2f} mm"
    print(f"final  {psnr}  ssim {metrics['ssim']:.4f}{chamfer}  after {state['step']} tracking steps")
    return metrics


def _video():
    from ...synthetic import nphm_held_out_video

    return nphm_held_out_video()  # a person the scan set of benchmarks/ablations/nphm.py does not hold


# A frozen prior fitted by tracking, in its own pipeline (train): of the training settings it reads the budget, the
# seed, the held-out frames measured (5, as its example did) and the chunk; its tracking scores one held-out split.
METHOD = Method(
    "mononphm",
    build,
    {"paper": Recipe(paper_config), "cpu": Recipe(cpu_config)},
    MonoNphmConfig,
    training=TrainingConfig(eval_frames=5),
    video=_video,
    fit=fit,
    subject_flags=tuple(flag for flag in SUBJECT_FLAGS if flag != "all_held_out"),
    unread_training=UNREAD_TRAINING_FIELDS,
    unread_recipe=unread_recipe_fields,
)
