"""INSTA's triangle frames with MonoNPHM's NeuS SDF: an INSTA-style avatar with a clean surface (no paper built it).

The posed sample goes through INSTA's triangle-frame deformer; the NeuS avatar's SDF, appearance, SH lighting and
renderer (``headfields.models.neus_avatar.NeusAvatar``) do the rest.

    python examples/mix_triangle_neus.py --out outputs/mix_triangle_neus --max-minutes 5
    torchrun --nproc_per_node=2 examples/mix_triangle_neus.py --device cpu

The assembly is ``headfields.models.mixes.triangle_neus``; ``benchmarks/compare.py`` trains it next to its paper model.
"""

from headfields.cli import example_training, run_training, training_parser
from headfields.models.mixes import MIXES

MIX = MIXES["mix_triangle_neus"]

if __name__ == "__main__":
    training = example_training(
        max_minutes=5.0, rays_per_batch=MIX.rays_per_batch, frames_per_batch=MIX.frames_per_batch, eval_every=MIX.eval_every
    )
    run_training(training_parser(__doc__.split("\n")[0], "mix_triangle_neus", "outputs/mix_triangle_neus", training).parse_args())
