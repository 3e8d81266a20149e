"""MonoAvatar's mesh-anchored UV-CNN features with a hash grid: a combination none of the papers built.

A hash grid of the sample's head-frame position joins MonoAvatar's mesh-anchored features at the NeRF decoder's
input: the grid holds the static fine detail, the anchored features what moves with the expression. Everything
else is MonoAvatar, with the error correction off as the synthetic video's tracking is exact.

    python examples/mix_anchored_hashgrid.py --out outputs/mix_anchored_hashgrid --max-minutes 5
    torchrun --nproc_per_node=2 examples/mix_anchored_hashgrid.py --device cpu

The assembly is ``headfields.models.mixes.anchored_hashgrid``; ``benchmarks/compare.py`` trains it next to its paper model.
"""

from headfields.cli import run_example
from headfields.models.mixes import MIXES

MIX = MIXES["mix_anchored_hashgrid"]

if __name__ == "__main__":
    rays, frames, every = MIX.rays_per_batch, MIX.frames_per_batch, MIX.eval_every
    run_example(__doc__, MIX.build, "outputs/mix_anchored_hashgrid", 5.0, rays, frames, eval_every=every)
