"""The docstring examples of the GRPO math and the rewards run as tests (STYLE.md, practice 9).

Each module's examples must all pass, and at least as many must run as the docstrings
hold today: a deleted or renamed example fails here instead of passing silently.
"""

import doctest

import pytest

import qrw.grpo
import qrw.rewards

# module -> the number of examples (">>>" lines) its docstrings hold today
EXAMPLES = {qrw.grpo: 2, qrw.rewards: 5}


@pytest.mark.parametrize("module", list(EXAMPLES), ids=lambda m: m.__name__)
def test_docstring_examples_run_and_pass(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    assert result.attempted >= EXAMPLES[module]
