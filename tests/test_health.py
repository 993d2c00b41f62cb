"""The GRPO health monitor (qrw/health.py): the rule on hand-made records, the replay command, a planted collapse."""

from __future__ import annotations

import json

import pytest
import torch

import train_grpo
import train_sft
from qrw.health import HealthConfig, HealthMonitor, TrainingCollapsed, main as health_main, replay
from test_scripts import TINY

CFG = HealthConfig(health_window=3, health_drop=0.5, health_margin=0.1, health_patience=2)


def record(step: int, reward: float, format_share: float = 0.9, entropy: float | None = 2.0,
           diversity: float = 1.0) -> dict:
    return {"stage": "grpo", "step": step, "reward_fused_mean": reward, "reward_format_mean": format_share,
            "entropy": entropy, "diversity": diversity, "kl": 0.01 * step}


def test_the_rule_by_hand():
    """Level = mean of the last 3 alarm-free steps; alarm below 0.5 x level and 0.1 under it; 2 in a row: collapse."""
    monitor = HealthMonitor(CFG, total=10)
    lines = [monitor.observe(r) for r in [record(1, 1.0), record(2, 1.2), record(3, 1.4)]]
    assert all("warming up" in line for line in lines) and monitor.healthy
    assert monitor.level("reward") == pytest.approx(1.2)
    line = monitor.observe(record(4, 0.61))  # 0.61 >= 0.5 * 1.2: no alarm
    assert line.startswith("health step 4/10 | ok | reward 0.61 (1.2) |") and line.endswith("kl 0.04")
    assert monitor.level("reward") == pytest.approx((1.2 + 1.4 + 0.61) / 3)
    level = monitor.level("reward")  # 1.07
    line = monitor.observe(record(5, 0.5, entropy=None))  # 0.5 < 0.535: an alarm; entropy not measured: skipped
    assert f"WARNING 1/2: reward 0.5 < 0.5 x its level {level:.3g}" in line and "entropy" not in line.split("|", 3)[2]
    assert not monitor.healthy and not monitor.collapsed
    assert monitor.level("reward") == pytest.approx(level)  # the alarmed step does not enter the level
    line = monitor.observe(record(6, 0.4))
    assert monitor.collapsed and line.startswith("health step 6/10 | COLLAPSE: reward 0.4 < 0.5 x its level")
    assert monitor.reason.startswith("collapse at step 6: reward 0.4") and "from step 5" in monitor.reason
    error = monitor.failure("runs/grpo", 4, 3e-3)
    assert isinstance(error, TrainingCollapsed) and "the last healthy checkpoint (step 4) is kept in runs/grpo" in \
        str(error) and "python train_grpo.py --resume --out runs/grpo --lr 0.0003" in str(error)


def test_an_alarm_needs_the_margin_and_a_healthy_step_ends_the_streak():
    monitor = HealthMonitor(CFG)
    for step, share in enumerate([0.06, 0.06, 0.06], 1):  # a format share near 0, as at a weak init
        monitor.observe(record(step, 1.0, format_share=share))
    monitor.observe(record(4, 1.0, format_share=0.0))  # below half its level, but by 0.06 < the margin 0.1
    assert monitor.healthy
    monitor.observe(record(5, 1.0, entropy=0.5))  # 0.5 < 0.5 x 2.0 - and 1.5 under it: an alarm
    assert not monitor.healthy and monitor.streak == 1
    monitor.observe(record(6, 1.0))
    assert monitor.healthy and monitor.streak == 0 and not monitor.collapsed
    off = HealthMonitor(HealthConfig(health=False))
    assert [off.observe(record(s, 0.0, entropy=0.0)) for s in (1, 2)][-1].endswith("not watched (--no-health)")
    assert off.healthy and not off.collapsed


def test_replay_command_prints_every_verdict(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    steps = [record(s, 1.0) for s in range(1, 5)] + [record(5, 0.1), record(6, 0.1), record(7, 1.0)]
    path.write_text("".join(json.dumps(r) + "\n" for r in steps) + '{"stage": "grpo", "st')  # a cut last line
    assert health_main([str(path), "--health-window", "3", "--health-patience", "2"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 7 and out[4].startswith("health step 5 | WARNING 1/2") and "COLLAPSE" in out[5]
    assert out[6].startswith("the monitor would have stopped this run: collapse at step 6")
    assert health_main([str(tmp_path), "--health-window", "3", "--health-patience", "3"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "no collapse in 7 steps"
    assert replay(CFG, steps[:4]).level("reward") == pytest.approx(1.0)


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("health") / "sft"
    assert train_sft.main(TINY + ["--out", str(out)]) == 0
    return out


def test_a_planted_collapse_is_stopped_and_the_last_healthy_checkpoint_kept(sft_run, tmp_path):
    """--lr ~330x the default on the smoke recipe: stopped within 25 steps, the checkpoint is before the alarms;
    the default --lr over the same 25 steps raises no alarm; --resume --lr goes on at the new rate."""
    common = ["--smoke", "--quiet", "--init", str(sft_run), "--steps", "25"]
    out = tmp_path / "collapse"
    with pytest.raises(TrainingCollapsed, match=r"GRPO health monitor: collapse at step (\d+): .*the last healthy "
                                                r"checkpoint \(step \d+\) is kept in .*--resume --out .* --lr 0.01"):
        train_grpo.main(common + ["--lr", "1e-1", "--out", str(out)])
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    monitor = HealthMonitor(HealthConfig())
    verdicts = [monitor.observe(r) for r in records]
    assert monitor.collapsed and records[-1]["step"] <= 25  # the log ends at the collapsing step
    first_alarm = next(r["step"] for r, v in zip(records, verdicts) if "WARNING" in v)
    kept = torch.load(out / "ckpt.pt", weights_only=True)["step"]
    assert kept < first_alarm, "a checkpoint was written after the alarms began"

    healthy = tmp_path / "healthy"
    assert train_grpo.main(common + ["--out", str(healthy)]) == 0
    monitor = HealthMonitor(HealthConfig())
    assert not any("WARNING" in monitor.observe(json.loads(line))
                   for line in (healthy / "metrics.jsonl").read_text().splitlines())

    assert train_grpo.main(["--resume", "--quiet", "--out", str(out), "--lr", "3e-4", "--no-health",
                            "--stop-after", "1"]) == 0
    assert json.loads((out / "config.json").read_text())["grpo"]["lr"] == 3e-4
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["lr"] == 3e-4
