"""Train the 360° portrait avatar on the built-in synthetic orbit video (the SMPL-X bust turning before the
camera, default) or on a real INSTA-format capture tracked with SMPL-X.

    python examples/portrait360.py --out outputs/portrait360 --max-minutes 20
    python examples/portrait360.py --portrait360.blend colour    # the paper's ablation: blend colours, not deformations
    python examples/portrait360.py --balance-views false        # uniform ray sampling instead of view-balanced
    python examples/portrait360.py --data /path/to/subject --model /path/to/SMPLX --device cuda

Writes ``out/metrics.json`` (held-out psnr, ssim, train_seconds, iterations), renders (truth | render | error)
under ``out/renders/`` and a checkpoint; run again with the same ``--out`` to resume.

The same as ``python -m headfields train portrait360``, with the same flags.
"""

import sys

from headfields.apps.commands import main

if __name__ == "__main__":
    raise SystemExit(main(["train", "portrait360", *sys.argv[1:]]))
