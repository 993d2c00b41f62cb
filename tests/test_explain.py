"""python -m qrw.explain: the trace of one GRPO update prints the numbers grpo_update computes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qrw.explain import format_trace, trace_update
from qrw.rewards import RewardConfig
from qrw.runs import load_run
from qrw.update import GRPOConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("settings", [
    dict(),                                                               # the default: grpo, Dr. GRPO scale, DAPO
    dict(loss_type="dapo", scale="group"),
    dict(loss_type="dr_grpo"),
    dict(loss_type="gspo", clip_low=3e-4, clip_high=4e-4),
    dict(beta=0.04, dynamic_sampling=False, scale="group"),               # DeepSeekMath: KL on every sample
])
def test_printed_loss_and_gradient_norm_are_grpo_updates(smoke_sft_run, settings):
    run = load_run(smoke_sft_run)
    cfg = GRPOConfig(group_size=4, max_new_tokens=12, **settings)
    trace = trace_update(run, cfg, RewardConfig(), num_queries=2, candidates=8, seed=0)
    assert trace.update, "the trace should find a group with a reward spread"
    assert trace.loss == pytest.approx(trace.update["loss"], rel=1e-5, abs=1e-6)  # ~0 when rho = 1: A sums to 0
    assert trace.grad_norm == pytest.approx(trace.update["grad_norm"], rel=1e-5)
    assert trace.shares.sum().item() == pytest.approx(trace.loss, abs=1e-7)
    text = format_trace(trace)
    assert f"loss (by hand) = {trace.loss:+.6e}" in text
    assert f"grpo_update: loss {trace.update['loss']:+.6e}, grad norm {trace.update['grad_norm']:.6e}" in text
    # the step moves the rewrites: the one with the largest advantage gains log-probability
    mask = trace.mask
    before = torch.where(mask, trace.logp, torch.zeros_like(trace.logp)).sum(1)
    best = int(trace.advantages.reshape(-1).argmax())
    assert trace.logp_after[best] > before[best]


def test_the_command_runs_and_rejects_a_missing_run(smoke_sft_run, tmp_path):
    ok = subprocess.run([sys.executable, "-m", "qrw.explain", "--ckpt", str(smoke_sft_run), "--device", "cpu"],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    for stage in ("1. rollout", "2. rewards", "3. advantages", "4. per token", "5. aggregation", "6. the update",
                  "7. log pi"):
        assert stage in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "qrw.explain", "--ckpt", str(tmp_path / "nope")],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
