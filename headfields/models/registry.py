"""Every avatar model by name: how to build it for a subject from its configuration, its named recipes, its
training defaults and, for a model with a pipeline of its own (MonoNPHM fits a frozen prior by tracking), how it
trains. A run's ``config.json`` names its model here, so :func:`headfields.load_run` rebuilds any run's model the
way training did.

    entry = MODELS["insta"]
    model = entry.build(subject, entry.recipe("cpu"))  # the subject's parametric model and frames
    training = entry.training_defaults("cpu")  # the example's defaults, with the CPU recipe's sample budget
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import nn

if TYPE_CHECKING:
    from ..data import Subject
    from ..training import TrainingConfig

__all__ = ["MODELS", "SUBJECT_FLAGS", "ModelEntry", "build_model", "model_entry"]

# The train command's flags that say where a run's subject comes from and how it is scored.
SUBJECT_FLAGS = ("data", "video", "model", "regions", "eval_split", "all_held_out")


@dataclass(frozen=True)
class ModelEntry:
    """``build(subject, config)``: the model for a subject; ``recipes``: recipe name -> its configuration (a paper
    model has "paper" and "cpu"; a mix has its one recipe); ``model_type`` and ``video``: the parametric model a
    capture without one is read with, and the synthetic video the model trains on by default (None: the
    default video); ``training``: the model's training defaults, as its example trains it (None:
    ``TrainingConfig()``), and ``recipe_training``: recipe name -> the fields a recipe sets on them (the CPU
    recipe's sample budget); ``train``: a pipeline of its own, ``train(run, out, device, resume=, log=) -> metrics``,
    which :func:`headfields.runs.train_run` calls instead of the NeRF-type loop (None: that loop); ``rasterised``:
    the model draws whole images with a rasteriser (``render_camera``) and has no field to march or mesh, so the
    commands refuse their flags for rays and surfaces (``render --chunk``, ``export --level``) before writing;
    ``subject_flags``: the train command's subject flags the model's run reads (the others are refused when given);
    ``unread_training``: the :class:`TrainingConfig` fields its run does not read (its module's
    ``UNREAD_TRAINING_FIELDS``), refused when set before anything is loaded or written; ``unread_recipe``: the
    recipe fields a configuration's mode leaves unread (its module's ``unread_recipe_fields(config)``: dotted name ->
    why; None: it reads them all), refused when changed from the recipe."""

    build: Callable[[Subject, Any], nn.Module]
    recipes: Mapping[str, Callable[[], Any]]
    model_type: str = "flame"
    video: Callable[[], Any] | None = None
    config_type: type | None = field(default=None, compare=False)  # the recipe's class (a saved config must be one)
    training: Callable[[], TrainingConfig] | None = field(default=None, compare=False)
    train: Callable[..., dict] | None = field(default=None, compare=False)
    recipe_training: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, compare=False)
    rasterised: bool = False
    subject_flags: tuple[str, ...] = SUBJECT_FLAGS
    unread_training: tuple[str, ...] = ()
    unread_recipe: Callable[[Any], Mapping[str, str]] | None = field(default=None, compare=False)

    def recipe(self, name: str) -> Any:
        if name not in self.recipes:
            raise ValueError(f"recipe: expected one of {sorted(self.recipes)}, got {name!r}")
        return self.recipes[name]()

    def training_defaults(self, recipe: str | None = None) -> TrainingConfig:
        """The training settings a run of recipe ``recipe`` starts from (None: a saved config's, no recipe's)."""
        import dataclasses

        from ..training import TrainingConfig

        if recipe is not None and recipe not in self.recipes:
            raise ValueError(f"recipe: expected one of {sorted(self.recipes)}, got {recipe!r}")
        defaults = self.training() if self.training is not None else TrainingConfig()
        return dataclasses.replace(defaults, **self.recipe_training.get(recipe, {}))


def _insta(subject: Subject, config) -> nn.Module:
    from .insta import Insta

    return Insta(subject.parametric, subject.train.segmentation_labels, config)


def _monoavatar(subject: Subject, config) -> nn.Module:
    from ..parametric import ParametricModel, add_mouth_interior
    from .monoavatar import MonoAvatar

    parametric = subject.parametric
    # Real FLAME has no mouth cavity: MonoAvatar anchors features inside it. A capture's own tracked meshes (no
    # model files) fix the topology, so they are used as the tracker made them.
    if isinstance(parametric, ParametricModel) and "mouth_interior" not in parametric.regions:
        if subject.train.params is None:
            raise ValueError(
                "data: a capture with tracked meshes needs a FLAME with a mouth interior for MonoAvatar (its meshes "
                "fix the topology); track with parameters, or use such a model"
            )
        parametric = add_mouth_interior(parametric)
    return MonoAvatar(parametric, len(subject.train), config)


def _portrait360(subject: Subject, config) -> nn.Module:
    from .portrait360 import Portrait360

    return Portrait360(subject.parametric, config)


def _hyper_neus(subject: Subject, config) -> nn.Module:
    from .hyper_neus import HyperNeusAvatar

    return HyperNeusAvatar(subject.parametric, len(subject.train), config)


def _mononphm(subject: Subject, config) -> nn.Module:
    from .mononphm.run import build

    return build(subject, config)


def _train_mononphm(run, out, device=None, **options) -> dict:
    from .mononphm.run import train

    return train(run, out, device, **options)


def _nphm_prior(subject: Subject, config) -> nn.Module:
    from .mononphm.prior_run import build

    return build(subject, config)


def _train_nphm_prior(run, out, device=None, **options) -> dict:
    from .mononphm.prior_run import train

    return train(run, out, device, **options)


def _gaussian_avatar(subject: Subject, config) -> nn.Module:
    from .gaussian_avatars import GaussianAvatar

    has_teeth = "teeth" in getattr(subject.parametric, "region_names", ())  # a model file made with them (VHAP's)
    if config.teeth is False and has_teeth:  # the Gaussians would be bound to them all the same
        raise ValueError(
            "teeth: False, but the subject's model has teeth already (its region 'teeth'): give "
            "--gaussian-avatar.teeth True (teeth=True), or leave it unset"
        )
    teeth = config.teeth if config.teeth is not None else _is_flame(subject.parametric)
    return GaussianAvatar(_with_teeth(subject) if teeth and not has_teeth else subject.parametric, config)


def _is_flame(parametric: nn.Module) -> bool:
    """Whether ``parametric`` is FLAME of its 5,023 vertices, the mesh GaussianAvatars adds VHAP's teeth to (a
    ``teeth`` of None turns them on there)."""
    from ..parametric import ParametricModel
    from ..parametric.teeth import FLAME_VERTICES

    return (
        isinstance(parametric, ParametricModel) and parametric.model_type == "flame" and parametric.num_vertices == FLAME_VERTICES
    )


def _with_teeth(subject: Subject) -> nn.Module:
    """The subject's FLAME with VHAP's teeth (GaussianAvatars' mesh), their static offsets the capture's where its
    tracker fitted them (VHAP's rows for its teeth follow FLAME's)."""
    from ..parametric import ParametricModel, add_teeth

    if not isinstance(subject.parametric, ParametricModel):
        raise ValueError("recipe: teeth need the subject's FLAME model; a capture with tracked meshes alone has none")
    model = add_teeth(subject.parametric)
    params = subject.train.params
    if params is not None and params.static_offset is not None and len(params.static_offset) == model.num_vertices:
        model = model.with_static_offset(params.static_offset.to(model.v_template.device))
    return model


def _paper_model(module_name: str, build, config_name: str, **more) -> ModelEntry:
    import importlib

    module = importlib.import_module(f"{__package__}.{module_name}")
    recipes = {"paper": module.paper_config, "cpu": module.cpu_config}
    more.setdefault("unread_training", _unread_training(module_name))  # declared where they live
    more.setdefault("unread_recipe", _unread_recipe(module_name))
    return ModelEntry(build, recipes, config_type=getattr(module, config_name), **more)


def _unread_training(module_name: str) -> tuple[str, ...]:
    """``UNREAD_TRAINING_FIELDS`` of the module (below this package) that runs a model's training (none: ())."""
    return tuple(_declared(module_name, "UNREAD_TRAINING_FIELDS", ()))


def _unread_recipe(module_name: str) -> Callable[[Any], Mapping[str, str]] | None:
    """``unread_recipe_fields`` of the module (below this package) that runs a model's training (none: None)."""
    return _declared(module_name, "unread_recipe_fields", None)


def _declared(module_name: str, name: str, default: Any) -> Any:
    import importlib

    return getattr(importlib.import_module(f"{__package__}.{module_name}"), name, default)


def _mix(name: str) -> ModelEntry:
    from .mixes import MIXES

    mix = MIXES[name]
    training = _training(
        max_minutes=5.0, rays_per_batch=mix.rays_per_batch, frames_per_batch=mix.frames_per_batch, eval_every=mix.eval_every
    )
    return ModelEntry(
        lambda subject, config: mix.build(subject.parametric, subject.train, config),
        {"cpu": mix.config},
        training=training,
        unread_training=mix.unread_training,
        unread_recipe=mix.unread_recipe,
    )


def _training(**fields) -> Callable[[], TrainingConfig]:
    """A model's training defaults: ``TrainingConfig(**fields)``, made when asked for (the training package
    imports this module)."""

    def defaults() -> TrainingConfig:
        from ..training import TrainingConfig

        return TrainingConfig(**fields)

    return defaults


def _portrait360_video():
    from ..synthetic import SyntheticVideoConfig

    return SyntheticVideoConfig.portrait360()


def _nphm_held_out_video():
    from ..synthetic import nphm_held_out_video

    return nphm_held_out_video()  # a person the scan set of benchmarks/ablations/nphm.py does not hold


# The CPU recipes' budgets of trained samples a step: on a 2-core CPU, more steps of fewer rays beat the fixed rays
# at equal training time (after 2.5 min: INSTA 2^14 against 2,048 rays, 1.7x the steps, +0.3 dB; the portrait 2^14
# against 2,048 rays, 1.8x, +5 dB; MonoAvatar 2^13 against 1,024 rays, 1.7x, +3 dB; docs/results.md, "Samples a step
# on the CPU"). The first step still draws rays_per_batch rays.
CPU_SAMPLES_PER_BATCH = {"samples_per_batch": 1 << 14}
# Rays a render call of the NeRF models' inference renderer: its rounds bound the field's memory (ROUND_SAMPLES), so a
# call takes a quarter of a 512² image; 8,192-ray calls (TrainingConfig's default) make each round smaller and a
# frame 1.4x slower on the 2-core CPU (INSTA, measured when 65,536-ray calls landed, 3def6f0).
INFERENCE_CHUNK = 1 << 16
# INSTA's paper recipe (the default on CUDA) renders a 512² frame in one call: on an H100 a call's fixed work (the
# march's read-back, each round's launches) is what a frame of a few million samples spends its time on, and four
# calls of 2^16 rays took 124 ms against 63 ms for one (docs/insta.md, "Figures").
PAPER_INFERENCE_CHUNK = {"render_chunk": 1 << 18}
# The hyper NeuS avatar's paper recipe renders 1,024 rays a call: NeuS's inference up-samples every ray of a call at
# once, each sample through 13 MLPs with the SDF's graph for its normal; TrainingConfig's 8,192 held 47 GiB on an H100
# (docs/results.md), 1,024 about 5.6 GiB (counted on the CPU: tools/step_memory.py --render-rays).
HYPER_NEUS_PAPER_CHUNK = {"render_chunk": 1024}
MONOAVATAR_CPU_SAMPLES_PER_BATCH = {"samples_per_batch": 1 << 13}  # two networks a sample, 4 frames' UV CNN a step
# MonoNPHM's prior: its paper's steps (PriorTrainingConfig().steps), a log line every 100; on a CPU the steps a
# half-hour budget reaches on 2 idle cores (~33 min for 2,400: benchmarks/ablations/nphm.py, docs/mononphm.md).
NPHM_PRIOR_STEPS = 30_000
NPHM_PRIOR_LOG_EVERY = 100
NPHM_PRIOR_CPU_BUDGET = {"max_iterations": 2400, "max_minutes": 30.0}
# GaussianAvatars' iterations (arguments/__init__.py); the CPU recipe's are 3D Gaussian Splatting's original 30,000
# (models.gaussian_avatars.ORIGINAL_ITERATIONS), of which 5 minutes of a CPU reach the first thousands.
GAUSSIAN_AVATARS_STEPS = 600_000
GAUSSIAN_CPU_STEPS = 30_000
GAUSSIAN_CPU_MINUTES = 5.0


def _entries() -> dict[str, ModelEntry]:
    # Training defaults: what each example script trained with (a CPU's budget of minutes).
    return {
        "insta": _paper_model(
            "insta",
            _insta,
            "InstaConfig",
            training=_training(max_minutes=15.0, rays_per_batch=2048, eval_every=500, render_chunk=INFERENCE_CHUNK),
            recipe_training={"cpu": CPU_SAMPLES_PER_BATCH, "paper": PAPER_INFERENCE_CHUNK},
        ),
        "monoavatar": _paper_model(
            "monoavatar",
            _monoavatar,
            "MonoAvatarConfig",
            training=_training(
                max_minutes=15.0, rays_per_batch=1024, frames_per_batch=4, eval_every=500, render_chunk=INFERENCE_CHUNK
            ),
            recipe_training={"cpu": MONOAVATAR_CPU_SAMPLES_PER_BATCH},
        ),
        "portrait360": _paper_model(
            "portrait360",
            _portrait360,
            "Portrait360Config",
            model_type="smplx",
            video=_portrait360_video,
            training=_training(
                max_minutes=20.0, rays_per_batch=2048, balance_views=True, eval_every=1000, render_chunk=INFERENCE_CHUNK
            ),
            recipe_training={"cpu": CPU_SAMPLES_PER_BATCH},
        ),
        "hyper_neus": _paper_model(
            "hyper_neus",
            _hyper_neus,
            "HyperNeusConfig",
            training=_training(max_minutes=20.0, rays_per_batch=512, frames_per_batch=4, eval_every=500),
            recipe_training={"paper": HYPER_NEUS_PAPER_CHUNK},
        ),
        # A frozen prior fitted by tracking: its own pipeline (headfields.models.mononphm.run); of the training
        # settings it reads the budget, the seed, the held-out frames measured (5, as its example did) and the chunk.
        "mononphm": _paper_model(
            "mononphm",
            _mononphm,
            "MonoNphmConfig",
            video=_nphm_held_out_video,
            training=_training(eval_frames=5),
            train=_train_mononphm,
            subject_flags=tuple(f for f in SUBJECT_FLAGS if f != "all_held_out"),  # its tracking scores one split
            unread_training=_unread_training("mononphm.run"),
            unread_recipe=_unread_recipe("mononphm.run"),
        ),
        # MonoNPHM's prior on synthetic scans, what mononphm fits (headfields.models.mononphm.prior_run): of the training
        # settings it reads the steps, the budget, the seed and log_every; the CPU's: benchmarks/ablations/nphm.py's.
        "nphm_prior": _paper_model(
            "mononphm.prior_run",
            _nphm_prior,
            "NphmPriorConfig",
            training=_training(max_iterations=NPHM_PRIOR_STEPS, log_every=NPHM_PRIOR_LOG_EVERY),
            recipe_training={"cpu": NPHM_PRIOR_CPU_BUDGET},
            train=_train_nphm_prior,
            subject_flags=(),  # synthetic scans of its own, no capture
        ),
        # Beyond the four papers: GaussianAvatars, through the shared loop with its own steps (a whole frame each,
        # density control after backward: headfields.models.gaussian_avatars.steps), which refuse the ray settings.
        "gaussian_avatar": _paper_model(
            "gaussian_avatars",
            _gaussian_avatar,
            "GaussianAvatarConfig",
            # The paper's recipe runs GaussianAvatars' 600,000 steps to the end unless a budget is given; the CPU's,
            # 3DGS's original 30,000-step schedule, stopped at 5 minutes.
            training=_training(max_iterations=GAUSSIAN_AVATARS_STEPS, log_every=100),
            recipe_training={"cpu": {"max_iterations": GAUSSIAN_CPU_STEPS, "max_minutes": GAUSSIAN_CPU_MINUTES}},
            rasterised=True,
        ),
        **{name: _mix(name) for name in ("mix_triangle_neus", "mix_anchored_hashgrid", "mix_hyper_insta")},
    }


class _Models(Mapping):
    """The registry, filled on first use (the model modules import the training loop, which imports this)."""

    _entries: dict[str, ModelEntry] | None = None

    def _all(self) -> dict[str, ModelEntry]:
        if self._entries is None:
            type(self)._entries = _entries()
        return self._entries

    def __getitem__(self, name: str) -> ModelEntry:
        return self._all()[name]

    def __iter__(self):
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


MODELS: Mapping[str, ModelEntry] = _Models()


def model_entry(name: str) -> ModelEntry:
    """``MODELS[name]``, with an error that lists the names."""
    if name not in MODELS:
        raise ValueError(f"model: expected one of {sorted(MODELS)}, got {name!r}")
    return MODELS[name]


def build_model(name: str, subject: Subject, config) -> nn.Module:
    """Model ``name`` for ``subject`` with ``config`` (see :data:`MODELS`)."""
    return model_entry(name).build(subject, config)
