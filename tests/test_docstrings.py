"""The examples in the numerical modules' docstrings run and print what they show."""

import doctest

import pytest

from aeflow.runtime import inversion, sampler


@pytest.mark.parametrize("module", [inversion, sampler], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 4 and result.failed == 0
