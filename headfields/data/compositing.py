"""Images over a background: :func:`composite_images` puts RGBA images over a colour by their alpha (INSTA's
matted images hold arbitrary colour where alpha is 0; the models render over a background), and
:func:`compositing` says whether that changes a capture's images (the capture cache keeps the composited images
for the background they were composited over)."""

from __future__ import annotations

import numpy as np

__all__ = ["check_background", "composite_images", "compositing"]


def compositing(
    background: tuple[float, float, float] | None, has_alpha: bool, already: tuple[float, float, float] | None
) -> tuple[tuple[float, ...], tuple[float, ...] | None] | None:
    """``(background, already)`` when compositing images over ``background`` changes them (:func:`composite_images`:
    they have alpha, ``has_alpha``, and are not ``already`` over that colour), the background checked; None when
    the images are kept as they are."""
    if background is None:
        return None
    bg = check_background(background)
    if not has_alpha or (already is not None and np.allclose(bg, already)):
        return None
    return tuple(bg.tolist()), already


def check_background(background: tuple[float, float, float]) -> np.ndarray:
    """``background`` as float64 ``[3]``, or a ValueError naming it: an RGB colour in [0, 1]."""
    bg = np.asarray(background, dtype=np.float64)
    if bg.shape != (3,) or not np.isfinite(bg).all() or (bg < 0).any() or (bg > 1).any():
        raise ValueError(f"background: expected an RGB colour in [0, 1], got {background!r}")
    return bg


def composite_images(
    colors: np.ndarray,
    alphas: np.ndarray | None,
    background: tuple[float, float, float] | None,
    already: tuple[float, float, float] | None = None,
) -> np.ndarray:
    """uint8 ``[N,H,W,3]``: each colour image (``colors [N,H,W,3]``) over ``background`` by its alpha (``alphas
    [N,H,W]``), frame by frame in integers (a capture's stack stays the only large array). Images ``already``
    composited over a colour get the new colour in its place where alpha leaves room for it; without alpha or
    background they are as they are."""
    plan = None if alphas is None else compositing(background, True, already)
    if plan is None:
        return colors
    bg = np.asarray(plan[0])
    out = np.empty((len(colors), *colors[0].shape), dtype=np.uint8)
    for k, (c, a) in enumerate(zip(colors, alphas, strict=True)):
        a = a[..., None].astype(np.int32)
        if already is None:  # c a / 255 + bg (255 - a), rounded
            value = (c.astype(np.int32) * a + np.round(bg * 255).astype(np.int32) * (255 - a) + 127) // 255
        else:  # c already holds old (255 - a) / 255: swap it for the new colour
            shift = (bg - np.asarray(already)) * 255
            value = c.astype(np.int32) + np.round(shift * (255 - a) / 255).astype(np.int32)
        out[k] = np.clip(value, 0, 255)
    return out
