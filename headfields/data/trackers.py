"""Readers of captures written by other face trackers, each into a :class:`~headfields.data.FrameSet` with
OpenCV cameras (pixel centres at +0.5) and FLAME parameters in headfields' pose convention
(``pose [N,5,3]``: global, neck, jaw, left eye, right eye, smplx's joint order). The FrameSet leaves
``model_type`` / ``model_path`` None: the caller brings the FLAME folder, loaded with as many directions as the
capture has (``load_model(folder, num_shape=len(params.shape), num_expression=params.expression.shape[1])``).

The readers: :mod:`headfields.data.imavatar_reader`, :mod:`headfields.data.vhap_reader`; NeRFace and INSTA captures
(``transforms*.json`` without ``flame_param_path``) are :func:`~headfields.data.load_insta_dataset`'s.
"""

from __future__ import annotations

import os
from typing import Any

from . import _io
from ._transforms_json import TransformsJson
from .frames import SPLITS, FrameSet
from .imavatar_reader import IMAVATAR_JSON, imavatar_sequences, load_imavatar_dataset
from .insta_reader import load_insta_dataset
from .vhap_reader import load_vhap_dataset

FORMATS = ("insta", "vhap", "imavatar")


def detect_capture_format(root: str | os.PathLike) -> str:
    """The format of the capture in folder ``root``: ``"vhap"`` (transforms files whose frames name a
    ``flame_param_path``), ``"insta"`` (other transforms files: INSTA, NeRFace), ``"imavatar"``
    (``flame_params.json`` in the folder or in its sequence sub-folders).

    >>> detect_capture_format("captures/subject1/MVI_1810")
    'imavatar'
    """
    root = _io.require_folder(root)
    names = [f"transforms_{s}.json" for s in SPLITS] + ["transforms.json"]
    files = [root / n for n in names if (root / n).is_file()]
    if files:
        metas = [TransformsJson(path) for path in files]
        return "vhap" if any("flame_param_path" in f for m in metas for f in m.frames) else "insta"
    if (root / IMAVATAR_JSON).is_file() or imavatar_sequences(root):
        return "imavatar"
    raise FileNotFoundError(
        f"{root}: no capture found (expected transforms_*.json or transforms.json (INSTA, NeRFace, VHAP) or "
        f"{IMAVATAR_JSON} (IMavatar, PointAvatar))"
    )


def load_tracker_dataset(root: str | os.PathLike, split: str = "train", format: str | None = None, **options: Any) -> FrameSet:
    """Split ``split`` of the capture in ``root``, read by the reader of ``format`` (default: detected, see
    :func:`detect_capture_format`); ``options`` go to that reader.

    >>> frames = load_tracker_dataset("captures/vhap_export", "train", offsets="ignore")
    >>> frames.params.pose.shape  # [N, 5, 3]
    """
    fmt = detect_capture_format(root) if format is None else format
    if fmt not in FORMATS:
        raise ValueError(f"format: expected one of {', '.join(FORMATS)} or None, got {fmt!r}")
    reader = {"insta": load_insta_dataset, "vhap": load_vhap_dataset, "imavatar": load_imavatar_dataset}[fmt]
    return reader(root, split, **options)
