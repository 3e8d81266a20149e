"""INSTA with a hyper-dimensional backward field: a combination none of the papers built.

INSTA's triangle frames carry a posed sample to the canonical FLAME space; MonoNPHM's backward field adds an
offset and two hyper coordinates conditioned on the frame's expression, so the canonical hash-grid NeRF can hold
what the FLAME mesh does not move (wrinkles, the inside of the mouth). The field reads ``[grid(x + Δx), PE(h)]``.

    python examples/mix_hyper_insta.py --out outputs/mix_hyper_insta --max-minutes 5
    torchrun --nproc_per_node=2 examples/mix_hyper_insta.py --device cpu --rays 4096

The assembly is ``headfields.models.mixes.hyper_insta``; ``benchmarks/compare.py`` trains it next to its paper model.

The same as ``python -m headfields train mix_hyper_insta``, with the same flags.
"""

import sys

from headfields.apps.commands import main

if __name__ == "__main__":
    raise SystemExit(main(["train", "mix_hyper_insta", *sys.argv[1:]]))
