"""The training loop's protocols (training.contract) against every kind of model, as Python 3.11 and 3.12+ check
them: from 3.12 on, ``isinstance`` on a runtime protocol looks each member up with ``inspect.getattr_static``,
which does not see an ``nn.Module``'s submodules (they live in its ``_modules``)."""

import inspect
import sys
import typing
from typing import Protocol, runtime_checkable

import pytest
from tiny_configs import TINY_INSTA, TINY_MONOAVATAR, TINY_PORTRAIT

from headfields.models.gaussian_avatars import GaussianAvatar, cpu_config
from headfields.models.insta import Insta
from headfields.models.mixes import MIXES
from headfields.models.monoavatar import MonoAvatar
from headfields.models.portrait360 import Portrait360
from headfields.parametric import load_model
from headfields.training import AvatarModel, ImageModel


def members(protocol) -> set[str]:
    return set(protocol.__protocol_attrs__ if sys.version_info >= (3, 12) else typing._get_protocol_attrs(protocol))


def meets_as_python_312_checks(instance, protocol) -> bool:
    """``isinstance(instance, protocol)`` by CPython 3.12's rule (``typing._ProtocolMeta.__instancecheck__``): every
    member found by a static lookup, and a callable one not None."""
    for name in members(protocol):
        try:
            value = inspect.getattr_static(instance, name)
        except AttributeError:
            return False
        if value is None and name not in protocol.__non_callable_proto_members__:
            return False
    return True


@pytest.fixture(scope="module")
def models(tiny_video, tiny_orbit_video):
    train = tiny_video[0]
    flame = load_model(train.model_path, train.model_type)
    orbit = tiny_orbit_video[0]
    return {
        "insta": Insta(flame, train.segmentation_labels, TINY_INSTA),
        "monoavatar": MonoAvatar(flame, len(train), TINY_MONOAVATAR),
        "portrait360": Portrait360(load_model(orbit.model_path, orbit.model_type), TINY_PORTRAIT),
        "mix_triangle_neus": MIXES["mix_triangle_neus"].build(flame, train),
        "gaussian_avatar": GaussianAvatar(flame, cpu_config()),
    }


@pytest.mark.parametrize(
    ("name", "protocol"),
    [
        ("insta", AvatarModel),
        ("monoavatar", AvatarModel),
        ("portrait360", AvatarModel),
        ("mix_triangle_neus", AvatarModel),
        ("gaussian_avatar", ImageModel),
    ],
)
def test_every_kind_of_model_meets_its_protocol_on_each_python(models, name, protocol):
    model = models[name]
    assert isinstance(model, protocol)  # this interpreter's own rule
    assert meets_as_python_312_checks(model, protocol)
    other = ImageModel if protocol is AvatarModel else AvatarModel
    assert not isinstance(model, other) and not meets_as_python_312_checks(model, other)


def test_a_submodule_as_a_protocol_member_fails_python_312s_check(models):
    """What the protocols avoid: ``parametric`` as a member, which Python 3.12 cannot see on any model (the rule
    above is not vacuous); a plain attribute (``optimization``) and methods it sees."""

    @runtime_checkable
    class WithParametric(Protocol):
        parametric: object

    @runtime_checkable
    class WithOptimization(Protocol):
        optimization: object

        def render_rays(self, rays, head): ...

    insta = models["insta"]
    assert insta.parametric is not None and not meets_as_python_312_checks(insta, WithParametric)
    assert meets_as_python_312_checks(insta, WithOptimization)
    if sys.version_info >= (3, 12):
        assert not isinstance(insta, WithParametric)


def test_the_protocols_name_what_the_loop_reads():
    assert members(AvatarModel) == {"optimization", "training_step", "render_rays"}
    assert members(ImageModel) == {"render_camera"}
