"""Hardening (issue 15): resume from any moment, one writer per run directory, clip ranges, bounded log-ratios.

The kill tests run the scripts as subprocesses (one torch thread each, output
unbuffered) and SIGKILL them as soon as the run directory reaches a chosen state,
polled from its files: the lock file, config.json, ckpt.pt, a number of lines in
metrics.jsonl. Nothing in the scripts knows it is being tested. The uninterrupted
runs they are compared with start in the background, in parallel with the killed ones.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import qrw.grpo as grpo
import train_grpo
import train_sft
from qrw.config import UserError, run_main
from qrw.grpo import LOSS_TYPES, policy_loss
from qrw.log import MetricsLog
from qrw.runs import LOCK_NAME, RunDir
from qrw.update import GRPOConfig
from test_checkpoint import RunsCode
from test_scripts import ROOT, TINY, assert_bitwise_equal, training_records, weights

SFT_RUN = TINY + ["--pretrain-ckpt-every", "2", "--sft-ckpt-every", "4"]  # 8 + 12 steps, 7 checkpoints
SFT_LINES = 8 + 12 + 1  # metrics.jsonl of a finished SFT_RUN: every step, then the final validation
GRPO_RUN = ["--smoke", "--quiet", "--steps", "4"]  # a checkpoint every 2 steps
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
STARTING_OVER = "yet: starting the run from step 0"


def start(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, script, *args], cwd=ROOT, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def wait_until(proc: subprocess.Popen, reached, what: str) -> None:
    """Poll ``reached()`` every 2 ms while ``proc`` runs."""
    deadline = time.monotonic() + 120
    while not reached():
        assert proc.poll() is None, f"the run ended before {what}: {proc.stderr.read()}"
        assert time.monotonic() < deadline, f"no {what} after 120 s"
        time.sleep(0.002)


def kill_when(proc: subprocess.Popen, reached, what: str, *, may_finish: bool = False) -> str:
    """SIGKILL ``proc`` as soon as ``reached()`` holds; its stdout up to then.

    ``may_finish``: the point is so close to the end that the run may finish before the kill lands.
    """
    wait_until(proc, reached, what)
    proc.send_signal(signal.SIGKILL)
    result = finish(proc)
    assert result.returncode == -signal.SIGKILL or (may_finish and result.returncode == 0), \
        f"the run ended ({result.returncode}) before it was killed at {what}: {result.stderr}"
    return result.stdout


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def checkpoint_position(out: Path) -> tuple[str, int]:
    state = torch.load(out / "ckpt.pt", weights_only=True)
    return state["stage"], state["step"]


def one_line_error(result) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    error = result.stderr.strip().splitlines()
    assert len(error) == 1, result.stderr
    return error[0]


class Background:
    """A run started in the background; :meth:`result` waits for it and returns its directory."""

    def __init__(self, out: Path, script: str, *args: str):
        self.out = out
        self.proc = start(script, *args, "--out", str(out))

    def result(self) -> Path:
        if self.proc.returncode is None:
            result = finish(self.proc)
            assert result.returncode == 0, result.stderr
        return self.out


@pytest.fixture(scope="module")
def reference_sft(tmp_path_factory):
    """An uninterrupted SFT_RUN, running while the first test kills and resumes its copies."""
    reference = Background(tmp_path_factory.mktemp("reference") / "sft", "train_sft.py", *SFT_RUN)
    yield reference
    if reference.proc.poll() is None:  # no test waited for it
        reference.proc.kill()
        reference.proc.communicate()


# ---------------------------------------------------------------------------
# Resume from any moment
# ---------------------------------------------------------------------------


def test_sft_killed_at_any_moment_resumes_to_the_uninterrupted_weights(reference_sft, tmp_path):
    """SIGKILL before config.json, before the first checkpoint, mid stage 0, mid stage 1, after the last step;
    each time --resume (before config.json: a fresh start, as the error says): weights and log as uninterrupted."""
    out = tmp_path / "run"
    metrics = out / "metrics.jsonl"

    # 1. before config.json: the directory is locked and the tokenizer is being trained (for ~30 ms here,
    # so the kill may land just after config.json; then this is point 2)
    kill_when(start("train_sft.py", *SFT_RUN, "--out", str(out)), lambda: (out / LOCK_NAME).exists(), "the lock")
    if not (out / "config.json").exists():
        with pytest.raises(UserError, match="nothing to resume in .*: the run stopped before writing config.json; "
                                            "start it again without --resume"):
            RunDir(out, resume=True)

    # 2. after config.json, before the first checkpoint: --resume starts over from step 0
    kill_when(start("train_sft.py", *SFT_RUN, "--out", str(out)), lambda: (out / "config.json").exists(),
              "config.json")
    assert not (out / "ckpt.pt").exists()
    stdout = kill_when(start("train_sft.py", "--resume", "--quiet", "--out", str(out)),
                       lambda: (out / "ckpt.pt").exists(), "the first checkpoint")  # 3. mid stage 0
    assert f"no checkpoint in {out} {STARTING_OVER}" in stdout.splitlines()
    assert checkpoint_position(out)[0] == "pretrain"

    # 4. mid stage 1, then 5. after the last step: its validation, checkpoint or the test evaluation (~0.3 s)
    kill_when(start("train_sft.py", "--resume", "--quiet", "--out", str(out)), lambda: lines(metrics) >= 12,
              "stage 1's 4th step")
    assert checkpoint_position(out) < ("sft", 12)
    kill_when(start("train_sft.py", "--resume", "--quiet", "--out", str(out)),
              lambda: lines(metrics) >= SFT_LINES - 1, "the last step", may_finish=True)

    result = finish(start("train_sft.py", "--resume", "--quiet", "--out", str(out)))
    assert result.returncode == 0, result.stderr
    reference = reference_sft.result()
    assert_bitwise_equal(weights(out), weights(reference))
    assert training_records(out) == training_records(reference)


def test_grpo_killed_before_its_first_checkpoint_resumes_exactly(reference_sft, tmp_path):
    """(Killed after a checkpoint, GRPO resumed exactly before: tests/test_scripts.py.)"""
    init = reference_sft.result()
    reference = Background(tmp_path / "reference", "train_grpo.py", *GRPO_RUN, "--init", str(init))
    out = tmp_path / "run"
    kill_when(start("train_grpo.py", *GRPO_RUN, "--init", str(init), "--out", str(out)),
              lambda: (out / "config.json").exists(), "config.json")
    assert not (out / "ckpt.pt").exists()
    result = finish(start("train_grpo.py", "--resume", "--quiet", "--out", str(out)))
    assert result.returncode == 0, result.stderr
    assert f"no checkpoint in {out} {STARTING_OVER}" in result.stdout.splitlines()
    assert_bitwise_equal(weights(out), weights(reference.result()))
    assert training_records(out) == training_records(reference.out)


def test_resume_before_the_first_checkpoint_of_a_run_without_stage_0(tmp_path, capsys):
    """--no-pretrain: the first stage is SFT; a run stopped before its first checkpoint starts over there."""
    flags = TINY + ["--no-pretrain", "--sft-steps", "4"]
    assert train_sft.main(flags + ["--out", str(tmp_path / "reference")]) == 0
    out = tmp_path / "run"
    assert train_sft.main(flags + ["--out", str(out), "--stop-after", "1"]) == 0
    (out / "ckpt.pt").unlink()  # what a kill before the first checkpoint leaves: config, tokenizer, 1 metrics line
    (out / ".ckpt.pt.x1y2.tmp").write_bytes(b"half a checkpoint")  # and a kill mid-write, its temporary file
    capsys.readouterr()
    assert train_sft.main(["--resume", "--quiet", "--out", str(out)]) == 0
    assert f"no checkpoint in {out} {STARTING_OVER}" in capsys.readouterr().out
    assert_bitwise_equal(weights(out), weights(tmp_path / "reference"))
    assert training_records(out) == training_records(tmp_path / "reference")
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))


def test_resume_drops_the_records_logged_after_the_checkpoint_in_any_stage(tmp_path):
    """Killed in stage 1 before its first checkpoint: resumed from stage 0's last, stage 1's records go too."""
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for stage, step in [("pretrain", 1), ("pretrain", 2), ("sft", 1), ("sft", 2), ("sft", 2), ("sft", 3)]:
        log.write({"stage": stage, "step": step})  # ("sft", 2) twice: a step's record, then its validation
    with log.path.open("a") as f:
        f.write('{"stage": "sft", "st')  # a line cut by the kill
    log.truncate_after("sft", 2)
    assert [(r["stage"], r["step"]) for r in training_records(tmp_path)] == \
        [("pretrain", 1), ("pretrain", 2), ("sft", 1), ("sft", 2), ("sft", 2)]
    log.truncate_after("pretrain", 2)
    assert [(r["stage"], r["step"]) for r in training_records(tmp_path)] == [("pretrain", 1), ("pretrain", 2)]


def test_resume_errors_name_what_is_missing(tmp_path):
    with pytest.raises(UserError, match="no run to resume in .*no such directory.*without --resume"):
        RunDir(tmp_path / "nothing", resume=True)
    assert not (tmp_path / "nothing").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="nothing to resume in .*before writing config.json.*without --resume"):
        RunDir(tmp_path / "empty", resume=True)
    with RunDir(tmp_path / "empty", resume=False) as run:  # the failed resume released its lock
        run.create()


# ---------------------------------------------------------------------------
# One writer per run directory
# ---------------------------------------------------------------------------


def test_a_second_writer_is_refused_while_the_first_runs(tmp_path):
    """The issue's case: two runs on one --out, the second started while the first holds the lock (taken when
    the directory is created, which its PID in the lock file shows: a fixed delay between the starts raced on a
    loaded machine); and a --resume while it runs."""
    out = tmp_path / "run"
    first = start("train_sft.py", *SFT_RUN, "--out", str(out))
    lock = out / ".lock"
    wait_until(first, lambda: lock.exists() and lock.read_text().strip() == str(first.pid), "the first run's lock")
    second = start("train_sft.py", *SFT_RUN, "--out", str(out))
    refused = f"another process (pid {first.pid}) is writing the run in {out}; wait for it to finish, " \
              f"or choose another --out"
    wait_until(first, lambda: (out / "config.json").exists(), "config.json")
    with pytest.raises(UserError) as resume:
        RunDir(out, resume=True)
    assert str(resume.value) == refused
    assert one_line_error(finish(second)) == f"error: {refused}"
    assert finish(first).returncode == 0
    records = training_records(out)  # neither refused writer wrote or truncated anything
    assert [(r["stage"], r["step"]) for r in records if "loss" in r] == \
        [("pretrain", s) for s in range(1, 9)] + [("sft", s) for s in range(1, 13)]
    assert len(records) == SFT_LINES


HOLD_LOCK = """
import sys, time
from qrw.runs import RunDir
run = RunDir(sys.argv[1], resume=False)
run.create()
print("locked", flush=True)
time.sleep(120)
"""


def test_the_lock_of_a_killed_writer_does_not_block_the_next(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], cwd=ROOT, env=ENV, text=True,
                              stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(UserError, match=rf"another process \(pid {holder.pid}\) is writing the run in"):
            RunDir(out, resume=False)
    finally:
        holder.send_signal(signal.SIGKILL)  # no cleanup code runs
        holder.communicate()
    assert (out / LOCK_NAME).exists()  # the file stays; the lock went with the process
    with RunDir(out, resume=False) as run:
        run.create()


def test_one_writer_in_one_process_too(tmp_path):
    """Locks belong to open files, not processes: a second RunDir in the same process is refused as well."""
    first = RunDir(tmp_path, resume=False)
    with pytest.raises(UserError, match="is writing the run in"):
        RunDir(tmp_path, resume=False)
    first.close()
    second = RunDir(tmp_path, resume=False)
    del second  # garbage collected: the lock is released
    with RunDir(tmp_path, resume=False):
        pass


# ---------------------------------------------------------------------------
# Clip ranges
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("flags,message", [
    (["--clip-low", "1.5"], "error: --clip-low must be > 0 and < 1"),
    (["--clip-low", "1"], "error: --clip-low must be > 0 and < 1"),
    (["--clip-low", "-0.2"], "error: --clip-low must be > 0 and < 1"),
    (["--clip-low", "nan"], "error: --clip-low must be > 0 and < 1"),
    (["--clip-high", "0"], "error: --clip-high must be a finite number > 0"),
    (["--clip-high", "-1"], "error: --clip-high must be a finite number > 0"),
    (["--clip-high", "inf"], "error: --clip-high must be a finite number > 0"),
])
def test_clip_ranges_are_one_line_errors(flags, message, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["train_grpo.py", *flags])
    with pytest.raises(SystemExit) as exit:
        run_main(train_grpo.main)
    assert exit.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith(message), error


def test_clip_limits_in_config_and_help(capsys):
    with pytest.raises(UserError, match="--clip-low must be > 0 and < 1"):
        GRPOConfig(clip_low=1.5)
    GRPOConfig(clip_low=0.999, clip_high=10.0)
    with pytest.raises(SystemExit):
        train_grpo.parse_args(["--help-all"])  # the clip range is an advanced flag
    text = " ".join(capsys.readouterr().out.split())
    assert "--clip-low CLIP_LOW clip range below 1, 0 < clip_low < 1:" in text
    assert "--clip-high CLIP_HIGH clip range above 1, > 0:" in text


# ---------------------------------------------------------------------------
# The unsafe-checkpoint message
# ---------------------------------------------------------------------------


def test_unsafe_checkpoint_is_a_one_line_error_and_does_not_run(reference_sft, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("config.json", "tokenizer.json"):
        shutil.copyfile(reference_sft.result() / name, out / name)
    marker = tmp_path / "ran"
    torch.save({"format_version": 1, "model": RunsCode(marker)}, out / "ckpt.pt")
    monkeypatch.setattr(sys, "argv", ["train_sft.py", "--resume", "--quiet", "--out", str(out)])
    with pytest.raises(SystemExit) as exit:
        run_main(train_sft.main)
    assert exit.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: unsafe checkpoint {out / 'ckpt.pt'}: it holds objects that safe loading (weights_only) refuses "
        f"(posix.system); a qrw checkpoint holds only tensors and plain values. Nothing in it was run"]
    assert not marker.exists()


# ---------------------------------------------------------------------------
# Bounded log-ratios (docs/GRPO_TESTS.md, "Numerics" and property 28)
# ---------------------------------------------------------------------------


def loss_case(rng: random.Random, loss_type: str, spread: float) -> dict:
    """Random policy_loss arguments: log-ratios up to +-spread nats, empty rows, zero-spread groups, -inf pads."""
    B, T = rng.randint(1, 5), rng.randint(1, 6)
    dtype = rng.choice([torch.float32, torch.float32, torch.float64])
    gen = torch.Generator().manual_seed(rng.randrange(2**31))

    def log_ratio() -> torch.Tensor:
        scale = spread * rng.choice([1e-3, 0.1, 1.0])
        values = (torch.rand(B, T, generator=gen, dtype=torch.float64) * 2 - 1) * scale  # uniform in +-scale
        extreme = torch.rand(B, T, generator=gen) < 0.2
        return torch.where(extreme, torch.full_like(values, rng.choice([-spread, spread])), values)

    old_logp = -torch.rand(B, T, generator=gen, dtype=torch.float64) * rng.choice([1.0, 30.0, 1000.0])
    logp = old_logp + log_ratio()
    ref_logp = logp + log_ratio()
    mask = (torch.rand(B, T, generator=gen) < rng.choice([0.0, 0.5, 1.0])).float()
    mask[rng.randrange(B)] = rng.choice([0.0, 1.0])  # an empty (or full) row
    if rng.random() < 0.3:  # masked positions may hold anything
        logp = torch.where(mask > 0, logp, torch.full_like(logp, -math.inf))
    advantages = torch.randn(B, generator=gen, dtype=torch.float64) * rng.choice([0.1, 1.0, 10.0])
    if rng.random() < 0.3:
        advantages = torch.zeros(B, dtype=torch.float64)  # zero-spread groups: every advantage 0
    beta = rng.choice([0.0, 0.04, 1.0])
    return dict(logp=logp.to(dtype).requires_grad_(), old_logp=old_logp.to(dtype), advantages=advantages.to(dtype),
                mask=mask, ref_logp=ref_logp.to(dtype) if beta > 0 or rng.random() < 0.5 else None, beta=beta,
                clip_low=rng.uniform(0.01, 0.99), clip_high=rng.choice([None, rng.uniform(0.01, 5.0)]),
                loss_type=loss_type)


def loss_grad_stats(case: dict) -> tuple[torch.Tensor, torch.Tensor, dict]:
    logp = case["logp"].detach().clone().requires_grad_()
    loss, stats = policy_loss(logp, **{k: v for k, v in case.items() if k != "logp"})
    loss.backward()
    return loss.detach(), logp.grad, stats


def test_p28_loss_gradient_and_stats_are_finite_for_extreme_log_ratios():
    """1,200 random configurations, 300 per loss type, log-ratios up to +-1000 nats: nothing non-finite."""
    rng = random.Random(28)
    bad = []
    for i in range(1200):
        case = loss_case(rng, LOSS_TYPES[i % len(LOSS_TYPES)], spread=1000.0)
        loss, grad, stats = loss_grad_stats(case)
        if not (torch.isfinite(loss) and torch.isfinite(grad).all() and all(map(math.isfinite, stats.values()))):
            bad.append((i, case["loss_type"], loss.item(), stats))
    assert not bad, f"{len(bad)} of 1200 configurations are not finite, e.g. {bad[:2]}"


def test_the_bound_changes_nothing_where_log_ratios_are_moderate(monkeypatch):
    """Log-ratios within +-19 nats: loss, gradient and stats bitwise equal to the unbounded computation."""
    rng = random.Random(20)
    cases = [loss_case(rng, loss_type, spread=19.0) for _ in range(100) for loss_type in LOSS_TYPES]
    bounded = [loss_grad_stats(case) for case in cases]
    monkeypatch.setattr(grpo, "LOG_RATIO_BOUND", math.inf)  # the unbounded reference: exp of the raw log-ratio
    for case, (loss, grad, stats) in zip(cases, bounded):
        ref_loss, ref_grad, ref_stats = loss_grad_stats(case)
        assert torch.equal(loss, ref_loss) and torch.equal(grad, ref_grad) and stats == ref_stats, case["loss_type"]
    # ...which is unbounded indeed: beyond ~88 nats it overflows float32
    logp, old = torch.tensor([[100.0]], requires_grad=True), torch.zeros(1, 1)
    loss, _ = policy_loss(logp, old, torch.tensor([-1.0]), torch.ones(1, 1))
    assert not torch.isfinite(loss)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_beyond_the_bound_values_are_clamped_and_the_gradient_is_zero(loss_type):
    """A token 1000 nats from pi_old and from pi_ref: ratio e^20, k3 e^20 - 21, no gradient through either."""
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    old_logp = torch.tensor([[-1001.0, -2.5]])  # log-ratios 1000 and 0.5
    ref_logp = torch.tensor([[999.0, -2.0]])  # k3 exponents 1000 and 0
    mask = torch.tensor([[1.0, 0.0]])
    loss, stats = policy_loss(logp, old_logp, torch.tensor([-1.0]), mask, ref_logp=ref_logp, beta=0.5,
                              loss_type=loss_type)
    e20 = math.exp(grpo.LOG_RATIO_BOUND)
    assert stats["ratio_mean"] == pytest.approx(e20, rel=1e-6)
    assert stats["kl"] == pytest.approx(e20 - 21, rel=1e-6)
    loss.backward()
    assert torch.isfinite(loss) and torch.equal(logp.grad, torch.zeros(1, 2))
