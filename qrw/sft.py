"""The multi-task loss and the training loop of stages 0 and 1.

Stage 0 (pretraining on search logs and product text) and stage 1 (multi-task SFT:
rewrite generation + relevance tagging, the paper's section on multi-task
fine-tuning) share one loop; they differ only in the task mixture.

The multi-task loss of one optimizer step, over all its micro-batches, is

    L = sum_i w_task(i) * CE_i / max(N, 1)

where i runs over every target token of the step (``loss_mask == 1``), ``CE_i`` is
its cross-entropy, ``w_task(i)`` the loss weight of the task the token belongs to,
and ``N`` the number of target tokens in the whole step (all micro-batches), so
that gradient accumulation gives exactly the full-batch gradient. With one task
and weight 1 this is the usual token-mean language-model loss.

Each micro-batch is packed (``TrainConfig.pack_len``, :func:`qrw.data.collate`):
its sequences sit side by side in rows of at most ``pack_len`` tokens, attention
stays within each sequence and positions restart at each one, so the loss and
gradient are those of one padded sequence per row at a fraction of the work
(``python -m qrw.bench train``). The LM head runs only at the target positions.

The step order is fixed (nanoGPT): learning rate -> micro-batches (forward, loss,
backward) -> finite check -> clip -> optimizer step -> zero grad -> log -> eval ->
checkpoint. A non-finite loss raises :class:`NonFiniteLossError` *before* the
optimizer step, so the last checkpoint on disk stays the last good one.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from qrw.config import NonFiniteLossError, arg, check
from qrw.data import TASKS, Batch, TaskMixture, collate, split_micro_batches
from qrw.log import MetricsLog, log_line


@dataclass
class TrainConfig:
    """Hyperparameters of one training stage (stage 0 or stage 1)."""

    steps: int = arg(300, "optimizer steps")
    batch_size: int = arg(64, "sequences per optimizer step")
    micro_batch_size: int = arg(64, "sequences per forward/backward (gradient accumulation when < batch_size)")
    pack_len: int = arg(64, "pack each micro-batch's sequences into rows of at most this many tokens "
                        "(attention within each sequence; 0: one right-padded sequence per row)")
    lr: float = arg(3e-3, "peak learning rate (AdamW)")
    min_lr_ratio: float = arg(0.1, "final learning rate as a fraction of the peak (cosine decay)")
    warmup_steps: int = arg(20, "linear warmup steps")
    weight_decay: float = arg(0.1, "AdamW weight decay on matrices (not on norms or embeddings)")
    beta1: float = arg(0.9, "AdamW beta1")
    beta2: float = arg(0.95, "AdamW beta2")
    grad_clip: float = arg(1.0, "max global gradient norm (0 disables clipping)")
    log_every: int = arg(10, "steps between printed log lines (metrics.jsonl gets every step)")
    eval_every: int = arg(100, "steps between validation passes (0: only at the end)")
    ckpt_every: int = arg(100, "steps between checkpoints (0: only at the end of the stage)")

    def __post_init__(self) -> None:
        check(self.steps >= 0, f"steps must be >= 0 (got {self.steps})")
        check(self.batch_size >= 1, f"batch size must be >= 1 (got {self.batch_size})")
        check(self.micro_batch_size >= 1, f"micro batch size must be >= 1 (got {self.micro_batch_size})")
        check(self.pack_len >= 0, f"pack len must be >= 0 (got {self.pack_len})")
        check(math.isfinite(self.lr) and self.lr > 0, f"learning rate must be > 0 (got {self.lr})")
        check(0 <= self.min_lr_ratio <= 1, f"min lr ratio must be in [0, 1] (got {self.min_lr_ratio})")
        check(self.warmup_steps >= 0, f"warmup steps must be >= 0 (got {self.warmup_steps})")
        check(self.weight_decay >= 0, f"weight decay must be >= 0 (got {self.weight_decay})")
        check(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "AdamW betas must be in [0, 1)")
        check(self.grad_clip >= 0, f"grad clip must be >= 0 (got {self.grad_clip})")
        check(self.log_every >= 1, f"log every must be >= 1 (got {self.log_every})")
        check(self.eval_every >= 0 and self.ckpt_every >= 0, "eval/ckpt intervals must be >= 0")


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to ``lr`` over ``warmup_steps``, then cosine decay to ``lr * min_lr_ratio``."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    decay_steps = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / decay_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over the model's weight-decay groups (``model.param_groups``)."""
    return torch.optim.AdamW(model.param_groups(cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                             fused=device.type == "cuda")


def multitask_loss(logits: torch.Tensor, batch: Batch, normalizer: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The step's loss contribution of one micro-batch, and per-task sums for logging.

    ``logits``: (B, T, V) for every position, or (N, V) for the batch's N target
    positions only (``Transformer(..., select=batch.target_mask.bool())``, row-major
    order); both give the same loss. ``normalizer`` is the number of target tokens of
    the whole step. Returns ``loss = sum(w * CE) / max(normalizer, 1)`` and, per task,
    the detached sums ``{task}_loss_sum``, ``{task}_correct``, ``{task}_tokens`` (for
    per-task mean loss and token accuracy).
    """
    select = batch.target_mask.bool()  # (B, T)
    if logits.dim() == 3:
        logits = logits[select]  # (N, V)
    check(logits.shape[0] == int(select.sum()),
          f"{logits.shape[0]} logit rows for {int(select.sum())} target tokens")
    targets = batch.targets[select]                                # (N,)
    token_tasks = batch.task_ids[select]                           # (N,)
    token_ce = F.cross_entropy(logits, targets, reduction="none")  # (N,)
    loss = (token_ce * batch.weights[select]).sum() / max(normalizer, 1.0)
    stats: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        correct = (logits.argmax(-1) == targets).float()  # (N,)
        for task_index, task in enumerate(TASKS):
            of_task = token_tasks == task_index  # (N,)
            if bool((batch.task_ids == task_index).any()):
                stats[f"{task}_loss_sum"] = token_ce[of_task].sum()
                stats[f"{task}_correct"] = correct[of_task].sum()
                stats[f"{task}_tokens"] = of_task.sum().float()
    return loss, stats


def accumulate_gradients(model: torch.nn.Module, items: list, micro_batch_size: int, pad_id: int,
                         weights: dict[str, float], device: torch.device,
                         pack_len: int = 0) -> tuple[float, dict[str, float]]:
    """Forward/backward every micro-batch of one step's ``(task, example)`` items.

    The normaliser is the number of target tokens of the *whole step*, so the
    accumulated ``.grad`` equals the gradient of the full-batch loss, whatever
    ``micro_batch_size`` and ``pack_len`` are (packing changes only the layout:
    ``qrw.data.collate``). Returns the step's loss and summed per-task statistics.
    """
    normalizer = float(sum(sum(mask[1:]) for _, (_, mask) in items))
    loss_total = 0.0
    sums: dict[str, float] = {}
    for chunk in split_micro_batches(items, micro_batch_size):
        batch = collate(chunk, pad_id, weights, pack_len).to(device)
        logits = model(batch.input_ids, document_ids=batch.document_ids,
                       select=batch.target_mask.bool())  # (targets, V): the head runs on targets only
        loss, stats = multitask_loss(logits, batch, normalizer)
        loss.backward()
        loss_total += loss.item()
        for k, v in stats.items():
            sums[k] = sums.get(k, 0.0) + v.item()
    return loss_total, sums


@torch.no_grad()
def evaluate_loss(model: torch.nn.Module, examples: dict[str, list], pad_id: int, device: torch.device,
                  batch_size: int = 128, pack_len: int = 0) -> dict[str, float]:
    """Mean token loss and token accuracy per task on fixed examples (validation)."""
    model.eval()
    out: dict[str, float] = {}
    for task, data in examples.items():
        loss_sum = correct = tokens = 0.0
        for chunk in split_micro_batches([(task, ex) for ex in data], batch_size):
            batch = collate(chunk, pad_id, {task: 1.0}, pack_len).to(device)
            logits = model(batch.input_ids, document_ids=batch.document_ids, select=batch.target_mask.bool())
            _, stats = multitask_loss(logits, batch, 1.0)
            loss_sum += stats[f"{task}_loss_sum"].item()
            correct += stats[f"{task}_correct"].item()
            tokens += stats[f"{task}_tokens"].item()
        out[f"val_{task}_loss"] = loss_sum / max(tokens, 1.0)
        out[f"val_{task}_acc"] = correct / max(tokens, 1.0)
    model.train()
    return out


def train_stage(model: torch.nn.Module, mixture: TaskMixture, cfg: TrainConfig, *, stage: str,
                device: torch.device, pad_id: int, log: MetricsLog,
                save: Callable[[int, torch.optim.Optimizer], None],
                evaluate: Callable[[], dict[str, float]] | None = None,
                start_step: int = 0, optimizer_state: dict | None = None,
                stop_after: int | None = None, progress: bool = True) -> bool:
    """Train ``model`` on ``mixture`` for ``cfg.steps`` optimizer steps, starting at ``start_step``.

    ``save(step, optimizer)`` writes a checkpoint after ``step`` completed steps;
    ``evaluate()`` returns validation metrics. ``stop_after`` stops (after saving)
    once that many steps ran in this call: the run then continues with resume.
    Returns True when the stage completed, False when it stopped early.
    """
    model.train()
    optimizer = make_optimizer(model, cfg, device)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    steps_run = 0
    bar = tqdm(range(start_step, cfg.steps), desc=stage, initial=start_step, total=cfg.steps,
               disable=not progress, dynamic_ncols=True, leave=False)
    for step in bar:
        t0 = time.perf_counter()
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_total, sums = accumulate_gradients(model, mixture.batch(step), cfg.micro_batch_size, pad_id,
                                                mixture.weights, device, cfg.pack_len)
        if not math.isfinite(loss_total):
            optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLossError(f"{stage}: non-finite loss {loss_total} at step {step + 1}; "
                                     "the last good checkpoint is kept (lower the learning rate?)")
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                   cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        steps_run += 1

        # every step goes to metrics.jsonl (so a resumed run logs exactly what an uninterrupted one does)
        record = {"stage": stage, "step": done, "loss": loss_total, "lr": lr, "grad_norm": float(grad_norm)}
        for task in TASKS:
            if f"{task}_tokens" in sums:
                record[f"{task}_loss"] = sums[f"{task}_loss_sum"] / max(sums[f"{task}_tokens"], 1.0)
                record[f"{task}_acc"] = sums[f"{task}_correct"] / max(sums[f"{task}_tokens"], 1.0)
        record["seconds"] = time.perf_counter() - t0
        log.write(record)
        bar.set_postfix(loss=f"{loss_total:.3f}", lr=f"{lr:.2e}")
        if progress and (done % cfg.log_every == 0 or done == cfg.steps):
            shown = {k: record[k] for k in ("loss", "pretrain_loss", "rewrite_loss", "relevance_loss", "lr")
                     if k in record}
            bar.write(f"{stage} " + log_line(done, cfg.steps, shown, record["seconds"]))
        if evaluate is not None and ((cfg.eval_every and done % cfg.eval_every == 0) or done == cfg.steps):
            metrics = evaluate()
            log.write({"stage": stage, "step": done, **metrics})
            if progress:
                bar.write(f"{stage} eval " + log_line(done, cfg.steps, metrics))
        stopping = stop_after is not None and steps_run >= stop_after and done < cfg.steps
        if (cfg.ckpt_every and done % cfg.ckpt_every == 0) or done == cfg.steps or stopping:
            save(done, optimizer)
        if stopping:
            bar.close()
            return False
    bar.close()
    return True


def config_dict(cfg) -> dict:
    """A dataclass config as a plain dict (for config.json and checkpoints)."""
    return asdict(cfg)
