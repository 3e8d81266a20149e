"""INSTA's triangle frames with MonoNPHM's NeuS SDF: an INSTA-style avatar with a clean surface (no paper built it).

The posed sample goes through INSTA's triangle-frame deformer; the NeuS avatar's SDF, appearance, SH lighting and
renderer (``headfields.models.neus_avatar.NeusAvatar``) do the rest.

    python examples/mix_triangle_neus.py --out outputs/mix_triangle_neus --max-minutes 5
    torchrun --nproc_per_node=2 examples/mix_triangle_neus.py --device cpu

The assembly is ``headfields.models.mixes.triangle_neus``; ``benchmarks/compare.py`` trains it next to its paper model.
"""

from headfields.cli import run_example
from headfields.models.mixes import MIXES

MIX = MIXES["mix_triangle_neus"]

if __name__ == "__main__":
    rays, frames, every = MIX.rays_per_batch, MIX.frames_per_batch, MIX.eval_every
    run_example(__doc__, MIX.build, "outputs/mix_triangle_neus", 5.0, rays, frames, eval_every=every)
