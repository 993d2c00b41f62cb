"""Data-parallel training under ``torchrun``: the few collective operations the two training scripts need.

    torchrun --nproc_per_node 2 train_sft.py ...      # 2 processes ("ranks"), one copy of the model each

Written from scratch on ``torch.distributed`` (no ``DistributedDataParallel``
wrapper), so that every step shows where the ranks talk to each other:

1. every rank builds the same model (same seed) and draws the same global batch;
2. each rank takes its :func:`shard` of the batch and runs forward/backward on it,
   with the loss divided by the *whole* batch's normaliser (a global count);
3. :func:`all_reduce_gradients` sums the gradients over the ranks: since every
   rank's loss was divided by the global count, the sum is the single-process
   gradient of the whole batch (up to float summation order);
4. every rank clips and steps its own optimizer on those identical gradients, so
   the weights stay identical without ever being sent;
5. rank 0 alone (:func:`is_main`) writes the log, the checkpoints and the evaluation.

A single process (no ``torchrun``: no ``WORLD_SIZE`` in the environment) never
initialises ``torch.distributed``; then every function here is the identity or a
constant (rank 0 of 1), so single-process runs compute exactly what they did
before, bit for bit.

Backend: ``nccl`` on CUDA (each rank on GPU ``LOCAL_RANK``), ``gloo`` on CPU.
Departures from DDP: no bucketing or overlap of communication with the backward
pass (one all-reduce of all gradients after it), and no broadcast of the initial
weights (identical by construction).
"""

from __future__ import annotations

import atexit
import os
import sys

import torch
import torch.distributed as dist

from qrw.config import check


def setup(device: torch.device) -> torch.device:
    """Join the process group when started by ``torchrun``; return the device this rank computes on.

    Reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``, ``MASTER_PORT``). Without it, or with ``WORLD_SIZE=1``,
    nothing happens and ``device`` is returned unchanged. Calling it again is a
    no-op (the GRPO smoke run calls ``train_sft.main`` in the same process). The
    training scripts leave the group together when they succeed (:func:`finish_after`);
    otherwise it is left when the process exits (:func:`cleanup`). Ranks other than 0 print nothing (their
    ``sys.stdout`` goes to ``os.devnull``).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    check(device.type in ("cpu", "cuda"), f"torchrun needs --device cpu (gloo) or cuda (nccl), got {device.type}")
    if device.type == "cuda":  # one GPU per process
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    if not is_distributed():
        import_world_default_modules()
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        atexit.register(cleanup)
        if dist.get_rank() != 0:  # rank 0 alone prints; every rank's errors still reach stderr
            sys.stdout = open(os.devnull, "w")
    return device


# torch modules whose functions take ``group=dist.group.WORLD`` as a default argument: Python evaluates it when the
# module is imported, so a module first imported after init_process_group holds the process group in a function's
# defaults for the rest of the process (out of the garbage collector's sight: a tuple of untracked objects).
WORLD_DEFAULT_MODULES = ("torch.distributed.nn.functional", "torch.distributed.optim.zero_redundancy_optimizer",
                         "torch.distributed.fsdp.sharded_grad_scaler")


def import_world_default_modules() -> None:
    """Import :data:`WORLD_DEFAULT_MODULES` while no process group exists, so that their defaults hold ``None``.

    The cause of the rare abort at exit of a multi-rank run ("terminate called
    without an active exception", about 1 run in 30-60): the first
    ``torch.optim.AdamW`` of a process imports ``torch._dynamo``, which imports
    ``torch.distributed.nn.functional`` (and the two others) *after*
    ``init_process_group``; their ``group=group.WORLD`` defaults then keep the
    default process group alive, so ``destroy_process_group`` cannot free it and
    its native threads (gloo's ``gloo_tcp_loop`` and ProcessGroupGloo's two
    ``pt_gloo_runloop`` workers) were still running when the process exited, torn
    down in a race with the interpreter's exit. Imported first, the defaults are
    ``None`` and :func:`finish` leaves no such thread behind
    (tests/test_distributed.py checks the thread list).
    """
    import importlib

    for name in WORLD_DEFAULT_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # a torch without the module: nothing holds the group there
            pass


def cleanup() -> None:
    """Leave the process group (registered to run at exit by :func:`setup`: the path of a rank that failed)."""
    if is_distributed():
        dist.destroy_process_group()


def finish() -> None:
    """The end of a command that succeeded on every rank: wait until all ranks get here, then leave the group.

    Ranks other than 0 finish training first (rank 0 alone evaluates); leaving
    the group together means no rank tears its connections down while another
    still holds them. Destroying the group ends its threads only if nothing else
    holds it (see :func:`import_world_default_modules`, the cause of a rare abort
    at exit). A no-op in a single process. The training scripts call it after ``main`` returns, not
    inside it: the GRPO smoke run calls ``train_sft.main`` and goes on in the group.
    """
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()


def finish_after(main) -> int:
    """``main()``, then :func:`finish` when it returned (an exception skips it: the failed rank's exit path is
    :func:`cleanup`, and the others are not kept waiting at a barrier it never reaches)."""
    code = main()
    finish()
    return code


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's index in ``0 .. world_size() - 1`` (0 in a single process)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of processes training together (1 in a single process)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on rank 0, the one that writes logs, checkpoints and results (and in a single process)."""
    return rank() == 0


def barrier() -> None:
    """Wait until every rank gets here (e.g. for a file that rank 0 writes); a no-op in a single process."""
    if is_distributed():
        dist.barrier()


def shard(items: list, rank_index: int | None = None, world: int | None = None) -> list:
    """This rank's contiguous share of ``items``: shares differ in length by at most one.

    Rank r gets ``items[r * n // world : (r + 1) * n // world]``, so the shares
    concatenated in rank order are ``items`` again (a GRPO step's rows keep their
    single-process order). A single process gets every item.

    >>> shard(list(range(5)), 0, 2), shard(list(range(5)), 1, 2)
    ([0, 1], [2, 3, 4])
    """
    rank_index = rank() if rank_index is None else rank_index
    world = world_size() if world is None else world
    n = len(items)
    return items[rank_index * n // world:(rank_index + 1) * n // world]


def _comm_device() -> torch.device:
    """Where collective tensors must live: this rank's GPU for nccl, the CPU for gloo."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce_sum(value):
    """The sum over ranks of a number, a tensor or a ``{name: number}`` dict (returned as the same kind).

    A dict may lack keys on some ranks (a task absent from a rank's share): they
    count as 0 there, and the result holds every key some rank had. In a single
    process ``value`` is returned unchanged.
    """
    if not is_distributed():
        return value
    if isinstance(value, dict):
        keys = sorted(set().union(*all_gather_object(list(value))))  # every rank's keys, in one order
        sums = all_reduce_sum(torch.tensor([float(value.get(k, 0.0)) for k in keys], dtype=torch.float64))
        return dict(zip(keys, sums.tolist()))
    if isinstance(value, torch.Tensor):
        out = value.detach().to(_comm_device(), copy=True)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out.to(value.device)
    total = all_reduce_sum(torch.tensor(float(value), dtype=torch.float64)).item()
    return type(value)(total) if isinstance(value, int) else total


def all_reduce_mean(value):
    """The mean over ranks of a number, a tensor or a dict of numbers (see :func:`all_reduce_sum`)."""
    total = all_reduce_sum(value)
    if isinstance(total, dict):
        return {k: v / world_size() for k, v in total.items()}
    return total / world_size()


def max_over_ranks(value: int) -> int:
    """The largest of the ranks' integers ``value`` (``value`` itself in a single process): one tiny all-reduce.

    The stage loops agree this way on a stop signal that reached some ranks only (:mod:`qrw.preemption`).
    """
    if not is_distributed():
        return value
    out = torch.tensor([value], dtype=torch.int64, device=_comm_device())
    dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return int(out.item())


def mean_over_ranks(value: float, weight: float) -> float:
    """The mean over ranks of each rank's mean ``value`` of ``weight`` items (``value`` itself in a single process)."""
    if not is_distributed():
        return value
    total, count = all_reduce_sum(torch.tensor([value * weight, weight], dtype=torch.float64)).tolist()
    return total / max(count, 1.0)


def all_gather_object(value) -> list:
    """Every rank's ``value`` (any picklable object), in rank order; ``[value]`` in a single process."""
    if not is_distributed():
        return [value]
    out = [None] * world_size()
    dist.all_gather_object(out, value)
    return out


def all_reduce_gradients(parameters) -> None:
    """Sum ``.grad`` of every trainable parameter over the ranks, in place (one collective, all gradients).

    A rank whose share held no data has no gradient (``None``): it contributes
    zeros, and gets the sum like the others. A no-op in a single process.
    """
    if not is_distributed():
        return
    params = [p for p in parameters if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])  # (total numel,): every gradient in one buffer
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    for g, part in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(part.view_as(g))


# ---------------------------------------------------------------------------
# Rows split over the ranks (the GRPO update's bookkeeping, qrw.update)
# ---------------------------------------------------------------------------


def rows_of_rank(num_rows: int) -> tuple[int, int]:
    """``(offset, total)``: this rank holds rows ``offset .. offset + num_rows - 1`` of the ``total`` rows of all
    ranks concatenated in rank order (``(0, num_rows)`` in a single process)."""
    counts = all_gather_object(num_rows)  # rows held by each rank
    return sum(counts[:rank()]), sum(counts)


def held_rows(rows: torch.Tensor, offset: int, num_rows: int) -> torch.Tensor:
    """Of the global row indices ``rows`` (b,), those this rank holds, as its own row indices (b_rank,).

    ``offset``, ``num_rows``: this rank's rows (:func:`rows_of_rank`). ``rows`` itself in a single process.
    """
    if world_size() == 1:
        return rows
    return rows[(rows >= offset) & (rows < offset + num_rows)] - offset  # (b_rank,)


def count_over_ranks(count: float, holds_rows: bool = True) -> float:
    """A loss normaliser's count (sequences or tokens) over the rows of all ranks together.

    ``count`` itself in a single process. Under torchrun the ranks' counts are
    summed (every normaliser is a count, so they add up), at least 1; a rank that
    holds no rows (``holds_rows=False``) adds 0, not the 1 its own count is clamped to.
    """
    if world_size() == 1:
        return count
    return max(all_reduce_sum(count if holds_rows else 0.0), 1.0)
