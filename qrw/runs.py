"""Run directories and the bookkeeping that both training scripts share.

A run directory (``runs/sft``, ``runs/grpo``, ...) holds ``config.json``,
``tokenizer.json``, ``ckpt.pt``, ``metrics.jsonl`` (one JSON object per logged
step), once finished ``metrics.json`` (the test evaluation), and ``.lock``, the
file that keeps a second writer out.

- :class:`RunDir`: start a run or resume one (``--resume``) in a directory, one
  writer at a time, write its config, restore the model from its checkpoint,
  checkpoint it atomically;
- :class:`StageLoop`: the steps of one stage with a progress bar, the log-line
  cadence, the checkpoint cadence, ``--stop-after`` and SIGTERM/SIGINT (a
  checkpoint at the step in progress, :mod:`qrw.preemption`);
- :func:`lr_at`: linear warmup, then cosine decay (stages 0 and 1) or constant (GRPO);
- :func:`load_run`: a finished run as world + tokenizer + model, for evaluation and the CLIs.

The training steps themselves are written out in ``train_sft.py`` and
``train_grpo.py``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

try:
    import fcntl  # POSIX (Linux, macOS)
except ImportError:  # Windows: run directories are not locked
    fcntl = None

import torch
from tqdm.auto import tqdm

from qrw import distributed, preemption
from qrw.checkpoint import (CKPT_NAME, CONFIG_NAME, TOKENIZER_NAME, file_sha256, load_checkpoint, read_json,
                            restore_model, save_checkpoint, write_json)
from qrw.config import UserError, config_from_dict
from qrw.lm.model import ModelConfig, Transformer
from qrw.lm.precision import set_precision
from qrw.lm.tokenizer import Tokenizer
from qrw.log import MetricsLog, log_line
from qrw.rewriter import Rewriter
from qrw.shop.world import World, WorldConfig


RESULTS_NAME = "metrics.json"
LOCK_NAME = ".lock"


class RunDir:
    """A run directory being written by one training script (fresh, or continued with ``--resume``).

    ::

        run = RunDir(out, resume=args.resume)     # refuses to overwrite a run; reads config.json on resume
        configs = run.saved_config or fresh       # resume continues with the saved configs
        run.create()                              # the directory, locked: before the first file is written
        state = run.begin(config_json, model)     # writes config.json, or loads ckpt.pt into model
        ...
        run.save(stage, step, optimizer)          # atomic checkpoint

    **One writer.** The directory is locked (``fcntl.flock`` on its ``.lock``
    file) from the moment it exists (in the constructor when it already does,
    else in :meth:`create`) until :meth:`close`, the object's garbage collection
    or the process's end, whichever comes first; the lock is taken before
    anything in the directory is written or truncated. A second process on the same
    directory gets a one-line :class:`UserError`. The operating system drops
    the lock of a process that dies, even by SIGKILL, so a killed run never
    blocks the next one (which a PID file would). Readers (:func:`load_run`) take no lock.

    **Resume from any moment.** The files are written in the order
    ``tokenizer.json``, ``config.json`` (atomically), then ``ckpt.pt`` (atomically,
    at every checkpoint), so a killed run leaves one of three states, and
    ``--resume`` handles each:

    - no ``config.json`` (killed before it was written): its flags were never
      saved, so there is nothing to resume: a one-line error says to start the
      run again without ``--resume``;
    - ``config.json`` but no ``ckpt.pt`` (killed before the first checkpoint):
      the run starts from step 0 with its saved configs, saying so in one line;
    - ``ckpt.pt``: the run continues from it, and ``metrics.jsonl`` loses the
      records logged after it.

    Either way the weights end bitwise equal to an uninterrupted run's. A
    checkpoint's temporary file left by a kill mid-write is deleted.

    **Under torchrun** rank 0 is the writer; the other ranks pass
    ``writer=False``: they read the run (``config.json``, ``ckpt.pt``) but take no
    lock and write nothing (``log.write``, :meth:`save` and :meth:`write_results`
    do nothing there).
    """

    def __init__(self, out: str | os.PathLike, *, resume: bool, writer: bool = True):
        self.out = Path(out)
        self.resume = resume
        self.writer = writer
        self.saved_config: dict | None = None
        self.log: MetricsLog | None = None
        self.model: torch.nn.Module | None = None
        self.tokenizer_sha256 = ""
        self.checkpoint_step: int | None = None  # the step of the checkpoint on disk (resumed or last saved)
        self._unlock: weakref.finalize | None = None
        if resume and not self.out.is_dir():
            raise UserError(f"no run to resume in {self.out} (no such directory): start it without --resume")
        if self.out.is_dir():
            self.create()
        if resume:
            try:
                if not (self.out / CONFIG_NAME).is_file():
                    raise UserError(f"nothing to resume in {self.out}: the run stopped before writing "
                                    f"{CONFIG_NAME}; start it again without --resume")
                self.saved_config = read_json(self.out / CONFIG_NAME, "run config")
            except UserError:
                self.close()
                raise

    @property
    def tokenizer_path(self) -> Path:
        return self.out / TOKENIZER_NAME

    def create(self) -> None:
        """Make the directory (and its parents) and lock it; a no-op once it is locked.

        Raises :class:`UserError` when another process holds the lock, or when a
        fresh run would overwrite a run that has a checkpoint.
        """
        if self._unlock is not None or not self.writer:
            return
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # a file in the way, no permission
            raise UserError(f"cannot create run directory {self.out}: {e.strerror}") from None
        self._unlock = weakref.finalize(self, os.close, lock_directory(self.out))
        if not self.resume and (self.out / CKPT_NAME).exists():
            self.close()
            raise UserError(f"{self.out} already holds a run: pass --resume to continue it, or choose another --out")
        for stale in self.out.glob(".*.tmp"):  # an atomic write cut short by a kill; nobody else writes here
            stale.unlink(missing_ok=True)

    def close(self) -> None:
        """Release the directory's lock (also done when this object is garbage collected or the process ends)."""
        if self._unlock is not None:
            self._unlock()
            self._unlock = None

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def begin(self, config: dict[str, Any], model: torch.nn.Module) -> dict[str, Any] | None:
        """Write ``config.json`` (fresh run) or restore ``model`` from ``ckpt.pt`` (resume); open the metrics log.

        ``tokenizer.json`` must already be in the directory. Returns the checkpoint
        state on resume (``optimizer``, ``stage``, ``step``), else None: a fresh
        run, or a resumed one stopped before its first checkpoint, which starts
        again from step 0 (saying so) with an emptied ``metrics.jsonl``. A resume
        whose ``config`` differs from the saved one (``train_grpo.py --resume --lr``)
        rewrites ``config.json``, so that later resumes keep the change.
        """
        self.create()
        if self.writer and (not self.resume or config != self.saved_config):
            write_json(self.out / CONFIG_NAME, config)
        self.tokenizer_sha256 = file_sha256(self.tokenizer_path)
        self.model = model
        state = None
        if self.resume and (self.out / CKPT_NAME).exists():
            state = restore_model(self.out, model, self.tokenizer_sha256)
            self.checkpoint_step = state["step"]
        elif self.resume and self.writer:
            print(f"no checkpoint in {self.out} yet: starting the run from step 0")
        if not self.writer:
            self.log = NoLog()
            return state
        self.log = MetricsLog(self.out / "metrics.jsonl", truncate=state is None)
        if state is not None:
            self.log.truncate_after(state["stage"], state["step"])
        return state

    def write_results(self, results: dict[str, Any]) -> None:
        """The final test evaluation, ``metrics.json``."""
        if not self.writer:
            return
        write_json(self.out / RESULTS_NAME, results)

    def save(self, stage: str, step: int, optimizer: torch.optim.Optimizer) -> None:
        """Checkpoint the model and optimizer after ``step`` completed steps of ``stage`` (atomic write)."""
        self.checkpoint_step = step
        if not self.writer:
            return
        save_checkpoint(self.out / CKPT_NAME, {"model": self.model.state_dict(), "optimizer": optimizer.state_dict(),
                                               "stage": stage, "step": step,
                                               "model_config": dataclasses.asdict(self.model.config),
                                               "tokenizer_sha256": self.tokenizer_sha256})


class NoLog:
    """The metrics log of a rank that writes nothing (torchrun ranks other than 0)."""

    def write(self, record: dict[str, Any]) -> None:
        pass


class StageLoop:
    """Steps ``start .. total - 1`` of one stage, with a progress bar and ``--stop-after``.

    ::

        loop = StageLoop("sft", start, total, log_every=10, ckpt_every=100, stop_after=None)
        for step in loop:
            ...                                    # one optimizer step
            if loop.print_due(step + 1): loop.write("sft " + log_line(...))
            if loop.checkpoint_due(step + 1): run.save("sft", step + 1, optimizer)
        if loop.stopped: ...                       # --stop-after ended the loop early (after a checkpoint)

    ``stop_after`` counts the steps taken in this invocation; a checkpoint is due
    at every ``ckpt_every`` steps (0: never in between), at the stage's last step,
    and at the step where ``stop_after`` stops the loop.

    **Preemption** (:mod:`qrw.preemption`): while the steps run, SIGTERM and
    SIGINT are caught; the step in progress finishes, :meth:`checkpoint_due`
    says yes at it, and the loop ends with ``stopped`` set and ``signal`` the
    signal's number (the script then prints its ``--resume`` command and exits
    with :func:`qrw.preemption.exit_code`). Every rank agrees on the step: the
    first call of :meth:`checkpoint_due` at a step boundary (the scripts call it
    once per step, on every rank) all-reduces the signal under torchrun.
    """

    def __init__(self, stage: str, start: int, total: int, *, log_every: int, ckpt_every: int,
                 stop_after: int | None = None, progress: bool = True):
        self.stage, self.start, self.total = stage, start, total
        self.log_every, self.ckpt_every, self.stop_after = log_every, ckpt_every, stop_after
        self.progress = progress
        self.steps_run = 0
        self.stopped = False
        self.signal: int | None = None  # the stop signal that ended the loop (qrw.preemption), if one did
        self._agreed: tuple[int, int] | None = None  # (steps done, signal or 0) agreed by the ranks at a boundary
        self.bar = None

    def __iter__(self) -> Iterator[int]:
        self.bar = tqdm(range(self.start, self.total), desc=self.stage, initial=self.start, total=self.total,
                        disable=not self.progress, dynamic_ncols=True, leave=False)
        preemption.catch()
        try:
            for step in self.bar:
                self.steps_run += 1
                yield step
                if self.stopping(step + 1) or self.signalled(step + 1):
                    self.stopped = True
                    break
        finally:
            self.bar.close()
            if preemption.received() is None:  # after a signal, a second one during the save still exits at once
                preemption.release()
        if self.signal is not None and distributed.is_main():
            print(f"{preemption.name(self.signal)}: {self.stage} stopped at step {self.done}/{self.total}, "
                  f"checkpointed there")

    @property
    def done(self) -> int:
        """Steps of the stage completed so far (by this and earlier invocations)."""
        return self.start + self.steps_run

    def signalled(self, done: int) -> bool:
        """True when a stop signal ends the stage after ``done`` steps: agreed by every rank, once per boundary."""
        if self._agreed is None or self._agreed[0] != done:
            self._agreed = (done, distributed.max_over_ranks(preemption.received() or 0))
        if self._agreed[1]:
            self.signal = self._agreed[1]
        return bool(self._agreed[1])

    def stopping(self, done: int) -> bool:
        """True when ``--stop-after`` ends the stage after ``done`` steps (and the stage is not finished)."""
        return self.stop_after is not None and self.steps_run >= self.stop_after and done < self.total

    def print_due(self, done: int) -> bool:
        return self.progress and (done % self.log_every == 0 or done == self.total)

    def checkpoint_due(self, done: int) -> bool:
        return (bool(self.ckpt_every and done % self.ckpt_every == 0) or done == self.total or self.stopping(done)
                or self.signalled(done))

    def write(self, text: str) -> None:
        """Print a line above the progress bar."""
        self.bar.write(text)

    def show(self, **values: float) -> None:
        """Values shown beside the progress bar."""
        self.bar.set_postfix({k: f"{v:.3g}" if isinstance(v, float) else v for k, v in values.items()})

    def log_line(self, done: int, values: dict[str, Any], seconds: float | None = None) -> None:
        """``STAGE step 120/500 | loss 1.234 | ... | 0.84 s`` above the bar."""
        self.write(f"{self.stage} " + log_line(done, self.total, values, seconds))


def lock_directory(path: Path) -> int:
    """Take the exclusive advisory lock of run directory ``path`` (its ``.lock`` file); return the file descriptor.

    The lock lives as long as the descriptor: closing it, or the process's
    death by any signal, releases it. The lock file itself is never deleted (a
    deleted lock file lets two processes lock two different files). It holds
    the PID of the last process that locked it, for the error message.
    Without ``fcntl`` (Windows) nothing is locked.
    """
    fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    if fcntl is None:
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip()
        os.close(fd)
        who = f"another process (pid {holder})" if holder.isdigit() else "another process"
        raise UserError(f"{who} is writing the run in {path}; wait for it to finish, or choose another --out") from None
    except OSError as e:
        os.close(fd)
        raise UserError(f"cannot lock run directory {path}: {e.strerror}") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def lr_at(step: int, *, peak: float, warmup_steps: int, total_steps: int, min_ratio: float = 1.0) -> float:
    """The learning rate of optimizer step ``step`` (0-based).

    Linear warmup to ``peak`` over ``warmup_steps``, then cosine decay to
    ``peak * min_ratio`` at ``total_steps`` (``min_ratio=1``: constant after the
    warmup, the usual choice for RL fine-tuning).
    """
    if warmup_steps > 0 and step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return peak * (min_ratio + (1 - min_ratio) * cosine)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


@dataclass
class LoadedRun:
    """A finished run directory (SFT or GRPO): its world, tokenizer, model and saved configs."""

    path: Path
    world: World
    tok: Tokenizer
    model: torch.nn.Module
    config: dict

    def rewriter(self, device: torch.device | str = "cpu", **kwargs) -> Rewriter:
        return Rewriter(self.model, self.tok, device, **kwargs)


def final_stage(config: dict) -> str:
    """The last stage a run directory's ``config.json`` trains: "grpo", "label" (stage 1b) or "sft"."""
    if config.get("kind") != "sft":
        return "grpo"
    return "label" if (config.get("label") or {}).get("steps", 0) > 0 else "sft"


def load_run(run_dir: str | os.PathLike, device: torch.device | str = "cpu") -> LoadedRun:
    """Load a finished run directory written by ``train_sft.py`` or ``train_grpo.py``.

    Every problem a user can cause is one :class:`UserError`: no such directory,
    a missing or corrupted ``config.json`` / ``tokenizer.json`` / ``ckpt.pt``, a
    checkpoint trained with another config or tokenizer, or an unfinished run.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise UserError(f"no run directory at {path} (train one with `python train_sft.py`)")
    config = read_json(path / CONFIG_NAME, "run config")
    try:
        world_cfg = config_from_dict(WorldConfig, config["world"])
        model_cfg = config_from_dict(ModelConfig, config["model"])
    except (KeyError, TypeError) as e:
        raise UserError(f"{path / CONFIG_NAME} is not a qrw run config (missing {e})") from None
    tok = Tokenizer.load(path / TOKENIZER_NAME)
    state = load_checkpoint(path / CKPT_NAME, expect_model_config=dataclasses.asdict(model_cfg),
                            expect_tokenizer_sha256=file_sha256(path / TOKENIZER_NAME))
    finished_stage = final_stage(config)
    steps = config.get(finished_stage, {}).get("steps")
    if state.get("stage") != finished_stage or (steps is not None and state.get("step") != steps):
        raise UserError(f"{path} holds an unfinished run (stage {state.get('stage')!r}, step {state.get('step')}); "
                        f"finish it with --resume")
    model = Transformer(model_cfg)
    model.load_state_dict(state["model"])
    model.eval()
    set_precision(model, config.get("run", {}).get("dtype", "fp32"))  # as trained (runs before bf16: fp32)
    return LoadedRun(path, World(world_cfg), tok, model.to(device), config)
