"""Tests for the loss half of the GRPO math in qrw/grpo.py: ratio, clipping, KL, aggregation, arguments.

Each test is named after the property it pins (``test_pNN_...``); docs/GRPO_TESTS.md
states every property and maps it to its tests. The advantage half (group
advantages, fusion, masks, log-probs) is in test_grpo_advantages.py; the
model-facing tests in test_grpo_update.py.
"""

from __future__ import annotations

import math

import pytest
import torch

from qrw.grpo import (
    LOSS_TYPES,
    group_advantages,
    kl_k3,
    loss_normalizer,
    policy_loss,
    token_logprobs,
)



# ---------------------------------------------------------------------------
# Helpers: random inputs and naive references written with Python loops
# ---------------------------------------------------------------------------


def random_loss_inputs(batch_size=4, num_tokens=6, lengths=(6, 3, 1, 0), seed=0, dtype=torch.float64):
    """logp, old_logp, ref_logp (B, T), advantages (B,), mask (B, T) with the given row lengths."""
    generator = torch.Generator().manual_seed(seed)
    logp = -2.0 * torch.rand(batch_size, num_tokens, generator=generator, dtype=dtype) - 0.05
    old_logp = logp + 0.3 * torch.randn(batch_size, num_tokens, generator=generator, dtype=dtype)
    ref_logp = logp + 0.3 * torch.randn(batch_size, num_tokens, generator=generator, dtype=dtype)
    advantages = torch.randn(batch_size, generator=generator, dtype=dtype)
    mask = (torch.arange(num_tokens)[None, :] < torch.tensor(lengths)[:, None]).to(dtype)
    return logp, old_logp, ref_logp, advantages, mask


def naive_policy_loss(logp, old_logp, advantages, mask, ref_logp=None, beta=0.0, clip_low=0.2,
                      clip_high=None, loss_type="grpo", max_len=None):
    """The policy loss of docs/GRPO_TESTS.md, one float at a time."""
    clip_high = clip_low if clip_high is None else clip_high
    batch_size, num_tokens = logp.shape
    max_len = num_tokens if max_len is None else max_len

    def clip(x):
        return min(max(x, 1 - clip_low), 1 + clip_high)

    def k3(lp, rp):
        delta = rp - lp
        return math.exp(delta) - delta - 1

    per_sequence, token_total, token_count = [], 0.0, 0
    for i in range(batch_size):
        tokens = [t for t in range(num_tokens) if mask[i, t] > 0]
        advantage = float(advantages[i])
        kl_terms = [k3(float(logp[i, t]), float(ref_logp[i, t])) for t in tokens] if beta > 0 else [0.0] * len(tokens)
        if loss_type == "gspo":
            if not tokens:
                per_sequence.append(0.0)
                continue
            s = math.exp(sum(float(logp[i, t] - old_logp[i, t]) for t in tokens) / len(tokens))
            per_sequence.append(-min(s * advantage, clip(s) * advantage) + beta * sum(kl_terms) / len(tokens))
            continue
        losses = []
        for t, kl in zip(tokens, kl_terms):
            rho = math.exp(float(logp[i, t] - old_logp[i, t]))
            losses.append(-min(rho * advantage, clip(rho) * advantage) + beta * kl)
        per_sequence.append(sum(losses) / max(len(tokens), 1))
        token_total += sum(losses)
        token_count += len(tokens)
    if loss_type in ("grpo", "gspo"):
        return sum(per_sequence) / batch_size
    if loss_type == "dapo":
        return token_total / max(token_count, 1)
    return token_total / (batch_size * max_len)


def aggregate(token_values, mask, loss_type, max_len=None):
    """The aggregation (docs/GRPO_TESTS.md, policy_loss) of a (B, T) per-token quantity ("gspo" aggregates like "grpo")."""
    batch_size, num_tokens = token_values.shape
    masked = token_values * mask
    if loss_type in ("grpo", "gspo"):
        return (masked.sum(1) / mask.sum(1).clamp(min=1)).sum() / batch_size
    if loss_type == "dapo":
        return masked.sum() / mask.sum().clamp(min=1)
    return masked.sum() / (batch_size * (num_tokens if max_len is None else max_len))


def grad_wrt_logp(logp, *args, **kwargs):
    """(loss, d loss / d logp) of policy_loss."""
    logp = logp.detach().clone().requires_grad_(True)
    loss, _ = policy_loss(logp, *args, **kwargs)
    (grad,) = torch.autograd.grad(loss, logp)
    return loss, grad


def one_token_cases(cases, dtype=torch.float64):
    """One single-token sequence per (advantage, rho) case: logp (B, 1), old_logp (B, 1), advantages, mask."""
    advantages = torch.tensor([a for a, _ in cases], dtype=dtype)
    rho = torch.tensor([[r] for _, r in cases], dtype=dtype)
    old_logp = torch.full_like(rho, -1.0)
    logp = old_logp + torch.log(rho)
    return logp, old_logp, advantages, torch.ones_like(rho)


# ---------------------------------------------------------------------------
# The advantage inside the loss (property 6)
# ---------------------------------------------------------------------------


def test_p06_advantage_is_broadcast_and_masked_tokens_contribute_nothing():
    """P6: every unmasked token of sequence i gets gradient -A_i / weight; masked tokens get 0, whatever their logp."""
    logp, _, _, advantages, mask = random_loss_inputs()
    old_logp = logp.clone()  # on-policy: rho = 1
    _, grad = grad_wrt_logp(logp, old_logp, advantages, mask, loss_type="dapo")
    expected = -advantages[:, None] * mask / mask.sum()  # (B, T)
    assert torch.allclose(grad, expected, atol=1e-12)
    garbage = torch.where(mask > 0, logp, torch.full_like(logp, -50.0))
    loss_a, _ = policy_loss(logp, old_logp, advantages, mask, loss_type="grpo")
    loss_b, _ = policy_loss(garbage, old_logp, advantages, mask, loss_type="grpo")
    assert loss_a.item() == loss_b.item()


# ---------------------------------------------------------------------------
# Padding and empty batches (property 11)
# ---------------------------------------------------------------------------


def test_p11_extra_padding_does_not_change_the_loss():
    """P11: appending masked columns (holding -inf, +inf or NaN) changes neither loss nor gradient, for every type."""
    logp, old_logp, ref_logp, advantages, mask = random_loss_inputs()
    batch_size, num_tokens = logp.shape
    pad = torch.tensor([[-math.inf, math.inf, math.nan]] * batch_size, dtype=logp.dtype)  # (B, 3)
    padded = [torch.cat([x, pad], dim=1) for x in (logp, old_logp, ref_logp)]  # (B, T + 3)
    padded_mask = torch.cat([mask, torch.zeros(batch_size, 3, dtype=mask.dtype)], dim=1)
    for loss_type in LOSS_TYPES:
        kwargs = dict(beta=0.1, loss_type=loss_type, max_len=num_tokens + 3)
        loss, grad = grad_wrt_logp(logp, old_logp, advantages, mask, ref_logp=ref_logp, **kwargs)
        padded_loss, padded_grad = grad_wrt_logp(padded[0], padded[1], advantages, padded_mask,
                                                 ref_logp=padded[2], **kwargs)
        assert torch.isfinite(padded_loss) and torch.isfinite(padded_grad).all()
        assert padded_loss.item() == pytest.approx(loss.item(), abs=1e-12), loss_type
        assert torch.allclose(padded_grad[:, :num_tokens], grad, atol=1e-12)
        assert torch.equal(padded_grad[:, num_tokens:], torch.zeros(batch_size, 3, dtype=logp.dtype))


def test_p11_all_masked_batch_gives_zero_loss():
    """P11: a batch with no unmasked token gives a finite loss of 0, zero gradient and finite stats."""
    logp, old_logp, ref_logp, advantages, _ = random_loss_inputs()
    mask = torch.zeros_like(logp)
    for loss_type in LOSS_TYPES:
        loss, grad = grad_wrt_logp(logp, old_logp, advantages, mask, ref_logp=ref_logp, beta=0.1, loss_type=loss_type)
        assert loss.item() == 0.0 and torch.equal(grad, torch.zeros_like(grad))
        _, stats = policy_loss(logp, old_logp, advantages, mask, ref_logp=ref_logp, beta=0.1, loss_type=loss_type)
        assert all(math.isfinite(v) for v in stats.values()) and stats["num_tokens"] == 0


# ---------------------------------------------------------------------------
# Ratio and clipping (properties 12-14)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_p12_on_policy_loss_is_the_no_ratio_surrogate(loss_type):
    """P12: with old = current, the loss value is aggregate(-A) and its gradient is autograd of aggregate(-A log pi)."""
    logp, _, _, advantages, mask = random_loss_inputs()
    old_logp = logp.detach().clone()
    loss, grad = grad_wrt_logp(logp, old_logp, advantages, mask, loss_type=loss_type)
    _, stats = policy_loss(logp, old_logp, advantages, mask, loss_type=loss_type)
    assert stats["ratio_mean"] == pytest.approx(1.0, abs=1e-12)
    minus_advantage = -advantages[:, None].expand_as(logp)  # (B, T)
    assert loss.item() == pytest.approx(aggregate(minus_advantage, mask, loss_type).item(), abs=1e-12)
    surrogate_logp = logp.detach().clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(aggregate(minus_advantage * surrogate_logp, mask, loss_type), surrogate_logp)
    assert torch.allclose(grad, expected, atol=1e-12)


@pytest.mark.parametrize("loss_type", ["grpo", "dapo"])
def test_p13_gradient_is_zero_outside_the_trust_region(loss_type):
    """P13: gradient 0 when A>0, rho>1+eps or A<0, rho<1-eps; else -A * rho * grad log pi (times 1/6 here)."""
    cases = [  # (advantage, rho) -> expected d loss / d logp before the 1/6 aggregation weight
        (1.0, 1.5), (1.0, 1.1), (1.0, 0.5),    # clipped; inside; below but A>0: the min keeps it (not clipped)
        (-1.0, 0.5), (-1.0, 0.9), (-1.0, 1.5),  # clipped; inside; above but A<0: not clipped
    ]
    expected = torch.tensor([[0.0], [-1.1], [-0.5], [0.0], [0.9], [1.5]], dtype=torch.float64) / 6
    logp, old_logp, advantages, mask = one_token_cases(cases)
    _, grad = grad_wrt_logp(logp, old_logp, advantages, mask, clip_low=0.2, loss_type=loss_type)
    assert torch.allclose(grad, expected, atol=1e-12)


def test_p14_asymmetric_clipping_sides():
    """P14: clip_high bounds rho from above for A>0, clip_low from below for A<0 (swapping them fails this test)."""
    cases = [(1.0, 1.25), (1.0, 1.30), (-1.0, 0.79), (-1.0, 0.75), (-1.0, 0.81)]
    expected = torch.tensor([[-1.25], [0.0], [0.0], [0.0], [0.81]], dtype=torch.float64) / 5
    logp, old_logp, advantages, mask = one_token_cases(cases)
    _, grad = grad_wrt_logp(logp, old_logp, advantages, mask, clip_low=0.2, clip_high=0.28, loss_type="dapo")
    assert torch.allclose(grad, expected, atol=1e-12)
    _, swapped = grad_wrt_logp(logp, old_logp, advantages, mask, clip_low=0.28, clip_high=0.2, loss_type="dapo")
    assert not torch.allclose(swapped, expected)
    _, stats = policy_loss(logp, old_logp, advantages, mask, clip_low=0.2, clip_high=0.28, loss_type="dapo")
    assert stats["clip_frac_high"] == pytest.approx(1 / 5) and stats["clip_frac_low"] == pytest.approx(2 / 5)


def test_p14_huge_clip_range_gives_the_unclipped_surrogate():
    """P14: with clip_low = clip_high = 1e6 the loss is aggregate(-rho * A) for every loss type."""
    logp, old_logp, _, advantages, mask = random_loss_inputs()
    rho = torch.exp(logp - old_logp)
    for loss_type in ("grpo", "dapo", "dr_grpo"):
        loss, _ = policy_loss(logp, old_logp, advantages, mask, clip_low=1e6, clip_high=1e6, loss_type=loss_type)
        expected = aggregate(-rho * advantages[:, None], mask, loss_type)
        assert loss.item() == pytest.approx(expected.item(), abs=1e-12)


def test_p14_clip_fractions_match_their_definitions():
    """P14: clip_frac_low = share of masked tokens with rho<1-clip_low and A<0; high: rho>1+clip_high and A>0."""
    generator = torch.Generator().manual_seed(5)
    logp = -torch.rand(6, 8, generator=generator)
    old_logp = logp + 0.4 * torch.randn(6, 8, generator=generator)
    advantages = torch.tensor([1.0, -1.0, 0.5, -2.0, 0.0, 1.0])
    mask = (torch.rand(6, 8, generator=generator) > 0.3).float()
    _, stats = policy_loss(logp, old_logp, advantages, mask, clip_low=0.1, clip_high=0.15, loss_type="dapo")
    low = high = total = 0
    ratio_sum = 0.0
    for i in range(6):
        for t in range(8):
            if mask[i, t] == 0:
                continue
            rho = math.exp(float(logp[i, t] - old_logp[i, t]))
            total += 1
            ratio_sum += rho
            low += int(rho < 0.9 and advantages[i].item() < 0)
            high += int(rho > 1.15 and advantages[i].item() > 0)
    assert low > 0 and high > 0
    assert stats["clip_frac_low"] == pytest.approx(low / total, abs=1e-6)
    assert stats["clip_frac_high"] == pytest.approx(high / total, abs=1e-6)
    assert stats["ratio_mean"] == pytest.approx(ratio_sum / total, abs=1e-5)
    assert stats["num_tokens"] == total


# ---------------------------------------------------------------------------
# KL (property 16)
# ---------------------------------------------------------------------------


def test_p16_k3_is_nonnegative_zero_iff_equal_and_quadratic():
    """P16: k3 >= 0, = 0 iff equal, ~ delta^2 / 2 for small delta."""
    generator = torch.Generator().manual_seed(6)
    logp = -3 * torch.rand(1000, generator=generator, dtype=torch.float64)
    ref_logp = -3 * torch.rand(1000, generator=generator, dtype=torch.float64)
    assert (kl_k3(logp, ref_logp) >= 0).all()
    assert torch.equal(kl_k3(logp, logp), torch.zeros_like(logp))
    assert (kl_k3(logp, ref_logp)[logp != ref_logp] > 0).all()
    for delta in (1e-2, -1e-2, 1e-3):
        value = kl_k3(torch.tensor(-1.0, dtype=torch.float64), torch.tensor(-1.0 + delta, dtype=torch.float64))
        assert value.item() == pytest.approx(delta ** 2 / 2, rel=abs(delta))  # k3 = d^2/2 + d^3/6 + ...
    # exact value: pi_ref / pi = 2 -> 2 - ln 2 - 1
    assert kl_k3(torch.tensor(math.log(0.25)), torch.tensor(math.log(0.5))).item() == pytest.approx(1 - math.log(2))


def test_p16_k3_monte_carlo_mean_is_the_true_kl():
    """P16: the mean of k3 over samples x ~ pi of a small categorical approaches KL(pi || pi_ref)."""
    generator = torch.Generator().manual_seed(7)
    log_pi = torch.log_softmax(torch.randn(6, generator=generator, dtype=torch.float64), -1)
    log_ref = torch.log_softmax(torch.randn(6, generator=generator, dtype=torch.float64), -1)
    exact = (log_pi.exp() * (log_pi - log_ref)).sum().item()
    samples = torch.multinomial(log_pi.exp(), 200_000, replacement=True, generator=generator)
    estimates = kl_k3(log_pi[samples], log_ref[samples])
    standard_error = estimates.std().item() / math.sqrt(samples.numel())
    assert abs(estimates.mean().item() - exact) < 4 * standard_error
    assert exact > 20 * standard_error  # the check is not vacuous
    # the k3 identity: its exact expectation equals the KL
    assert (log_pi.exp() * kl_k3(log_pi, log_ref)).sum().item() == pytest.approx(exact, abs=1e-12)


def test_p16_k3_gradient():
    """P16: d k3 / d logp = 1 - pi_ref / pi."""
    logp = torch.tensor([-0.5, -2.0, -1.0], dtype=torch.float64, requires_grad=True)
    ref_logp = torch.tensor([-1.0, -0.3, -1.0], dtype=torch.float64)
    (grad,) = torch.autograd.grad(kl_k3(logp, ref_logp).sum(), logp)
    assert torch.allclose(grad, 1 - torch.exp(ref_logp - logp.detach()), atol=1e-12)


def test_p16_kl_term_in_the_loss():
    """P16/P18: with pi_ref = 2 pi on every token, every loss type adds beta (1 - ln 2) x its token weight."""
    logp, old_logp, _, advantages, mask = random_loss_inputs()
    ref_logp = logp + math.log(2)
    per_token = 1 - math.log(2)
    token_share = {"grpo": 3 / 4, "gspo": 3 / 4,  # 3 of 4 sequences have tokens
                   "dapo": 1.0, "dr_grpo": mask.sum().item() / mask.numel()}
    for loss_type in LOSS_TYPES:
        without, _ = policy_loss(logp, old_logp, advantages, mask, loss_type=loss_type)
        with_kl, stats = policy_loss(logp, old_logp, advantages, mask, ref_logp=ref_logp, beta=0.1,
                                     loss_type=loss_type)
        assert (with_kl - without).item() == pytest.approx(0.1 * per_token * token_share[loss_type], abs=1e-12)
        assert stats["kl"] == pytest.approx(per_token, abs=1e-12)


# ---------------------------------------------------------------------------
# Aggregation (properties 18-20)
# ---------------------------------------------------------------------------

# The hand example: two sequences, rho = [[1.1, 1.5, (masked)], [0.5, 1.0, 0.9]], A = [1, -1], eps = 0.2.
# Token losses: seq 1 (A = 1): -1.1, -min(1.5, 1.2) = -1.2; seq 2 (A = -1): -min(-0.5, -0.8) = 0.8, 1.0, 0.9.
HAND_RHO = [[1.1, 1.5, 1.0], [0.5, 1.0, 0.9]]
HAND_EXPECTED = {
    "grpo": ((-1.1 - 1.2) / 2 + (0.8 + 1.0 + 0.9) / 3) / 2,  # -0.125
    "dapo": (-1.1 - 1.2 + 0.8 + 1.0 + 0.9) / 5,  # 0.08
    "dr_grpo": (-1.1 - 1.2 + 0.8 + 1.0 + 0.9) / (2 * 3),  # 0.0667
    # s_1 = sqrt(1.1 * 1.5) = 1.2845 -> clipped to 1.2 -> -1.2; s_2 = 0.45^(1/3) = 0.766 -> -min(-0.766, -0.8) = 0.8
    "gspo": (-1.2 + 0.8) / 2,  # -0.2
}


def hand_example():
    old_logp = torch.full((2, 3), -1.0, dtype=torch.float64)
    logp = old_logp + torch.log(torch.tensor(HAND_RHO, dtype=torch.float64))
    return logp, old_logp, torch.tensor([1.0, -1.0], dtype=torch.float64), torch.tensor([[1.0, 1, 0], [1, 1, 1]])


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_p18_closed_form_values(loss_type):
    """P18: each loss type reproduces the hand-computed value of the small example (and its clip fractions)."""
    logp, old_logp, advantages, mask = hand_example()
    loss, stats = policy_loss(logp, old_logp, advantages, mask, clip_low=0.2, loss_type=loss_type)
    assert loss.item() == pytest.approx(HAND_EXPECTED[loss_type], abs=1e-12)
    if loss_type != "gspo":
        assert stats["clip_frac_low"] == pytest.approx(0.2) and stats["clip_frac_high"] == pytest.approx(0.2)
        assert stats["ratio_mean"] == pytest.approx(1.0)
    if loss_type == "dr_grpo":
        longer, _ = policy_loss(logp, old_logp, advantages, mask, loss_type=loss_type, max_len=4)
        assert longer.item() == pytest.approx(0.4 / 8, abs=1e-12)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("beta", [0.0, 0.05])
def test_p18_parity_with_naive_loss(loss_type, beta):
    """P18: policy_loss equals a float-by-float loop over random inputs (asymmetric clip, KL, an empty row)."""
    logp, old_logp, ref_logp, advantages, mask = random_loss_inputs(seed=8)
    kwargs = dict(beta=beta, clip_low=0.2, clip_high=0.28, loss_type=loss_type)
    loss, _ = policy_loss(logp, old_logp, advantages, mask, ref_logp=ref_logp, **kwargs)
    assert loss.item() == pytest.approx(naive_policy_loss(logp, old_logp, advantages, mask, ref_logp, **kwargs),
                                        abs=1e-12)


def test_p19_length_bias():
    """P19: same A, lengths 2 and 10: per-token weights differ under grpo, are equal under dapo and dr_grpo."""
    logp = -torch.rand(2, 10, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    mask = torch.zeros(2, 10, dtype=torch.float64)
    mask[0, :2] = 1
    mask[1, :] = 1
    advantages = torch.tensor([1.0, 1.0], dtype=torch.float64)
    expected_weight = {"grpo": (1 / (2 * 2), 1 / (2 * 10)), "dapo": (1 / 12, 1 / 12), "dr_grpo": (1 / 20, 1 / 20)}
    for loss_type, (short_weight, long_weight) in expected_weight.items():
        _, grad = grad_wrt_logp(logp, logp.clone(), advantages, mask, loss_type=loss_type)
        assert torch.allclose(grad[0, :2], torch.full((2,), -short_weight, dtype=torch.float64), atol=1e-12)
        assert torch.allclose(grad[1], torch.full((10,), -long_weight, dtype=torch.float64), atol=1e-12)
    _, grad = grad_wrt_logp(logp, logp.clone(), advantages, mask, loss_type="dr_grpo", max_len=16)
    assert torch.allclose(grad[1], torch.full((10,), -1 / 32, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_p20_micro_batches_with_global_normalizer_equal_full_batch(loss_type):
    """P20: summing micro-batch losses that use the full batch's normalizer gives the full loss and gradient."""
    logp, old_logp, ref_logp, advantages, mask = random_loss_inputs(batch_size=5, lengths=(6, 3, 1, 0, 5), seed=10)
    kwargs = dict(ref_logp=ref_logp, beta=0.05, clip_low=0.2, clip_high=0.28, loss_type=loss_type)
    full_loss, full_grad = grad_wrt_logp(logp, old_logp, advantages, mask, **kwargs)
    normalizer = loss_normalizer(mask, loss_type)
    leaf = logp.detach().clone().requires_grad_(True)
    total, naive_total = 0.0, 0.0
    for rows in (slice(0, 2), slice(2, 5)):
        micro_kwargs = dict(kwargs, ref_logp=ref_logp[rows])
        loss, _ = policy_loss(leaf[rows], old_logp[rows], advantages[rows], mask[rows], normalizer=normalizer,
                              **micro_kwargs)
        loss.backward()
        total += loss.item()
        naive, _ = policy_loss(logp[rows], old_logp[rows], advantages[rows], mask[rows], **micro_kwargs)
        naive_total += naive.item() / 2  # averaging local means: the wrong way
    assert total == pytest.approx(full_loss.item(), abs=1e-12)
    assert torch.allclose(leaf.grad, full_grad, atol=1e-12)
    assert naive_total != pytest.approx(full_loss.item(), abs=1e-6)  # the normalizer matters here


# ---------------------------------------------------------------------------
# GSPO and DAPO (properties 21-22)
# ---------------------------------------------------------------------------


def test_p21_gspo_sequence_ratio_is_the_token_ratio_for_one_token():
    """P21: with one token per sequence, s_i = rho_i: gspo's loss, gradient and stats equal grpo's."""
    logp, old_logp, ref_logp, advantages, _ = random_loss_inputs(seed=11)
    mask = torch.zeros_like(logp)
    mask[torch.arange(4), torch.tensor([0, 2, 5, 1])] = 1  # one token per sequence, anywhere
    kwargs = dict(ref_logp=ref_logp, beta=0.05, clip_low=0.2, clip_high=0.28)
    gspo_loss, gspo_grad = grad_wrt_logp(logp, old_logp, advantages, mask, loss_type="gspo", **kwargs)
    grpo_loss, grpo_grad = grad_wrt_logp(logp, old_logp, advantages, mask, loss_type="grpo", **kwargs)
    assert gspo_loss.item() == pytest.approx(grpo_loss.item(), abs=1e-12)
    assert torch.allclose(gspo_grad, grpo_grad, atol=1e-12)
    _, gspo_stats = policy_loss(logp, old_logp, advantages, mask, loss_type="gspo", **kwargs)
    _, grpo_stats = policy_loss(logp, old_logp, advantages, mask, loss_type="grpo", **kwargs)
    assert gspo_stats == pytest.approx(grpo_stats)
    # with several tokens the sequence ratio is the geometric mean, not the arithmetic one
    logp2, old2, advantages2, mask2 = hand_example()
    _, stats = policy_loss(logp2, old2, advantages2, mask2, loss_type="gspo", clip_low=10.0)
    s = [math.sqrt(1.1 * 1.5), 0.45 ** (1 / 3)]
    assert stats["ratio_mean"] == pytest.approx((2 * s[0] + 3 * s[1]) / 5, abs=1e-9)


# ---------------------------------------------------------------------------
# Invalid arguments: one clear ValueError each
# ---------------------------------------------------------------------------


def test_invalid_arguments_raise_value_error():
    """Reliability: G < 2, unknown scale/loss_type, clip <= 0, beta > 0 without ref_logp -> clear ValueError."""
    logp, old_logp, _, advantages, mask = random_loss_inputs()
    with pytest.raises(ValueError, match="group size"):
        group_advantages(torch.ones(3, 1))
    with pytest.raises(ValueError, match=r"\(P, G\)"):
        group_advantages(torch.ones(4))
    with pytest.raises(ValueError, match="scale"):
        group_advantages(torch.rand(2, 3), scale="global")
    with pytest.raises(ValueError, match="NaN"):
        group_advantages(torch.tensor([[1.0, math.nan]]))
    with pytest.raises(ValueError, match="loss_type"):
        policy_loss(logp, old_logp, advantages, mask, loss_type="ppo")
    with pytest.raises(ValueError, match="clip_low"):
        policy_loss(logp, old_logp, advantages, mask, clip_low=0.0)
    with pytest.raises(ValueError, match="clip_high"):
        policy_loss(logp, old_logp, advantages, mask, clip_high=-0.1)
    with pytest.raises(ValueError, match="ref_logp"):
        policy_loss(logp, old_logp, advantages, mask, beta=0.04)
    with pytest.raises(ValueError, match="advantages"):
        policy_loss(logp, old_logp, advantages[:2], mask)
    with pytest.raises(ValueError, match="max_len"):
        policy_loss(logp, old_logp, advantages, mask, loss_type="dr_grpo", max_len=2)
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long), temperature=0.0)


def test_no_in_place_writes_to_caller_tensors():
    """Reliability: policy_loss and group_advantages leave their inputs untouched."""
    logp, old_logp, ref_logp, advantages, mask = random_loss_inputs()
    logp[3, 2] = -math.inf  # a masked position holding garbage
    copies = [x.clone() for x in (logp, old_logp, ref_logp, advantages, mask)]
    for loss_type in LOSS_TYPES:
        policy_loss(logp, old_logp, advantages, mask, ref_logp=ref_logp, beta=0.1, loss_type=loss_type)
    for before, after in zip(copies, (logp, old_logp, ref_logp, advantages, mask)):
        assert torch.equal(before, after)
    rewards = torch.tensor([[0.9, 0.9, 0.9], [1.0, 0.0, 0.5]])
    kept = rewards.clone()
    group_advantages(rewards)
    assert torch.equal(rewards, kept)
