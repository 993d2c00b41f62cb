"""Task datasets, the task mixture, and collation with loss masks.

Three tasks, each rendered by one function of :mod:`qrw.lm.tokenizer` into
``(ids, loss_mask)`` (``loss_mask[i] == 1``: token ``ids[i]`` is a target):

- ``pretrain``  (stage 0): product titles, attribute text and the logged search
  sessions (:meth:`qrw.shop.observed.ObservedShop.pretrain_texts`), so the model
  sees user vocabulary next to catalog vocabulary;
- ``rewrite``   (stage 1): query -> rewrite, the shop's mined pairs by default
  (gold rewrites only in the upper-bound arm and the validation loss);
- ``relevance`` (stage 1): (query, rewrite) -> relevance label 0/1/2, pairs that
  production produces labelled through the annotation service by default
  (:func:`qrw.shop.labelling.production_pairs`), balanced across labels
  (:func:`balanced_relevance_examples`); :func:`qrw.oracle.relevance_dataset`
  builds the judge-graded sets from gold (validation, upper-bound arms);
- ``labelled``  (stage 1b, optional): the same task on the SFT model's own sampled
  rewrites, labelled through the annotation service: a task of its own so that
  its share of the batch and its loss are set and logged apart.

Batches are a deterministic function of ``(seed, step)``: each task is an endless
stream of epochs, each epoch a fresh permutation seeded by ``(seed, task, epoch)``,
and step ``s`` takes the next ``n_task`` items of each task's stream. Resuming at
step ``s`` therefore continues the exact data order with no sampler state to save.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from qrw.config import check
from qrw.lm.tokenizer import Tokenizer, render_pretrain, render_relevance, render_rewrite

Example = tuple[list[int], list[int]]  # (ids, loss_mask)

TASKS = ("pretrain", "rewrite", "relevance", "labelled")  # a task's index is its data stream


def pretrain_dataset(observed, tok: Tokenizer, max_len: int) -> list[Example]:
    """Stage-0 examples: every pretraining text of the shop (``observed.pretrain_texts()``), truncated to
    ``max_len`` tokens."""
    return [_truncate(render_pretrain(tok, text), max_len) for text in observed.pretrain_texts()]


def rewrite_dataset(queries, tok: Tokenizer, max_len: int) -> list[Example]:
    """Rewrite-task examples: ``<|bos|><|rewrite|>query<|sep|>gold<|eos|>``, loss on ``gold<|eos|>``."""
    return rewrite_pair_dataset([(q.text, q.gold) for q in queries], tok, max_len)


def rewrite_pair_dataset(pairs: list[tuple[str, str]], tok: Tokenizer, max_len: int) -> list[Example]:
    """Rewrite-task examples from ``(query, rewrite)`` texts (e.g. mined pairs), loss on ``rewrite<|eos|>``."""
    return [_truncate(render_rewrite(tok, query, rewrite), max_len) for query, rewrite in pairs]


def relevance_pair_dataset(pairs: list[tuple[str, str, int]], tok: Tokenizer, max_len: int) -> list[Example]:
    """Relevance-task examples from ``(query, rewrite, label)`` pairs, in their order (no balancing)."""
    return [_truncate(render_relevance(tok, q, r, label), max_len) for q, r, label in pairs]


def balanced_relevance_examples(pairs: list[tuple[str, str, int]], tok: Tokenizer, max_len: int, seed: int = 0,
                                balance: str = "under") -> list[Example]:
    """``(query, rewrite, label)`` pairs as relevance-task examples, balanced across the labels
    (``balance``: ``"under"`` keeps as many pairs per label as the rarest label has, a random subset of the
    others; ``"over"`` keeps every pair and repeats the rarer labels' pairs, whole copies then a random subset,
    up to the commonest label's count, so no labelled pair is thrown away), in a seeded random order."""
    check(balance in ("under", "over"), f"balance must be 'under' or 'over' (got {balance!r})")
    by_label: dict[int, list[tuple[str, str, int]]] = {0: [], 1: [], 2: []}
    for q, r, label in pairs:
        by_label[label].append((q, r, label))
    rng = random.Random(seed)
    chosen = []
    check(any(by_label.values()), "no relevance pairs to balance")
    if balance == "under":
        n = min(len(v) for v in by_label.values())
        for label in (0, 1, 2):
            chosen += rng.sample(by_label[label], n)
    else:
        n = max(len(v) for v in by_label.values())
        for label in (0, 1, 2):
            pairs = by_label[label]
            copies, rest = divmod(n, len(pairs)) if pairs else (0, 0)
            chosen += pairs * copies + rng.sample(pairs, rest)
    rng.shuffle(chosen)  # so that any prefix (e.g. the validation slice) holds every label
    return relevance_pair_dataset(chosen, tok, max_len)


def _truncate(example: Example, max_len: int) -> Example:
    ids, mask = example
    return ids[:max_len], mask[:max_len]


QUERY_STREAM = 17  # stream index of GRPO's query order (the SFT tasks use their index in TASKS: 0-2)


def mix_seed(seed: int, offset: int) -> int:
    """One integer seed per (run seed, stream/step): the run seed spread far apart, plus an offset."""
    return seed * 1_000_003 + offset


def stream_indices(n: int, start: int, count: int, seed: int, task_index: int) -> list[int]:
    """Items ``start .. start + count - 1`` of an endless stream of per-epoch permutations of ``range(n)``.

    Stream ``task_index`` of run ``seed`` draws epoch e's permutation from its own
    generator, so step s always gets the same items (exact resume).
    """
    out: list[int] = []
    pos = start
    while len(out) < count:
        epoch, offset = divmod(pos, n)
        g = torch.Generator().manual_seed(mix_seed(seed, task_index * 10_007 + epoch))
        perm = torch.randperm(n, generator=g)
        take = min(n - offset, count - len(out))
        out.extend(perm[offset:offset + take].tolist())
        pos += take
    return out


@dataclass
class TaskMixture:
    """A fixed number of examples per task in every batch (the task ratio), reproducible by step.

    ``counts[t]`` examples of task ``t`` per batch; ``weights[t]`` multiplies that
    task's token losses (the multi-task loss of the paper's stage 1).
    """

    datasets: dict[str, list[Example]]
    counts: dict[str, int]
    weights: dict[str, float]
    seed: int = 0

    def batch(self, step: int) -> list[tuple[str, Example]]:
        """The examples of optimizer step ``step`` as ``(task, example)`` pairs."""
        out: list[tuple[str, Example]] = []
        for task_index, task in enumerate(TASKS):
            count = self.counts.get(task, 0)
            if count == 0:
                continue
            data = self.datasets[task]
            for i in stream_indices(len(data), step * count, count, self.seed, task_index):
                out.append((task, data[i]))
        return out


def mixture_counts(batch_size: int, tasks: tuple[str, ...], rewrite_fraction: float) -> dict[str, int]:
    """Split ``batch_size`` between the tasks: ``rewrite_fraction`` of it to ``rewrite`` when both are on."""
    if tasks == ("pretrain",):
        return {"pretrain": batch_size}
    if set(tasks) == {"rewrite"}:
        return {"rewrite": batch_size}
    if set(tasks) == {"relevance"}:
        return {"relevance": batch_size}
    n_rewrite = max(1, min(batch_size - 1, round(batch_size * rewrite_fraction)))
    return {"rewrite": n_rewrite, "relevance": batch_size - n_rewrite}


@dataclass
class Batch:
    """A training batch: rows of one or several examples (documents), right-padded.

    ``input_ids`` (B, T), ``targets`` (B, T): within a document, targets[b, t] = ids[b, t + 1];
    ``weights`` (B, T) float: the loss mask of the target times the task's loss weight;
    ``target_mask`` (B, T) float: the plain loss mask (counts target tokens);
    ``document_ids`` (B, T) long: which document of its row a token belongs to (0, 1, ...), -1 = pad;
    ``task_ids`` (B, T) long: index into :data:`TASKS` of each token's document, -1 = pad.
    """

    input_ids: torch.Tensor
    targets: torch.Tensor
    weights: torch.Tensor
    target_mask: torch.Tensor
    document_ids: torch.Tensor
    task_ids: torch.Tensor

    @property
    def attention_mask(self) -> torch.Tensor:
        """(B, T) bool, True = real token."""
        return self.document_ids >= 0

    def to(self, device) -> "Batch":
        return Batch(*(getattr(self, f).to(device) for f in
                       ("input_ids", "targets", "weights", "target_mask", "document_ids", "task_ids")))


def pack_rows(lengths: list[int], row_len: int) -> list[list[int]]:
    """First-fit decreasing: item indices grouped into rows of at most ``row_len`` tokens.

    Longest items first; each goes into the first row with room for it, else opens
    a new row. An item longer than ``row_len`` gets a row of its own. Deterministic
    (ties keep input order); within a row, items keep the order they were placed in.
    """
    rows: list[list[int]] = []
    used: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, n in enumerate(used):
            if n + lengths[i] <= row_len:
                rows[r].append(i)
                used[r] += lengths[i]
                break
        else:
            rows.append([i])
            used.append(lengths[i])
    return rows


def collate(items: list[tuple[str, Example]], pad_id: int, weights: dict[str, float], pack_len: int = 0) -> Batch:
    """Lay out ``(task, (ids, loss_mask))`` items as a :class:`Batch` of inputs and shifted targets.

    ``pack_len == 0``: one example per row, right-padded to the longest. ``pack_len > 0``:
    examples are packed side by side into rows of at most ``pack_len`` input tokens
    (:func:`pack_rows`), and ``document_ids`` tells them apart, so that the model
    attends only within a document and restarts positions at each document's start
    (``Transformer(..., document_ids=)``): the same logits as one example per row, with
    far less padding (short, uneven examples: a stage-1 batch is ~40% padding unpacked).

        pack_len=0:   [bos a b c eos pad pad]        pack_len=8:  [bos a b c eos bos x eos]
                      [bos x eos pad pad pad pad]    document_ids: 0   0 0 0 0   1   1 1
    """
    lengths = [len(ids) - 1 for _, (ids, _) in items]  # inputs: every token but the last
    rows = pack_rows(lengths, pack_len) if pack_len > 0 else [[i] for i in range(len(items))]
    B, T = len(rows), max(sum(lengths[i] for i in row) for row in rows)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    targets = torch.full((B, T), pad_id, dtype=torch.long)
    target_mask = torch.zeros(B, T)
    weight = torch.zeros(B, T)
    document_ids = torch.full((B, T), -1, dtype=torch.long)
    task_ids = torch.full((B, T), -1, dtype=torch.long)
    for b, row in enumerate(rows):
        start = 0
        for doc, i in enumerate(row):
            task, (ids, mask) = items[i]
            span = slice(start, start + lengths[i])
            input_ids[b, span] = torch.tensor(ids[:-1])
            targets[b, span] = torch.tensor(ids[1:])
            target_mask[b, span] = torch.tensor(mask[1:], dtype=torch.float)
            weight[b, span] = target_mask[b, span] * weights.get(task, 1.0)
            document_ids[b, span] = doc
            task_ids[b, span] = TASKS.index(task)
            start += lengths[i]
    return Batch(input_ids, targets, weight, target_mask, document_ids, task_ids)


def split_micro_batches(items: list, micro_batch_size: int) -> list[list]:
    """Consecutive chunks of at most ``micro_batch_size`` items (gradient accumulation)."""
    return [items[i:i + micro_batch_size] for i in range(0, len(items), micro_batch_size)]
