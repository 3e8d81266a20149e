"""A capture's tracked meshes as its subject's model (:class:`~headfields.parametric.TrackedMeshModel`), for
captures with no parametric model folder: ``canonical.obj`` and the mesh regions the models need.

Regions (INSTA's lips faces, say) come from a region file when there is one, else from the segmentation: each
face takes the label most training frames show at its centre, where the centre is visible. A region file is
``regions.json`` (``{region: [face ids]}``) or a folder ``mesh_masks/`` of one OBJ per region (``NAME.obj``,
the region's faces, with vertices at the canonical mesh's positions).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Bool, Int
from torch import Tensor

from ..cameras import project_points
from ..geometry import TriangleMesh, ray_intersect
from ..parametric.tracked_meshes import TrackedMeshModel
from . import _io
from .frames import BACKGROUND_LABEL, FrameSet

__all__ = ["CANONICAL_MESH", "REGION_FILES", "load_tracked_mesh_model", "read_region_file", "regions_from_segmentation"]

CANONICAL_MESH = "canonical.obj"  # INSTA's transforms script copies the tracker's neutral mesh here
REGION_FILES = ("regions.json", "mesh_masks")  # looked for in the capture's folder, in this order
REGION_MATCH_TOLERANCE = 1e-5  # a region OBJ's vertex may lie this share of the mesh's size from its canonical vertex
VOTE_FRAMES = 32  # training frames, spread over the sequence, whose segmentation votes for the faces' regions


@dataclass
class RegionVote:
    """Each face's region from the segmentation: ``label`` (-1: seen in no frame, or background) and how many
    of ``frames`` saw it."""

    label: Int[Tensor, " F"]
    seen: Int[Tensor, " F"]
    frames: int


def load_tracked_mesh_model(
    root: str | os.PathLike,
    frames: FrameSet,
    regions: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    allow_outside_root: bool = False,
) -> tuple[TrackedMeshModel, list[str]]:
    """The model of the capture in ``root`` whose training frames are ``frames`` (with tracked meshes), and
    lines that say where its UVs and regions came from. ``regions``: a region file (default: one of
    :data:`REGION_FILES` in ``root``, else the segmentation's vote). The capture's own files (not ``regions``)
    must resolve inside ``root`` unless ``allow_outside_root``."""
    root = Path(root)
    if frames.mesh_vertices is None:
        raise ValueError(f"frames: expected tracked meshes (mesh_path) in the {frames.split} split of {root}, got none")
    path = _io.require_file(root / CANONICAL_MESH, "canonical mesh (the neutral tracked mesh, next to the transforms)")
    _io.require_inside(root, path, "canonical mesh", allow_outside_root)
    vertices, faces = _io.read_obj(path)
    if vertices.shape[0] != frames.mesh_vertices.shape[1] or not np.array_equal(faces, frames.mesh_faces.numpy()):
        raise ValueError(
            f"{path}: expected the tracked meshes' topology ({frames.mesh_vertices.shape[1]} vertices, "
            f"{frames.mesh_faces.shape[0]} faces as in {frames.root}'s mesh_path files), got {len(vertices)} vertices, "
            f"{len(faces)} faces"
        )
    notes = [f"canonical mesh: {path}, the tracked meshes' topology ({len(vertices)} vertices, {len(faces)} faces)"]
    uv = _io.read_obj_uvs(path, len(faces))
    if uv is None:
        notes.append(f"UVs: {path.name} has none, so a cylindrical projection about the vertical axis")
    v, f = torch.from_numpy(vertices), torch.from_numpy(faces)
    masks, source = _regions(root, regions, frames, v, f, allow_outside_root)
    notes.append(f"regions ({source}): " + (", ".join(f"{n} {int(m.sum())} faces" for n, m in masks.items()) or "none"))
    vertex_ids = {name: f[mask].unique() for name, mask in masks.items() if mask.any()}
    model = TrackedMeshModel(
        v,
        f,
        0 if frames.expression is None else frames.expression.shape[1],
        vertex_ids,
        *(None, None) if uv is None else (torch.from_numpy(uv[0]), torch.from_numpy(uv[1])),
    )
    return model.to(device), notes


def _regions(
    root: Path, regions: str | os.PathLike | None, frames: FrameSet, vertices: Tensor, faces: Tensor, allow_outside_root: bool
) -> tuple[dict[str, Bool[Tensor, " F"]], str]:
    if regions is None:
        regions = next((root / name for name in REGION_FILES if (root / name).exists()), None)
        found = [regions] if regions is None or not regions.is_dir() else [regions, *regions.glob("*.obj")]
        for path in found if regions is not None else []:  # the capture's own: inside it, as every file it names
            _io.require_inside(root, path, "region file", allow_outside_root)
    if regions is not None:
        return read_region_file(regions, vertices, faces), str(regions)
    if frames.segmentation is None:
        return {}, "no region file and no segmentation"
    vote = regions_from_segmentation(frames)
    names = {code: name for name, code in frames.segmentation_labels.items()}
    masks = {names[c]: vote.label == c for c in vote.label.unique().tolist() if c in names}
    unseen = int((vote.label < 0).sum())
    return masks, f"the segmentation of {vote.frames} training frames; {unseen} faces seen in none or on the background"


def read_region_file(path: str | os.PathLike, vertices: Tensor, faces: Int[Tensor, "F 3"]) -> dict[str, Bool[Tensor, " F"]]:
    """Face masks per region from ``regions.json`` (``{region: [face ids]}``) or a folder of ``NAME.obj`` files
    whose faces are the region's (matched to ``faces`` through their vertices' positions)."""
    path = Path(path)
    if path.is_dir():
        return {p.stem: _obj_region(p, vertices, faces) for p in sorted(path.glob("*.obj"))} or _no_regions(path)
    data = _io.read_json(path, "region file")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object {{region: [face ids]}}, got {type(data).__name__}")
    masks = {}
    for name, ids in data.items():
        if not isinstance(ids, list) or not all(type(i) is int and 0 <= i < len(faces) for i in ids):
            raise ValueError(f"{path}: {name}: expected a list of face ids in [0, {len(faces)})")
        masks[name] = torch.zeros(len(faces), dtype=torch.bool)
        masks[name][ids] = True
    return masks


def _no_regions(path: Path) -> dict:
    raise ValueError(f"{path}: expected one OBJ per region (NAME.obj), found none")


def _obj_region(path: Path, vertices: Tensor, faces: Tensor) -> Bool[Tensor, " F"]:
    """The faces of ``faces`` that the OBJ ``path`` holds, each found by its three vertices' positions (the nearest
    canonical vertex, within :data:`REGION_MATCH_TOLERANCE` of the mesh's size: OBJ writers round to 6 decimals)."""
    v, f = _io.read_obj(path)
    points = torch.from_numpy(v).double()
    nearest = torch.cat([torch.cdist(chunk, vertices.double()).min(dim=1).indices for chunk in points.split(4096)])
    size = float((vertices.amax(0) - vertices.amin(0)).norm())
    error = float((vertices.double()[nearest] - points).norm(dim=1).max())
    if error > REGION_MATCH_TOLERANCE * size:
        raise ValueError(
            f"{path}: a vertex lies {error:.3g} from every canonical mesh vertex (expected the canonical mesh's positions)"
        )
    ids = nearest.tolist()
    by_corners = {tuple(sorted(c)): i for i, c in enumerate(faces.tolist())}
    mask = torch.zeros(len(faces), dtype=torch.bool)
    for row, corners in enumerate(f.tolist()):
        face = by_corners.get(tuple(sorted(ids[c] for c in corners)))
        if face is None:
            raise ValueError(f"{path}: face {row} is not a face of the canonical mesh (matched by vertex positions)")
        mask[face] = True
    return mask


def regions_from_segmentation(frames: FrameSet, max_frames: int = VOTE_FRAMES) -> RegionVote:
    """Each face's majority label over up to ``max_frames`` frames: the label of the pixel its centre projects to,
    in the frames where that centre is the first thing the camera's ray to it hits."""
    if frames.segmentation is None or frames.mesh_vertices is None:
        raise ValueError(f"frames: expected segmentation and tracked meshes in the {frames.split} split")
    frames = frames.to("cpu")  # a vote of at most max_frames frames, once
    pick = torch.linspace(0, len(frames) - 1, min(len(frames), max_frames)).round().long().unique()
    sub = frames.select(pick)
    faces, k = sub.mesh_faces, len(pick)
    centres = sub.mesh_vertices[:, faces].mean(dim=2)  # [K, F, 3]
    frame = torch.arange(k).repeat_interleave(len(faces))
    face = torch.arange(len(faces)).repeat(k)
    points = centres.reshape(-1, 3)
    pixels, depth = project_points(sub.cameras, points, frame)
    origins = sub.cameras.camera_to_world[frame, :3, 3]
    to_centre = points - origins
    distance = to_centre.norm(dim=-1)
    hit = ray_intersect(TriangleMesh(sub.mesh_vertices, faces), origins, to_centre / distance[:, None], frame)
    visible = hit.hit & ((hit.face == face) | (hit.t >= distance * (1 - 1e-4)))
    col, row = pixels[:, 0].floor().long(), pixels[:, 1].floor().long()
    inside = (depth > 0) & (col >= 0) & (col < sub.cameras.width) & (row >= 0) & (row < sub.cameras.height)
    ok = visible & inside
    label = sub.segmentation[frame[ok], row[ok], col[ok]].long()
    votes = torch.zeros(len(faces), 256, dtype=torch.long)
    votes.index_put_((face[ok], label), torch.ones_like(label), accumulate=True)
    seen = votes.sum(dim=1)
    majority = votes.argmax(dim=1)
    majority[(seen == 0) | (majority == BACKGROUND_LABEL)] = -1
    return RegionVote(label=majority, seen=seen, frames=k)
