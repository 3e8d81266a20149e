"""Real spherical harmonics of unit view directions, as in instant-ngp / tiny-cuda-nn's ``SphericalHarmonics``.

``degree`` counts bands: degree ``D`` gives the ``D^2`` functions of orders ``l < D`` (INSTA: degree 4, 16
outputs), output ``l^2 + l + m`` holding ``Y_lm``. The basis is orthonormal on the sphere and keeps the
Condon-Shortley phase of tiny-cuda-nn: from scipy's complex ``Y_l^m``, ``Y_lm = sqrt(2) Re Y_l^m`` for ``m > 0`` and
``sqrt(2) Im Y_l^|m|`` for ``m < 0``. Unlike tiny-cuda-nn (which takes ``(d + 1) / 2``), inputs are the unit
directions themselves.

Where no gradient is asked of the directions (a renderer's rays) one Warp kernel writes every output, a thread a
direction (tiny-cuda-nn's one kernel); in torch the polynomials of degree 4 are about forty operations, each a
kernel launch on a GPU. Both evaluate the same products in the same order.
"""

# No `from __future__ import annotations`: Warp reads the kernel's annotations as objects, and those of the kernel
# built in _kernel name its local type.

from functools import cache
from typing import no_type_check

import torch
import warp as wp
from jaxtyping import Float
from torch import Tensor, nn

from .. import kernels
from ..checks import check_count, check_float, checking_values

MAX_DEGREE = 5  # orders l <= 4: the polynomials below
# Directions must be unit to this tolerance: the polynomials are orthonormal only on the sphere.
UNIT_TOLERANCE = 1e-3


def _real_sh(d: Tensor, degree: int) -> list[Tensor]:
    """The first ``degree^2`` real SH of unit vectors ``d [N,3]`` (constants as in tiny-cuda-nn's sh.cuh)."""
    x, y, z = d.unbind(dim=-1)
    out = [torch.full_like(x, 0.28209479177387814)]  # 1 / (2 sqrt(pi))
    if degree <= 1:
        return out
    out += [-0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x]
    if degree <= 2:
        return out
    x2, y2, z2, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
    out += [
        1.0925484305920792 * xy,
        -1.0925484305920792 * yz,
        0.94617469575755997 * z2 - 0.31539156525251999,
        -1.0925484305920792 * xz,
        0.54627421529603959 * (x2 - y2),
    ]
    if degree <= 3:
        return out
    out += [
        0.59004358992664352 * y * (y2 - 3.0 * x2),
        2.8906114426405538 * xy * z,
        0.45704579946446572 * y * (1.0 - 5.0 * z2),
        0.3731763325901154 * z * (5.0 * z2 - 3.0),
        0.45704579946446572 * x * (1.0 - 5.0 * z2),
        1.4453057213202769 * z * (x2 - y2),
        0.59004358992664352 * x * (3.0 * y2 - x2),
    ]
    if degree <= 4:
        return out
    out += [
        2.5033429417967046 * xy * (x2 - y2),
        1.7701307697799304 * yz * (y2 - 3.0 * x2),
        0.94617469575756008 * xy * (7.0 * z2 - 1.0),
        0.66904654355728921 * yz * (3.0 - 7.0 * z2),
        3.7024941420321507 * z2 * z2 - 3.1735664074561294 * z2 + 0.31735664074561293,
        0.66904654355728921 * xz * (3.0 - 7.0 * z2),
        0.47308734787878004 * (x2 - y2) * (7.0 * z2 - 1.0),
        1.7701307697799304 * xz * (3.0 * y2 - x2),
        0.62583573544917614 * (x2 * x2 + y2 * y2) - 3.7550144126950569 * x2 * y2,
    ]
    return out


@cache
def _kernel(scalar: type) -> wp.Kernel:
    """:func:`_real_sh` as one Warp kernel in ``scalar`` (wp.float32 or wp.float64), its own module."""

    @no_type_check  # Warp parameter types are not Python type hints; keep the jaxtyping checker off them.
    @wp.kernel(module="unique", enable_backward=False)
    def encode(degree: int, dirs: wp.array2d(dtype=scalar), out: wp.array2d(dtype=scalar)):
        i = wp.tid()
        x, y, z = dirs[i, 0], dirs[i, 1], dirs[i, 2]
        out[i, 0] = scalar(0.28209479177387814)
        if degree <= 1:
            return
        out[i, 1] = scalar(-0.48860251190291987) * y
        out[i, 2] = scalar(0.48860251190291987) * z
        out[i, 3] = scalar(-0.48860251190291987) * x
        if degree <= 2:
            return
        x2, y2, z2, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out[i, 4] = scalar(1.0925484305920792) * xy
        out[i, 5] = scalar(-1.0925484305920792) * yz
        out[i, 6] = scalar(0.94617469575755997) * z2 - scalar(0.31539156525251999)
        out[i, 7] = scalar(-1.0925484305920792) * xz
        out[i, 8] = scalar(0.54627421529603959) * (x2 - y2)
        if degree <= 3:
            return
        out[i, 9] = scalar(0.59004358992664352) * y * (y2 - scalar(3.0) * x2)
        out[i, 10] = scalar(2.8906114426405538) * xy * z
        out[i, 11] = scalar(0.45704579946446572) * y * (scalar(1.0) - scalar(5.0) * z2)
        out[i, 12] = scalar(0.3731763325901154) * z * (scalar(5.0) * z2 - scalar(3.0))
        out[i, 13] = scalar(0.45704579946446572) * x * (scalar(1.0) - scalar(5.0) * z2)
        out[i, 14] = scalar(1.4453057213202769) * z * (x2 - y2)
        out[i, 15] = scalar(0.59004358992664352) * x * (scalar(3.0) * y2 - x2)
        if degree <= 4:
            return
        out[i, 16] = scalar(2.5033429417967046) * xy * (x2 - y2)
        out[i, 17] = scalar(1.7701307697799304) * yz * (y2 - scalar(3.0) * x2)
        out[i, 18] = scalar(0.94617469575756008) * xy * (scalar(7.0) * z2 - scalar(1.0))
        out[i, 19] = scalar(0.66904654355728921) * yz * (scalar(3.0) - scalar(7.0) * z2)
        out[i, 20] = scalar(3.7024941420321507) * z2 * z2 - scalar(3.1735664074561294) * z2 + scalar(0.31735664074561293)
        out[i, 21] = scalar(0.66904654355728921) * xz * (scalar(3.0) - scalar(7.0) * z2)
        out[i, 22] = scalar(0.47308734787878004) * (x2 - y2) * (scalar(7.0) * z2 - scalar(1.0))
        out[i, 23] = scalar(1.7701307697799304) * xz * (scalar(3.0) * y2 - x2)
        out[i, 24] = scalar(0.62583573544917614) * (x2 * x2 + y2 * y2) - scalar(3.7550144126950569) * x2 * y2

    return encode


class SphericalHarmonics(nn.Module):
    """Real spherical harmonics of unit directions ``[N,3]`` -> ``[N, degree^2]`` (see the module docstring)."""

    in_dim = 3

    def __init__(self, degree: int = 4):
        super().__init__()
        self.degree = check_count("degree", degree, 1, MAX_DEGREE)
        self.out_dim = self.degree**2

    def forward(self, dirs: Float[Tensor, "N 3"]) -> Float[Tensor, "N E"]:
        check_float("dirs", dirs, [None, 3])
        if dirs.shape[0] > 0 and checking_values():  # a renderer's own unit directions are trusted: no read-back
            length = torch.linalg.vector_norm(dirs.detach(), dim=-1)
            if float((length - 1.0).abs().max()) > UNIT_TOLERANCE:
                row = int(((length - 1.0).abs() > UNIT_TOLERANCE).nonzero()[0, 0])
                raise ValueError(f"dirs: expected unit vectors, got length {float(length[row]):.6g} in row {row}")
        if dirs.dtype not in kernels.WARP_SCALARS or (dirs.requires_grad and torch.is_grad_enabled()):
            return torch.stack(_real_sh(dirs, self.degree), dim=-1)
        dirs = dirs.detach().contiguous()
        out = dirs.new_empty(dirs.shape[0], self.out_dim)
        kernels.launch_rows(_kernel(kernels.WARP_SCALARS[dirs.dtype]), dirs.shape[0], [self.degree], [dirs, out], dirs.device)
        return out

    def extra_repr(self) -> str:
        return f"degree={self.degree}"
