"""Preemption (qrw/preemption.py, qrw.runs.StageLoop): SIGTERM or Ctrl-C loses no step.

The scripts run as subprocesses (one torch thread each) and get SIGTERM or SIGINT at a
random moment of a stage, chosen from the run directory's metrics.jsonl (one record
per finished step) plus a random delay. Each time: exit code 128 + the signal's
number, the ``--resume`` command printed, a checkpoint at the last finished step (0
steps redone: the last step in metrics.jsonl is the checkpoint's), and after the
resumes the weights and the log of an uninterrupted run, bitwise. The uninterrupted
runs take no periodic checkpoint in between, so every
checkpoint of the interrupted runs is the signal's.

Many more random moments: ``python -m qrw.bench.preempt --trials N``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from qrw import preemption
from test_scripts import ROOT, TINY, assert_bitwise_equal, training_records, weights

SFT_RUN = TINY + ["--pretrain-ckpt-every", "0", "--sft-ckpt-every", "0"]  # 8 + 12 steps, checkpoints at stage ends
GRPO_RUN = ["--smoke", "--quiet", "--steps", "6", "--ckpt-every", "100"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def start(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, script, *args], cwd=ROOT, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def last_step(out: Path) -> tuple[str, int] | None:
    """The (stage, step) of metrics.jsonl's last whole record (None: no record yet)."""
    path = out / "metrics.jsonl"
    text = path.read_text() if path.exists() else ""
    lines = [line for line in text.split("\n")[:-1] if line]  # a line without its newline is being written
    return (json.loads(lines[-1])["stage"], json.loads(lines[-1])["step"]) if lines else None


def checkpoint_position(out: Path) -> tuple[str, int]:
    state = torch.load(out / "ckpt.pt", weights_only=True)
    return state["stage"], state["step"]


def signal_at(proc: subprocess.Popen, out: Path, stage: str, step: int, signum: int, rng: random.Random) -> str:
    """Send ``signum`` once ``stage`` has logged ``step`` steps (plus 0-30 ms); the run must stop cleanly."""
    deadline = time.monotonic() + 180
    while (position := last_step(out)) is None or position[0] != stage or position[1] < step:
        assert proc.poll() is None, f"the run ended before {stage} step {step}: {proc.stderr.read()}"
        assert time.monotonic() < deadline, f"no {stage} step {step} after 180 s"
        time.sleep(0.002)
    time.sleep(rng.uniform(0, 0.03))
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 128 + signum, (proc.returncode, stderr)
    assert f"{signal.Signals(signum).name} received" in stderr
    assert "--resume --out " + str(out) in stdout
    assert checkpoint_position(out) == last_step(out), "a step was logged after the checkpoint: it would be redone"
    return stdout


def resume(script: str, out: Path) -> subprocess.Popen:
    return start(script, "--resume", "--quiet", "--out", str(out))


def test_a_second_signal_acts_at_once_and_the_handlers_are_put_back(monkeypatch):
    """In this process: the first SIGINT is remembered (exit code 130), a copy within REPEAT_SECONDS is ignored,
    a second one later raises KeyboardInterrupt."""
    before = signal.getsignal(signal.SIGINT)
    preemption.reset()
    try:
        preemption.catch()
        assert preemption.catching() and signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)  # the handler runs at the next bytecode boundary
        assert (preemption.received(), preemption.exit_code()) == (signal.SIGINT, 130)
        os.kill(os.getpid(), signal.SIGINT)  # a launcher's copy, within REPEAT_SECONDS: ignored
        time.sleep(0.01)
        assert preemption.catching()
        monkeypatch.setattr(preemption, "REPEAT_SECONDS", 0.0)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
        assert not preemption.catching() and signal.getsignal(signal.SIGINT) is before
    finally:
        preemption.reset()
    assert (preemption.received(), preemption.exit_code()) == (None, 0)


def test_sft_signalled_in_stage_0_and_stage_1_resumes_to_the_uninterrupted_weights(tmp_path):
    rng = random.Random()
    reference = start("train_sft.py", *SFT_RUN, "--out", str(tmp_path / "reference"))  # in parallel
    out = tmp_path / "run"
    at = rng.randint(1, 5), rng.randint(1, 9)  # stage 0 has 8 steps, stage 1 has 12
    stdout = signal_at(start("train_sft.py", *SFT_RUN, "--out", str(out)), out, "pretrain", at[0], signal.SIGTERM,
                       rng)
    assert checkpoint_position(out)[0] == "pretrain" and "SIGTERM: pretrain stopped at step" in stdout
    signal_at(resume("train_sft.py", out), out, "sft", at[1], signal.SIGINT, rng)
    assert checkpoint_position(out)[0] == "sft"
    stdout, stderr = resume("train_sft.py", out).communicate(timeout=180)
    assert "error" not in stderr, stderr
    reference.communicate(timeout=180)
    assert reference.returncode == 0
    assert_bitwise_equal(weights(out), weights(tmp_path / "reference"))
    assert training_records(out) == training_records(tmp_path / "reference")


def test_grpo_signalled_mid_run_resumes_to_the_uninterrupted_weights(tmp_path):
    rng = random.Random()
    init = tmp_path / "sft"
    subprocess.run([sys.executable, "train_sft.py", *TINY, "--out", str(init)], cwd=ROOT, env=ENV, check=True,
                   capture_output=True)
    flags = [*GRPO_RUN, "--init", str(init)]
    reference = start("train_grpo.py", *flags, "--out", str(tmp_path / "reference"))
    out = tmp_path / "run"
    stdout = signal_at(start("train_grpo.py", *flags, "--out", str(out)), out, "grpo", rng.randint(1, 4),
                       signal.SIGTERM, rng)
    assert "SIGTERM: grpo stopped at step" in stdout
    result = resume("train_grpo.py", out)
    result.communicate(timeout=180)
    assert result.returncode == 0
    reference.communicate(timeout=180)
    assert reference.returncode == 0
    assert_bitwise_equal(weights(out), weights(tmp_path / "reference"))
    assert training_records(out) == training_records(tmp_path / "reference")
