"""train_grpo.py end to end under each advantage aggregation (smoke-sized), its log checked against the math.

The default, ``--aggregation normalize-then-sum``, and ``--aggregation sum`` each take a
different path through step 3 of the loop; ``--dynamic-sampling`` then keeps only the
groups with a signal. Spies around the loop's own calls record the rewards each step
saw, and the test recomputes from them, by hand, what metrics.jsonl must say: the
advantages (|A| mean), the zero-spread share and the groups kept.
"""

import json
import statistics

import pytest
import torch

import train_grpo
import train_sft
from test_scripts import TINY

STEPS = ["--steps", "3", "--ckpt-every", "3", "--sample-every", "3"]


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "sft"
    assert train_sft.main(TINY + ["--out", str(out)]) == 0
    return out


def grpo_records(run_dir) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("stage") == "grpo" and "groups_kept" in r]


def spy(monkeypatch, name: str, calls: list) -> None:
    """Wrap ``train_grpo.<name>``: record (args, kwargs, result) of every call."""
    real = getattr(train_grpo, name)

    def wrapper(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append((args, kwargs, result))
        return result

    monkeypatch.setattr(train_grpo, name, wrapper)


def zscore_by_hand(row: list[float]) -> list[float]:
    """(r - mean) / (unbiased std + 1e-6), 0 for a constant group."""
    if max(row) == min(row):
        return [0.0] * len(row)
    mean, std = statistics.fmean(row), statistics.stdev(row)
    return [(r - mean) / (std + 1e-6) for r in row]


def spread(rewards: torch.Tensor) -> list[bool]:
    return [max(row) != min(row) for row in rewards.tolist()]


def test_aggregation_sum_normalises_the_fused_reward_once(sft_run, tmp_path, monkeypatch):
    calls, nts = [], []
    spy(monkeypatch, "group_advantages", calls)
    spy(monkeypatch, "normalize_then_sum", nts)
    out = tmp_path / "sum"
    assert train_grpo.main(["--smoke", "--quiet", "--init", str(sft_run), "--out", str(out), *STEPS,
                            "--aggregation", "sum", "--scale", "group"]) == 0
    records = grpo_records(out)
    assert len(records) == len(calls) == 3 and nts == []  # the sum path only
    for record, ((rewards,), kwargs, advantages) in zip(records, calls):
        assert kwargs == {"scale": "group"}
        by_hand = torch.tensor([zscore_by_hand(row) for row in rewards.tolist()])
        torch.testing.assert_close(advantages, by_hand, rtol=1e-3, atol=1e-4)  # float32 z-scores of near-ties
        assert record["adv_abs_mean"] == pytest.approx(by_hand.abs().mean().item(), rel=1e-4, abs=1e-6)
        signal = spread(rewards)
        assert record["zero_spread_frac"] == pytest.approx(1 - sum(signal) / len(signal))
        assert record["groups_kept"] == len(signal)  # no dynamic sampling: every group is updated
        assert record["reward_fused_mean"] == pytest.approx(rewards.mean().item(), rel=1e-5, abs=1e-7)


def test_dynamic_sampling_under_normalize_then_sum_keeps_the_groups_where_some_reward_varies(
        sft_run, tmp_path, monkeypatch):
    calls, plain = [], []
    spy(monkeypatch, "normalize_then_sum", calls)
    spy(monkeypatch, "group_advantages", plain)
    out = tmp_path / "nts"
    assert train_grpo.main(["--smoke", "--quiet", "--init", str(sft_run), "--out", str(out), *STEPS,
                            "--dynamic-sampling", "--beta", "0"]) == 0
    records = grpo_records(out)
    assert len(records) == len(calls) == 3 and plain == []  # the default path: no single normalisation
    for record, ((components, weights), _, advantages) in zip(records, calls):
        assert set(components) == set(weights) and len(components) >= 2
        by_hand = sum(weights[name] * torch.tensor([zscore_by_hand(row) for row in rewards.tolist()])
                      for name, rewards in components.items())
        torch.testing.assert_close(advantages, by_hand.to(advantages.dtype), rtol=1e-4, atol=1e-5)
        assert record["adv_abs_mean"] == pytest.approx(by_hand.abs().mean().item(), rel=1e-4, abs=1e-6)
        # a group carries a signal when any of its rewards varies in it
        signal = [any(column) for column in zip(*(spread(r) for r in components.values()))]
        assert record["zero_spread_frac"] == pytest.approx(1 - sum(signal) / len(signal))
        assert record["groups_kept"] == sum(signal)
        assert (record["optimizer_steps"] == 0) == (sum(signal) == 0)
