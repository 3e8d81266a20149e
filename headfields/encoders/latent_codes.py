"""Auto-decoded latent codes (DeepSDF, NPHM, MonoNPHM): one learnt vector per subject or per frame, read by
index, with the Gaussian-prior regulariser that keeps them near zero, so that zero is the mean ("neutral")
code an unseen frame starts from."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from ..checks import check_count, check_int

__all__ = ["LatentCodes", "LatentCodesConfig"]


@dataclass(frozen=True)
class LatentCodesConfig:
    dim: int
    init_std: float = 0.0  # 0: every code starts at zero (the mean); DeepSDF draws N(0, 0.01^2)
    weight: float = 0.0  # of the mean squared norm in :meth:`LatentCodes.regularizer` (MonoNPHM: 1e-2 scale)

    def __post_init__(self) -> None:
        check_count("dim", self.dim, 0)
        if self.init_std < 0:
            raise ValueError(f"init_std: expected a non-negative standard deviation, got {self.init_std}")
        if self.weight < 0:
            raise ValueError(f"weight: expected a non-negative weight, got {self.weight}")


class LatentCodes(nn.Module):
    """``count`` learnt codes of ``config.dim`` numbers (a 0-d code is allowed: it reads as an empty vector)."""

    def __init__(self, count: int, config: LatentCodesConfig):
        super().__init__()
        self.count = check_count("count", count, 1)
        self.config = config
        self.codes = nn.Parameter(torch.randn(count, config.dim) * config.init_std)

    @property
    def dim(self) -> int:
        return self.config.dim

    def forward(self, index: Int[Tensor, " N"]) -> Float[Tensor, "N D"]:
        check_int("index", index, [None], upper=self.count, device=self.codes.device)
        return self.codes[index]

    def regularizer(self, codes: Float[Tensor, "N D"] | None = None) -> Float[Tensor, ""]:
        """``weight`` x the mean over codes of ``‖z‖²`` (a zero-mean Gaussian prior): of the given codes (those
        a batch used), or of all of them."""
        codes = self.codes if codes is None else codes
        if codes.shape[0] == 0 or codes.shape[1] == 0:
            return codes.sum() * 0.0
        return self.config.weight * codes.square().sum(dim=1).mean()
