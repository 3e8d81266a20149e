"""The linear systems of the landmark stages' Levenberg-Marquardt steps (:mod:`.landmark_tracking`): every frame's
block plus temporal smoothness, the squared first and second differences of each parameter between neighbouring
frames. Their sum ``sum_p (first_p D1^T D1 + second_p D2^T D2)`` ties a frame to the two before and the two after it
(a band of two frames); pairing the frames makes it block-tridiagonal, solved by block elimination in N / 2 solves of
2P x 2P where the dense system would be (NP)^2.

    bands = difference_bands(first, second, n)  # [3, N, P]: entries (t, t), (t, t + 1), (t, t + 2)
    cost = (x * band_product(bands, x)).sum()   # x^T T x
    step = banded_solve(h, bands, g, damping, frozen)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["band_product", "banded_solve", "damped_step", "difference_bands", "fill_missing", "per_parameter"]


def _gram_bands(coefficients: tuple[float, ...], n: int) -> Tensor:
    """The bands ``[3, N]`` of ``D^T D`` for the difference operator ``D`` of ``coefficients`` over ``n`` frames."""
    bands = torch.zeros(3, n, dtype=torch.float64)
    rows = n - len(coefficients) + 1  # one difference per window of frames
    if rows <= 0:
        return bands
    for i, ci in enumerate(coefficients):
        for j, cj in enumerate(coefficients[i:], start=i):
            bands[j - i, i : i + rows] += ci * cj
    return bands


def difference_bands(first: Float[Tensor, " P"], second: Float[Tensor, " P"], n: int) -> Float[Tensor, "3 N P"]:
    """The bands of ``sum_p (first_p D1^T D1 + second_p D2^T D2)`` over ``n`` frames: band k holds the entries
    (t, t + k) of each parameter's N x N matrix (zero past the end)."""
    return _gram_bands((-1.0, 1.0), n)[..., None] * first + _gram_bands((1.0, -2.0, 1.0), n)[..., None] * second


def band_product(bands: Float[Tensor, "3 N P"], x: Float[Tensor, "N P"]) -> Float[Tensor, "N P"]:
    """The symmetric banded matrix of ``bands`` times ``x`` (each parameter's own N x N matrix)."""
    y = bands[0] * x
    for k in (1, 2):
        if x.shape[0] > k:
            y = y + torch.nn.functional.pad(bands[k, :-k] * x[k:], (0, 0, 0, k))  # (t, t + k) x[t + k]
            y = y + torch.nn.functional.pad(bands[k, :-k] * x[:-k], (0, 0, k, 0))  # (t, t - k) x[t - k]
    return y


def banded_solve(
    h: Float[Tensor, "N P P"], bands: Float[Tensor, "3 N P"] | None, g: Float[Tensor, "N P"], damping: float, frozen: Tensor
) -> Float[Tensor, "N P"]:
    """The step ``x`` of ``(H + damping diag(H) + T) x = g``: ``h`` the frames' blocks, ``bands`` the smoothness
    ``T`` (:func:`difference_bands`; None: none), ``frozen [P]`` (1 for a parameter held) rows of the identity and no
    step. Frames ``2m, 2m + 1`` make block m; block Thomas elimination (symmetric) over the pairs."""
    n, p = g.shape
    keep = 1 - frozen
    blocks = h + torch.diag_embed(damping * h.diagonal(dim1=1, dim2=2).clamp(min=1e-9))
    blocks = blocks * keep[:, None] * keep + torch.diag_embed(frozen.expand(n, p))  # held: decoupled, no step
    g = g * keep
    if bands is None or n == 1 or not bool((bands != 0).any()):
        return torch.linalg.solve(blocks, g)
    bands = bands * keep
    blocks = blocks + torch.diag_embed(bands[0])
    if n % 2:  # an identity frame, tied to nothing, makes the pairs whole
        blocks = torch.cat([blocks, torch.eye(p, dtype=h.dtype)[None]])
        bands, g = torch.nn.functional.pad(bands, (0, 0, 0, 1)), torch.nn.functional.pad(g, (0, 0, 0, 1))
    m = blocks.shape[0] // 2
    zero = torch.zeros(m, p, p, dtype=h.dtype)
    b1, b2 = torch.diag_embed(bands[1]), torch.diag_embed(bands[2])
    top = torch.cat([blocks[0::2], b1[0::2]], dim=2)
    pairs = torch.cat([top, torch.cat([b1[0::2], blocks[1::2]], dim=2)], dim=1)  # [M, 2P, 2P]
    upper = torch.cat([torch.cat([b2[0::2], zero], dim=2), torch.cat([b1[1::2], b2[1::2]], dim=2)], dim=1)  # m -> m + 1
    rhs = g.reshape(m, 2 * p)
    factors, carried = [torch.linalg.lu_factor(pairs[0])], [rhs[0]]
    for i in range(1, m):
        solved = torch.linalg.lu_solve(*factors[-1], torch.cat([upper[i - 1], carried[-1][:, None]], dim=1))
        factors.append(torch.linalg.lu_factor(pairs[i] - upper[i - 1].T @ solved[:, :-1]))
        carried.append(rhs[i] - upper[i - 1].T @ solved[:, -1])
    out = [torch.linalg.lu_solve(*factors[-1], carried[-1][:, None])[:, 0]]
    for i in range(m - 2, -1, -1):
        out.append(torch.linalg.lu_solve(*factors[i], (carried[i] - upper[i] @ out[-1])[:, None])[:, 0])
    return torch.stack(out[::-1]).reshape(-1, p)[:n]


def damped_step(attempt: Callable[[float], tuple[object, Tensor]], cost: Tensor, damping: float):
    """One Levenberg-Marquardt step: ``attempt(damping)`` gives a trial and its cost; the damping grows tenfold until
    the cost falls (then the trial, its cost and a tenth of the damping), or passes 1e8 (None: converged or stuck)."""
    while True:
        trial, new = attempt(damping)
        if bool(new <= cost):
            return trial, new, max(damping / 10, 1e-9)
        if damping > 1e8:
            return None
        damping *= 10


def per_parameter(rotation: float, translation: float, jaw: float, expression: float, expressions: int) -> Tensor:
    """A weight per entry of a frame's vector ``[rotation 3, translation 3, jaw 3, expression E]``."""
    groups = [(rotation, 3), (translation, 3), (jaw, 3), (expression, expressions)]
    return torch.cat([torch.full((count,), value, dtype=torch.float64) for value, count in groups])


def fill_missing(values: Tensor, found: Tensor) -> Tensor:
    """``values [N, ...]`` with the rows of frames not ``found`` linearly interpolated between their found
    neighbours (held beyond the first and last)."""
    if bool(found.all()):
        return values
    live = torch.nonzero(found)[:, 0]
    t = torch.arange(len(found), dtype=torch.float64)
    right = torch.searchsorted(live, torch.arange(len(found))).clamp(max=len(live) - 1)
    left = (right - 1).clamp(min=0)
    right = torch.where(live[right] < torch.arange(len(found)), left, right)  # past the last found frame
    left = torch.where(live[left] > torch.arange(len(found)), right, left)
    a, b = live[left].double(), live[right].double()
    w = torch.where(b > a, (t - a) / (b - a).clamp(min=1), torch.zeros_like(t)).clamp(0, 1)
    shape = (-1,) + (1,) * (values.dim() - 1)
    filled = values[left] * (1 - w).view(shape).to(values) + values[right] * w.view(shape).to(values)
    return torch.where(found.view(shape), values, filled)
