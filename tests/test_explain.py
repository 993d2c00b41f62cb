"""python -m qrw.explain: the trace of one GRPO update prints the numbers grpo_update computes, step by step."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qrw.explain import _advantages, format_trace, trace_update, traced_steps
from qrw.oracle import OracleView
from qrw.rewards import RewardConfig, RewardFunction
from qrw.rewriter import Rewriter
from qrw.rollout import frozen_reference, groups_batch, rollout_logprobs, sample_groups, step_generator, step_queries
from qrw.runs import load_run
from qrw.shop.shop import Shop
from qrw.update import GRPOConfig, update_policy

ROOT = Path(__file__).resolve().parents[1]
CLIPPING = dict(mu=2, minibatch_size=0, lr=3e-3)  # a second pass after a large step: the smoke model's ratios move


def _assert_steps_match(trace):
    for s in trace.steps:
        assert s.loss == pytest.approx(s.update["loss"], rel=1e-5, abs=1e-6)
        assert s.grad_norm == pytest.approx(s.update["grad_norm"], rel=1e-5)
        assert s.shares.sum().item() == pytest.approx(s.loss, abs=1e-6)


@pytest.mark.parametrize("settings", [
    dict(),                                                               # explain's default: mu 2, beta 0.04
    dict(loss_type="dapo", scale="group", mu=1),
    dict(loss_type="dr_grpo", mu=1, minibatch_size=4),
    dict(loss_type="gspo", clip_low=3e-4, clip_high=4e-4),
    dict(beta=0.0, dynamic_sampling=True, aggregation="sum"),             # DAPO: skipped groups, whole-rollout norm
])
def test_every_step_by_hand_is_grpo_updates(smoke_sft_run, settings):
    aggregation = settings.pop("aggregation", "normalize-then-sum")
    run = load_run(smoke_sft_run)
    cfg = GRPOConfig(group_size=4, max_new_tokens=12, **{"mu": 2, "minibatch_size": 0, **settings})
    trace = trace_update(run, cfg, RewardConfig(aggregation=aggregation), num_queries=2, candidates=8, seed=0)
    assert trace.steps, "the trace should find a group with a reward spread"
    kept = int(trace.keep.sum()) * cfg.group_size
    per_pass = -(-kept // (cfg.minibatch_size or kept))
    assert len(trace.steps) == cfg.mu * per_pass
    _assert_steps_match(trace)
    text = format_trace(trace)
    for index, s in enumerate(trace.steps):
        assert f"optimizer step {index + 1} of {len(trace.steps)}" in text
        assert f"loss (by hand) = {s.loss:+.6e}" in text
        assert f"grpo_update:     loss {s.update['loss']:+.6e}, grad norm {s.update['grad_norm']:.6e}" in text


def test_the_clipped_step_by_hand_is_grpo_updates(smoke_sft_run):
    """The second pass is off-policy: ratio != 1, tokens clipped and marked; the hand loss and gradient still hold."""
    run = load_run(smoke_sft_run)
    cfg = GRPOConfig(group_size=4, max_new_tokens=12, **CLIPPING)
    trace = trace_update(run, cfg, RewardConfig(), num_queries=2, candidates=8, seed=0)
    first, second = trace.steps
    mask = trace.mask[second.rows]
    assert (first.ratio[mask] - 1).abs().max() < 1e-3  # on-policy up to the sampler's rounding
    assert int(first.clipped.sum()) == 0
    assert (second.ratio[mask] - 1).abs().max() > 0.2  # off-policy
    clipped = int(second.clipped.sum())
    assert clipped >= 1
    assert second.loss == pytest.approx(second.update["loss"], rel=1e-5, abs=1e-6)
    assert second.grad_norm == pytest.approx(second.update["grad_norm"], rel=1e-5)
    # the hand-marked tokens are the ones grpo_update counts as clipped
    fraction = second.update["clip_frac_low"] + second.update["clip_frac_high"]
    assert clipped / int(mask.sum()) == pytest.approx(fraction, abs=1e-6)
    assert second.kl_shares.abs().sum() > 0  # beta 0.04: the KL term is in the loss once the policy has moved
    text = format_trace(trace)
    shown = sorted(second.clipped.sum(1).tolist(), reverse=True)[:3]  # the table's 3 most clipped sequences
    assert text.count("<- CLIPPED") == sum(shown)
    assert "on-policy" in text and "off-policy" in text


def test_the_traced_steps_are_update_policys(smoke_sft_run):
    """Stepping the update one minibatch at a time leaves the weights update_policy leaves (mu 2, minibatches)."""
    run = load_run(smoke_sft_run)
    cfg = GRPOConfig(group_size=4, max_new_tokens=12, mu=2, minibatch_size=4, lr=3e-3)
    rewards_cfg = RewardConfig(relevance_judge="oracle")
    shop = Shop(run.world)
    reward_fn = RewardFunction(shop.observed, rewards_cfg, oracle=OracleView(shop))
    queries = step_queries(shop.observed.grpo_texts, 0, 2, 0)
    groups = sample_groups(Rewriter(run.model, run.tok, "cpu", max_new_tokens=12), queries, 4,
                           temperature=1.0, generator=step_generator(0, 0, "cpu"))
    scores = reward_fn([q for q in queries for _ in range(4)], groups.rewrites, groups.well_formed)
    advantages, _ = _advantages(reward_fn, rewards_cfg, scores, cfg)
    advantages = advantages + torch.linspace(-0.5, 0.5, 8).reshape(2, 4)  # a spread whatever the samples
    keep = torch.ones(2, dtype=torch.bool)
    batch = groups_batch(groups, pad_id=run.tok.pad_id, eos_id=run.tok.eos_id, device="cpu")
    old_logp = groups.rollout.logprobs
    ref_logp = rollout_logprobs(frozen_reference(run.model), batch, temperature=1.0)
    policies = [copy.deepcopy(run.model) for _ in range(2)]
    optimizers = [torch.optim.AdamW(p.param_groups(0.0), lr=cfg.lr, betas=(0.9, 0.99)) for p in policies]
    steps = traced_steps(policies[0], optimizers[0], batch, advantages, keep, cfg, old_logp=old_logp,
                         ref_logp=ref_logp)
    update = update_policy(policies[1], optimizers[1], batch, advantages, keep, cfg, old_logp=old_logp,
                           ref_logp=ref_logp)
    assert len(steps) == update["optimizer_steps"] == 4
    assert sum(s.update["loss"] for s in steps) / 4 == pytest.approx(update["loss"], rel=1e-6, abs=1e-9)
    for a, b in zip(policies[0].parameters(), policies[1].parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_the_command_runs_and_rejects_a_missing_run_and_unused_flags(smoke_sft_run, tmp_path):
    ok = subprocess.run([sys.executable, "-m", "qrw.explain", "--ckpt", str(smoke_sft_run), "--device", "cpu",
                         "--lr", "3e-3"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    for stage in ("1. rollout", "2. rewards", "3. advantages", "4. the update", "optimizer step 2 of 2",
                  "5. log pi"):
        assert stage in ok.stdout
    assert "(one optimizer step, AdamW)" not in ok.stdout
    for argv in (["--ckpt", str(tmp_path / "nope")], ["--ckpt", str(smoke_sft_run), "--steps", "3"],
                 ["--ckpt", str(smoke_sft_run), "--warmup-steps", "1"]):
        bad = subprocess.run([sys.executable, "-m", "qrw.explain", *argv], cwd=ROOT, capture_output=True, text=True,
                             timeout=60)
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, (argv, bad.stderr)
