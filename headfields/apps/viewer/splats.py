"""A Gaussian run's splats drawn by the browser: a posed Gaussian set as viser's ``add_gaussian_splats`` takes it
(:func:`browser_splats`), and the scene node that holds them, sent again only when the splats change
(:func:`show_splats`). The browser sorts and draws them itself, so orbiting runs at its own frame rate.

    splats = browser_splats(model.splats(head, 0))  # centres, covariances R S Sᵀ Rᵀ, RGB, opacities
    handle = show_splats(server.scene, "/splats", splats)  # again with handle=... when the frame changes
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ...deformers.gaussian_binding import Splats, quaternion_to_matrix
from ...renderers.gaussians import sh_colors

__all__ = ["BrowserSplats", "browser_splats", "show_splats", "splat_unit"]

# viser packs each covariance's six terms as float16 (GaussianSplatHandle's buffer layout): largest finite value.
FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class BrowserSplats:
    """N Gaussians as viser draws them, in world units: ``centers`` [N, 3], ``covariances`` [N, 3, 3], ``rgbs``
    [N, 3] in [0, 1], ``opacities`` [N, 1] in [0, 1] (float32 numpy arrays), and ``scales`` [N, 3] (standard
    deviations, what :func:`splat_unit` sizes the sent units by)."""

    centers: np.ndarray
    covariances: np.ndarray
    rgbs: np.ndarray
    opacities: np.ndarray
    scales: np.ndarray

    def __len__(self) -> int:
        return self.centers.shape[0]


def browser_splats(splats: Splats) -> BrowserSplats:
    """``splats`` (a frame's posed Gaussians, :meth:`GaussianAvatar.splats
    <headfields.models.gaussian_avatars.GaussianAvatar.splats>`) as viser takes them: covariances ``R S Sᵀ Rᵀ``
    (``R`` the rotation of the unit quaternion, ``S`` the diagonal of the scales) and the colour of SH degree 0,
    ``0.5 + C0 · DC`` clamped to [0, 1]. viser takes one RGB a Gaussian, so the higher bands (the colour's change
    with the view) are left out: the colour is the same from every side and the splats need not be sent again when
    the camera moves.

    >>> splats = browser_splats(run.model.splats(head, 0))
    >>> splats.covariances.shape  # [N, 3, 3]
    """
    if not isinstance(splats, Splats):
        raise TypeError(f"splats: expected Splats (a model's splats(head, frame)), got {type(splats).__name__}")
    with torch.no_grad():
        means, scales = splats.means.double(), splats.scales.double()
        rotation = quaternion_to_matrix(splats.quats.double())
        axes = rotation * scales[:, None, :]  # R S: each column a principal axis times its standard deviation
        covariances = axes @ axes.transpose(1, 2)
        # Degree 0 is the same from every eye: the origin stands in for one.
        rgbs = sh_colors(splats.sh.double(), means, means.new_zeros(3), degree=0).clamp(max=1.0)
        opacities = splats.opacities.double().clamp(0.0, 1.0)[:, None]

    def array(values: torch.Tensor) -> np.ndarray:
        return values.cpu().numpy().astype(np.float32)

    return BrowserSplats(array(means), array(covariances), array(rgbs), array(opacities), array(scales))


def splat_unit(scales: np.ndarray) -> float:
    """The length unit (in world units, a power of two) the splats are sent in: viser stores covariances as float16,
    whose 10-bit mantissa holds a head's millimetre-sized variances in metres (1e-6) only as subnormals, or as 0.
    The unit is the median standard deviation of ``scales`` [N, 3], made larger if need be so that the largest
    variance stays finite in float16; the node's scale (the unit) puts the splats back in world units."""
    scales = np.asarray(scales, dtype=np.float64)
    if scales.ndim != 2 or scales.shape[1] != 3 or scales.shape[0] == 0:
        raise ValueError(f"scales: expected standard deviations [N, 3] with N > 0, got shape {scales.shape}")
    if not (np.isfinite(scales).all() and (scales > 0).all()):
        raise ValueError("scales: expected positive finite standard deviations")
    unit = 2.0 ** round(math.log2(float(np.median(scales))))
    largest = float(scales.max())
    while (largest / unit) ** 2 > FLOAT16_MAX:
        unit *= 2.0
    return unit


def show_splats(scene, name: str, splats: BrowserSplats, handle=None):
    """The scene node ``name`` of viser's ``scene`` holding ``splats``: a new node when ``handle`` is None (its
    unit from :func:`splat_unit`), else ``handle``'s buffer replaced in one message, in the unit the node was made
    with (the count may change). Returns the node's handle."""
    if len(splats) == 0:
        raise ValueError("splats: expected at least one Gaussian")
    unit = splat_unit(splats.scales) if handle is None else float(handle.scale)
    values = (splats.centers / unit, splats.covariances / unit**2, splats.rgbs, splats.opacities)
    if handle is None:
        return scene.add_gaussian_splats(name, *values, scale=unit)
    handle.set_gaussians(*values)
    return handle
