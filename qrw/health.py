"""The GRPO health monitor: a verdict at every step from what the step logs, and a stop on a collapse.

GRPO runs collapse in practice: the reward falls to nothing and the samples turn
to gibberish or to one degenerate string repeated (ConvSearch-R1's users report a
reward falling from ~1.3 to 0 at step ~270), usually after a learning rate or a
KL coefficient that lets the policy move too far in a few steps. The signals
are already in each step's record (``train_grpo.step_record``):

- ``reward``: the fused reward's mean over the step's samples (``reward_fused_mean``);
- ``format``: the share of samples that pass the format rule (``reward_format_mean``:
  ended with EOS, not empty, no word repeated 3 times, no stray special token);
  its fall is the share of degenerate or unparseable samples rising;
- ``entropy``: the policy's mean token entropy on its samples (nats, from the
  update); a collapse onto a few strings drives it down;
- ``diversity``: distinct rewrites per group / G; 1/G means every group
  samples one string (nothing left to compare: GRPO's signal is gone);
- ``kl``: the KL to the SFT init (nats per token), shown but not judged: it grows
  by design and its size alone does not say collapse.

**The rule** (:meth:`HealthMonitor.observe`). A signal's *level* is its mean over
the last ``window`` steps that raised no alarm. A step raises an alarm on a
signal when the signal falls below ``drop`` times its level *and* by more than
``margin`` (the margin keeps a signal near 0 from alarming on noise, e.g. a
format share of 0.06 falling to 0); signals are judged once ``window`` steps
have set their level. An alarm on ``patience`` consecutive steps is a
**collapse**: the run stops with one line (exit code 1) that names the signal,
the step of the last checkpoint and the command to resume with a lower
learning rate. While a step raises an alarm, the script writes no checkpoint
(except at the run's last step), so the checkpoint kept is the last one taken
before the alarms began. With the defaults, ``--lr`` 100x the default
(``python train_grpo.py --smoke --steps 40 --lr 3e-2``) is stopped at step 19 or
earlier; docs/ALGORITHM.md, "When GRPO fails", shows it.

Replay a logged run: ``python -m qrw.health runs/grpo/metrics.jsonl`` prints the
verdict of every step (the same function the training loop calls).
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from qrw.config import NonFiniteLossError, Parser, UserError, add_config_args, arg, check, config_from_args, run_main

SIGNALS = {"reward": "reward_fused_mean", "format": "reward_format_mean", "entropy": "entropy",
           "diversity": "diversity"}  # judged signal -> its key in a GRPO step's record


@dataclass
class HealthConfig:
    """The GRPO health monitor's switch and thresholds (they change no weight: each invocation's flags apply)."""

    health: bool = arg(True, "watch the run for a collapse (reward, format share, entropy, diversity) and stop "
                       "it before a checkpoint overwrites the last healthy one")
    health_window: int = arg(10, "steps whose mean is a signal's running level (judging starts after them)",
                             advanced=True)
    health_drop: float = arg(0.5, "alarm when a signal falls below this fraction of its running level",
                             advanced=True)
    health_margin: float = arg(0.1, "... and by more than this much (absolute), so that noise near 0 is no alarm",
                               advanced=True)
    health_patience: int = arg(3, "consecutive steps with an alarm that make a collapse", advanced=True)

    def __post_init__(self) -> None:
        check(self.health_window >= 1, f"--health-window must be >= 1 (got {self.health_window})")
        check(0 < self.health_drop < 1, f"--health-drop must be > 0 and < 1 (got {self.health_drop})")
        check(self.health_margin >= 0, f"--health-margin must be >= 0 (got {self.health_margin})")
        check(self.health_patience >= 1, f"--health-patience must be >= 1 (got {self.health_patience})")


class TrainingCollapsed(NonFiniteLossError):
    """The health monitor stopped a collapsing run (one line, exit code 1, like a non-finite loss)."""


class HealthMonitor:
    """Judges each GRPO step's record (see the module docstring for the rule).

    ::

        monitor = HealthMonitor(HealthConfig(), total=250)
        for record in records:
            line = monitor.observe(record)       # "health step 40/250 | ok | reward 1.21 (level 1.18) | ..."
            if monitor.collapsed: ...            # stop; monitor.reason says which signal, from which step
    """

    def __init__(self, cfg: HealthConfig, total: int | None = None):
        self.cfg, self.total = cfg, total
        self.enabled = cfg.health  # off (--no-health): every step is "ok", nothing is judged
        self.history = {name: deque(maxlen=cfg.health_window) for name in SIGNALS}  # values of alarm-free steps
        self.streak = 0  # consecutive steps with an alarm
        self.streak_start = 0  # the first step of the streak
        self.alarms: list[str] = []  # the alarms of the last step observed
        self.collapsed = False
        self.reason = ""

    @property
    def healthy(self) -> bool:
        """False while the last step observed raised an alarm (the script then writes no checkpoint)."""
        return not self.alarms

    def level(self, name: str) -> float | None:
        """The running level of a signal: its mean over the last ``window`` alarm-free steps (None before that)."""
        values = self.history[name]
        return sum(values) / len(values) if len(values) == self.cfg.health_window else None

    def observe(self, record: dict) -> str:
        """Judge one step's record; return its one-line verdict. Sets ``collapsed`` on the collapsing step."""
        step = record.get("step", 0)
        if not self.enabled:
            return f"health step {step}: not watched (--no-health)"
        values = {name: record.get(key) for name, key in SIGNALS.items()}  # None: not measured at this step
        self.alarms = []
        shown = []
        warming_up = any(value is not None and self.level(name) is None for name, value in values.items())
        for name, value in values.items():
            if value is None:
                continue
            level = self.level(name)
            threshold = None if level is None else min(self.cfg.health_drop * level, level - self.cfg.health_margin)
            if threshold is not None and value < threshold:
                self.alarms.append(f"{name} {value:.3g} < {self.cfg.health_drop:g} x its level {level:.3g}")
            shown.append(f"{name} {value:.3g}" + ("" if level is None else f" ({level:.3g})"))
        if record.get("kl") is not None:
            shown.append(f"kl {record['kl']:.3g}")
        if self.alarms:
            self.streak_start = step if self.streak == 0 else self.streak_start
            self.streak += 1
        else:
            self.streak = 0
            for name, value in values.items():
                if value is not None:
                    self.history[name].append(float(value))
        where = f"health step {step}" + (f"/{self.total}" if self.total else "")
        if self.alarms and self.streak >= self.cfg.health_patience:
            self.collapsed = True
            self.reason = (f"collapse at step {step}: {'; '.join(self.alarms)} (alarms on {self.streak} steps "
                           f"in a row, from step {self.streak_start})")
            verdict = "COLLAPSE: " + "; ".join(self.alarms)
        elif self.alarms:
            verdict = f"WARNING {self.streak}/{self.cfg.health_patience}: " + "; ".join(self.alarms)
        else:
            verdict = "warming up" if warming_up else "ok"
        return " | ".join([where, verdict] + shown)

    def failure(self, out: Path | str, checkpoint_step: int | None, lr: float) -> TrainingCollapsed:
        """The one-line error of a collapse: what collapsed, the checkpoint kept, how to resume with a lower lr."""
        kept = (f"the last healthy checkpoint (step {checkpoint_step}) is kept in {out}" if checkpoint_step
                else "no checkpoint was taken before it (the resume starts from step 0)")
        return TrainingCollapsed(f"GRPO health monitor: {self.reason}; {kept}; resume with a lower learning rate: "
                                 f"python train_grpo.py --resume --out {out} --lr {lr / 10:g} "
                                 f"(or --no-health to go on regardless)")


def replay(cfg: HealthConfig, records: list[dict], total: int | None = None) -> HealthMonitor:
    """A monitor that has observed ``records`` (GRPO step records; other records are skipped) in order.

    A resumed run's monitor is the replay of its metrics.jsonl (which ``--resume`` cut at the checkpoint), so
    it judges the next step as the uninterrupted run's monitor would.
    """
    monitor = HealthMonitor(cfg, total)
    for record in records:
        if record.get("stage") == "grpo" and "reward_fused_mean" in record:
            monitor.observe(record)
    monitor.collapsed = False  # a resumed run goes on (with a lower --lr, or --no-health)
    return monitor


def read_records(path: str | Path) -> list[dict]:
    """The records of a metrics.jsonl (a last line cut by a kill is skipped)."""
    path = Path(path)
    check(path.is_file(), f"no metrics log at {path}")
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def main(argv=None) -> int:
    p = Parser(prog="python -m qrw.health", description="Replay a GRPO run's metrics.jsonl through the health "
                                                        "monitor: one verdict per step, the collapse if any.")
    p.add_argument("metrics", help="a GRPO run's metrics.jsonl (or its run directory)")
    add_config_args(p, HealthConfig, group_title="health monitor")
    args = p.parse_args(argv)
    cfg = config_from_args(HealthConfig, args)
    path = Path(args.metrics)
    records = [r for r in read_records(path / "metrics.jsonl" if path.is_dir() else path)
               if r.get("stage") == "grpo" and "reward_fused_mean" in r]
    if not records:
        raise UserError(f"{path} holds no GRPO step records")
    monitor = HealthMonitor(cfg, total=None)
    for record in records:
        print(monitor.observe(record))
        if monitor.collapsed:
            print(f"the monitor would have stopped this run: {monitor.reason}")
            return 1
    print(f"no collapse in {len(records)} steps")
    return 0


if __name__ == "__main__":
    run_main(main)
