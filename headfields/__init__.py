"""headfields: differentiable head-avatar primitives on CPU and GPU.

Subpackages: ``geometry`` (mesh kernels), ``parametric``, ``deformers``, ``encoders``, ``decoders``,
``renderers``, ``data``, ``models``. Import what you need, e.g. ``from headfields.geometry import closest_point``.
"""

__version__ = "0.1.0"
