"""Train the 360° portrait avatar on the built-in synthetic orbit video (the SMPL-X bust turning before the
camera, default) or on a real INSTA-format capture tracked with SMPL-X.

    python examples/portrait360.py --out outputs/portrait360 --max-minutes 20
    python examples/portrait360.py --portrait360.blend colour    # the paper's ablation: blend colours, not deformations
    python examples/portrait360.py --balance-views false        # uniform ray sampling instead of view-balanced
    python examples/portrait360.py --data /path/to/subject --model /path/to/SMPLX --device cuda

Writes ``out/metrics.json`` (held-out psnr, ssim, train_seconds, iterations), renders (truth | render | error)
under ``out/renders/`` and a checkpoint; run again with the same ``--out`` to resume.
"""

from __future__ import annotations

from headfields.cli import example_training, run_training, training_parser


def main() -> None:
    training = example_training(max_minutes=20.0, rays_per_batch=2048, balance_views=True, eval_every=1000)
    parser = training_parser(
        __doc__.split("\n")[0], "portrait360", "outputs/portrait360", training, parametric="SMPL-X",
        video="the synthetic orbit video",
    )  # fmt: skip
    run_training(parser.parse_args())


if __name__ == "__main__":
    main()
