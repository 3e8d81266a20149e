"""The synthetic video as a real INSTA capture: written in INSTA's released layout (what its scripts write, see
``save_insta_dataset(layout="insta")``), with no model files, optionally on a re-meshed head whose topology is
not the synthetic FLAME's. What the tracked-mesh path is tested and measured on.

    root = write_insta_capture("/tmp/capture", remesh=True)
    subject = load_subject(root)  # a TrackedMeshModel of canonical.obj, regions from the segmentation
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch
from jaxtyping import Float, Int, UInt8
from torch import Tensor

from ..data import INSTA_FACE_PARSING, SPLITS, FrameSet, load_insta_dataset, save_insta_dataset
from ..parametric import load_model
from .glasses import GLASSES_LABEL
from .hair import HAIR_VOLUME_LABEL, HairVolumeConfig
from .video import SyntheticVideoConfig, cached_synthetic_video

__all__ = ["INSTA_CODES_OF_SYNTHETIC", "subdivide", "write_insta_capture"]

# The synthetic video's regions as INSTA's face parser labels them. Lips and eyes are split in two by the
# image position (above / below the lips' centre, right / left of the eyes' centre: the subject's left eye is
# on the image's right); the parser's "mouth" is everything between the lips. The hair volume is hair to the
# parser, as the template's scalp is.
INSTA_CODES_OF_SYNTHETIC = {
    "skin": "skin",
    "lips": ("upper_lip", "lower_lip"),
    "teeth": "mouth_interior",
    "mouth_interior": "mouth_interior",
    "eyes": ("left_eye", "right_eye"),
    "hair": "hair",
    "neck": "neck",
    HAIR_VOLUME_LABEL: "hair",
    GLASSES_LABEL: "glasses",
}
INSTA_DEPTH_SCALE = 1e-3  # INSTA's transforms.py: millimetres


def write_insta_capture(
    root: str | os.PathLike,
    config: SyntheticVideoConfig | None = None,
    remesh: bool = False,
    frames: int | None = None,
    seed: int = 0,
    source: str | os.PathLike | None = None,
    *,
    hair_volume: HairVolumeConfig | bool | None = None,
    glasses: bool | None = None,
) -> Path:
    """Write the synthetic video of ``config`` (rendered once and cached) to ``root`` in INSTA's layout and
    return ``root``. ``remesh``: the tracked meshes and ``canonical.obj`` are the head subdivided once (each
    triangle into four) with its vertices shuffled (``seed``), and ``canonical.obj`` has no UVs. ``frames``:
    keep only the first ``frames`` of each split (tests). ``source``: a synthetic video already written by
    :func:`make_synthetic_video`, instead of ``config``'s. ``hair_volume``, ``glasses``: replace the config's,
    as in :func:`cached_synthetic_video` (the hair volume's pixels get the parser's ``hair``, the glasses' its
    ``glasses``).

        root = write_insta_capture("/tmp/capture_hair", hair_volume=True)
    """
    if source is not None and config is not None:
        raise ValueError("source: expected either a written video or a config, got both")
    if source is not None and (hair_volume is not None or glasses is not None):
        raise ValueError("source: a written video has its hair and glasses already; give hair_volume / glasses without it")
    source = Path(source) if source is not None else cached_synthetic_video(config, hair_volume=hair_volume, glasses=glasses)
    splits = {split: load_insta_dataset(source, split) for split in SPLITS}
    if frames is not None:
        splits = {s: fs.select(range(min(frames, len(fs)))) for s, fs in splits.items()}
    train = splits["train"]
    model = load_model(train.model_path, train.model_type)
    neutral = model(shape=train.params.shape)
    canonical: tuple[Tensor, ...] = (neutral.canonical_vertices, neutral.faces, neutral.uvs, neutral.uv_faces)
    mix = None
    if remesh:
        mix, faces = subdivide(neutral.faces, model.num_vertices, seed)
        canonical = (mix @ neutral.canonical_vertices.double(), faces)
    out = {split: _as_insta(fs, mix, canonical[1]) for split, fs in splits.items()}
    canonical = (canonical[0].float(), *canonical[1:])
    return save_insta_dataset(root, out, integer_depth_scale=INSTA_DEPTH_SCALE, layout="insta", canonical=canonical)


def _as_insta(fs: FrameSet, mix: Tensor | None, faces: Tensor) -> FrameSet:
    """The frames as INSTA's scripts leave them: INSTA's label codes, alpha wherever the pixel shows any of the
    subject (the anti-aliased rim too, so compositing over the background gives the image back), tracked meshes
    (re-meshed by ``mix``), expressions, no parameters or model."""
    background = (fs.images == 255).all(dim=-1)
    vertices = fs.mesh_vertices
    if mix is not None:  # [V, N * 3] through the sparse map, back to [N, U, 3]
        stacked = fs.mesh_vertices.double().transpose(0, 1).reshape(mix.shape[1], -1)
        vertices = (mix @ stacked).reshape(mix.shape[0], len(fs), 3).transpose(0, 1).float()
    return dataclasses.replace(
        fs,
        masks=fs.masks | ~background,
        segmentation=insta_labels(fs.segmentation, fs.segmentation_labels),
        segmentation_labels=dict(INSTA_FACE_PARSING),
        params=None,
        mesh_vertices=vertices.contiguous(),
        mesh_faces=faces,
        model_type=None,
        model_path=None,
        root=None,
        image_paths=None,
    )


def insta_labels(segmentation: UInt8[Tensor, "N H W"], labels: dict[str, int]) -> UInt8[Tensor, "N H W"]:
    """The synthetic label images recoded with INSTA's face-parsing codes (:data:`INSTA_CODES_OF_SYNTHETIC`)."""
    out = torch.zeros_like(segmentation)
    rows = torch.arange(segmentation.shape[1])[None, :, None].expand_as(segmentation)
    cols = torch.arange(segmentation.shape[2])[None, None, :].expand_as(segmentation)
    for name, code in labels.items():
        target = INSTA_CODES_OF_SYNTHETIC[name]
        inside = segmentation == code
        if isinstance(target, str):
            out[inside] = INSTA_FACE_PARSING[target]
            continue
        position = rows if name == "lips" else -cols  # upper lip above the centre; the subject's left eye on the right
        count = inside.sum(dim=(1, 2)).clamp_min(1)
        centre = (position * inside).sum(dim=(1, 2)) / count
        first = inside & (position < centre[:, None, None])
        out[first] = INSTA_FACE_PARSING[target[0]]
        out[inside & ~first] = INSTA_FACE_PARSING[target[1]]
    return out


def subdivide(faces: Int[Tensor, "F 3"], num_vertices: int, seed: int = 0) -> tuple[Float[Tensor, "U V"], Int[Tensor, "G 3"]]:
    """One midpoint subdivision (each triangle into four) with the new vertices shuffled: the linear map from the
    old vertices to the new (``new = mix @ old``, a sparse matrix whose rows hold a one or two halves) and the
    new faces."""
    corners = faces.long().cpu()
    edges = torch.cat([corners[:, [0, 1]], corners[:, [1, 2]], corners[:, [2, 0]]]).sort(dim=1).values
    unique, edge_of = torch.unique(edges, dim=0, return_inverse=True)
    count = num_vertices + len(unique)
    rows = torch.cat([torch.arange(num_vertices), torch.arange(num_vertices, count).repeat_interleave(2)])
    cols = torch.cat([torch.arange(num_vertices), unique.reshape(-1)])
    values = torch.cat([torch.ones(num_vertices), torch.full((2 * len(unique),), 0.5)])
    f = len(corners)
    m01, m12, m20 = (num_vertices + edge_of[k * f : (k + 1) * f] for k in range(3))
    a, b, c = corners.unbind(dim=1)
    new_faces = torch.cat([torch.stack(t, dim=1) for t in ((a, m01, m20), (m01, b, m12), (m20, m12, c), (m01, m12, m20))])
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))  # new id -> old id
    rank = torch.empty_like(order)
    rank[order] = torch.arange(count)
    mix = torch.sparse_coo_tensor(torch.stack([rank[rows], cols]), values.double(), (count, num_vertices), check_invariants=True)
    return mix.coalesce(), rank[new_faces]
