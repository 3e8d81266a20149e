"""A model's primitives, each in a ``torch.profiler`` range of its own name: where a step's time goes, per primitive
(``profile_step.py``'s tables).

    labels = hook_primitives(model)  # "deformer (TriangleFrameDeformer)", ...
    with torch.profiler.profile() as prof:
        model.training_step(batch, step)
    events = {e.key: e for e in prof.key_averages()}  # each label's time, inclusive

The ranges are opened by torch's forward hooks; a deformer's ``canonicalize``, which a chain calls without the link's
``forward`` (and so without its hooks), is wrapped on the model's own instance, for this model alone.
"""

from __future__ import annotations

from torch import nn
from torch.profiler import record_function

from headfields.deformers import Deformer

PRIMITIVE_PACKAGES = ("headfields.deformers", "headfields.encoders", "headfields.decoders", "headfields.renderers")


def primitive_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's submodules whose class lives in a primitive package (and the model's fields), by name."""
    found = []
    for name, module in model.named_modules():
        if name and type(module).__module__.startswith(PRIMITIVE_PACKAGES + ("headfields.fields", "headfields.networks")):
            found.append((name, module))
    return found


def label(name: str, module: nn.Module) -> str:
    return f"{name} ({type(module).__name__})"


def hook_primitives(model: nn.Module) -> list[str]:
    """Each primitive's forward in a ``record_function`` range; a deformer's ``canonicalize``, which a chain calls
    without its ``forward`` (and so without hooks), is wrapped instead."""
    labels = []
    for name, module in primitive_modules(model):
        text = label(name, module)
        labels.append(text)
        if isinstance(module, Deformer) and type(module).canonicalize is not Deformer.canonicalize:

            def traced(*args, original=module.canonicalize, text=text, **kwargs):
                with record_function(text):
                    return original(*args, **kwargs)

            module.canonicalize = traced  # an instance attribute: forward and a chain both call it
            continue

        def enter(module, args, text=text):
            module._profile_range = record_function(text)
            module._profile_range.__enter__()

        def leave(module, args, output):
            module._profile_range.__exit__(None, None, None)

        module.register_forward_pre_hook(enter)
        module.register_forward_hook(leave)
    return labels
