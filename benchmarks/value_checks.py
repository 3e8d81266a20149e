"""How many value checks (finite values, index ranges: each a host synchronisation on CUDA) one training step of
each model runs: with every layer checking its input (the renderers' trusted_values switched off), with the
renderers checking their rays once (a model called directly), and inside the training loop.

    python benchmarks/value_checks.py
"""

from __future__ import annotations

import contextlib
from unittest import mock

import torch

import headfields.checks as checks
from headfields.data import load_insta_dataset
from headfields.heads import tracked_head
from headfields.models import hyper_neus, insta, monoavatar
from headfields.models.insta import Insta
from headfields.models.mixes import MIXES
from headfields.parametric import load_model
from headfields.synthetic import cached_synthetic_video
from headfields.training import ray_batch, seed_everything

COUNT = [0]


def counted(check):
    def wrapper(*args, **kwargs):
        COUNT[0] += checks.checking_values()
        return check(*args, **kwargs)

    return wrapper


def main() -> None:
    root = cached_synthetic_video()
    frames = load_insta_dataset(root, "train")
    parametric = load_model(frames.model_path, frames.model_type)
    head = tracked_head(parametric, frames)
    builds = {
        "INSTA": lambda: Insta(parametric, frames.segmentation_labels, insta.cpu_config()),
        "MonoAvatar": lambda: monoavatar.MonoAvatar(parametric, len(frames), monoavatar.cpu_config()),
        "mix_triangle_neus": lambda: MIXES["mix_triangle_neus"].build(parametric, frames),
        "hyper_neus": lambda: hyper_neus.HyperNeusAvatar(parametric, len(frames), hyper_neus.cpu_config()),
    }
    untrusting = contextlib.nullcontext
    modules = [m for m in __import__("sys").modules.values() if getattr(m, "trusted_values", None) is checks.trusted_values]
    print(f"{'model':<20} {'every layer':>12} {'renderer entry':>15} {'in the loop':>12} {'ratio':>7}")
    with mock.patch.object(checks, "check_finite", counted(checks.check_finite)):
        for name, build in builds.items():
            seed_everything(0)
            model = build()
            batch = ray_batch(frames, 256, torch.Generator().manual_seed(0), torch.device("cpu"), 4, None, head)
            batch.generator = torch.Generator().manual_seed(0)
            if hasattr(model, "before_step"):
                model.before_step(1, head)
            model.training_step(batch, 1)  # warm-up (lazy builds)
            counts = []
            for patch, context in (
                (True, contextlib.nullcontext),
                (False, contextlib.nullcontext),
                (False, checks.trusted_values),
            ):
                patches = [mock.patch.object(m, "trusted_values", untrusting) for m in modules] if patch else []
                with contextlib.ExitStack() as stack:
                    for p in patches:
                        stack.enter_context(p)
                    COUNT[0] = 0
                    with context():
                        model.training_step(batch, 1)
                    counts.append(COUNT[0])
            ratio = counts[0] / max(counts[1], 1)
            print(f"{name:<20} {counts[0]:>12} {counts[1]:>15} {counts[2]:>12} {ratio:>6.1f}x")


if __name__ == "__main__":
    main()
