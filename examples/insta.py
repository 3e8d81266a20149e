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
"""

from __future__ import annotations

from headfields.cli import example_training, run_training, training_parser


def main() -> None:
    training = example_training(max_minutes=15.0, rays_per_batch=2048, eval_every=500)
    run_training(training_parser(__doc__.split("\n")[0], "insta", "outputs/insta", training).parse_args())


if __name__ == "__main__":
    main()
