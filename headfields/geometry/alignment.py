"""Point sets aligned: Umeyama's least-squares similarity between two sets of corresponding points, what measures a
monocular reconstruction or tracking, which knows neither the world's scale nor where its camera is."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from ..checks import check_float

__all__ = ["similarity_transform"]


def similarity_transform(a: Float[Tensor, "P 3"], b: Float[Tensor, "P 3"]) -> tuple[Tensor, Tensor, Tensor]:
    """The rotation ``[3, 3]`` (never a reflection), scale ``[]`` and translation ``[3]`` that bring the points ``a``
    closest to their partners ``b`` in least squares: ``b ~ scale * a @ rotation.T + translation`` (Umeyama 1991)."""
    check_float("a", a, [None, 3])
    check_float("b", b, [a.shape[0], 3])
    ma, mb = a.mean(0), b.mean(0)
    a0, b0 = a - ma, b - mb
    u, sigma, vt = torch.linalg.svd(b0.T @ a0)
    d = torch.ones(3, dtype=a.dtype, device=a.device)
    d[2] = torch.sign(torch.det(u @ vt))
    rotation = u @ torch.diag(d) @ vt
    scale = (sigma * d).sum() / a0.square().sum()
    return rotation, scale, mb - scale * ma @ rotation.T
