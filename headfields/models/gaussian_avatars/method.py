"""GaussianAvatars as a method of the registry: its build for a subject (FLAME with VHAP's teeth, as
GaussianAvatars' FlameGaussianModel builds it), its recipes and its training defaults."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from ...parametric import ParametricModel, add_teeth
from ...parametric.teeth import FLAME_VERTICES
from ...training import TrainingConfig
from ..method import Method, Recipe
from .model import GaussianAvatar, GaussianAvatarConfig, cpu_config, paper_config, unread_recipe_fields
from .steps import REFUSED_TRAINING_FIELDS

if TYPE_CHECKING:
    from ...data import Subject

__all__ = ["METHOD"]

# GaussianAvatars' iterations (arguments/__init__.py), run to the end unless a budget is given; the CPU recipe's are 3D
# Gaussian Splatting's original 30,000 (ORIGINAL_ITERATIONS), stopped at 5 minutes, which reach the first thousands.
PAPER_STEPS = 600_000
CPU_TRAINING = {"max_iterations": 30_000, "max_minutes": 5.0}


def build(subject: Subject, config: GaussianAvatarConfig) -> GaussianAvatar:
    """The avatar of ``subject``: its FLAME with VHAP's teeth where ``config.teeth`` asks for them (None: on for
    FLAME's 5,023 vertices), their static offsets the capture's where its tracker fitted them."""
    has_teeth = "teeth" in getattr(subject.parametric, "region_names", ())  # a model file made with them (VHAP's)
    if config.teeth is False and has_teeth:  # the Gaussians would be bound to them all the same
        raise ValueError(
            "teeth: False, but the subject's model has teeth already (its region 'teeth'): give "
            "--gaussian-avatar.teeth True (teeth=True), or leave it unset"
        )
    teeth = config.teeth if config.teeth is not None else _is_flame(subject.parametric)
    return GaussianAvatar(_with_teeth(subject) if teeth and not has_teeth else subject.parametric, config)


def _is_flame(parametric: nn.Module) -> bool:
    """Whether ``parametric`` is FLAME of its 5,023 vertices, the mesh GaussianAvatars adds VHAP's teeth to."""
    return (
        isinstance(parametric, ParametricModel) and parametric.model_type == "flame" and parametric.num_vertices == FLAME_VERTICES
    )


def _with_teeth(subject: Subject) -> nn.Module:
    """The subject's FLAME with VHAP's teeth (VHAP's rows for its teeth follow FLAME's static offsets)."""
    if not isinstance(subject.parametric, ParametricModel):
        raise ValueError("recipe: teeth need the subject's FLAME model; a capture with tracked meshes alone has none")
    model = add_teeth(subject.parametric)
    params = subject.train.params
    if params is not None and params.static_offset is not None and len(params.static_offset) == model.num_vertices:
        model = model.with_static_offset(params.static_offset.to(model.v_template.device))
    return model


# Through the shared loop with its own steps (a whole frame each, density control after backward: steps.py), which
# refuse the ray settings.
METHOD = Method(
    "gaussian_avatar",
    build,
    {"paper": Recipe(paper_config), "cpu": Recipe(cpu_config, CPU_TRAINING)},
    GaussianAvatarConfig,
    training=TrainingConfig(max_iterations=PAPER_STEPS, log_every=100),
    rasterised=True,
    unread_training=REFUSED_TRAINING_FIELDS,
    unread_recipe=unread_recipe_fields,
)
