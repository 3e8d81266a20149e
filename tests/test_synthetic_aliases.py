"""The deprecated aliases of the names that moved to headfields.synthetic: each warns, naming the new location,
and returns the very object headfields.synthetic exports. The packages they moved from do not import it."""

import importlib
import subprocess
import sys

import pytest

import headfields.synthetic

ALIASES = [
    ("headfields.data", "SyntheticVideoConfig"),
    ("headfields.data", "cached_synthetic_video"),
    ("headfields.data", "make_synthetic_video"),
    ("headfields.parametric", "SYNTHETIC_EXPRESSIONS"),
    ("headfields.parametric", "write_synthetic_flame"),
    ("headfields.parametric", "write_synthetic_smplx"),
]


@pytest.mark.parametrize(("package", "name"), ALIASES)
def test_alias_warns_and_is_the_moved_object(package, name):
    module = importlib.import_module(package)
    with pytest.warns(DeprecationWarning, match=rf"{package}\.{name} moved to headfields\.synthetic"):
        alias = getattr(module, name)
    assert alias is getattr(headfields.synthetic, name)


def test_unknown_names_still_raise_attribute_error():
    import headfields.data
    import headfields.parametric

    for module in (headfields.data, headfields.parametric):
        with pytest.raises(AttributeError, match="no_such_name"):
            module.no_such_name  # noqa: B018


def test_data_and_parametric_import_without_synthetic():
    """No cycle: the core packages load (in either order with synthetic) without importing headfields.synthetic."""
    code = (
        "import sys, headfields.data, headfields.parametric; assert 'headfields.synthetic' not in sys.modules; "
        "import headfields.synthetic"
    )
    subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", code], check=True)
    subprocess.run([sys.executable, "-c", "import headfields.synthetic, headfields.data"], check=True)
