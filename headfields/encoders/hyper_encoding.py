"""Encoding of points with hyper-dimensions (HyperNeRF, Park et al. 2021): a spatial encoder reads the first three
coordinates, the frequency encoding the remaining ``H`` (the "ambient" coordinates a hyper-dimensional deformer
such as :class:`~headfields.deformers.HyperDeformer` appends), and the two are concatenated. This lets any spatial
encoder, a hash grid included, serve a field sliced by hyper-coordinates."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor, nn

from ..checks import check_count, check_float
from .frequency import FrequencyEncoding

SPATIAL_DIMS = 3


class HyperEncoding(nn.Module):
    """``[spatial(x[:, :3]), PE(x[:, 3:])]`` for points ``x [N, 3 + H]``.

    ``spatial``: an encoder with ``in_dim == 3`` and ``out_dim`` (e.g. a :class:`~headfields.encoders.HashGrid`,
    which expects its input in ``[0, 1]^3``); ``hyper_dim``: H; ``num_frequencies``: the hyper coordinates' bands
    (HyperNeRF: a few, their window annealed; pass ``window`` to :meth:`forward` to do the same).
    """

    def __init__(self, spatial: nn.Module, hyper_dim: int, num_frequencies: int = 0):
        super().__init__()
        if getattr(spatial, "in_dim", None) != SPATIAL_DIMS or not isinstance(getattr(spatial, "out_dim", None), int):
            raise TypeError(
                f"spatial: expected an encoder of 3-D points with an int out_dim, got {type(spatial).__name__} "
                f"(in_dim={getattr(spatial, 'in_dim', None)!r})"
            )
        self.spatial = spatial
        self.hyper = FrequencyEncoding(check_count("hyper_dim", hyper_dim, 1), num_frequencies)
        self.in_dim = SPATIAL_DIMS + hyper_dim
        self.out_dim = spatial.out_dim + self.hyper.out_dim

    def forward(self, x: Float[Tensor, "N D"], window: float | None = None) -> Float[Tensor, "N F"]:
        check_float("x", x, [None, self.in_dim])
        spatial = self.spatial(x[:, :SPATIAL_DIMS])
        hyper = self.hyper(x[:, SPATIAL_DIMS:].to(spatial.dtype), window)
        return torch.cat([spatial, hyper], dim=1)

    def extra_repr(self) -> str:
        return f"hyper_dim={self.hyper.in_dim}, num_frequencies={self.hyper.num_frequencies}"
