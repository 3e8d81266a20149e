"""INSTA's triangle frames with MonoNPHM's NeuS SDF: an INSTA-style avatar with a clean surface (no paper built it).

The posed sample goes through INSTA's triangle-frame deformer; the NeuS avatar's SDF, appearance, SH lighting and
renderer (``headfields.models.neus_avatar.NeusAvatar``) do the rest.

    python examples/mix_triangle_neus.py --out outputs/mix_triangle_neus --max-minutes 5
    torchrun --nproc_per_node=2 examples/mix_triangle_neus.py --device cpu

The assembly is ``headfields.models.mixes.triangle_neus``; ``benchmarks/compare.py`` trains it next to its paper model.

The same as ``python -m headfields train mix_triangle_neus``, with the same flags.
"""

import sys

from headfields.apps.commands import main

if __name__ == "__main__":
    raise SystemExit(main(["train", "mix_triangle_neus", *sys.argv[1:]]))
