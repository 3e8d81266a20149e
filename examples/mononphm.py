"""MonoNPHM's tracking half: fit a saved NPHM prior (``train nphm_prior`` trains one) to a monocular video of a person
it never saw, then measure it on the held-out frames.

    python -m headfields train nphm_prior --out outputs/nphm_prior --max-minutes 30        # the prior
    python examples/mononphm.py --prior outputs/nphm_prior/prior.pt --out outputs/mononphm --max-minutes 10
    python examples/mononphm.py --prior PRIOR --data /path/to/capture --model /path/to/FLAME2020 --device cuda

The same as ``python -m headfields train mononphm --mononphm.prior PRIOR``, with the same flags; ``--prior``,
``--landmarks``, ``--geometry-frames`` and ``--mesh-resolution`` are short for ``--mononphm.prior`` and so on.

The default video is the synthetic held-out person of benchmarks/ablations/nphm.py: a FLAME shape with personal detail
(hair volume, bumps, ears) that FLAME cannot express, tracked with plain FLAME. Writes ``out/metrics.json``:
held-out ``psnr``, ``ssim``, ``l1`` (each frame's expression and pose tracked with the person's codes fixed) and the
same from the prior's mean codes (``*_mean_codes``); ``scan`` and ``scan_flame`` (MonoNPHM's own protocol: the face
region of a depth scan of the true head to the tracked surface and to the capture's tracked FLAME mesh, after a
similarity ICP: L1 and L2 in mm, normals, F-scores at 1, 2.5, 5 and 10 mm); ``chamfer`` (the tracked surface
against the true one, as a fraction of the head's size, over what the camera sees) and ``chamfer_flame`` (the
capture's tracked FLAME mesh, the same measure), in millimetres too, with normal consistency and F-scores; renders
(render | truth | error)
under ``out/renders/``, the meshes ``out/mesh_XXXXX.obj``, ``out/config.json`` and ``out/checkpoint.pt``, which
``python -m headfields render OUT`` / ``export OUT`` / ``view OUT`` open.
"""

import sys

from headfields.apps.commands import main

SHORT = {f"--{name}": f"--mononphm.{name}" for name in ("prior", "landmarks", "geometry-frames", "mesh-resolution")}


def spelled_out(word: str) -> str:
    """``word`` with a short flag spelled out (``--prior=P`` -> ``--mononphm.prior=P``)."""
    flag, equals, value = word.partition("=")
    return SHORT.get(flag, flag) + equals + value


if __name__ == "__main__":
    raise SystemExit(main(["train", "mononphm", *map(spelled_out, sys.argv[1:])]))
