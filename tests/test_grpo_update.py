"""Tests for qrw/rollout.py and qrw/update.py: packing, scoring, the update loop, a toy bandit.

Each test is named after the property it pins (``test_pNN_...``); docs/GRPO_TESTS.md
states every property and maps it to its tests.

The policy is a tiny test-local causal LM with the forward signature of
``qrw.lm.model.Transformer`` (``model(input_ids (B, T), attention_mask (B, T) bool)
-> logits (B, T, V)``, positions ``cumsum(mask) - 1``), so these tests do not
depend on qrw/lm/model.py. To run them against the real model instead::

    QRW_GRPO_TEST_MODEL=transformer pytest tests/test_grpo_update.py
"""

from __future__ import annotations

import math
import os

import pytest
import torch
from torch import nn

from qrw import update
from qrw.config import NonFiniteLossError
from qrw.grpo import group_advantages, kl_k3, policy_loss
from qrw.rollout import (
    RolloutBatch,
    completion_logits,
    frozen_reference,
    pack_rollout,
    rollout_logprobs,
    sequence_logprobs,
)
from qrw.update import grpo_update, token_entropy

VOCAB = 12
PAD = 0
EOS = 1


class TinyCausalLM(nn.Module):
    """Embedding + learned positions + one causal self-attention layer + output head.

    Positions are ``cumsum(attention_mask) - 1``, and padded keys are never
    attended to, so a sequence scores the same alone and inside a left-padded
    batch. Every query may attend to itself, so a padding row is never an
    all--inf softmax (which would put NaN into the gradients).
    """

    def __init__(self, vocab_size: int = VOCAB, d_model: int = 16, max_seq_len: int = 32):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.position_embedding = nn.Embedding(max_seq_len, d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                select: torch.Tensor | None = None) -> torch.Tensor:
        batch_size, length = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
        positions = (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)  # (B, T)
        x = self.token_embedding(input_ids) + self.position_embedding(positions)  # (B, T, D)
        query, key, value = self.qkv(x).chunk(3, dim=-1)  # 3 x (B, T, D)
        scores = query @ key.transpose(1, 2) / math.sqrt(x.shape[-1])  # (B, T, T)
        causal = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()  # (T, T)
        itself = torch.eye(length, dtype=torch.bool, device=x.device)  # (T, T)
        allowed = (causal & attention_mask[:, None, :]) | itself  # (B, T, T)
        scores = scores.masked_fill(~allowed, float("-inf"))
        x = x + torch.softmax(scores, dim=-1) @ value  # (B, T, D)
        return self.head(x if select is None else x[select])  # (B, T, V), or (N, V) at the selected positions


def make_policy(seed: int = 0) -> nn.Module:
    """The policy under test: TinyCausalLM, or qrw.lm.model.Transformer's "tiny" preset if asked for."""
    torch.manual_seed(seed)
    if os.environ.get("QRW_GRPO_TEST_MODEL") == "transformer":
        from qrw.lm.model import ModelConfig, Transformer

        return Transformer(ModelConfig.preset("tiny", vocab_size=VOCAB)).eval()
    return TinyCausalLM().eval()


class NextTokenModel(nn.Module):
    """Known logits: at every position, 10 on the token ``(input + 1) % V``, 0 elsewhere."""

    def forward(self, input_ids, attention_mask=None, select=None):
        logits = 10.0 * nn.functional.one_hot((input_ids + 1) % VOCAB, VOCAB).float()  # (B, T, V)
        return logits if select is None else logits[select]  # (B, T, V) or (N, V)


PROMPTS = [[2, 3, 4, 5], [6], [7, 8]]
GROUP = 2


def make_batch(seed: int = 0, length: int = 5) -> tuple[RolloutBatch, torch.Tensor]:
    """A rollout of PROMPTS x GROUP random completions (some with EOS) and random advantages (N,)."""
    generator = torch.Generator().manual_seed(seed)
    completions = torch.randint(2, VOCAB, (len(PROMPTS) * GROUP, length), generator=generator)  # (N, L)
    completions[0, 1] = EOS  # short completion, padding after it
    completions[1, 1:] = torch.tensor([EOS] + [PAD] * (length - 2))
    completions[3, 3] = EOS
    batch = RolloutBatch.from_completions(PROMPTS, completions, GROUP, pad_id=PAD, eos_id=EOS)
    advantages = torch.randn(len(PROMPTS) * GROUP, generator=generator)  # (N,)
    return batch, advantages


def update_kwargs(**overrides):
    kwargs = dict(mu=1, minibatch_size=6, beta=0.0, clip_low=0.2, clip_high=0.28, loss_type="grpo",
                  temperature=1.0, max_grad_norm=None)
    kwargs.update(overrides)
    return kwargs


def parameters_of(model):
    return [p.detach().clone() for p in model.parameters()]


# ---------------------------------------------------------------------------
# Packing and scoring (properties 5, 9, 10, 11)
# ---------------------------------------------------------------------------


def test_p05_pack_rollout_is_prompt_major_and_left_padded():
    """P5: row p*G+g of the packed batch is prompt p (left-padded) followed by completion p*G+g."""
    completions = torch.arange(2, 2 + 6 * 2).view(6, 2) % VOCAB  # (N, L)
    input_ids, attention_mask, start = pack_rollout(PROMPTS, completions, GROUP, PAD)
    assert start == 4 and input_ids.shape == (6, 6) and attention_mask.dtype == torch.bool
    for p, prompt in enumerate(PROMPTS):
        for g in range(GROUP):
            row = p * GROUP + g
            assert input_ids[row, start - len(prompt):start].tolist() == prompt
            assert input_ids[row, :start - len(prompt)].tolist() == [PAD] * (start - len(prompt))
            assert attention_mask[row].tolist() == [False] * (start - len(prompt)) + [True] * (len(prompt) + 2)
            assert torch.equal(input_ids[row, start:], completions[row])
    rewards = torch.tensor([float(p) for p in range(3) for _ in range(GROUP)])  # reward = prompt index of the row
    assert torch.equal(rewards.view(3, GROUP), torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]))
    with pytest.raises(ValueError, match="completions"):
        pack_rollout(PROMPTS, completions[:5], GROUP, PAD)
    with pytest.raises(ValueError, match="at least one token"):
        pack_rollout([[2], []], completions[:4], GROUP, PAD)


def test_p09_shift_is_aligned_with_known_logits():
    """P9: logp[:, j] scores completion token j with the logits of the position before it."""
    completions = torch.tensor([[6, 7, 2], [6, 3, 4], [7, 7, 8], [9, 10, 11]])
    batch = RolloutBatch.from_completions([[4, 5], [6]], completions, 2, pad_id=PAD, eos_id=EOS)
    logp = sequence_logprobs(NextTokenModel(), batch.input_ids, batch.attention_mask, batch.completion_start)
    hit = 10 - math.log(math.exp(10) + VOCAB - 1)  # the model predicted this token
    miss = -math.log(math.exp(10) + VOCAB - 1)
    # prompt [4, 5]: 6 follows 5, 7 follows 6, 2 does not follow 7; second row: 6 hit, 3 miss, 4 hit
    # prompt [6]:    7 follows 6, 7 does not follow 7, 8 follows 7;  last row: 9 miss, 10 hit, 11 hit
    expected = torch.tensor([[hit, hit, miss], [hit, miss, hit], [hit, miss, hit], [miss, hit, hit]])
    assert torch.allclose(logp, expected, atol=1e-5)


def test_p09_p10_batch_scoring_equals_one_prefix_at_a_time():
    """P9, P10: each completion token's log-prob equals the model's last-position output on its unpadded prefix."""
    model = make_policy()
    batch, _ = make_batch()
    with torch.no_grad():
        logp = sequence_logprobs(model, batch.input_ids, batch.attention_mask, batch.completion_start, 0.8)
        for row in range(batch.num_sequences):
            sequence = batch.input_ids[row][batch.attention_mask[row]]  # unpadded prompt + completion
            prompt_len = len(PROMPTS[row // GROUP])
            for j in range(batch.completion_length):
                prefix = sequence[None, :prompt_len + j]  # (1, S + j)
                logits = model(prefix, torch.ones_like(prefix, dtype=torch.bool))[0, -1]  # (V,)
                expected = torch.log_softmax(logits / 0.8, dim=-1)[sequence[prompt_len + j]]
                assert logp[row, j].item() == pytest.approx(expected.item(), abs=1e-5)


def test_p10_sequence_scores_the_same_alone_and_in_a_left_padded_batch():
    """P10: a sequence scores the same alone and inside a left-padded batch (and with extra left padding)."""
    model = make_policy()
    batch, _ = make_batch()
    with torch.no_grad():
        together = sequence_logprobs(model, batch.input_ids, batch.attention_mask, batch.completion_start)
        for row in range(batch.num_sequences):
            prompt = PROMPTS[row // GROUP]
            alone_ids, alone_mask, start = pack_rollout([prompt], batch.completion_tokens[row:row + 1], 1, PAD)
            alone = sequence_logprobs(model, alone_ids, alone_mask, start)  # (1, L), no padding at all
            assert torch.allclose(alone[0], together[row], atol=1e-5)
        extra_ids = torch.cat([torch.full((6, 3), PAD), batch.input_ids], dim=1)  # 3 more pad columns
        extra_mask = torch.cat([torch.zeros(6, 3, dtype=torch.bool), batch.attention_mask], dim=1)
        extra = sequence_logprobs(model, extra_ids, extra_mask, batch.completion_start + 3)
        assert torch.allclose(extra, together, atol=1e-5)


def test_p11_padding_after_eos_does_not_change_the_loss():
    """P11: appending pad columns after the completions changes neither the scored log-probs nor the loss."""
    model = make_policy()
    batch, advantages = make_batch()
    longer_completions = torch.cat([batch.completion_tokens, torch.full((6, 4), PAD)], dim=1)  # (N, L + 4)
    longer = RolloutBatch.from_completions(PROMPTS, longer_completions, GROUP, pad_id=PAD, eos_id=EOS,
                                           mask=torch.cat([batch.completion_mask, torch.zeros(6, 4)], dim=1))
    for loss_type in ("grpo", "dapo", "gspo"):
        losses = []
        for b in (batch, longer):
            logp = sequence_logprobs(model, b.input_ids, b.attention_mask, b.completion_start)
            loss, _ = policy_loss(logp, logp.detach() - 0.1, advantages, b.completion_mask, loss_type=loss_type)
            losses.append(loss.item())
        assert losses[0] == pytest.approx(losses[1], abs=1e-6)


# ---------------------------------------------------------------------------
# The update loop (properties 12, 15, 17, 20)
# ---------------------------------------------------------------------------


def record_policy_loss_calls(monkeypatch):
    """Wrap qrw.update.policy_loss so a test can see every (logp, old_logp) that grpo_update passes to it."""
    calls = []
    original = update.policy_loss

    def spy(logp, old_logp, *args, **kwargs):
        calls.append((logp.detach().clone(), old_logp.detach().clone()))
        return original(logp, old_logp, *args, **kwargs)

    monkeypatch.setattr(update, "policy_loss", spy)
    return calls


def test_p12_update_with_mu_1_is_on_policy(monkeypatch):
    """P12: with mu = 1 and one minibatch, old_logp = current logp (rho = 1) and the step follows -A grad log pi."""
    policy = make_policy()
    batch, advantages = make_batch()
    with torch.no_grad():  # the entropy diagnostic, computed by hand before the step
        logits = completion_logits(policy, batch.input_ids, batch.attention_mask, batch.completion_start)
        entropy = (token_entropy(logits) * batch.completion_mask).sum() / batch.completion_mask.sum()
    calls = record_policy_loss_calls(monkeypatch)
    stats = grpo_update(policy, torch.optim.SGD(policy.parameters(), lr=0.1), batch, advantages, **update_kwargs())
    assert stats["entropy"] == pytest.approx(entropy.item(), abs=1e-5)
    assert len(calls) == 1
    logp, old_logp = calls[0]
    assert torch.allclose(logp, old_logp, atol=1e-6)
    assert stats["ratio_mean"] == pytest.approx(1.0, abs=1e-6)
    assert stats["clip_frac_low"] == 0.0 and stats["clip_frac_high"] == 0.0 and stats["optimizer_steps"] == 1


def test_p15_mu_2_keeps_old_logprobs_frozen(monkeypatch):
    """P15: with mu = 2 the old log-probs stay the rollout-time values and rho != 1 on the second pass."""
    policy = make_policy()
    batch, advantages = make_batch()
    with torch.no_grad():
        before = sequence_logprobs(policy, batch.input_ids, batch.attention_mask, batch.completion_start)
    calls = record_policy_loss_calls(monkeypatch)
    grpo_update(policy, torch.optim.SGD(policy.parameters(), lr=0.5), batch, advantages,
                **update_kwargs(mu=2, minibatch_size=3))
    assert len(calls) == 4  # 2 passes x 2 minibatches
    old_rows = torch.cat([calls[0][1], calls[1][1]])  # first pass, rows 0-2 and 3-5
    assert torch.allclose(old_rows, before, atol=1e-6)
    for rows, (_, first_old), (second_logp, second_old) in zip((slice(0, 3), slice(3, 6)), calls[:2], calls[2:]):
        assert torch.equal(first_old, second_old)  # frozen, not recomputed
        valid = batch.completion_mask[rows] > 0
        assert (second_logp - second_old)[valid].abs().max() > 1e-4  # rho != 1 on the second pass
    assert not torch.allclose(calls[1][0], calls[1][1])  # the second minibatch already sees a moved policy


def test_p17_reference_model_gets_no_gradient_and_is_unchanged():
    """P17: a frozen reference gets no gradient and does not change in a beta > 0 step; the policy does."""
    policy = make_policy()
    reference = frozen_reference(policy)
    batch, advantages = make_batch()
    ref_logp = rollout_logprobs(reference, batch)
    assert not ref_logp.requires_grad
    reference_before, policy_before = parameters_of(reference), parameters_of(policy)
    stats = grpo_update(policy, torch.optim.Adam(policy.parameters(), lr=1e-2), batch, advantages,
                        **update_kwargs(beta=0.1, mu=2), ref_logp=ref_logp)
    assert all(p.grad is None and not p.requires_grad for p in reference.parameters())
    assert all(torch.equal(a, b) for a, b in zip(reference_before, reference.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(policy_before, policy.parameters()))
    assert math.isfinite(stats["kl"]) and stats["kl"] > 0
    assert not reference.training


def test_p17_beta_zero_needs_no_reference():
    """P17: beta = 0 runs without ref_logp (and reports no kl): the same step as with a reference and beta = 0,
    and the on-policy values (rho = 1, loss = grpo's mean over sequences of -A); beta > 0 without it is a ValueError."""
    policy, with_reference = make_policy(), make_policy()
    batch, advantages = make_batch()
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.1)
    stats = grpo_update(policy, optimizer, batch, advantages, **update_kwargs(beta=0.0))
    assert "kl" not in stats
    assert stats["loss"] == pytest.approx(-advantages.mean().item(), abs=1e-6)  # every row has a token
    assert (stats["ratio_mean"], stats["approx_kl"], stats["clip_frac_low"], stats["clip_frac_high"]) == (1, 0, 0, 0)
    reference_stats = grpo_update(with_reference, torch.optim.SGD(with_reference.parameters(), lr=0.1), batch,
                                  advantages, **update_kwargs(beta=0.0),
                                  ref_logp=rollout_logprobs(make_policy(seed=5), batch))
    assert reference_stats.pop("kl") > 0 and reference_stats == stats  # the KL is only reported
    assert all(torch.equal(a, b) for a, b in zip(policy.parameters(), with_reference.parameters()))
    with pytest.raises(ValueError, match="ref_logp"):
        grpo_update(policy, optimizer, batch, advantages, **update_kwargs(beta=0.04))


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo", "gspo"])
def test_p20_gradient_accumulation_equals_full_batch(loss_type):
    """P20: micro-batches of 4 + 2 accumulate the full minibatch's gradient (SGD lr=1 makes the step -grad)."""
    policy = make_policy()
    batch, advantages = make_batch()
    ref_logp = rollout_logprobs(frozen_reference(policy), batch) - 0.05  # a reference that differs a little
    old_logp = rollout_logprobs(policy, batch) + 0.1 * torch.randn(6, batch.completion_length,
                                                                   generator=torch.Generator().manual_seed(1))
    full = make_policy()
    full.load_state_dict(policy.state_dict())
    logp = sequence_logprobs(full, batch.input_ids, batch.attention_mask, batch.completion_start)
    loss, _ = policy_loss(logp, old_logp, advantages, batch.completion_mask, ref_logp=ref_logp, beta=0.1,
                          clip_low=0.2, clip_high=0.28, loss_type=loss_type)
    loss.backward()
    expected = [p.detach() - p.grad for p in full.parameters()]  # one SGD step with lr = 1
    stats = grpo_update(policy, torch.optim.SGD(policy.parameters(), lr=1.0), batch, advantages,
                        **update_kwargs(beta=0.1, loss_type=loss_type, minibatch_size=6), microbatch_size=4,
                        ref_logp=ref_logp, old_logp=old_logp)
    for after, wanted in zip(policy.parameters(), expected):
        assert torch.allclose(after, wanted, atol=1e-5)
    assert stats["loss"] == pytest.approx(loss.item(), abs=1e-6)


def test_p20_each_minibatch_is_one_clipped_optimizer_step():
    """P20: two minibatches are two sequential SGD steps, each on its own minibatch's clipped gradient."""
    policy = make_policy()
    batch, advantages = make_batch()
    old_logp = rollout_logprobs(policy, batch)
    manual = make_policy()
    manual.load_state_dict(policy.state_dict())
    optimizer = torch.optim.SGD(manual.parameters(), lr=0.5)
    norms = []
    for rows in (torch.arange(0, 3), torch.arange(3, 6)):
        part = batch.select(rows)
        logp = sequence_logprobs(manual, part.input_ids, part.attention_mask, part.completion_start)
        loss, _ = policy_loss(logp, old_logp[rows], advantages[rows], part.completion_mask, loss_type="dapo")
        optimizer.zero_grad()
        loss.backward()
        norms.append(torch.nn.utils.clip_grad_norm_(manual.parameters(), 0.05).item())
        optimizer.step()
    assert min(norms) > 0.05  # clipping is active
    stats = grpo_update(policy, torch.optim.SGD(policy.parameters(), lr=0.5), batch, advantages,
                        **update_kwargs(loss_type="dapo", minibatch_size=3, max_grad_norm=0.05), microbatch_size=2)
    for after, wanted in zip(policy.parameters(), manual.parameters()):
        assert torch.allclose(after, wanted, atol=1e-6)
    assert stats["optimizer_steps"] == 2 and stats["grad_norm"] == pytest.approx(sum(norms) / 2, rel=1e-5)


def test_non_finite_loss_stops_before_the_optimizer_step():
    """Reliability: a NaN loss raises NonFiniteLossError and leaves the parameters and optimizer untouched."""
    policy = make_policy()
    batch, advantages = make_batch()
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-2)
    before = parameters_of(policy)
    bad_advantages = advantages.clone()
    bad_advantages[2] = math.nan
    with pytest.raises(NonFiniteLossError, match="not stepped"):
        grpo_update(policy, optimizer, batch, bad_advantages, **update_kwargs())
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters()))
    assert len(optimizer.state) == 0 and all(p.grad is None for p in policy.parameters())
    assert issubclass(NonFiniteLossError, RuntimeError)


def test_update_rejects_invalid_arguments():
    """Reliability: bad mu, minibatch size, loss type, clip or shapes give a clear ValueError."""
    policy = make_policy()
    batch, advantages = make_batch()
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.1)
    for overrides, message in [(dict(mu=0), "mu"), (dict(minibatch_size=0), "minibatch_size"),
                               (dict(loss_type="ppo"), "loss_type"), (dict(clip_low=0.0), "clip_low"),
                               (dict(max_grad_norm=0.0), "max_grad_norm"), (dict(temperature=0.0), "temperature")]:
        with pytest.raises(ValueError, match=message):
            grpo_update(policy, optimizer, batch, advantages, **update_kwargs(**overrides))
    with pytest.raises(ValueError, match="advantages"):
        grpo_update(policy, optimizer, batch, advantages[:4], **update_kwargs())


# ---------------------------------------------------------------------------
# End to end (property 23)
# ---------------------------------------------------------------------------


@torch.no_grad()
def sample_completions(model, prompts, num_samples, length, generator):
    """A plain sampling loop (no KV cache): G completions of `length` tokens per prompt, prompt-major."""
    completions = torch.zeros(len(prompts) * num_samples, 0, dtype=torch.long)  # (N, 0)
    for _ in range(length):
        placeholder = torch.cat([completions, torch.zeros(completions.shape[0], 1, dtype=torch.long)], dim=1)
        input_ids, attention_mask, start = pack_rollout(prompts, placeholder, num_samples, PAD)  # (N, S + j + 1)
        logits = model(input_ids[:, :-1], attention_mask[:, :-1])[:, -1]  # (N, V): predicts the next token
        token = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)  # (N, 1)
        completions = torch.cat([completions, token], dim=1)  # (N, j + 1)
    return completions


def test_p23_toy_bandit_learns_to_emit_the_rewarded_token():
    """P23: a few GRPO steps on "reward 1 if the first completion token is X" raise P(X); KL stays finite."""
    target = 5
    prompts = [[2, 3], [4]]
    policy = make_policy(seed=1)
    reference = frozen_reference(policy)
    optimizer = torch.optim.Adam(policy.parameters(), lr=3e-2)
    generator = torch.Generator().manual_seed(0)

    def probability_of_target():
        with torch.no_grad():
            input_ids, attention_mask, _ = pack_rollout(prompts, torch.zeros(2, 1, dtype=torch.long), 1, PAD)
            logits = policy(input_ids[:, :-1], attention_mask[:, :-1])[:, -1]  # (P, V)
            return torch.softmax(logits, dim=-1)[:, target].mean().item()

    start_probability = probability_of_target()
    group_size = 8
    for step in range(8):
        completions = sample_completions(policy, prompts, group_size, length=2, generator=generator)  # (N, 2)
        batch = RolloutBatch.from_completions(prompts, completions, group_size, pad_id=PAD, eos_id=EOS)
        rewards = (completions[:, 0] == target).float().view(len(prompts), group_size)  # (P, G)
        advantages = group_advantages(rewards).view(-1)  # (N,)
        ref_logp = rollout_logprobs(reference, batch)
        stats = grpo_update(policy, optimizer, batch, advantages, ref_logp=ref_logp,
                            **update_kwargs(beta=0.04, mu=2, minibatch_size=8, max_grad_norm=1.0))
        assert math.isfinite(stats["kl"]) and math.isfinite(stats["loss"]) and math.isfinite(stats["grad_norm"])
    end_probability = probability_of_target()
    assert start_probability < 0.5
    assert end_probability > start_probability + 0.3, (start_probability, end_probability)
    with torch.no_grad():  # the policy has moved away from the reference, by a finite amount
        batch = RolloutBatch.from_completions(prompts, sample_completions(policy, prompts, 4, 2, generator), 4,
                                              pad_id=PAD, eos_id=EOS)
        kl = kl_k3(rollout_logprobs(policy, batch), rollout_logprobs(reference, batch))
        mean_kl = (kl * batch.completion_mask).sum() / batch.completion_mask.sum()
        assert torch.isfinite(mean_kl) and mean_kl > 0
