"""Helpers shared by the tests (pytest puts this folder on sys.path)."""

import pytest


def raises_naming(name: str):
    """Bad input raises a ValueError/TypeError that names ``name``: either the library's own
    ``"name: expected ..."`` message or the jaxtyping checker's ``parameter 'name'``."""
    return pytest.raises((ValueError, TypeError), match=rf"(^{name}:|parameter '{name}')")
