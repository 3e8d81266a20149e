"""The names that moved to headfields.synthetic live there only: the packages they moved from have no alias of them
(issue 76: the deprecation shims went before the first release), and do not import headfields.synthetic."""

import importlib
import subprocess
import sys

import pytest

import headfields.synthetic

MOVED = [
    ("headfields.data", "SyntheticVideoConfig"),
    ("headfields.data", "cached_synthetic_video"),
    ("headfields.data", "make_synthetic_video"),
    ("headfields.parametric", "SYNTHETIC_EXPRESSIONS"),
    ("headfields.parametric", "write_synthetic_flame"),
    ("headfields.parametric", "write_synthetic_smplx"),
]


@pytest.mark.parametrize(("package", "name"), MOVED)
def test_a_moved_name_is_in_synthetic_only(package, name):
    assert hasattr(headfields.synthetic, name)
    with pytest.raises(AttributeError, match=name):
        getattr(importlib.import_module(package), name)


def test_data_and_parametric_import_without_synthetic():
    """No cycle: the core packages load without importing headfields.synthetic, which then loads after them (this
    process imported synthetic first, the other order)."""
    code = (
        "import sys, headfields.data, headfields.parametric; assert 'headfields.synthetic' not in sys.modules; "
        "import headfields.synthetic"
    )
    subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", code], check=True)
