"""headfields: differentiable head-avatar primitives on CPU and GPU.

Subpackages, one job each: ``geometry`` (meshes and Warp mesh kernels), ``parametric`` (FLAME, SMPL-X, tracked
meshes), ``data`` (captures), ``deformers``, ``encoders``, ``decoders``, ``fields``, ``renderers``, ``losses``,
``metrics``, ``training`` (the loop), ``models`` (the papers and the mixes, by name in ``models.registry``),
``synthetic`` (test and demo heads). ``headfields.load_run(path)`` rebuilds a trained run; ``python -m headfields
train | render | export | view | inspect`` is the command line. docs/index.md lists every primitive.
"""

from .configs import register_config_source

__version__ = "0.1.0"

_RUNS = ("RunConfig", "load_run", "train_run")  # headfields.apps.runs, imported on first use (it imports torch and the models)


@register_config_source
def _library_configs() -> list[type]:
    """The library's configurations for :func:`headfields.configs.config_classes`: a run's and every registered
    model's recipe classes, imported when a config is read (configs, below the models, cannot name them)."""
    from .apps.runs import RunConfig
    from .models.registry import MODELS

    return [RunConfig, *(method.config_type for method in MODELS.values())]


def __getattr__(name: str):
    if name in _RUNS:
        from .apps import runs

        return getattr(runs, name)
    raise AttributeError(f"module 'headfields' has no attribute {name!r}")
