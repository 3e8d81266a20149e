"""headfields: differentiable head-avatar primitives on CPU and GPU.

Available now: ``headfields.geometry`` (meshes and Warp mesh kernels). The parametric heads, data, deformers,
encoders, decoders, renderers and paper models follow (see the README's primitive table).
"""

__version__ = "0.1.0"

_RUNS = ("RunConfig", "load_run", "train_run")  # headfields.runs, imported on first use (it imports torch and the models)


def __getattr__(name: str):
    if name in _RUNS:
        from . import runs

        return getattr(runs, name)
    raise AttributeError(f"module 'headfields' has no attribute {name!r}")
