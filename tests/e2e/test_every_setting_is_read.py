"""Issue 96: no setting is accepted to be ignored. Generated over every registered model x every field of
``TrainingConfig`` x a changed value (and every subject flag of the train command): each is refused by name before
the run folder exists, or read. For the fields a ray model's own step reads (``STEP_FIELDS``), "read" is measured:
one training step on the same rays gives another loss (or counts its samples) with the setting changed. The rest are
the one loop's schedule (steps, budget, evaluations, checkpoints, logs, the rays it draws), which it reads for every
model it runs, or the pipelines' own lists (MonoNPHM's ``RUN_TRAINING_FIELDS``)."""

import dataclasses
import io
from pathlib import Path

import pytest
import torch
from tiny_configs import TINY_ANCHORED_HASHGRID, TINY_INSTA, TINY_MONOAVATAR, TINY_PORTRAIT

import headfields.apps.runs as runs
from headfields.apps.commands.train import run_config
from headfields.apps.runs import RunConfig, SubjectSource, train_run
from headfields.checks import trusted_values
from headfields.heads import tracked_head
from headfields.models.gaussian_avatars import cpu_config as gaussian_cpu_config
from headfields.models.registry import MODELS, SUBJECT_FLAGS
from headfields.networks import products_in
from headfields.renderers import RenderContext
from headfields.training import TrainingConfig
from headfields.training.batches import ray_batch
from headfields.training.checkpoints import RunFolder

# A valid value other than the default for each field (with what it needs beside it: a budget needs max_minutes).
CHANGED = {
    "max_iterations": {"max_iterations": 7},
    "max_minutes": {"max_minutes": 3.0},
    "budget": {"budget": "training", "max_minutes": 3.0},
    "rays_per_batch": {"rays_per_batch": 96},
    "samples_per_batch": {"samples_per_batch": 4096},
    "max_rays_per_batch": {"max_rays_per_batch": 8192},
    "early_stop": {"early_stop": 0.999},
    "fixed_shapes": {"fixed_shapes": True, "samples_per_batch": 4096},
    "cuda_graph": {"cuda_graph": True, "fixed_shapes": True, "samples_per_batch": 4096},
    "precision": {"precision": "bfloat16"},
    "frames_per_batch": {"frames_per_batch": 2, "balance_views": False},
    "balance_views": {"balance_views": True, "frames_per_batch": None},
    "eval_every": {"eval_every": 3},
    "checkpoint_every": {"checkpoint_every": 3},
    "checkpoint_minutes": {"checkpoint_minutes": 1.0},
    "log_every": {"log_every": 3},
    "ema_decay": {"ema_decay": 0.9},
    "eval_frames": {"eval_frames": 2},
    "render_chunk": {"render_chunk": 1024},
    "seed": {"seed": 5},
    "eval_regions": {"eval_regions": (("face", (1,)),)},
    "lpips_weights": {"lpips_weights": "no_such_alexnet.pth"},
    "lpips_vgg_weights": {"lpips_vgg_weights": "no_such_vgg16.pth"},
    "log": {"log": "tensorboard"},
    "flush_denormals": {"flush_denormals": False},
    "tune_malloc": {"tune_malloc": True},
    "frames_device_share": {"frames_device_share": 0.25},
}
STEP_FIELDS = ("early_stop", "precision", "samples_per_batch")  # what a ray model's step reads, or refuses
# The tiny recipes where a model has one (the mixes' configurations are INSTA's and MonoAvatar's).
TINY = {"insta": TINY_INSTA, "monoavatar": TINY_MONOAVATAR, "portrait360": TINY_PORTRAIT, "mix_hyper_insta": TINY_INSTA}
TINY["mix_anchored_hashgrid"] = TINY_ANCHORED_HASHGRID


class _Reached(Exception):
    """The run got past every check to its folder: the setting was accepted."""


def test_the_walk_covers_every_field():
    assert set(CHANGED) == {f.name for f in dataclasses.fields(TrainingConfig)}


@pytest.fixture(scope="module")
def subjects(tiny_video, tiny_orbit_video):
    return {"flame": Path(tiny_video[0].root), "smplx": Path(tiny_orbit_video[0].root)}


@pytest.mark.parametrize("name", list(MODELS))
def test_every_training_setting_is_read_or_refused_before_the_folder_exists(name, subjects, tmp_path, monkeypatch):
    entry = MODELS[name]
    root = subjects["smplx" if entry.model_type == "smplx" else "flame"]
    held_out = "all_held_out" in entry.subject_flags  # (MonoNPHM scores one split: its runs say so)
    source = SubjectSource(data=str(root), model_type=entry.model_type, all_held_out=held_out)
    source = source if entry.subject_flags else SubjectSource()
    recipe_name = sorted(entry.recipes)[0]  # ("cpu" where a model has one)
    recipe, base = TINY.get(name) or entry.recipe(recipe_name), entry.training_defaults(recipe_name)
    if name == "gaussian_avatar":
        recipe = gaussian_cpu_config(sh_degree=0)
    model = subject = None
    if entry.fit is None:  # built once: each setting then costs its checks alone
        subject = source.load("cpu")
        torch.manual_seed(0)
        model = entry.build(subject, recipe)
        monkeypatch.setattr(runs.SubjectSource, "load", lambda self, device=None, pixels=True: subject)
        monkeypatch.setattr(runs, "build_model", lambda *args: model)
    else:  # a pipeline of its own: past its checks, its folder (MonoNPHM's prior file is not needed to get there)
        monkeypatch.setattr("headfields.models.mononphm.method._prior_file", lambda config: Path("prior.pt"))

    def reached(self):
        raise _Reached

    monkeypatch.setattr(RunFolder, "open", reached)
    accepted = []
    for field, values in CHANGED.items():
        out = tmp_path / field
        if getattr(base, field) == values[field] and isinstance(values[field], bool):  # on by default: turned off
            values = {field: not values[field]}
        assert getattr(base, field) != values[field], f"{name}: {field}'s default is the walk's value: change the table"
        run = RunConfig(name, recipe, dataclasses.replace(base, **values), source)
        try:
            train_run(run, out, "cpu", log=io.StringIO())
        except _Reached:
            accepted.append(field)
        except (ValueError, TypeError, FileNotFoundError, ImportError) as error:
            named = [key for key in values if key in str(error)]
            assert named, f"{name}: {values} refused without naming the setting: {error}"
        assert not out.exists(), f"{name}: {values} left {out}"
    unread = [f for f in accepted if f in entry.unread_training]
    assert not unread, f"{name} accepted {unread}, which its entry says it does not read"
    if entry.fit is not None:  # its pipeline's own list of what it reads
        return
    steps = set(accepted) & set(STEP_FIELDS)
    if entry.rasterised:  # whole frames a step: no rays to stop early, no samples, no field MLPs' products
        assert not steps, f"{name} accepted {sorted(steps)}, which a rasteriser's steps have no use for"
    for field in steps if not entry.rasterised else ():
        assert _step_reads(model, subject, field), f"{name}: {field} accepted, and a training step ignores it"


def _step_reads(model, subject, field: str) -> bool:
    """Whether one training step of ``model`` on the same rays changes with ``field`` changed (for
    ``samples_per_batch``: whether it counts its samples, which the budget needs)."""
    head = tracked_head(model.parametric, subject.train)

    def step(early_stop=None, precision="float32"):
        with trusted_values():
            batch = ray_batch(subject.train, 64, torch.Generator().manual_seed(1), torch.device("cpu"), None, None, head)
        batch.context = RenderContext(torch.Generator().manual_seed(2), early_stop)
        with trusted_values(), products_in(precision, autograd=True):
            return model.training_step(batch, 10)

    if field == "samples_per_batch":
        return step().samples is not None
    changed = {"early_stop": {"early_stop": CHANGED["early_stop"]["early_stop"]}, "precision": {"precision": "bfloat16"}}
    if id(model) not in _BASE_LOSS:  # one unchanged step a model
        _BASE_LOSS[id(model)] = float(step().loss.detach())
    return float(step(**changed[field]).loss.detach()) != _BASE_LOSS[id(model)]


_BASE_LOSS: dict[int, float] = {}


@pytest.mark.parametrize("name", list(MODELS))
def test_every_subject_flag_is_read_or_refused_by_name(name):
    entry = MODELS[name]
    given = {"data": "capture", "video": "clip.mp4", "model": "flame", "regions": "regions.json"}
    given |= {"eval_split": "val", "all_held_out": "True"}
    for flag in SUBJECT_FLAGS:
        argv = ["--device", "cpu", f"--{flag.replace('_', '-')}", given[flag]]
        if flag in entry.subject_flags:
            continue  # read: where the subject comes from (each reader's own tests)
        with pytest.raises(ValueError, match=rf"^{flag}: {name} does not read --{flag.replace('_', '-')}: leave it out"):
            run_config(name, argv)
    if "all_held_out" not in entry.subject_flags:  # what its run does, said in config.json
        assert run_config(name, ["--device", "cpu"])[0].subject.all_held_out is False
