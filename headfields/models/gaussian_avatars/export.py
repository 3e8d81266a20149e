"""A Gaussian avatar in GaussianAvatars' own files (``ShenhanQian/GaussianAvatars``), which its viewer re-animates.

GaussianAvatars saves a trained avatar as ``point_cloud/iteration_{N}/point_cloud.ply`` with ``flame_param.npz``
beside it (``scene/__init__.py`` ``Scene.save``, ``scene/flame_gaussian_model.py`` ``save_ply``). The PLY holds each
Gaussian's values local to its parent FLAME face and the face itself (``binding_0``,
:func:`~headfields.data.splat_ply.write_bound_splat_ply`); the npz holds the FLAME parameters of every timestep, from which
the viewer (``local_viewer.py``, ``FlameGaussianModel(sh_degree)``) poses the mesh, then each Gaussian on its face's
frame: the same frames :mod:`headfields.deformers.gaussian_binding` poses ours on. So

    ply = export_gaussian_avatars(out, model, head, step, timesteps)  # out/point_cloud/iteration_{step}/point_cloud.ply
    ply = export_gaussian_avatars_run(run, "out/ga")  # a trained run's (headfields.apps.gaussian_avatars_run)
    # python local_viewer.py --point_path out/ga/point_cloud/iteration_30000/point_cloud.ply

shows, at timestep ``t``, the capture's frame of timestep ``t`` as our model renders it (checked to 1e-5 by re-posing
the files with GaussianAvatars' formulas), beside the world-space PLY of each frame that ``python -m headfields
export`` writes. The viewer must load the FLAME model file the run was trained with (its ``FLAME_MODEL_PATH``, FLAME
2023 by default) and take ``--sh_degree`` of the run's recipe when that is not 3.

Timesteps: GaussianAvatars (``scene/dataset_readers.py``) numbers the frames of every split by the ``timestep_index``
of their ``transforms_{split}.json``, one numbering over train, val and test, and poses a frame of any split with
``flame_param`` row ``[timestep]``. So the npz of a run holds a row per timestep of the capture
(:func:`~headfields.apps.gaussian_avatars_run.run_timesteps`): a VHAP capture's own ``timestep_index``, or, for a
capture without one, the numbering :func:`~headfields.data.save_vhap_dataset` gives (a frame each, train, then val,
then test).

The layout is held (:func:`~headfields.outputs.hold` on ``point_cloud``) and written whole: the new
``iteration_{N}`` folder is filled hidden and renamed into place, and only then are the other ``iteration_*``
folders under ``point_cloud`` removed (GaussianAvatars loads the highest iteration); nothing else there is touched.
A failed or killed export leaves the previous layout.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ...checks import IntLike, check_count
from ...data import FrameSet
from ...data.splat_ply import Splats, write_bound_splat_ply
from ...outputs import atomic_folder, atomic_path, hold, remove_folder, sweep_folder_temporaries
from ...parametric import Head, ParametricModel, SubjectModel
from ...parametric.model import FULL_SPACE
from ...parametric.teeth import FLAME_TEETH_VERTICES, has_flame_teeth
from .model import GaussianAvatar

__all__ = [
    "FLAME_PARAM",
    "POINT_CLOUD",
    "TEETH_VERTICES",
    "capture_timesteps",
    "export_gaussian_avatars",
    "flame_param_arrays",
    "write_flame_param_npz",
]

POINT_CLOUD = "point_cloud.ply"  # Scene.save: point_cloud/iteration_{N}/point_cloud.ply
FLAME_PARAM = "flame_param.npz"  # FlameGaussianModel.save_ply / load_ply: beside the PLY
# FlameGaussianModel's FlameHead(n_shape=300, n_expr=100), the viewer's defaults: FLAME's whole spaces.
NUM_SHAPE, NUM_EXPRESSION = FULL_SPACE
# flame_model/flame.py add_teeth (always on in FlameGaussianModel): 8 rows of 15 vertices appended after FLAME's, and
# their faces after FLAME's faces, so a binding to one of FLAME's faces names the same face in both (and a binding to
# a teeth face of a model with headfields.parametric.add_teeth's teeth the same teeth face).
TEETH_VERTICES = FLAME_TEETH_VERTICES
# How far a head's vertices may lie from its FLAME parameters' (per metre of the farthest vertex's coordinate): the
# rounding of a float32 re-evaluation, well under the 1e-5 the export is checked to.
VERTEX_TOLERANCE = 1e-6
ITERATION = re.compile(r"iteration_\d+")  # Scene.save's folders under point_cloud/, which searchForMaxIteration reads
# The npz's keys with a row per timestep (FlameGaussianModel.select_mesh_by_timestep); shape and static_offset are one.
PER_TIMESTEP = ("expr", "rotation", "neck_pose", "jaw_pose", "eyes_pose", "translation", "dynamic_offset")


def flame_param_arrays(parametric: SubjectModel, head: Head, timesteps: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """The arrays of GaussianAvatars' ``flame_param.npz`` for the T frames of ``head``, a head of the FLAME model
    ``parametric``: float32, in the keys, shapes and order ``FlameGaussianModel.load_meshes`` builds them and
    ``select_mesh_by_timestep`` reads them. ``timesteps`` (one per frame; default ``0 .. T - 1``) gives each frame's
    row: then T = the largest + 1, a timestep of several frames takes its first frame's values, and a timestep of no
    frame zeros, as ``load_meshes`` fills it.

    - ``shape [300]``: the head's identity, zeros after the model's own directions (the same mesh);
    - ``expr [T, 100]``: the head's expressions, padded with zeros likewise;
    - ``rotation``, ``neck_pose``, ``jaw_pose [T, 3]`` and ``eyes_pose [T, 6]`` (left eye, then right): the head's
      axis-angle pose of FLAME's joints in order, as VHAP concatenates them into FLAME's full pose;
    - ``translation [T, 3]``: added after skinning, in GaussianAvatars as in ours;
    - ``static_offset [1, V, 3]``: over FLAME's vertices and :data:`TEETH_VERTICES` teeth (``V`` = the model's
      vertices, + 120 unless it has GaussianAvatars' teeth already, :func:`~headfields.parametric.add_teeth`): the
      model's static offsets (a VHAP capture's, :meth:`~headfields.parametric.ParametricModel.with_static_offset`),
      zeros where it has none and on the teeth it lacks;
    - ``dynamic_offset [T, V, 3]``: zeros (GaussianAvatars poses without them; headfields reads none).

    The head is re-evaluated from its parameters first: one whose vertices are not FLAME's of its parameters (a
    capture's tracked meshes, another model) is refused, since the viewer poses the mesh from the parameters alone.

        arrays = flame_param_arrays(run.model.parametric, run.head("train"))
        arrays["expr"].shape  # (T, 100)
    """
    _check_flame_head(parametric, head)
    rows = None if timesteps is None else _timestep_rows(timesteps, head.num_frames)
    t = head.num_frames

    def host(x: Tensor) -> np.ndarray:
        return x.detach().cpu().numpy().astype(np.float32)

    shape = np.zeros(NUM_SHAPE, np.float32)
    shape[: head.shape.shape[0]] = host(head.shape)
    expression = np.zeros((t, NUM_EXPRESSION), np.float32)
    expression[:, : head.expression.shape[1]] = host(head.expression)
    pose = host(head.pose)
    offsets = parametric.num_vertices + (0 if has_flame_teeth(parametric) else TEETH_VERTICES)
    static_offset = np.zeros((1, offsets, 3), np.float32)
    if parametric.static_offset is not None:
        static_offset[0, : parametric.num_vertices] = host(parametric.static_offset)
    arrays = {
        "shape": shape,
        "expr": expression,
        "rotation": pose[:, parametric.joint_index("global")],
        "neck_pose": pose[:, parametric.joint_index("neck")],
        "jaw_pose": pose[:, parametric.joint_index("jaw")],
        "eyes_pose": pose[:, [parametric.joint_index("left_eye"), parametric.joint_index("right_eye")]].reshape(t, 6),
        "translation": host(head.translation),
        "static_offset": static_offset,
        "dynamic_offset": np.zeros((t, offsets, 3), np.float32),
    }
    if rows is not None:
        count, frames = max(rows, default=-1) + 1, list(rows.values())
        for key in PER_TIMESTEP:
            by_timestep = np.zeros((count, *arrays[key].shape[1:]), np.float32)
            by_timestep[list(rows)] = arrays[key][frames]
            arrays[key] = by_timestep
    return arrays


def _timestep_rows(timesteps: Sequence[int], frames: int) -> dict[int, int]:
    """Each timestep's first frame, checked: ``timesteps`` a sequence of ``frames`` integers >= 0."""
    if isinstance(timesteps, str | bytes) or not isinstance(timesteps, Sequence | np.ndarray):
        raise TypeError(f"timesteps: expected a sequence of integers, one a frame, got {type(timesteps).__name__}")
    values = [int(t) if isinstance(t, int | np.integer) and not isinstance(t, bool) else -1 for t in timesteps]
    if len(values) != frames or min(values, default=0) < 0:
        raise ValueError(f"timesteps: expected {frames} integers >= 0 (one a frame of head), got {list(timesteps)[:8]}")
    rows: dict[int, int] = {}
    for frame, t in enumerate(values):
        rows.setdefault(t, frame)
    return rows


def _check_flame_head(parametric: SubjectModel, head: Head) -> None:
    """``parametric`` a FLAME model and ``head`` its mesh of the head's own parameters (see
    :func:`flame_param_arrays`)."""
    if not isinstance(parametric, ParametricModel) or parametric.model_type != "flame":
        got = getattr(parametric, "model_type", type(parametric).__name__)
        raise ValueError(f"parametric: GaussianAvatars' files hold FLAME parameters; expected a FLAME model, got {got}")
    if not isinstance(head, Head):
        raise TypeError(f"head: expected a headfields.parametric.Head, got {type(head).__name__}")
    device = parametric.v_template.device
    if head.faces.shape != parametric.faces.shape or not torch.equal(head.faces.to(device), parametric.faces):
        raise ValueError(f"head: expected the FLAME model's {parametric.faces.shape[0]} faces, got {list(head.faces.shape)}")
    with torch.no_grad():
        try:
            again = parametric(
                shape=head.shape.to(device),
                expression=head.expression.to(device),
                pose=head.pose.to(device),
                translation=head.translation.to(device),
            ).vertices
        except (TypeError, ValueError) as error:
            raise ValueError(f"head: its parameters do not fit the FLAME model ({error})") from None
        vertices = head.vertices.detach().to(again)
        gap = float((again - vertices).abs().max())
        scale = max(1.0, float(vertices.abs().max()))
    if not gap <= VERTEX_TOLERANCE * scale:  # NaN fails too
        raise ValueError(
            f"head: its vertices lie up to {gap:.3g} from the FLAME model's of its parameters (tracked meshes, or "
            "another model?): GaussianAvatars' viewer poses the mesh from the parameters alone"
        )


def write_flame_param_npz(path: str | os.PathLike, parametric: SubjectModel, head: Head) -> Path:
    """:func:`flame_param_arrays` of ``head`` written as GaussianAvatars' ``flame_param.npz`` (``np.savez``), whole or
    not at all; parent folders are made. Returns the path.

        write_flame_param_npz("out/flame_param.npz", run.model.parametric, run.head("train"))
    """
    arrays = flame_param_arrays(parametric, head)
    return _write_npz(path, arrays)


def _write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path: expected a file path, got {type(path).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, "path") as temporary, temporary.open("wb") as file:  # a file: savez adds no ".npz"
        np.savez(file, **arrays)
    return path


def export_gaussian_avatars(
    out: str | os.PathLike, model: nn.Module, head: Head, iteration: IntLike = 0, timesteps: Sequence[int] | None = None
) -> Path:
    """``model`` (a :class:`~headfields.models.gaussian_avatars.GaussianAvatar`: Gaussians bound to its FLAME model's
    faces) on the frames of ``head`` written in GaussianAvatars' layout under ``out``:
    ``point_cloud/iteration_{iteration}/point_cloud.ply`` (the local values and ``binding_0``) and ``flame_param.npz``
    beside it (the frames' FLAME parameters, :func:`flame_param_arrays`, a row per timestep of ``timesteps``: those
    the model fine-tuned for a frame of a training timestep, as ``FlameGaussianModel.save_ply`` writes them). SH
    bands above the degree the model reached are written as zeros, since the viewer draws every band and our renders
    draw only those. The layout is held and written whole, the other ``point_cloud/iteration_*`` folders removed
    after (see the module docstring). Returns the PLY's path.

        ply = export_gaussian_avatars("out/ga", run.model, run.head("train"), iteration=run.step)
    """
    if not isinstance(model, GaussianAvatar):
        raise TypeError(f"model: expected a GaussianAvatar (Gaussians bound to faces), got {type(model).__name__}")
    gaussians = model.gaussians
    if not isinstance(out, str | os.PathLike):
        raise TypeError(f"out: expected a folder path, got {type(out).__name__}")
    iteration = check_count("iteration", iteration, 0)
    parametric = model.parametric
    with torch.no_grad():  # the FLAME parameters fine-tuned for the training timesteps (a loaded run's head has them)
        head = model.fitted_head(head)
    arrays = flame_param_arrays(parametric, head, timesteps)  # before anything is written
    if gaussians.num_faces != parametric.faces.shape[0]:
        raise ValueError(
            f"model: its Gaussians are bound to {gaussians.num_faces} faces, its FLAME model has {parametric.faces.shape[0]}"
        )
    with torch.no_grad():
        degree = int(model.active_sh_degree)  # the state a loaded run holds
        sh = torch.cat([gaussians.sh_dc, gaussians.sh_rest], dim=1).clone()
        sh[:, (degree + 1) ** 2 :] = 0
        # In float64 from the logits: a float32 sigmoid rounds a confident Gaussian to exactly 1, no logit to write.
        opacities = torch.sigmoid(gaussians.opacity_logits.double().clamp(-30, 30))
        local = Splats(gaussians.local_means, gaussians.local_quats, gaussians.local_log_scales.double().exp(), opacities, sh)
    return _write_layout(Path(out), f"iteration_{iteration}", local, gaussians.parent, arrays)


def _write_layout(out: Path, iteration: str, local: Splats, binding: Tensor, arrays: dict[str, np.ndarray]) -> Path:
    """The iteration folder written whole beside no other (see the module docstring); its PLY's path."""
    point_cloud = out / "point_cloud"
    try:
        point_cloud.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(error.errno, f"out: cannot write in {out} ({error.strerror or error})") from error
    # The temporary folders in out, not point_cloud/: GaussianAvatars' searchForMaxIteration reads every name there.
    with hold(point_cloud, "out"):
        sweep_folder_temporaries(out, "iteration_*")
        with atomic_folder(point_cloud / iteration, "out", scratch=out) as folder:
            write_bound_splat_ply(folder / POINT_CLOUD, local, binding)
            _write_npz(folder / FLAME_PARAM, arrays)
        for stale in sorted(point_cloud.iterdir()):  # only now: a failure above left the previous layout whole
            if ITERATION.fullmatch(stale.name) and stale.name != iteration and stale.is_dir() and not stale.is_symlink():
                remove_folder(stale, out, "out")
    return point_cloud / iteration / POINT_CLOUD


def capture_timesteps(frames: FrameSet, start: IntLike = 0) -> list[int]:
    """The capture's timestep of each frame of ``frames``: the ``timestep_index`` its ``transforms_{split}.json``
    lists (VHAP's layout; the reader keeps the file's order), or, where the capture lists none, ``start``, ``start +
    1``, ... as :func:`~headfields.data.save_vhap_dataset` numbers them (``start``: the frames of the splits before).

        capture_timesteps(run.frames("test"), start=len(run.frames("train")) + len(run.frames("val")))
    """
    if not isinstance(frames, FrameSet):
        raise TypeError(f"frames: expected a headfields.data.FrameSet, got {type(frames).__name__}")
    start = check_count("start", start, 0)
    listed = _listed_timesteps(frames)
    return listed if listed is not None else list(range(start, start + len(frames)))


def _listed_timesteps(frames: FrameSet) -> list[int] | None:
    path = None if frames.root is None else Path(frames.root) / f"transforms_{frames.split}.json"
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: cannot read its timestep_index ({error})") from None
    listed = data.get("frames") if isinstance(data, dict) else None
    if not isinstance(listed, list) or not any(isinstance(f, dict) and "timestep_index" in f for f in listed):
        return None
    if len(listed) != len(frames):
        raise ValueError(f"{path}: frames: expected the {len(frames)} frames of the {frames.split!r} split, got {len(listed)}")
    timesteps = [f.get("timestep_index") if isinstance(f, dict) else None for f in listed]
    for i, t in enumerate(timesteps):
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            raise ValueError(f"{path}: frames[{i}].timestep_index: expected an integer >= 0, got {t!r}")
    return timesteps
