"""The Gaussian avatar's ``teeth`` switch: GaussianAvatars' FLAME (VHAP's teeth on FLAME's 5,023 vertices) built by
the registry, on by default for that FLAME alone, off for a config.json written before the switch, the capture's
static offsets on the teeth kept, Gaussians on every teeth face, and the export's ``static_offset`` over that mesh.
The model here is a small FLAME padded to FLAME's vertex count, so that VHAP's lip ring ids exist."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from headfields.configs import config_from_dict, config_to_dict
from headfields.models.gaussian_avatars import GaussianAvatarConfig, cpu_config, paper_config
from headfields.models.gaussian_avatars.export import flame_param_arrays
from headfields.models.registry import build_model
from headfields.parametric import ParametricModel, TrackedMeshModel
from headfields.parametric.teeth import FLAME_VERTICES, has_flame_teeth

from helpers import raises_naming
from model_files import flame_arrays

TEETH_VERTICES, TEETH_FACES = 120, 168


@pytest.fixture(scope="module")
def flame():
    """flame_arrays' sphere with unused vertices up to FLAME's count, at random points of the head's size."""
    arrays = flame_arrays(2)
    n = len(arrays["v_template"])
    pad = FLAME_VERTICES - n
    rng = np.random.default_rng(0)
    arrays["v_template"] = np.concatenate([arrays["v_template"], rng.uniform(-0.08, 0.08, (pad, 3))])
    for key in ("shapedirs", "posedirs"):
        arrays[key] = np.concatenate([arrays[key], np.zeros((pad, *arrays[key].shape[1:]))])
    arrays["J_regressor"] = np.pad(arrays["J_regressor"], ((0, 0), (0, pad)))
    arrays["weights"] = np.concatenate([arrays["weights"], np.eye(5)[np.zeros(pad, int)]])
    return ParametricModel(arrays, num_shape=10, num_expression=10)


def subject_of(parametric, static_offset=None):
    return SimpleNamespace(parametric=parametric, train=SimpleNamespace(params=SimpleNamespace(static_offset=static_offset)))


def test_the_switch_builds_gaussian_avatars_mesh_with_the_captures_teeth_offsets(flame):
    offset = torch.randn(FLAME_VERTICES + TEETH_VERTICES, 3, generator=torch.Generator().manual_seed(1)) * 1e-3
    plain = build_model("gaussian_avatar", subject_of(flame), cpu_config(teeth=False))
    assert plain.parametric is flame and plain.gaussians.num_faces == flame.faces.shape[0]
    avatar = build_model(
        "gaussian_avatar", subject_of(flame.with_static_offset(offset[:FLAME_VERTICES]), offset), cpu_config(teeth=True)
    )
    teeth = avatar.parametric
    assert has_flame_teeth(teeth) and not has_flame_teeth(flame)
    assert teeth.num_vertices == FLAME_VERTICES + TEETH_VERTICES and teeth.faces.shape[0] == flame.faces.shape[0] + TEETH_FACES
    assert (
        avatar.gaussians.num_faces == teeth.faces.shape[0]
        and int((avatar.gaussians.parent >= flame.faces.shape[0]).sum()) == TEETH_FACES
    )
    torch.testing.assert_close(teeth.static_offset, offset, rtol=0, atol=0)  # VHAP's own teeth rows
    head = teeth(pose=torch.zeros(2, 5, 3))
    arrays = flame_param_arrays(teeth, head)  # the export: the mesh has GaussianAvatars' teeth already
    np.testing.assert_array_equal(arrays["static_offset"], offset[None].numpy())
    assert arrays["dynamic_offset"].shape == (2, FLAME_VERTICES + TEETH_VERTICES, 3)


def test_teeth_without_a_flame_model_are_refused(flame):
    tracked = TrackedMeshModel(flame.v_template, flame.faces, 0)
    with raises_naming("recipe"):
        build_model("gaussian_avatar", subject_of(tracked), cpu_config(teeth=True))


def test_teeth_are_on_by_default_for_flames_5023_vertices_alone(flame):
    for recipe in (cpu_config(), paper_config()):
        assert recipe.teeth is None
        avatar = build_model("gaussian_avatar", subject_of(flame), recipe)
        assert has_flame_teeth(avatar.parametric) and avatar.gaussians.num_faces == flame.faces.shape[0] + TEETH_FACES
    small = ParametricModel(flame_arrays(2), num_shape=10, num_expression=10)  # a FLAME of fewer vertices: no lip rings
    assert build_model("gaussian_avatar", subject_of(small), cpu_config()).parametric is small
    tracked = TrackedMeshModel(flame.v_template, flame.faces, 0)  # FLAME's count, no model: none either
    assert build_model("gaussian_avatar", subject_of(tracked), cpu_config()).parametric is tracked


def test_a_config_written_before_the_switch_loads_without_teeth():
    saved = config_to_dict(cpu_config())
    assert saved["teeth"] is None and config_from_dict(saved, GaussianAvatarConfig).teeth is None
    for value in (True, False):
        assert config_from_dict({**saved, "teeth": value}, GaussianAvatarConfig).teeth is value
    del saved["teeth"]  # as config.json was written before the field existed: those runs were trained without
    assert config_from_dict(saved, GaussianAvatarConfig).teeth is False
    with pytest.raises(TypeError, match="teeth"):
        cpu_config(teeth=1)
