"""``python -m headfields export RUN --out DIR``: a trained avatar's surface as coloured PLY meshes, in canonical space
(the neutral expression and pose) or posed at the frames of a split; a Gaussian avatar's Gaussians as 3D Gaussian
Splatting PLY files (:mod:`headfields.data.splat_ply`), which splat viewers open, and beside them the avatar in
GaussianAvatars' own layout under ``DIR/gaussian_avatars`` (local values, ``binding_0``, ``flame_param.npz`` with a row
per timestep of every split of the capture), which its viewer re-animates (:mod:`headfields.models.gaussian_avatars.export`);
an earlier layout there is replaced whole, its other ``point_cloud/iteration_*`` folders removed.

    python -m headfields export outputs/insta --out meshes                      # canonical.ply and test_00000.ply
    python -m headfields export outputs/insta --out meshes --frames all         # every held-out frame, posed
    python -m headfields export outputs/insta --out meshes --split train --frames 0,10,20 --no-canonical
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import numpy as np

from ...data.splat_ply import write_splat_ply
from ...models.gaussian_avatars.export import FLAME_PARAM
from ...outputs import hold, probe_folder
from ...progress import Progress
from ..export import DENSITY_THRESHOLD, NoSurfaceError, field_mesh, write_ply
from ..gaussian_avatars_run import export_gaussian_avatars_run
from ..runs import load_run
from ._common import refuse_unused_flags, run_model, run_parser

__all__ = ["add_parser", "default_resolution", "export", "frame_list"]

MIN_RESOLUTION, MAX_RESOLUTION = 64, 512  # export's default grid: the capture's longer side, within these
PADDING = 0.05  # metres the posed mesh's box grows on every side
# Where a Gaussian avatar's export puts GaussianAvatars' layout (point_cloud/iteration_N/point_cloud.ply, flame_param.npz).
GAUSSIAN_AVATARS_FOLDER = "gaussian_avatars"
# The flags for a field's surface (name in args -> default, what it sets), which a rasterised model refuses: its
# Gaussians are written as they are.
SURFACE_FLAGS = {
    "resolution": (None, "the marching-cubes grid"),
    "level": (None, "the surface's level"),
    "padding": (PADDING, "the posed mesh's box"),
}


def add_parser(commands) -> None:
    parser = run_parser(
        commands, "export", "a trained run's surface as coloured PLY meshes (marching cubes of its density or SDF)", __doc__
    )
    parser.add_argument("--out", type=Path, required=True, help="the folder the meshes go to")
    parser.add_argument("--split", default=None, help="the split of the posed meshes (default: the run's held-out split)")
    parser.add_argument(
        "--frames", default="0",
        help="posed meshes of these frames of the split: 'all', 'none', or indices such as 0,5,10 (a sequence: 'all')",
    )  # fmt: skip
    parser.add_argument(
        "--canonical", action=argparse.BooleanOptionalAction, default=True,
        help="also the mesh in canonical space (the parametric model's neutral expression and pose)",
    )  # fmt: skip
    parser.add_argument(
        "--resolution", type=int, default=None,
        help="marching-cubes grid points per axis (default: the capture's longer image side, within "
        f"[{MIN_RESOLUTION}, {MAX_RESOLUTION}]: about a point a pixel, no finer than the capture resolves)",
    )  # fmt: skip
    parser.add_argument(
        "--level", type=float, default=None,
        help=f"the surface's level: NeuS models' SDF (default 0), NeRF models' density per metre (default "
        f"{DENSITY_THRESHOLD:g}: an optical depth of 1 a centimetre, see headfields.apps.export.DENSITY_THRESHOLD)",
    )  # fmt: skip
    parser.add_argument("--padding", type=float, default=PADDING, help="metres the posed mesh's box grows on every side")
    parser.set_defaults(command=export)


def frame_list(text: str, count: int) -> list[int]:
    """The frames ``--frames`` names among ``count``: 'all', 'none', or comma-separated indices."""
    if text == "all":
        return list(range(count))
    if text == "none":
        return []
    try:
        frames = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"frames: expected 'all', 'none' or indices such as 0,5,10, got {text!r}") from None
    bad = [f for f in frames if not 0 <= f < count]
    if bad:
        raise ValueError(f"frames: expected indices in [0, {count - 1}] (the split's frames), got {bad}")
    return frames


def default_resolution(width: int, height: int) -> int:
    """Grid points per axis for a capture of ``width`` x ``height`` pixels: its longer side, within
    [MIN_RESOLUTION, MAX_RESOLUTION]. The head fills less than the image, so the grid is no coarser than what the
    capture shows of it (256 on a 96-pixel capture wrote 1.1 million faces a mesh, in two minutes each)."""
    return max(MIN_RESOLUTION, min(MAX_RESOLUTION, max(width, height)))


def export(args: argparse.Namespace) -> dict:
    """The ``export`` command: writes the meshes, prints and returns what it wrote.

    Each mesh is written whole (:func:`~headfields.apps.export.write_ply`): an interrupted or failed export leaves each
    file as it was, or absent. The folder is probed before the run is loaded, and the meshes' files are held
    (:func:`headfields.outputs.hold`) before the first is computed: a read-only folder, a full disk or a second
    export of the same files fails at once. A grid that would not fit in memory is refused before it is made. A
    flag for a field's surface (``--resolution``, ``--level``, ``--padding``) given for a rasterised model's run
    (a Gaussian avatar, whose Gaussians are written as they are) is refused by name before anything is written.
    GaussianAvatars' layout is held and written whole
    (:func:`~headfields.models.gaussian_avatars.export.export_gaussian_avatars`): a failed or killed export leaves the
    previous one, and a second export of it is refused."""
    if args.resolution is not None and args.resolution < 2:
        raise ValueError(f"resolution: expected at least 2 grid points per axis, got {args.resolution}")
    refuse_unused_flags(args, run_model(args.run), SURFACE_FLAGS)  # before the out folder is made
    probe_folder(args.out, "out")
    run = load_run(args.run, args.device, pixels=False)  # meshes and splats of the model: no capture image is shown
    refuse_unused_flags(args, run.config.model, SURFACE_FLAGS)  # a run without config.json: its model now
    if args.resolution is None and not hasattr(run.model, "splats"):  # a mesh's grid (Gaussians are written as they are)
        cameras = run.subject.train.cameras
        args.resolution = default_resolution(cameras.width, cameras.height)
        print(f"resolution: {args.resolution} grid points per axis (the capture's {cameras.width} x {cameras.height} pixels)")
    split = args.split or run.subject.eval.split
    head = run.head(split)
    frames = frame_list(args.frames, head.num_frames)
    jobs = [("canonical", run.model.parametric(), 0)] if args.canonical else []
    jobs += [(f"{split}_{f:05d}", head, f) for f in frames]
    if not jobs:
        raise ValueError("frames: nothing to export (--frames none with --no-canonical)")
    written = {}
    with contextlib.ExitStack() as held, Progress(len(jobs), "export", "mesh") as bar:
        for name, _, _ in jobs:
            held.enter_context(hold(args.out / f"{name}.ply", "out"))
        for name, frame_head, frame in jobs:
            path = args.out / f"{name}.ply"
            if hasattr(run.model, "splats"):  # Gaussians, posed on the frame's mesh: no surface to extract
                splats = run.model.splats(frame_head, frame)
                write_splat_ply(path, splats)
                written[str(path)] = {"gaussians": len(splats.means), "sh_degree": splats.degree}
                bar.update(1)
                continue
            try:
                mesh = field_mesh(run.model, frame_head, frame, args.resolution, args.level, args.padding)
            except NoSurfaceError as error:  # the suggested level, as the flag to give
                raise ValueError(error.message("--level")) from None
            write_ply(path, mesh.vertices, mesh.faces, mesh.colors)
            written[str(path)] = {"vertices": len(mesh.vertices), "faces": len(mesh.faces)}
            bar.update(1)
    if hasattr(run.model, "splats"):  # beside the world-space frames: GaussianAvatars' own layout, which its viewer drives
        layout = args.out / GAUSSIAN_AVATARS_FOLDER
        try:
            ply = export_gaussian_avatars_run(run, layout)
            with np.load(ply.parent / FLAME_PARAM) as flame_param:  # a row per timestep of every split
                written[str(ply)] = {"layout": "GaussianAvatars", "timesteps": len(flame_param["expr"])}
        except ValueError as error:  # (a head that is not FLAME's: tracked meshes without model files)
            print(f"GaussianAvatars' layout: not written ({error})")
    print(json.dumps(written))
    return written
