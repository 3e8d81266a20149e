"""A method, declared in the module of the model it trains (its ``METHOD``), as nerfstudio's method configs are: how
to build the model for a subject, its named recipes (each the model's configuration and the training settings it
sets, together), its training defaults, and what its run reads. The registry (:mod:`headfields.models.registry`)
lists them by name; a run's ``config.json`` names one, so :func:`headfields.load_run` rebuilds any run's model the
way training did.

    method = MODELS["insta"]
    model = method.build(subject, method.recipe("paper"))  # the subject's parametric model and frames
    training = method.training_defaults("paper")  # its example's defaults with the paper recipe's: 2^18 samples a step
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import nn

from ..training import TrainingConfig

if TYPE_CHECKING:
    from ..data import Subject

__all__ = ["CPU_SAMPLES_PER_BATCH", "INFERENCE_CHUNK", "SUBJECT_FLAGS", "Method", "Recipe"]

# The train command's flags that say where a run's subject comes from and how it is scored.
SUBJECT_FLAGS = ("data", "video", "model", "regions", "eval_split", "all_held_out")
# Rays a render call of the NeRF models' inference renderer: its rounds bound the field's memory (ROUND_SAMPLES), so a
# call takes a quarter of a 512² image; 8,192-ray calls (TrainingConfig's default) make each round smaller and a
# frame 1.4x slower on the 2-core CPU (INSTA, measured when 65,536-ray calls landed, 3def6f0).
INFERENCE_CHUNK = 1 << 16
# The CPU recipes' budget of trained samples a step: on a 2-core CPU, more steps of fewer rays beat the fixed rays at
# equal training time (after 2.5 min: INSTA 2^14 against 2,048 rays, 1.7x the steps, +0.3 dB; the portrait 2^14
# against 2,048 rays, 1.8x, +5 dB; MonoAvatar 2^13 against 1,024 rays, 1.7x, +3 dB; docs/results.md, "Samples a step
# on the CPU"). The first step still draws rays_per_batch rays.
CPU_SAMPLES_PER_BATCH = {"samples_per_batch": 1 << 14}


@dataclass(frozen=True)
class Recipe:
    """A named way to train a method: ``config()`` makes the model's configuration, ``training`` holds the
    :class:`TrainingConfig` fields the recipe sets over the method's training defaults (the paper's sample budget)."""

    config: Callable[[], Any]
    training: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = {f.name for f in dataclasses.fields(TrainingConfig)}
        unknown = sorted(set(self.training) - names)
        if unknown:
            raise ValueError(f"training: expected fields of TrainingConfig, got {unknown}")


@dataclass(frozen=True)
class Method:
    """``build(subject, config)``: the model for a subject; ``recipes``: recipe name -> :class:`Recipe` (a paper
    model has "paper" and "cpu"; a mix has its one recipe); ``config_type``: the recipes' class (a saved config must
    be one); ``training``: the training defaults, as the method's example trains it; ``model_type`` and ``video``:
    the parametric model a capture without one is read with, and the synthetic video the model trains on by default
    (None: the default video); ``fit``: a fit of its own, ``fit(run, engine, device) -> metrics``, which
    :func:`headfields.apps.runs.train_run` runs inside the run's :class:`~headfields.training.engine.Engine` instead
    of the loop's steps (None: the loop); ``rasterised``:
    the model draws whole images with a rasteriser (``render_camera``) and has no field to march or mesh, so the
    commands refuse their flags for rays and surfaces (``render --chunk``, ``export --level``) before writing;
    ``subject_flags``: the train command's subject flags its run reads (the others are refused when given);
    ``unread_training``: the :class:`TrainingConfig` fields its run does not read, refused when set before anything
    is loaded or written; ``unread_recipe(config)``: the recipe fields a configuration's mode leaves unread (dotted
    name -> why; None: it reads them all), refused when changed from the recipes."""

    name: str
    build: Callable[[Subject, Any], nn.Module]
    recipes: Mapping[str, Recipe]
    config_type: type
    training: TrainingConfig = field(default_factory=TrainingConfig, compare=False)
    model_type: str = "flame"
    video: Callable[[], Any] | None = None
    fit: Callable[..., dict] | None = field(default=None, compare=False)
    rasterised: bool = False
    subject_flags: tuple[str, ...] = SUBJECT_FLAGS
    unread_training: tuple[str, ...] = ()
    unread_recipe: Callable[[Any], Mapping[str, str]] | None = field(default=None, compare=False)

    def recipe(self, name: str) -> Any:
        """Recipe ``name``'s model configuration."""
        return self._named(name).config()

    def training_defaults(self, recipe: str | None = None) -> TrainingConfig:
        """The training settings a run of recipe ``recipe`` starts from (None: a saved config's, no recipe's)."""
        if recipe is None:
            return self.training
        return dataclasses.replace(self.training, **self._named(recipe).training)

    def _named(self, name: str) -> Recipe:
        if name not in self.recipes:
            raise ValueError(f"recipe: expected one of {sorted(self.recipes)}, got {name!r}")
        return self.recipes[name]
