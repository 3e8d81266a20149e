"""Train MonoAvatar on the built-in synthetic head video (default) or on a real INSTA-format capture.

    python examples/monoavatar.py --out outputs/monoavatar --max-minutes 15
    python examples/monoavatar.py --monoavatar.features static  # the paper's ablation: expression-independent features
    python examples/monoavatar.py --data /path/to/subject --model /path/to/FLAME2020 --device cuda
    python examples/monoavatar.py --data /path/to/insta/subject   # INSTA's layout: tracked meshes, no model files

Writes ``out/metrics.json`` (held-out psnr, ssim, train_seconds, iterations), renders (truth | render | error)
under ``out/renders/``, ``out/config.json``, ``out/log.jsonl`` and a checkpoint; run again with the same ``--out``
to resume. ``--help`` lists a flag for every recipe field (``--monoavatar.*``) and training field.

The same as ``python -m headfields train monoavatar``, with the same flags.
"""

import sys

from headfields.apps.commands import main

if __name__ == "__main__":
    raise SystemExit(main(["train", "monoavatar", *sys.argv[1:]]))
