"""A Gaussian avatar in GaussianAvatars' own files (``ShenhanQian/GaussianAvatars``), which its viewer re-animates.

GaussianAvatars saves a trained avatar as ``point_cloud/iteration_{N}/point_cloud.ply`` with ``flame_param.npz``
beside it (``scene/__init__.py`` ``Scene.save``, ``scene/flame_gaussian_model.py`` ``save_ply``). The PLY holds each
Gaussian's values local to its parent FLAME face and the face itself (``binding_0``,
:func:`~headfields.splat_ply.write_bound_splat_ply`); the npz holds the FLAME parameters of every timestep, from which
the viewer (``local_viewer.py``, ``FlameGaussianModel(sh_degree)``) poses the mesh, then each Gaussian on its face's
frame: the same frames :mod:`headfields.deformers.gaussian_binding` poses ours on. So

    ply = export_gaussian_avatars_run(run, "out/ga")  # out/ga/point_cloud/iteration_{run.step}/point_cloud.ply
    # python local_viewer.py --point_path out/ga/point_cloud/iteration_30000/point_cloud.ply

shows, at timestep ``t``, frame ``t`` of the exported split as our model renders it (checked to 1e-5 by re-posing the
files with GaussianAvatars' formulas), beside the world-space PLY of each frame that ``python -m headfields export``
writes. The viewer must load the FLAME model file the run was trained with (its ``FLAME_MODEL_PATH``, FLAME 2023 by
default) and take ``--sh_degree`` of the run's recipe when that is not 3.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .checks import IntLike, check_count
from .deformers.gaussian_binding import GaussianSet
from .outputs import atomic_path
from .parametric import Head, ParametricModel, SubjectModel
from .parametric.model import FULL_SPACE
from .parametric.teeth import FLAME_TEETH_VERTICES, has_flame_teeth
from .runs import Run
from .splat_ply import Splats, write_bound_splat_ply

__all__ = [
    "FLAME_PARAM",
    "POINT_CLOUD",
    "TEETH_VERTICES",
    "export_gaussian_avatars",
    "export_gaussian_avatars_run",
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


def flame_param_arrays(parametric: SubjectModel, head: Head) -> dict[str, np.ndarray]:
    """The arrays of GaussianAvatars' ``flame_param.npz`` for the T frames of ``head``, a head of the FLAME model
    ``parametric``: float32, in the keys, shapes and order ``FlameGaussianModel.load_meshes`` builds them and
    ``select_mesh_by_timestep`` reads them.

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
    return {
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


def export_gaussian_avatars(out: str | os.PathLike, model: nn.Module, head: Head, iteration: IntLike = 0) -> Path:
    """``model`` (a :class:`~headfields.models.gaussian_avatars.GaussianAvatar`: Gaussians bound to its FLAME model's
    faces) on the frames of ``head`` written in GaussianAvatars' layout under ``out``:
    ``point_cloud/iteration_{iteration}/point_cloud.ply`` (the local values and ``binding_0``) and ``flame_param.npz``
    beside it (the frames' FLAME parameters, :func:`flame_param_arrays`: those the model fine-tuned for a frame of a
    training timestep, as ``FlameGaussianModel.save_ply`` writes them). SH bands above the degree the model reached
    are written as zeros, since the viewer draws every band and our renders draw only those. Returns the PLY's path.

        ply = export_gaussian_avatars("out/ga", run.model, run.head("train"), iteration=run.step)
    """
    gaussians = getattr(model, "gaussians", None)
    if not isinstance(gaussians, GaussianSet):
        raise TypeError(f"model: expected a Gaussian avatar (Gaussians bound to faces, .gaussians), got {type(model).__name__}")
    if not isinstance(out, str | os.PathLike):
        raise TypeError(f"out: expected a folder path, got {type(out).__name__}")
    iteration = check_count("iteration", iteration, 0)
    parametric = model.parametric
    fitted = getattr(model, "fitted_head", None)
    if fitted is not None:  # the FLAME parameters fine-tuned for the training timesteps (a loaded run's head has them)
        with torch.no_grad():
            head = fitted(head)
    arrays = flame_param_arrays(parametric, head)  # before anything is written
    if gaussians.num_faces != parametric.faces.shape[0]:
        raise ValueError(
            f"model: its Gaussians are bound to {gaussians.num_faces} faces, its FLAME model has {parametric.faces.shape[0]}"
        )
    with torch.no_grad():
        degree = int(getattr(model, "active_sh_degree", gaussians.sh_degree))
        sh = torch.cat([gaussians.sh_dc, gaussians.sh_rest], dim=1).clone()
        sh[:, (degree + 1) ** 2 :] = 0
        # In float64 from the logits: a float32 sigmoid rounds a confident Gaussian to exactly 1, no logit to write.
        opacities = torch.sigmoid(gaussians.opacity_logits.double().clamp(-30, 30))
        local = Splats(gaussians.local_means, gaussians.local_quats, gaussians.local_log_scales.double().exp(), opacities, sh)
    folder = Path(out) / "point_cloud" / f"iteration_{iteration}"
    ply = write_bound_splat_ply(folder / POINT_CLOUD, local, gaussians.parent)
    _write_npz(folder / FLAME_PARAM, arrays)
    return ply


def export_gaussian_avatars_run(run: Run, out: str | os.PathLike, split: str | None = None) -> Path:
    """The trained Gaussian avatar of ``run`` on the frames of ``split`` ("train" or the held-out split; default the
    held-out one, whose frames ``python -m headfields export`` writes as world-space PLYs) in GaussianAvatars' layout
    under ``out`` (:func:`export_gaussian_avatars`), the iteration the run's step. Returns the PLY's path.

        ply = export_gaussian_avatars_run(load_run("outputs/gaussian_avatar"), "out/ga", "train")
    """
    if not isinstance(run, Run):
        raise TypeError(f"run: expected a headfields.runs.Run (load_run), got {type(run).__name__}")
    split = run.subject.eval.split if split is None else split
    return export_gaussian_avatars(out, run.model, run.head(split), run.step)
