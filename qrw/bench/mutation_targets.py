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
           ("tests/test_metrics_by_hand.py", "tests/test_metrics.py")),
)

# (file, original line, mutated line) -> why the mutant computes the same thing as the original.
EQUIVALENT: dict[tuple[str, str, str], str] = {
    ('qrw/grpo.py', 'if rewards.shape[1] < 2:',
     'if rewards.shape[(-1)] < 2:'):
        'rewards is 2-D here (checked on the line before): shape[-1] is shape[1]',
    ('qrw/grpo.py', 'centered = rewards - rewards.mean(dim=1, keepdim=True)  # (P, G) - (P, 1) -> (P, G)',
     'centered = rewards - rewards.mean(dim=(-1), keepdim=True)  # (P, G) - (P, 1) -> (P, G)'):
        'rewards is (P, G): dim -1 is dim 1',
    ('qrw/grpo.py', 'advantages = centered / (rewards.std(dim=1, keepdim=True) + eps)  # (P, G) / (P, 1)',
     'advantages = centered / (rewards.std(dim=(-1), keepdim=True) + eps)  # (P, G) / (P, 1)'):
        'rewards is (P, G): dim -1 is dim 1',
    ('qrw/grpo.py', 'has_spread = dynamic_sampling_mask(rewards).unsqueeze(1)  # (P,) -> (P, 1)',
     'has_spread = dynamic_sampling_mask(rewards).unsqueeze((-1))  # (P,) -> (P, 1)'):
        'the mask is 1-D: unsqueeze(-1) is unsqueeze(1)',
    ('qrw/grpo.py', 'return rewards.amax(dim=1) != rewards.amin(dim=1)  # (P, G) -> (P,)',
     'return rewards.amax(dim=(-1)) != rewards.amin(dim=1)  # (P, G) -> (P,)'):
        'rewards is (P, G): dim -1 is dim 1',
    ('qrw/grpo.py', 'return rewards.amax(dim=1) != rewards.amin(dim=1)  # (P, G) -> (P,)',
     'return rewards.amax(dim=1) != rewards.amin(dim=(-1))  # (P, G) -> (P,)'):
        'rewards is (P, G): dim -1 is dim 1',
    ('qrw/grpo.py', 'eos_before = is_eos.cumsum(dim=1) - is_eos  # (B, L): number of EOS strictly before position t',
     'eos_before = is_eos.cumsum(dim=(-1)) - is_eos  # (B, L): number of EOS strictly before position t'):
        'tokens is (B, L) (checked above): dim -1 is dim 1',
    ('qrw/grpo.py', 'max_len = mask.shape[1] if max_len is None else int(max_len)',
     'max_len = mask.shape[(-1)] if max_len is None else int(max_len)'):
        'the mask is (B, T): shape[-1] is shape[1]',
    ('qrw/grpo.py', 'if max_len < max(mask.shape[1], 1):',
     'if max_len < max(mask.shape[(-1)], 1):'):
        'the mask is (B, T): shape[-1] is shape[1]',
    ('qrw/grpo.py', 'lengths = mask.sum(dim=1, keepdim=True).clamp(min=1).to(logp.dtype)  # (B, 1) n_i',
     'lengths = (mask.sum(dim=1, keepdim=True)).to(logp.dtype)  # (B, 1) n_i'):
        'only an empty row has n_i < 1: its ratio (0/0 = NaN) is never used: aggregate_loss zeroes the row with torch.where, the statistics are masked, and no unmasked token carries a gradient back (tests: p11, p28 with empty rows)',
    ('qrw/grpo.py', 'lengths = mask.sum(dim=1, keepdim=True).clamp(min=1).to(logp.dtype)  # (B, 1) n_i',
     'lengths = mask.sum(dim=1, keepdim=True).clamp(min=(0)).to(logp.dtype)  # (B, 1) n_i'):
        'as without the clamp: only an empty row differs, and its ratio is never used (torch.where in aggregate_loss, masked statistics)',
    ('qrw/grpo.py', 'lengths = mask.sum(dim=1, keepdim=True).clamp(min=1).to(logp.dtype)  # (B, 1) n_i',
     'lengths = mask.sum(dim=1, keepdim=True).clamp(min=(-1)).to(logp.dtype)  # (B, 1) n_i'):
        'as without the clamp: only an empty row differs, and its ratio is never used (torch.where in aggregate_loss, masked statistics)',
    ('qrw/grpo.py', 'lengths = mask.sum(dim=1, keepdim=True).clamp(min=1).to(logp.dtype)  # (B, 1) n_i',
     'lengths = mask.sum(dim=(-1), keepdim=True).clamp(min=1).to(logp.dtype)  # (B, 1) n_i'):
        'the mask is (B, T): dim -1 is dim 1',
    ('qrw/grpo.py', 'mean_log_ratio = (logp - old_logp).sum(dim=1, keepdim=True) / lengths  # (B, T) -> (B, 1)',
     'mean_log_ratio = (logp - old_logp).sum(dim=(-1), keepdim=True) / lengths  # (B, T) -> (B, 1)'):
        'logp is (B, T): dim -1 is dim 1',
    ('qrw/grpo.py', 'return -torch.minimum(ratio * advantage, clipped * advantage)',
     'return -(torch.minimum(clipped * advantage, ratio * advantage))'):
        'torch.minimum is symmetric in its arguments, values and gradients (at a tie each side gets half the gradient)',
    ('qrw/grpo.py', 'advantage = advantages.detach().to(logp.dtype).unsqueeze(1)  # (B,) -> (B, 1), broadcast over tokens',
     'advantage = advantages.detach().to(logp.dtype).unsqueeze((-1))  # (B,) -> (B, 1), broadcast over tokens'):
        'advantages is (B,) (checked): unsqueeze(-1) is unsqueeze(1)',
    ('qrw/grpo.py', 'lengths = mask.sum(dim=1).clamp(min=1).to(surrogate.dtype)  # (B,) n_i',
     'lengths = mask.sum(dim=(-1)).clamp(min=1).to(surrogate.dtype)  # (B,) n_i'):
        'the mask is (B, T): dim -1 is dim 1',
    ('qrw/grpo.py', 'sequence_loss = surrogate.squeeze(1)  # (B, 1) -> (B,)',
     'sequence_loss = surrogate.squeeze((-1))  # (B, 1) -> (B,)'):
        'the GSPO surrogate is (B, 1): squeeze(-1) is squeeze(1)',
    ('qrw/grpo.py', 'sequence_loss = sequence_loss + beta * kl.sum(dim=1) / lengths  # (B,)',
     'sequence_loss = sequence_loss + beta * kl.sum(dim=(-1)) / lengths  # (B,)'):
        'kl is (B, T): dim -1 is dim 1',
    ('qrw/grpo.py', 'has_tokens = mask.any(dim=1)  # (B,)',
     'has_tokens = mask.any(dim=(-1))  # (B,)'):
        'the mask is (B, T): dim -1 is dim 1',
    ('qrw/grpo.py', 'return (token_loss.sum(dim=1) / lengths).sum()  # (B, T) -> (B,) -> scalar',
     'return (token_loss.sum(dim=(-1)) / lengths).sum()  # (B, T) -> (B,) -> scalar'):
        'token_loss is (B, T): dim -1 is dim 1',
    ('qrw/rewards.py', 'count += sum(words[i:i + len(phrase)] == phrase for i in range(len(words) - len(phrase) + 1))',
     'count += sum(words[i:i + len(phrase)] == phrase for i in range((len(words) + len(phrase)) + 1))'):
        'the extra start positions give slices shorter than the phrase, never equal to it (a category name is never empty)',
    ('qrw/rewards.py', 'count += sum(words[i:i + len(phrase)] == phrase for i in range(len(words) - len(phrase) + 1))',
     'count += sum(words[i:i + len(phrase)] == phrase for i in range(len(words) - len(phrase) + (2)))'):
        'the one extra start position gives a slice shorter than the phrase, never equal to it (a category name is never empty)',
    ('qrw/sft.py', 'correct = (logits.argmax(-1) == targets).float()  # (N,)',
     'correct = (logits.argmax((1)) == targets).float()  # (N,)'):
        'logits are (N, V) here (selected above): dim 1 is dim -1',
    ('qrw/sft.py', 'correct = (logits.argmax(-1) == targets).float()  # (N,)',
     'correct = (logits.argmax(-(-1)) == targets).float()  # (N,)'):
        'logits are (N, V) here (selected above): dim 1 is dim -1',
    ('qrw/shop/metrics.py', 'exact_on_page = (grades == EXACT).sum(axis=1).astype(np.float64)  # (B,)',
     'exact_on_page = (grades == EXACT).sum(axis=(-1)).astype(np.float64)  # (B,)'):
        'grades is (B, k): axis -1 is axis 1',
    ('qrw/shop/metrics.py', 'recall = np.where(exact_total > 0, exact_on_page / np.minimum(exact_total, k), np.nan)',
     'recall = np.where((exact_total >= 0), exact_on_page / np.minimum(exact_total, k), np.nan)'):
        "with no exact product in the catalog none is on the page either: 0 / 0 is NaN, as the original's branch",
    ('qrw/shop/metrics.py', 'recall = np.where(exact_total > 0, exact_on_page / np.minimum(exact_total, k), np.nan)',
     'recall = np.where(exact_total > 0, exact_on_page / (np.minimum(k, exact_total)), np.nan)'):
        'np.minimum is symmetric in its arguments',
}
