"""headfields: differentiable head-avatar primitives on CPU and GPU.

Available now: ``headfields.geometry`` (meshes and Warp mesh kernels). The parametric heads, data, deformers,
encoders, decoders, renderers and paper models follow (see the README's primitive table).
"""

__version__ = "0.1.0"
