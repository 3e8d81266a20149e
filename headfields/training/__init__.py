"""The training loop shared by every avatar model: random rays from all training frames (or a model's own steps,
:mod:`~headfields.training.strategy`: a rasteriser's whole frames), periodic held-out
evaluation, checkpoints that resume exactly, rendered images and a metrics file.

A model plugs in through :class:`AvatarModel`: its parametric model, its optimiser's settings, a loss on a batch
of rays and a renderer of rays. The loop owns the shared work: it builds each split's tracked
:class:`~headfields.parametric.Head` once and hands it over with every batch, seeds each step's jitter, builds the
optimiser (per-group learning rates, exponential decay, gradient clipping) and the exponential moving average of
the weights where the model's paper evaluates one, and writes the files.

Under ``torchrun`` (any initialised process group of several ranks, see :mod:`headfields.training.distributed`) the
same loop trains data-parallel: every rank draws the same batch and renders its share of the rays, and
``DistributedDataParallel`` averages the gradients, so a step is the one-process step on the whole batch.

One job a module: ``contract`` (what a model gives the loop), ``config`` (:class:`TrainingConfig`), ``batches``
(seeding and ray batches), ``sample_budget`` (the rays a step draws, the samples it trains), ``optimizer`` (Adam,
its schedule, the weights' average), ``evaluation`` (held-out renders and scores), ``run_log`` (``log.jsonl``,
TensorBoard), ``strategy`` (a model's own steps inside the loop: a whole frame a step, a part after backward),
``data_parallel`` (the step under ``DistributedDataParallel``) and ``loop`` (:func:`train`).
"""

from .batches import random_backgrounds, ray_batch, seed_everything
from .config import CHECKPOINT_NAME, CONFIG_NAME, LOG_NAME, METRICS_NAME, TrainingConfig
from .contract import AvatarModel, RasterImage, RayBatch, SampleCount, StepOutput
from .evaluation import (
    HEAD_MASKING,
    Evaluation,
    comparison,
    evaluate,
    evenly_spread,
    render_image,
    render_pixels,
    render_view,
    save_png,
)
from .loop import train
from .optimizer import (
    DecayingAdam,
    OptimizerConfig,
    averaged,
    build_optimizer,
    descend,
    exponential_learning_rate,
    set_learning_rate,
    step_if,
)
from .run_log import RunLog
from .strategy import FrameBatch, StepStrategy

__all__ = [
    "CHECKPOINT_NAME",
    "CONFIG_NAME",
    "HEAD_MASKING",
    "LOG_NAME",
    "METRICS_NAME",
    "AvatarModel",
    "DecayingAdam",
    "Evaluation",
    "FrameBatch",
    "OptimizerConfig",
    "RasterImage",
    "RayBatch",
    "RunLog",
    "SampleCount",
    "StepOutput",
    "StepStrategy",
    "TrainingConfig",
    "averaged",
    "build_optimizer",
    "comparison",
    "descend",
    "evaluate",
    "evenly_spread",
    "exponential_learning_rate",
    "random_backgrounds",
    "ray_batch",
    "render_image",
    "render_pixels",
    "render_view",
    "save_png",
    "seed_everything",
    "set_learning_rate",
    "step_if",
    "train",
]
