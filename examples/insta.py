"""Train INSTA on the built-in synthetic head video (default) or on a real INSTA-format capture.

    python examples/insta.py --out outputs/insta --max-minutes 15     # --recipe cpu on a CPU, paper on CUDA
    python examples/insta.py --recipe paper                               # INSTA's sizes whatever the device
    python examples/insta.py --data /path/to/insta/subject --device cuda   # INSTA's layout: its meshes, no model files
    python examples/insta.py --data /path/to/subject --model /path/to/FLAME2020   # tracked FLAME parameters
    python examples/insta.py --insta.hash-grid.features-per-level 8 --eval-every 250  # any recipe or training field
    python examples/insta.py --config outputs/insta/config.json --out outputs/insta_b  # a saved run's settings

Writes ``out/metrics.json`` (held-out psnr, ssim, train_seconds, iterations), renders (prediction | truth) under
``out/renders/``, ``out/config.json``, ``out/log.jsonl`` and a checkpoint; run again with the same ``--out`` to resume.
``python -m headfields render OUT`` / ``export OUT`` then make videos and meshes of the trained avatar.

The same as ``python -m headfields train insta``, with the same flags.
"""

import sys

from headfields.apps.commands import main

if __name__ == "__main__":
    raise SystemExit(main(["train", "insta", *sys.argv[1:]]))
