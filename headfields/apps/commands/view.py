"""``python -m headfields view RUN``: the avatar in the browser, seen from a free camera and driven by sliders
(expression, jaw, head pose) or by the capture's tracking, frame by frame (viser).

    python -m headfields view outputs/insta                        # http://localhost:8080, this machine only
    python -m headfields view outputs/insta --watch --port 8090    # reloads each checkpoint training writes
    python -m headfields view outputs/insta --host 0.0.0.0         # reachable from other machines
    python -m headfields view outputs/gaussians --no-splats        # a Gaussian run's pictures from the server
"""

from __future__ import annotations

import argparse
import time

from ...renderers.volume import INTERACTIVE_TRANSMITTANCE
from ._common import add_render_options, ray_flags, refuse_unused_flags, run_model, run_parser

__all__ = ["add_parser", "view"]

PRECISION = "bfloat16"  # the MLPs' products: as instant-ngp's interactive renderer
RAY_FLAGS = ray_flags(INTERACTIVE_TRANSMITTANCE, PRECISION)  # what a rasterised model's run refuses


def add_parser(commands) -> None:
    parser = run_parser(commands, "view", "an interactive viewer of a trained run in the browser", __doc__)
    parser.add_argument("--port", type=int, default=8080, help="the port to serve on")
    parser.add_argument(
        "--host", default="127.0.0.1",
        help="the address to bind: 127.0.0.1 serves this machine only; 0.0.0.0 every network interface",
    )  # fmt: skip
    parser.add_argument("--watch", action="store_true", help="reload the checkpoint whenever training writes a new one")
    parser.add_argument(
        "--resolution", type=int, default=None,
        help="at most this many pixels on the longer image side once the camera rests (default: the browser canvas's, "
        "or what renders in 2 s)",
    )  # fmt: skip
    parser.add_argument(
        "--moving-resolution", type=int, default=None,
        help="... while the camera or a slider moves (default: what renders in 0.1 s)",
    )  # fmt: skip
    parser.add_argument(
        "--splats", action=argparse.BooleanOptionalAction, default=None,
        help="the browser draws a Gaussian run's splats itself (default: on for a Gaussian run); --no-splats: the "
        "server renders pictures of it, as of every other model",
    )  # fmt: skip
    add_render_options(parser, INTERACTIVE_TRANSMITTANCE, PRECISION)
    parser.set_defaults(command=view)


def view(args: argparse.Namespace, block: bool = True):
    """The ``view`` command: serves until interrupted (Ctrl-C), on the CPU with freed memory kept in the process
    (``--keep-freed-memory``, put back after); ``block=False`` returns the started viewer and leaves the caller's
    process as it is. A flag for a field's rays (``--chunk``, ``--early-stop``, ``--precision``) given for a
    rasterised model's run (a Gaussian avatar) is refused by name: it would change nothing."""
    from ...backends.cpu.process_tuning import process_tuning
    from ..viewer import AvatarViewer

    for name in ("resolution", "moving_resolution", "chunk"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"{name}: expected a positive number, got {getattr(args, name)}")
    if not 0 <= args.port < 65536:
        raise ValueError(f"port: expected a port in [0, 65535], got {args.port}")
    refuse_unused_flags(args, run_model(args.run), RAY_FLAGS)
    viewer = AvatarViewer(
        args.run, host=args.host, port=args.port, watch=args.watch, device=args.device,
        moving_pixels=args.moving_resolution, resting_pixels=args.resolution, chunk=args.chunk, early_stop=args.early_stop,
        precision=args.precision, splats=args.splats,
    )  # fmt: skip
    if not block:
        return viewer.start()
    with process_tuning(viewer.run.device, flush_denormals=False, tune_malloc=args.keep_freed_memory):
        viewer.start()
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            viewer.stop()
    return None
