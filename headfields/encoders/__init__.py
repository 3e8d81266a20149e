"""Encoders: map points or directions to features. Each is an ``nn.Module`` with ``in_dim``, ``out_dim`` and
``forward(x [N, in_dim]) -> [N, out_dim]``."""

from .frequency import FrequencyEncoding
from .hashgrid import HashGrid, HashGridConfig
from .spherical_harmonics import SphericalHarmonics

__all__ = ["FrequencyEncoding", "HashGrid", "HashGridConfig", "SphericalHarmonics"]
