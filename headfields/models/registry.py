"""Every method by name: the :class:`~headfields.models.method.Method` each model module declares (``METHOD``; the
mixes' ``METHODS``). A run's ``config.json`` names its method, so :func:`headfields.load_run` rebuilds its model."""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from .method import SUBJECT_FLAGS, Method

if TYPE_CHECKING:
    from torch import nn

    from ..data import Subject

__all__ = ["MODELS", "SUBJECT_FLAGS", "Method", "build_model", "model_entry"]

# The modules that declare methods, in the order the commands list them.
DECLARED = ("insta", "monoavatar", "portrait360", "hyper_neus", "mononphm.method", "mononphm.prior_method")
DECLARED += ("gaussian_avatars.method", "mixes")


class _Methods(Mapping[str, Method]):
    """The registry, filled on first use (``import headfields`` does not import every model)."""

    _methods: dict[str, Method] | None = None

    def _all(self) -> dict[str, Method]:
        if self._methods is None:
            modules = [importlib.import_module(f"{__package__}.{name}") for name in DECLARED]
            methods = [m for module in modules for m in getattr(module, "METHODS", [getattr(module, "METHOD", None)])]
            type(self)._methods = {method.name: method for method in methods}
        return self._methods

    def __getitem__(self, name: str) -> Method:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


MODELS: Mapping[str, Method] = _Methods()


def model_entry(name: str) -> Method:
    """``MODELS[name]``, with an error that lists the names."""
    if name not in MODELS:
        raise ValueError(f"model: expected one of {sorted(MODELS)}, got {name!r}")
    return MODELS[name]


def build_model(name: str, subject: Subject, config) -> nn.Module:
    """Model ``name`` for ``subject`` with ``config`` (see :data:`MODELS`)."""
    return model_entry(name).build(subject, config)
