"""INSTA with a hyper-dimensional backward field: a combination none of the papers built.

INSTA's triangle frames carry a posed sample to the canonical FLAME space; MonoNPHM's backward field adds an
offset and two hyper coordinates conditioned on the frame's expression, so the canonical hash-grid NeRF can hold
what the FLAME mesh does not move (wrinkles, the inside of the mouth). The field reads ``[grid(x + Δx), PE(h)]``.

    python examples/mix_hyper_insta.py --out outputs/mix_hyper_insta --max-minutes 5
    torchrun --nproc_per_node=2 examples/mix_hyper_insta.py --device cpu --rays 4096

The assembly is ``headfields.models.mixes.hyper_insta``; ``benchmarks/compare.py`` trains it next to its paper model.
"""

from headfields.cli import example_training, run_training, training_parser
from headfields.models.mixes import MIXES

MIX = MIXES["mix_hyper_insta"]

if __name__ == "__main__":
    training = example_training(
        max_minutes=5.0, rays_per_batch=MIX.rays_per_batch, frames_per_batch=MIX.frames_per_batch, eval_every=MIX.eval_every
    )
    run_training(training_parser(__doc__.split("\n")[0], "mix_hyper_insta", "outputs/mix_hyper_insta", training).parse_args())
