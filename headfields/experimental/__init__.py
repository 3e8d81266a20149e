"""Experimental: code that no device runs by default, each piece behind an opt-in a user calls by name, until a
measurement earns it a default. The library's core never imports this package.

- :mod:`~headfields.experimental.fused_nerf`: a :class:`~headfields.decoders.NerfDecoder`'s inference pass in one
  Warp kernel (``with fused_inference(decoder): ...``).
"""

from . import fused_nerf

__all__ = ["fused_nerf"]
