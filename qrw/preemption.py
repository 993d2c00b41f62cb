"""Preemption: SIGTERM or Ctrl-C stops a training stage at a step boundary, with a checkpoint at that step.

Shared clusters and spot GPUs stop a job with SIGTERM and a grace period before
SIGKILL (SLURM's ``--signal``/``KillWait``, Kubernetes' 30 s by default, spot
instances 30 s to 2 min); a person stops one with Ctrl-C (SIGINT). Without a
handler either signal kills the run like ``kill -9``: every step since the last
periodic checkpoint is lost. While the steps of a stage run
(:class:`qrw.runs.StageLoop`), this module catches both:

- **first signal**: remembered (one line on stderr); the step in progress
  finishes, the loop writes a checkpoint at that step (atomically, like every
  checkpoint) and ends; the script prints its ``--resume`` command and exits
  with code :func:`exit_code`, ``128 + the signal's number`` (143 for SIGTERM,
  130 for SIGINT): the shell's code for a process stopped by that signal, so a
  scheduler or a shell script sees an unfinished run, never a success (0);
- **second signal** (:data:`REPEAT_SECONDS` or more after the first): the
  signal's usual action at once (SIGTERM ends the process, SIGINT raises
  ``KeyboardInterrupt``, exit 130); the last checkpoint on disk is kept, whole
  (an atomic write is a rename). A copy that arrives sooner is the same stop
  delivered twice and is ignored: Ctrl-C reaches every process of the terminal's
  group and ``torchrun`` forwards the signal it got to its workers, so a worker
  gets both within milliseconds; ``scancel`` signals a job's processes alike.

``--resume`` then continues from the signalled step: no step is redone, and the
weights end bitwise equal to an uninterrupted run's (tests/test_preemption.py;
``python -m qrw.bench.preempt`` for many random moments).

Outside the steps of a stage (setup, the labelling round of stage 1b, the final
evaluation) the signals act as usual: nothing is lost there either, since every
stage checkpoints at its last step.

**Under torchrun** each rank has its own handler, and the signal may reach
one rank only, or the ranks at different moments: at each step boundary the
ranks agree with one all-reduce of the signal number (MAX, a single integer,
:func:`qrw.distributed.max_over_ranks`), so every rank stops after the same step
and rank 0 writes the checkpoint at it. torchrun itself, sent SIGTERM, forwards
it to its workers and waits 30 s before SIGKILL.

Handlers can only be installed from the main thread; elsewhere (a training loop
run in another thread) nothing is caught.
"""

from __future__ import annotations

import signal
import sys
import threading
import time

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
REPEAT_SECONDS = 1.0  # a stop signal sooner than this after the first is a copy of it (a launcher's forward)

_received: int | None = None  # the first stop signal's number since the process started (None: none)
_received_at = 0.0  # when it came (time.monotonic())
_previous: dict[int, object] = {}  # the handlers in place before :func:`catch` (empty: not catching)


def received() -> int | None:
    """The number of the stop signal this process received while catching, or None."""
    return _received


def exit_code() -> int:
    """The exit code of a script that stopped on a signal: ``128 + signum``; 0 when no signal came."""
    return 0 if _received is None else 128 + _received


def name(signum: int) -> str:
    """``SIGTERM``, ``SIGINT``."""
    return signal.Signals(signum).name


def catching() -> bool:
    """True while the handlers of :func:`catch` are installed."""
    return bool(_previous)


def catch() -> None:
    """Install the stop handlers for SIGTERM and SIGINT (a no-op when already installed or not in the main thread)."""
    if _previous or threading.current_thread() is not threading.main_thread():
        return
    for signum in STOP_SIGNALS:
        _previous[signum] = signal.signal(signum, _on_signal)


def release() -> None:
    """Put back the handlers that :func:`catch` replaced (a no-op when not catching)."""
    while _previous:
        signum, handler = _previous.popitem()
        signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def _on_signal(signum: int, frame) -> None:
    global _received, _received_at
    if _received is not None and time.monotonic() - _received_at < REPEAT_SECONDS:
        return  # the same stop, delivered twice
    if _received is not None:  # the second signal: its usual action, now
        release()
        sys.stderr.write(f"{name(signum)} again: exiting now (the last checkpoint on disk is kept)\n")
        sys.stderr.flush()
        signal.raise_signal(signum)
        return
    _received, _received_at = signum, time.monotonic()
    sys.stderr.write(f"{name(signum)} received: finishing the step in progress, then a checkpoint at it "
                     f"(send it again to exit at once)\n")
    sys.stderr.flush()


def reset() -> None:
    """Forget a received signal and release the handlers (for tests that run several stages in one process)."""
    global _received
    release()
    _received = None
