"""The jaxtyping runtime checker is on in the tests (pyproject's addopts), and the ``unchecked`` marker of the
end-to-end runs turns it off for its test alone."""

import jaxtyping
import pytest
import torch

from headfields.renderers.samples import stratified_points

from helpers import shapes_unchecked

NEAR = torch.zeros(2, 2)  # stratified_points wants near: Float[Tensor, " R"]; its own code does not check it


def test_the_checker_rejects_a_shape_the_annotation_does_not_allow():
    with pytest.raises(jaxtyping.TypeCheckError, match="parameter 'near'"):
        stratified_points(NEAR, NEAR + 1, 4, None)


@pytest.mark.unchecked
def test_the_marker_turns_the_checker_off():
    assert jaxtyping.config.jaxtyping_disable
    with pytest.raises(RuntimeError, match="size of tensor"):  # torch's own error: the shape ran through unchecked
        stratified_points(NEAR, NEAR + 1, 4, None)


def test_the_switch_is_put_back():
    before = jaxtyping.config.jaxtyping_disable
    with pytest.raises(RuntimeError), shapes_unchecked():
        assert jaxtyping.config.jaxtyping_disable
        raise RuntimeError
    assert before is False and jaxtyping.config.jaxtyping_disable is False
