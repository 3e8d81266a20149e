"""MonoAvatar's mesh-anchored UV-CNN features with a hash grid: a combination none of the papers built.

A hash grid of the sample's head-frame position joins MonoAvatar's mesh-anchored features at the NeRF decoder's
input: the grid holds the static fine detail, the anchored features what moves with the expression. Everything
else is MonoAvatar, with the error correction off as the synthetic video's tracking is exact.

    python examples/mix_anchored_hashgrid.py --out outputs/mix_anchored_hashgrid --max-minutes 5
    torchrun --nproc_per_node=2 examples/mix_anchored_hashgrid.py --device cpu

The assembly is ``headfields.models.mixes.anchored_hashgrid``; ``benchmarks/compare.py`` trains it next to its paper model.
"""

from headfields.cli import example_training, run_training, training_parser
from headfields.models.mixes import MIXES

MIX = MIXES["mix_anchored_hashgrid"]

if __name__ == "__main__":
    training = example_training(
        max_minutes=5.0, rays_per_batch=MIX.rays_per_batch, frames_per_batch=MIX.frames_per_batch, eval_every=MIX.eval_every
    )
    run_training(
        training_parser(__doc__.split("\n")[0], "mix_anchored_hashgrid", "outputs/mix_anchored_hashgrid", training).parse_args()
    )
