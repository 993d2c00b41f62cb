"""What ``python -m qrw.bench.mutation`` mutates, which tests judge each module, and the equivalent mutants.

Kept apart from the runner so that the declarations read as a table: a target is
a module, the functions of it that hold the method's math (``None``: the whole
function; a tuple of substrings: only its statements whose first line contains one
of them), and the tests that cover it, fastest first (``pytest -x`` stops at the
first failure, so a mutant is usually killed in the first file).

:data:`EQUIVALENT` lists the surviving mutants that compute the same thing as the
original on every input a caller can reach, each with the reason; the key is
(file, original line, mutated line), both stripped, so that edits elsewhere in the
file do not detach a reason from its mutant, and an edit of the line itself does
(its mutants must then be judged again). docs/GRPO_TESTS.md gives the table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """One module under mutation: its short name, file, functions and tests."""

    name: str
    path: str
    functions: dict[str, tuple[str, ...] | None]
    tests: tuple[str, ...]


HARDENING_BOUND = ("tests/test_hardening.py::test_p28_loss_gradient_and_stats_are_finite_for_extreme_log_ratios",
                   "tests/test_hardening.py::test_the_bound_changes_nothing_where_log_ratios_are_moderate",
                   "tests/test_hardening.py::test_beyond_the_bound_values_are_clamped_and_the_gradient_is_zero")

TARGETS = (
    Target("grpo", "qrw/grpo.py", {"*": None, "<module>": None},
           ("tests/test_grpo_advantages.py", "tests/test_grpo_loss.py", "tests/test_mutants_killed.py",
            "tests/test_grpo_doctest.py", *HARDENING_BOUND, "tests/test_grpo_update.py", "tests/test_grpo_loop.py")),
    Target("update", "qrw/update.py",
           {"global_normalizer": None, "grpo_update": ("normalizer",),
            "update_policy": ("global_normalizer", "scale", "keep.sum")},
           ("tests/test_mutants_killed.py", "tests/test_grpo_update.py", "tests/test_grpo_loop.py")),
    Target("ranks", "qrw/distributed.py", {"count_over_ranks": None},
           ("tests/test_mutants_killed.py", "tests/test_distributed.py::test_single_process_helpers_are_the_identity")),
    Target("rewards", "qrw/rewards.py",
           {"fuse_rewards": None, "format_reward": None, "rule_rewards": None,
            "category_mentions": None},
           ("tests/test_mutants_killed.py", "tests/test_rules.py", "tests/test_grpo_doctest.py",
            "tests/test_grpo_advantages.py")),
    Target("sft", "qrw/sft.py", {"target_tokens": None, "multitask_loss": None},
           ("tests/test_mutants_killed.py", "tests/test_sft.py")),
    Target("metrics", "qrw/shop/metrics.py", {"page_grades": None, "rewrite_metrics": None, "summarize": None},
           ("tests/test_metrics.py", "tests/test_mutants_killed.py")),
)

# (file, original line, mutated line) -> why the mutant computes the same thing as the original.
EQUIVALENT: dict[tuple[str, str, str], str] = {}
