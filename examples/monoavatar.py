"""Train MonoAvatar on the built-in synthetic head video (default) or on a real INSTA-format capture.

    python examples/monoavatar.py --out outputs/monoavatar --max-minutes 15
    python examples/monoavatar.py --monoavatar.features static  # the paper's ablation: expression-independent features
    python examples/monoavatar.py --data /path/to/subject --model /path/to/FLAME2020 --device cuda
    python examples/monoavatar.py --data /path/to/insta/subject   # INSTA's layout: tracked meshes, no model files

Writes ``out/metrics.json`` (held-out psnr, ssim, train_seconds, iterations), renders (truth | render | error)
under ``out/renders/``, ``out/config.json``, ``out/log.jsonl`` and a checkpoint; run again with the same ``--out``
to resume. ``--help`` lists a flag for every recipe field (``--monoavatar.*``) and training field.
"""

from __future__ import annotations

from headfields.cli import example_training, run_training, training_parser


def main() -> None:
    # MonoAvatar's batch: 1024 rays from 4 frames (each frame's UV-CNN features are computed once per batch).
    training = example_training(max_minutes=15.0, rays_per_batch=1024, frames_per_batch=4, eval_every=500)
    run_training(training_parser(__doc__.split("\n")[0], "monoavatar", "outputs/monoavatar", training).parse_args())


if __name__ == "__main__":
    main()
