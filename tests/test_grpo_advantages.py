"""Tests for the advantage half of the GRPO math in qrw/grpo.py: group advantages, fusion, masks, log-probs.

Each test is named after the property it pins (``test_pNN_...``); docs/GRPO_TESTS.md
states every property and maps it to its tests. The loss half (ratio, clipping, KL,
aggregation) is in test_grpo_loss.py; the model-facing tests (scoring a packed
batch, the update loop, the toy bandit) in test_grpo_update.py.
"""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from qrw.grpo import (
    completion_mask,
    dynamic_sampling_mask,
    group_advantages,
    token_logprobs,
    zero_spread_fraction,
)
from qrw.rewards import fuse_rewards
from qrw.update import token_entropy



# ---------------------------------------------------------------------------
# Advantages (properties 1-7)
# ---------------------------------------------------------------------------


def test_p01_groups_sum_to_zero_and_have_unit_std():
    """P1: each group's advantages sum to 0; with std scaling their sample std is ~1."""
    rewards = torch.randn(5, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for scale in ("group", "batch", "none"):
        advantages = group_advantages(rewards, scale=scale)
        assert advantages.shape == (5, 8)
        assert torch.allclose(advantages.sum(dim=1), torch.zeros(5, dtype=torch.float64), atol=1e-12)
    group = group_advantages(rewards, scale="group", eps=0.0)
    assert torch.allclose(group.std(dim=1), torch.ones(5, dtype=torch.float64), atol=1e-12)
    batch = group_advantages(rewards, scale="batch", eps=0.0)
    expected = (rewards - rewards.mean(1, keepdim=True)) / rewards.std()
    assert torch.allclose(batch, expected, atol=1e-12)


def test_p01_p05_parity_with_a_naive_loop():
    """P1, P5: every group is normalised on its own, exactly as a per-group loop with statistics.stdev."""
    rewards = torch.rand(4, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    advantages = group_advantages(rewards, scale="group", eps=1e-6)
    for p in range(4):
        values = rewards[p].tolist()
        mean, stdev = statistics.fmean(values), statistics.stdev(values)
        for g in range(5):
            assert advantages[p, g].item() == pytest.approx((values[g] - mean) / (stdev + 1e-6), abs=1e-12)


def test_p02_worked_values():
    """P2: rewards [1, 0, 1, 0] give +-0.866 (unbiased std sqrt(1/3)); +-0.5 without scaling."""
    rewards = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    group = group_advantages(rewards, scale="group", eps=0.0)
    assert torch.allclose(group, torch.tensor([[1.0, -1.0, 1.0, -1.0]]) * math.sqrt(3) / 2, atol=1e-6)
    assert group[0, 0].item() == pytest.approx(0.8660254, abs=1e-6)  # a biased std would give 1.0
    none = group_advantages(rewards, scale="none")
    assert torch.equal(none, torch.tensor([[0.5, -0.5, 0.5, -0.5]]))
    # batch: [[1, 0, 1, 0], [1, 1, 1, 1]] -> std over the 8 rewards = sqrt(1.5 / 7); the second group is 0
    batch = group_advantages(torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]]), scale="batch", eps=0.0)
    assert batch[0, 0].item() == pytest.approx(0.5 / math.sqrt(1.5 / 7), abs=1e-6)
    assert torch.equal(batch[1], torch.zeros(4))


def test_p03_all_equal_group_is_exactly_zero():
    """P3: an all-equal group gets exactly 0 (even where the float mean is inexact), no NaN; counted in the share."""
    # In float32, mean([0.9, 0.9, 0.9]) != 0.9: r - mean is 6e-8, which eps alone would not zero.
    rewards = torch.tensor([[0.9, 0.9, 0.9], [1.0, 0.0, 0.5], [0.0, 0.0, 0.0], [5.0, 5.0, 5.0]])
    assert (rewards[0] - rewards[0].mean()).abs().max() > 0  # the trap is real
    for scale in ("group", "batch", "none"):
        for eps in (1e-6, 0.0):
            advantages = group_advantages(rewards, scale=scale, eps=eps)
            assert not torch.isnan(advantages).any()
            for p in (0, 2, 3):
                assert torch.equal(advantages[p], torch.zeros(3)), (scale, eps, p)
            assert advantages[1].abs().sum() > 0
    everything_equal = group_advantages(torch.full((2, 4), 0.3), scale="batch", eps=0.0)
    assert torch.equal(everything_equal, torch.zeros(2, 4))
    assert zero_spread_fraction(rewards) == pytest.approx(0.75)
    assert dynamic_sampling_mask(rewards).tolist() == [False, True, False, False]


def test_p04_shift_and_scale_invariance():
    """P4: adding a constant changes nothing; scaling by k changes nothing with std scaling, scales A by k without."""
    rewards = torch.rand(3, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for scale in ("group", "batch", "none"):
        base = group_advantages(rewards, scale=scale, eps=0.0)
        # "group"/"none": a different constant per group; "batch" shares one std, so one constant for all
        shift = 3.0 if scale == "batch" else torch.tensor([[3.0], [-7.0], [100.0]], dtype=torch.float64)
        shifted = rewards + shift
        assert torch.allclose(group_advantages(shifted, scale=scale, eps=0.0), base, atol=1e-9)
        scaled = group_advantages(4.0 * rewards, scale=scale, eps=0.0)
        expected = 4.0 * base if scale == "none" else base
        assert torch.allclose(scaled, expected, atol=1e-12)


def test_p05_groups_are_independent():
    """P5: changing one group leaves the other groups' advantages unchanged ("group" and "none" scale)."""
    rewards = torch.rand(3, 4, generator=torch.Generator().manual_seed(3))
    changed = rewards.clone()
    changed[1] = torch.tensor([10.0, -3.0, 0.0, 2.0])
    for scale in ("group", "none"):
        before, after = group_advantages(rewards, scale=scale), group_advantages(changed, scale=scale)
        assert torch.equal(before[0], after[0]) and torch.equal(before[2], after[2])
        assert not torch.equal(before[1], after[1])
    # "batch" shares one std across groups by design: other groups rescale, their signs and ranking do not change.
    before, after = group_advantages(rewards, scale="batch"), group_advantages(changed, scale="batch")
    assert torch.equal(before[0].sign(), after[0].sign())


def test_p05_flat_prompt_major_layout():
    """P5: a flat (P*G,) prompt-major reward vector maps to (P, G) by view: row p*G+g <-> [p, g]."""
    num_prompts, group_size = 3, 4
    flat = torch.tensor([10.0 * p + g for p in range(num_prompts) for g in range(group_size)])  # row p*G+g
    grouped = flat.view(num_prompts, group_size)
    for p in range(num_prompts):
        for g in range(group_size):
            assert grouped[p, g].item() == 10.0 * p + g
    advantages = group_advantages(grouped).reshape(-1)  # back to rows
    assert torch.allclose(advantages[:group_size], group_advantages(flat[:group_size].view(1, -1)).reshape(-1))


def test_p07_rewards_are_fused_before_normalisation():
    """P7: fuse_rewards is the plain weighted sum of raw components; advantages come from that sum."""
    relevance = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    conversion = torch.tensor([[0.0, 0.0, 0.0, 4.0]])
    fused = fuse_rewards({"relevance": relevance, "conversion": conversion}, {"relevance": 1.0, "conversion": 0.5})
    assert torch.equal(fused, torch.tensor([[1.0, 0.0, 1.0, 2.0]]))
    # Normalising each component first would be a different (wrong) quantity.
    per_component = group_advantages(relevance) + 0.5 * group_advantages(conversion)
    assert not torch.allclose(group_advantages(fused), per_component, atol=1e-3)
    assert torch.allclose(group_advantages(fused), group_advantages(relevance + 0.5 * conversion))
    flat = fuse_rewards({"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([3.0, 5.0])}, {"a": 2.0, "b": -1.0})
    assert torch.equal(flat, torch.tensor([-1.0, -1.0]))
    with pytest.raises(ValueError, match="no weight"):
        fuse_rewards({"relevance": relevance, "conversion": conversion}, {"relevance": 1.0})
    with pytest.raises(ValueError, match="unknown reward"):
        fuse_rewards({"relevance": relevance}, {"relevance": 1.0, "relevence": 1.0})
    with pytest.raises(ValueError, match="same shape"):
        fuse_rewards({"a": relevance, "b": torch.zeros(4)}, {"a": 1.0, "b": 1.0})


# ---------------------------------------------------------------------------
# Masking and log-probs (properties 8 and 10)
# ---------------------------------------------------------------------------


def test_p08_completion_mask():
    """P8: 1 up to and including the first EOS; no EOS -> all ones; correct when pad == eos."""
    eos = 0
    tokens = torch.tensor([
        [5, 6, 0, 3, 0],  # EOS in the middle, tokens after it (even another EOS) are masked
        [0, 4, 4, 4, 4],  # EOS first: only the EOS counts
        [5, 6, 7, 8, 9],  # no EOS: truncated, all ones
        [5, 0, 0, 0, 0],  # pad == eos: padding after the EOS is more EOS tokens
    ])
    assert completion_mask(tokens, eos).tolist() == [
        [1, 1, 1, 0, 0],
        [1, 0, 0, 0, 0],
        [1, 1, 1, 1, 1],
        [1, 1, 0, 0, 0],
    ]
    assert completion_mask(tokens, eos).dtype == torch.float32


def test_p10_token_logprobs_equals_log_softmax_over_temperature():
    """P10: token_logprobs is log_softmax(logits / T) at the target, checked against a per-element loop."""
    generator = torch.Generator().manual_seed(4)
    logits = 3 * torch.randn(2, 3, 5, generator=generator)
    targets = torch.randint(0, 5, (2, 3), generator=generator)
    for temperature in (1.0, 0.7, 2.0):
        values = token_logprobs(logits, targets, temperature)
        assert values.shape == (2, 3)
        for b in range(2):
            for t in range(3):
                scaled = [x / temperature for x in logits[b, t].tolist()]
                expected = scaled[targets[b, t]] - math.log(sum(math.exp(x) for x in scaled))
                assert values[b, t].item() == pytest.approx(expected, abs=1e-5)
    assert not torch.allclose(token_logprobs(logits, targets, 0.7), token_logprobs(logits, targets, 1.0))
    entropy = token_entropy(logits, 1.0)  # the diagnostic, same convention
    probs = torch.softmax(logits, -1)
    assert torch.allclose(entropy, -(probs * probs.log()).sum(-1), atol=1e-5)


# ---------------------------------------------------------------------------
# Dynamic sampling (property 22)
# ---------------------------------------------------------------------------


def test_p22_dynamic_sampling_drops_exactly_the_zero_spread_groups():
    """P22: dynamic_sampling_mask keeps exactly the groups whose rewards are not all equal."""
    rewards = torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [0.5, 0.5, 0.5], [2.0, 0.0, 0.0],
                            [0.0, 0.0, 1e-7]])
    keep = dynamic_sampling_mask(rewards)
    assert keep.dtype == torch.bool and keep.tolist() == [False, True, False, True, True]
    assert zero_spread_fraction(rewards) == pytest.approx(2 / 5)
    kept = group_advantages(rewards[keep])
    assert kept.shape == (3, 3) and (kept.abs().sum(dim=1) > 0).all()
