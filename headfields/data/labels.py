"""Segmentation label presets: the region names of the codes a face parser writes, so a capture whose
``transforms.json`` names no labels still says which pixel is a lip.

INSTA's face-parsing script (Zielon/INSTA ``scripts/patches/face-parsing``, a BiSeNet trained on CelebAMask-HQ)
writes each class as a code in the red channel: 250 for class 1 (skin) down in steps of ten, skipping 220. The
names follow headfields' regions where the meaning is the same (``mouth_interior``, ``hair``, ``neck``) and
CelebAMask-HQ's classes elsewhere; "left" is the parser's ``l_`` (the subject's left).
"""

from __future__ import annotations

from collections.abc import Collection

from .frames import BACKGROUND_LABEL

__all__ = ["INSTA_FACE_PARSING", "LABEL_PRESETS", "detect_label_preset"]

INSTA_FACE_PARSING: dict[str, int] = {
    "skin": 250,
    "left_brow": 240,
    "right_brow": 230,
    "left_eye": 210,
    "right_eye": 200,
    "glasses": 190,
    "left_ear": 180,
    "right_ear": 170,
    "earring": 160,
    "nose": 150,
    "mouth_interior": 140,  # the parser's "mouth": between the lips (teeth, tongue, the dark inside)
    "upper_lip": 130,
    "lower_lip": 120,
    "neck": 110,
    "necklace": 100,
    "cloth": 90,  # INSTA's postprocess.py blacks these pixels out and clears their alpha
    "hair": 80,
    "hat": 70,
}

LABEL_PRESETS: dict[str, dict[str, int]] = {"insta": INSTA_FACE_PARSING}


def detect_label_preset(codes: Collection[int]) -> str | None:
    """The preset that names most of ``codes`` (the background's 0 aside), if it names more than half of them: a
    capture of a few small labels (1, 2, 3) matches none, while a face-parsed capture with a stray code still
    gets its preset, and the reader then names the image that holds the stray code."""
    found = set(int(c) for c in codes) - {BACKGROUND_LABEL}
    named = {name: len(found & set(labels.values())) for name, labels in LABEL_PRESETS.items()}
    best = max(named, key=named.get, default=None)
    if best is None or 2 * named[best] <= len(found):
        return None
    return best
