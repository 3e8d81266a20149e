"""What :func:`~headfields.training.train` checks before it writes anything into the run folder: the batch against
the ranks, the fields a model's own steps do not read, fixed shapes and graphs, the frames and held-out splits,
the run's configuration, and the LPIPS networks asked for (a weights file that cannot be read fails here, not
after ``config.json`` has been replaced)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from ..data import FrameSet
from ..metrics.perceptual import Lpips, LpipsUnavailable
from . import distributed
from .config import TrainingConfig
from .contract import AvatarModel
from .evaluation import lpips_for_run
from .sample_budget import check_fixed_shapes
from .step_graph import check_graph
from .strategy import StepStrategy, step_strategy
from .unused import check_unused

__all__ = ["RunStart", "check_run"]


@dataclass(frozen=True)
class RunStart:
    """What the checks found: the model's own steps (None: ray steps), the other held-out splits, ``config.json``'s
    text (None: no RunConfig) and the LPIPS networks (AlexNet's, VGG16's; None on the ranks but rank 0, and where
    the weights are missing: the metrics then say why)."""

    strategy: StepStrategy | None
    more_eval: dict[str, FrameSet]
    described: str | None
    perceptual: tuple[Lpips | LpipsUnavailable | None, Lpips | LpipsUnavailable | None]


def check_run(
    model: AvatarModel,
    train_frames: FrameSet,
    eval_frames: FrameSet,
    config: TrainingConfig,
    device: torch.device,
    run=None,
    more_eval: Mapping[str, FrameSet] | None = None,
) -> RunStart:
    """Every check of a run of ``model`` that can fail, before its folder is touched (see the module docstring)."""
    if not isinstance(model, AvatarModel):
        raise TypeError(
            f"model: expected a headfields.training.AvatarModel (subclass it and override its callbacks), "
            f"got {type(model).__name__}"
        )
    ranks = distributed.world_size()
    if config.rays_per_batch % ranks:
        raise ValueError(
            f"rays_per_batch: expected a multiple of the {ranks} ranks (an equal share each), got {config.rays_per_batch}"
        )
    strategy = step_strategy(model)
    if strategy is not None:
        check_unused(config, strategy.refused, f"{type(model).__name__}, which trains with its own steps,")
        if ranks > 1:
            raise ValueError(f"model: {type(model).__name__}'s steps train in one process, got a group of {ranks} ranks")
    if config.balance_views and not model.balances_views:
        raise ValueError(f"balance_views: expected a model that bins its views (view_bins), got {type(model).__name__}")
    if config.fixed_shapes:
        check_fixed_shapes(model, config.samples_per_batch, config.frames_per_batch)
    if config.cuda_graph:
        check_graph(model, device, ranks)
    more_eval = dict(more_eval or {})
    named = {f"more_eval[{k!r}]": f for k, f in more_eval.items()}
    for name, frames in {"train_frames": train_frames, "eval_frames": eval_frames, **named}.items():
        if not isinstance(frames, FrameSet) or len(frames) == 0:
            got = f"{len(frames)} frames" if isinstance(frames, FrameSet) else type(frames).__name__
            raise ValueError(f"{name}: expected a FrameSet with at least one frame, got {got}")
        if config.eval_regions and name != "train_frames" and frames.segmentation is None:
            raise ValueError(f"eval_regions: expected {name} with a segmentation (region labels), got frames without one")
    if eval_frames.split in more_eval:
        raise ValueError(f"more_eval: expected splits other than eval_frames' {eval_frames.split!r}, got {list(more_eval)}")
    described = None
    if run is not None:
        if run.training != config:
            raise ValueError("run: expected the RunConfig whose training configuration is config, got another")
        described = json.dumps(run.to_dict(), indent=2)
    perceptual = (None, None)
    if distributed.rank() == 0:  # once per run; the other ranks do not score
        perceptual = (lpips_for_run(config.lpips_weights, device, "alex"), lpips_for_run(config.lpips_vgg_weights, device, "vgg"))
    return RunStart(strategy, more_eval, described, perceptual)
