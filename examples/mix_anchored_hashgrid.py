"""MonoAvatar's mesh-anchored UV-CNN features with a hash grid: a combination none of the papers built.

A hash grid of the sample's head-frame position joins MonoAvatar's mesh-anchored features at the NeRF decoder's
input: the grid holds the static fine detail, the anchored features what moves with the expression. Everything
else is MonoAvatar, with the error correction off as the synthetic video's tracking is exact.

    python examples/mix_anchored_hashgrid.py --out outputs/mix_anchored_hashgrid --max-minutes 5
    torchrun --nproc_per_node=2 examples/mix_anchored_hashgrid.py --device cpu

The assembly is ``headfields.models.mixes.anchored_hashgrid``; ``benchmarks/compare.py`` trains it next to its paper model.

The same as ``python -m headfields train mix_anchored_hashgrid``, with the same flags.
"""

import sys

from headfields.apps.commands import main

if __name__ == "__main__":
    raise SystemExit(main(["train", "mix_anchored_hashgrid", *sys.argv[1:]]))
