"""``python -m qrw.bench.preempt --trials N``: SIGTERM or SIGINT at random moments, then ``--resume`` (a measurement).

Each trial starts a smoke-sized run of ``train_sft.py`` (stopped in stage 0 or in
stage 1) or ``train_grpo.py`` as a subprocess, waits until its ``metrics.jsonl``
logs a random step of the chosen stage, waits a random 0-50 ms more, sends the
signal, and records: whether the stage loop caught it (a signal that lands just
after a stage's last step, outside the steps, acts as usual: SIGTERM ends the
process, SIGINT exits with 130), the exit code (128 + the signal's number), the
checkpoint's step against the last step logged (the steps a resume would redo: 0
expected), then resumes the run to its end and compares its weights, bitwise, with
an uninterrupted run of the same flags (computed once per script). One line per
trial, then a summary::

    python -m qrw.bench.preempt --trials 30          # ~5 s a trial on a laptop core

The test (tests/test_preemption.py) does three such trials; this command does many.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from qrw.config import Parser, check

ROOT = Path(__file__).resolve().parents[2]
WORLD = ["--n-products", "120", "--n-train-queries", "150", "--n-val-queries", "20", "--n-test-queries", "30",
         "--n-log-sessions", "200"]
SFT = ["train_sft.py", "--smoke", "--quiet", *WORLD, "--pretrain-ckpt-every", "0", "--sft-ckpt-every", "0"]
GRPO_STEPS = 8
CASES = {"pretrain": (SFT, 7), "sft": (SFT, 11), "grpo": (None, GRPO_STEPS - 1)}  # stage -> (command, last step to aim)
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def last_step(out: Path) -> tuple[str, int] | None:
    """The (stage, step) of the last whole record of ``out``'s metrics.jsonl."""
    path = out / "metrics.jsonl"
    lines = [line for line in (path.read_text().split("\n")[:-1] if path.exists() else []) if line]
    return (json.loads(lines[-1])["stage"], json.loads(lines[-1])["step"]) if lines else None


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *cmd], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)


def trial(stage: str, command: list[str], aim: int, reference: Path, out: Path, rng: random.Random) -> dict:
    """One signal at a random moment of ``stage``, then --resume to the end."""
    signum = rng.choice([signal.SIGTERM, signal.SIGINT])
    at = rng.randint(1, aim)
    proc = subprocess.Popen([sys.executable, *command, "--out", str(out)], cwd=ROOT, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while (position := last_step(out)) is None or position[0] != stage or position[1] < at:
        if proc.poll() is not None:
            raise RuntimeError(f"the run ended before {stage} step {at}: {proc.stderr.read()[-2000:]}")
        time.sleep(0.002)
    time.sleep(rng.uniform(0, 0.05))
    proc.send_signal(signum)
    stdout, _ = proc.communicate(timeout=600)
    state = torch.load(out / "ckpt.pt", weights_only=True)
    logged = last_step(out)
    resumed = run([command[0], "--resume", "--quiet", "--out", str(out)])
    same = resumed.returncode == 0 and all(
        torch.equal(a, b) for a, b in zip(torch.load(out / "ckpt.pt", weights_only=True)["model"].values(),
                                          torch.load(reference / "ckpt.pt", weights_only=True)["model"].values()))
    return {"stage": stage, "signal": signal.Signals(signum).name, "sent after step": at,
            "caught": f"{signal.Signals(signum).name}: " in stdout, "exit code": proc.returncode, "checkpoint": f"{state['stage']} {state['step']}",
            "steps redone": logged[1] - state["step"] if logged and logged[0] == state["stage"] else None,
            "resumed bitwise equal": same}


def main(argv=None) -> int:
    p = Parser(prog="python -m qrw.bench.preempt", description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=10, help="signals sent (stage 0, stage 1, GRPO in turn)")
    p.add_argument("--seed", type=int, default=0, help="seed of the moments and signals")
    args = p.parse_args(argv)
    check(args.trials >= 1, "--trials must be >= 1")
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        references = {"sft": tmp / "reference-sft", "grpo": tmp / "reference-grpo"}
        for cmd, out in ((SFT, references["sft"]),
                         (["train_grpo.py", "--smoke", "--quiet", "--init", str(references["sft"]), "--steps",
                           str(GRPO_STEPS), "--ckpt-every", "100"], references["grpo"])):
            done = run(cmd + ["--out", str(out)])
            check(done.returncode == 0, f"the uninterrupted run failed: {done.stderr[-2000:]}")
        grpo = ["train_grpo.py", "--smoke", "--quiet", "--init", str(references["sft"]), "--steps", str(GRPO_STEPS),
                "--ckpt-every", "100"]
        rows = []
        for i in range(args.trials):
            stage = list(CASES)[i % len(CASES)]
            command, aim = CASES[stage]
            reference = references["grpo" if stage == "grpo" else "sft"]
            row = trial(stage, command or grpo, aim, reference, tmp / f"trial{i}", rng)
            rows.append(row)
            print(f"trial {i + 1:3d}: " + " | ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    caught = [r for r in rows if r["caught"] and r["exit code"] == 128 + signal.Signals[r["signal"]].value]
    good = [r for r in rows if r["steps redone"] == 0 and r["resumed bitwise equal"]]
    print(f"{len(caught)} of {len(rows)} trials stopped at a step boundary with exit code 128 + signal (the others "
          f"landed outside a stage's steps, where the signal acts as usual); {len(good)} of {len(rows)}: 0 steps "
          f"redone and resumed bitwise equal to the uninterrupted run")
    return 0 if len(good) == len(rows) else 1


if __name__ == "__main__":
    from qrw.config import run_main

    run_main(main)
