"""How many value checks (finite values, non-zero rows, index ranges: each a host synchronisation on CUDA) one
training step of each model runs: called directly, where the renderers check their rays once and trust what they
derive from them, and inside the training loop (``checks.trusted_values``), which checks its batches itself.

    python tools/value_checks.py

The checks are counted by Python's profile hook (``calls.counted_calls``): a call of a check counts where it runs
(``checks.checking_values()``), and nothing of the library is replaced.
"""

from __future__ import annotations

import torch

import headfields.checks as checks
from headfields.data import load_insta_dataset
from headfields.heads import tracked_head
from headfields.models import hyper_neus, insta, monoavatar
from headfields.models.insta import Insta
from headfields.models.mixes import MIXES
from headfields.parametric import load_model
from headfields.renderers import RenderContext
from headfields.synthetic import cached_synthetic_video
from headfields.training import ray_batch, seed_everything

from calls import counted_calls

VALUE_CHECKS = (checks.check_finite, checks.check_nonzero_rows, checks.check_int)  # those that read a tensor's values


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
    print(f"{'model':<20} {'called directly':>16} {'in the loop':>12}")
    for name, build in builds.items():
        seed_everything(0)
        model = build()
        batch = ray_batch(frames, 256, torch.Generator().manual_seed(0), torch.device("cpu"), 4, None, head)
        batch.context = RenderContext(torch.Generator().manual_seed(0))
        model.before_step(1, head)
        model.training_step(batch, 1)  # warm-up (lazy builds)
        counts = []
        for trusted in (False, True):
            with counted_calls(*VALUE_CHECKS, when=checks.checking_values) as calls:
                with checks.validation(not trusted):
                    model.training_step(batch, 1)
            counts.append(sum(calls.values()))
        print(f"{name:<20} {counts[0]:>16} {counts[1]:>12}")


if __name__ == "__main__":
    main()
