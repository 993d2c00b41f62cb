"""Stages 0 and 1 as a library: their configs, task mixtures and the multi-task loss.

Stage 0 (pretraining on search logs and product text) and stage 1 (multi-task SFT:
rewrite generation + relevance tagging, the paper's section on multi-task
fine-tuning) share one loop, written out in ``train_sft.py``; they differ only in
the task mixture (:func:`pretrain_mixture`, :func:`sft_mixture`).

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

**The wall** (:mod:`qrw.shop.wall`). Training reads the shop's observed side
(:class:`qrw.shop.observed.ObservedShop`, built by
:func:`qrw.shop.observation.observe_world`): stage 0 the
titles, attribute texts and logged sessions; stage 1 the mined rewrite pairs and
relevance pairs that production produces, labelled through the annotation
service within ``--label-budget`` labels (:func:`stage1_relevance_pairs`). Gold
rewrites and judge grades enter only where a named crossing says so: the
validation loss (:func:`validation_sets`) and the upper-bound arms
(``--rewrite-data gold``, ``--relevance-data production|hard|perturbed``).

Stage 1b (optional, ``--label-rewrites N``): production's next labelling round.
The finished SFT model samples N rewrites of training queries (temperature 1,
as GRPO will sample them), the annotation service labels them
(:func:`model_rewrite_pairs`, counted against the budget), and training continues on stage 1's mixture with
part of the relevance slots given to those labelled pairs (:func:`label_mixture`):
the tagger then learns the rewrites it will be asked to score as GRPO's reward
and as the serving gate, which stage 1's data can only imitate.

The step order is fixed (nanoGPT): learning rate -> micro-batches (forward, loss,
backward) -> finite check -> clip -> optimizer step -> zero grad -> log -> eval ->
checkpoint. A non-finite loss stops training *before* the optimizer step, so the
last checkpoint on disk stays the last good one.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from qrw.config import arg, check, invariant
from qrw.data import (TASKS, Batch, TaskMixture, balanced_relevance_examples, collate, mix_seed, mixture_counts,
                      pretrain_dataset, rewrite_pair_dataset, split_micro_batches)
from qrw.lm.model import PRESETS
from qrw.lm.precision import DTYPES
from qrw.lm.tokenizer import Tokenizer
from qrw.rewriter import EMPTY_REWRITE_TAG, Rewriter
from qrw.shop.annotation import DEFAULT_DISAGREEMENT
from qrw.shop.config import WorldConfig
from qrw.shop.observed import DEFAULT_LABEL_BUDGET, ObservedShop

# stage 1's relevance pairs: the default (bought through the door), then the upper bounds built from gold
# (qrw.shop.relevance.RELEVANCE_DATA, through qrw.oracle)
RELEVANCE_CHOICES = ("labelled", "production", "hard", "perturbed")
MAX_LABEL_OOD = 5000  # --label-ood: at most this many logged searches nobody clicked on


@dataclass
class SFTRunConfig:
    """What a stage 0 + stage 1 run trains (the training hyperparameters live in two ``TrainConfig``s)."""

    seed: int = arg(0, "seed of the world, the model initialisation and the data order")
    preset: str = arg("cpu", "model preset (see python -m qrw.lm.model)", choices=sorted(PRESETS))
    vocab_size: int = arg(2048, "BPE vocabulary size (special tokens included)")
    tasks: str = arg("rewrite,relevance", "stage-1 tasks: 'rewrite,relevance' (multi-task) or 'rewrite' (single-task)",
                     choices=["rewrite,relevance", "rewrite"], metavar="TASKS")
    pretrain: bool = arg(True, "run stage 0, pretraining on search logs and product text (--no-pretrain skips it)")
    rewrite_fraction: float = arg(0.3, "share of each stage-1 batch given to the rewrite task (the rest: relevance)")
    rewrite_weight: float = arg(1.0, "stage-1 loss weight of rewrite tokens")
    relevance_weight: float = arg(3.0, "stage-1 loss weight of relevance-label tokens")
    rewrite_data: str = arg("mined", "stage-1 rewrite targets: 'mined' (pairs mined from simulated sessions, "
                            "with their drift, as production mines them: ObservedShop.mined_pairs) or 'gold' (each "
                            "training query's intent in catalog words: an upper bound); validation stays on gold",
                            choices=["mined", "gold"])
    relevance_per_label: int = arg(4, "distinct perturbed rewrites per label and training query (relevance task)")
    relevance_balance: str = arg("over", "balance the relevance labels by dropping pairs of the commoner labels "
                                 "('under') or repeating pairs of the rarer ones ('over')", choices=["under", "over"])
    relevance_data: str = arg("labelled", "stage-1 relevance pairs: 'labelled' (pairs production produces, built from "
                              "observed text and labelled through the annotation service within --label-budget: "
                              "qrw.shop.labelling), or an upper bound built from the hidden truth, which crosses the "
                              "wall: 'production' (perturbations of each training query's gold rewrite, hard cases, the "
                              "mined pairs and perturbations of them), 'hard' (without the mined pairs) or 'perturbed' "
                              "(the gold rewrites' perturbations only), labelled by the judge (qrw.shop.relevance)",
                              choices=list(RELEVANCE_CHOICES))
    label_budget: int = arg(DEFAULT_LABEL_BUDGET, "relevance labels the run may buy from the annotation service (the "
                            "one door to the hidden truth; one label per annotator per pair): stage 1's pairs and "
                            "stage 1b's rounds together")
    label_disagreement: float = arg(DEFAULT_DISAGREEMENT, "probability that an annotator's label is a neighbour of the "
                                    "true grade (an assumption: relevance judgments are not unanimous)", advanced=True)
    relevance_wrong_values: int = arg(2, "hard cases: wrong values per contradicted attribute (and other brands per "
                                      "swapped brand) ('hard' and 'production' relevance data)")
    label_rewrites: int = arg(0, "stage 1b: rewrites of training queries sampled (temperature 1) from the SFT "
                              "model and labelled through the annotation service (counted against --label-budget), as "
                              "production labels its model's outputs; training "
                              "then continues --label-steps steps with them in the relevance task (0: no stage 1b)")
    label_share: float = arg(0.5, "stage 1b: share of each batch's relevance slots given to the labelled rewrites")
    label_from: str = arg("", "stage 1b: sample the rewrites to label from this finished run's model instead (a GRPO "
                          "run: the policy's own drift, a reward-model refresh), same world and tokenizer")
    label_ood: int = arg(0, "stage 1b: also sample one rewrite of each of this many logged searches nobody clicked on "
                         "(ObservedShop.null_texts: the searches for products the shop does not sell are among them, "
                         "about one in eight on the default world), labelled through the annotation service: the "
                         "serving gate's hard negatives")
    val_examples: int = arg(256, "validation examples per task for the periodic validation loss")
    dtype: str = arg("fp32", "compute precision: 'fp32', 'bf16' (autocast, float32 weights and optimizer state; "
                     "1.2x faster here, within noise of fp32 after SFT but worse after GRPO over 3 seeds, "
                     "docs/PERFORMANCE.md), or 'auto' (bf16 where the hardware "
                     "runs it fast); config.json records the choice",
                     choices=list(DTYPES))

    def __post_init__(self) -> None:
        check(self.seed >= 0, f"--seed must be >= 0 (got {self.seed})")
        check(self.vocab_size >= 300, f"--vocab-size must be >= 300 (256 bytes + specials; got {self.vocab_size})")
        check(0 < self.rewrite_fraction < 1, f"--rewrite-fraction must be in (0, 1) (got {self.rewrite_fraction})")
        check(self.rewrite_weight > 0 and self.relevance_weight > 0, "task loss weights must be > 0")
        check(self.val_examples >= 1, "--val-examples must be >= 1")
        check(self.relevance_per_label >= 1, "--relevance-per-label must be >= 1")
        check(self.label_rewrites >= 0, f"--label-rewrites must be >= 0 (got {self.label_rewrites})")
        check(0 < self.label_share < 1, f"--label-share must be in (0, 1) (got {self.label_share})")
        check(self.label_rewrites == 0 or "relevance" in self.task_list,
              "--label-rewrites needs the relevance task (--tasks rewrite,relevance)")
        check(not self.label_from or self.label_rewrites > 0, "--label-from needs --label-rewrites N")
        check(0 <= self.label_ood <= MAX_LABEL_OOD,
              f"--label-ood must be between 0 and {MAX_LABEL_OOD} (got {self.label_ood})")
        check(self.label_ood == 0 or self.label_rewrites > 0, "--label-ood needs --label-rewrites N")
        check(self.relevance_wrong_values >= 1, "--relevance-wrong-values must be >= 1")
        check(self.relevance_data in RELEVANCE_CHOICES,
              f"--relevance-data must be one of {', '.join(RELEVANCE_CHOICES)} (got {self.relevance_data!r})")
        check(self.label_budget >= 0, f"--label-budget must be >= 0 (got {self.label_budget})")
        check(0.0 <= self.label_disagreement <= 1.0,
              f"--label-disagreement must be in [0, 1] (got {self.label_disagreement})")

    @property
    def task_list(self) -> tuple[str, ...]:
        """The stage-1 tasks, e.g. ``("rewrite", "relevance")``."""
        return tuple(self.tasks.split(","))


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


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over the model's weight-decay groups (``model.param_groups``)."""
    return torch.optim.AdamW(model.param_groups(cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                             fused=device.type in ("cuda", "cpu"))


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
    invariant(logits.shape[0] == int(select.sum()),
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


def target_tokens(items: list) -> float:
    """The number of target tokens of ``(task, example)`` items: the loss normaliser of a step."""
    return float(sum(sum(mask[1:]) for _, (_, mask) in items))


def accumulate_gradients(model: torch.nn.Module, items: list, micro_batch_size: int, pad_id: int,
                         weights: dict[str, float], device: torch.device,
                         pack_len: int = 0, normalizer: float | None = None) -> tuple[float, dict[str, float]]:
    """Forward/backward every micro-batch of one step's ``(task, example)`` items.

    The normaliser is the number of target tokens of the *whole step*, so the
    accumulated ``.grad`` equals the gradient of the full-batch loss, whatever
    ``micro_batch_size`` and ``pack_len`` are (packing changes only the layout:
    ``qrw.data.collate``). Returns the step's loss and summed per-task statistics.
    Under torchrun ``items`` is this rank's share and ``normalizer`` the whole
    step's :func:`target_tokens` (default: those of ``items``).
    """
    normalizer = target_tokens(items) if normalizer is None else normalizer
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


DEFAULT_PRETRAIN = TrainConfig(steps=600, batch_size=64, lr=3e-3, warmup_steps=30)
DEFAULT_SFT = TrainConfig(steps=3500, batch_size=64, lr=1e-3, warmup_steps=50, eval_every=250, ckpt_every=250)
DEFAULT_LABEL = TrainConfig(steps=500, batch_size=64, lr=3e-4, warmup_steps=20, eval_every=250, ckpt_every=250)
SMOKE = {
    "world": dict(n_products=200, n_train_queries=400, n_val_queries=60, n_test_queries=80, n_log_sessions=600),
    "run": dict(preset="tiny", vocab_size=512, val_examples=32, dtype="fp32"),  # tiny: bf16 would gain nothing
    "pretrain": dict(steps=8, batch_size=16, micro_batch_size=16, warmup_steps=2, log_every=4, eval_every=0,
                     ckpt_every=0),
    "sft": dict(steps=12, batch_size=16, micro_batch_size=16, warmup_steps=2, log_every=4, eval_every=0,
                ckpt_every=0),
    "label": dict(steps=6, batch_size=16, micro_batch_size=16, warmup_steps=2, log_every=2, eval_every=0,
                  ckpt_every=0),
}


def default_configs(*, smoke: bool = False, seed: int = 0) -> dict:
    """The configs of a default run (``"run"``, ``"world"``, ``"pretrain"``, ``"sft"``, ``"label"``), or of
    ``--smoke``'s."""
    smoke_values = SMOKE if smoke else {k: {} for k in SMOKE}
    return {"run": SFTRunConfig(**smoke_values["run"], seed=seed),
            "world": WorldConfig(**smoke_values["world"], seed=seed),
            "pretrain": dataclasses.replace(DEFAULT_PRETRAIN, **smoke_values["pretrain"]),
            "sft": dataclasses.replace(DEFAULT_SFT, **smoke_values["sft"]),
            "label": dataclasses.replace(DEFAULT_LABEL, **smoke_values["label"])}


def pretrain_mixture(observed: ObservedShop, tok: Tokenizer, run: SFTRunConfig, pre: TrainConfig,
                     max_len: int) -> TaskMixture:
    """Stage 0's batches: titles, attribute text and the logged sessions (:meth:`ObservedShop.pretrain_texts`)."""
    return TaskMixture({"pretrain": pretrain_dataset(observed, tok, max_len)}, counts={"pretrain": pre.batch_size},
                       weights={"pretrain": 1.0}, seed=run.seed)


def stage1_budget(run: SFTRunConfig, label_steps: int) -> int:
    """The labels stage 1 may buy: the run's budget less what stage 1b's round will buy (one pair per sampled
    rewrite at most, when the stage runs)."""
    reserved = run.label_rewrites + run.label_ood if label_steps > 0 else 0
    check(run.label_budget >= reserved, f"--label-budget {run.label_budget} is below what stage 1b buys "
                                        f"(--label-rewrites + --label-ood = {reserved})")
    return run.label_budget - reserved


def sft_mixture(rewrite_pairs: list[tuple[str, str]], relevance_pairs: list[tuple[str, str, int]] | None,
                tok: Tokenizer, run: SFTRunConfig, sft: TrainConfig, max_len: int) -> TaskMixture:
    """Stage 1's batches: rewrite pairs, plus relevance pairs when multi-task, in the run's ratio and loss weights.

    ``rewrite_pairs``: ``(query, rewrite)`` texts, the shop's mined pairs by default
    (:attr:`ObservedShop.mined_pairs`); ``relevance_pairs``: ``(query, rewrite, label)``, bought through the
    annotation door by default (:func:`qrw.oracle.stage1_pairs` gives both, per ``run.rewrite_data`` and
    ``run.relevance_data``), balanced per ``run.relevance_balance``.
    """
    check(len(rewrite_pairs) > 0, "--rewrite-data mined: this world mined no rewrite pairs "
                                  "(raise --mining-sessions-per-query)")
    datasets = {"rewrite": rewrite_pair_dataset(rewrite_pairs, tok, max_len)}
    if "relevance" in run.task_list:
        check(relevance_pairs is not None, "the multi-task mixture needs its relevance pairs")
        datasets["relevance"] = balanced_relevance_examples(relevance_pairs, tok, max_len, run.seed,
                                                            run.relevance_balance)
    return TaskMixture(datasets, counts=mixture_counts(sft.batch_size, run.task_list, run.rewrite_fraction),
                       weights={"rewrite": run.rewrite_weight, "relevance": run.relevance_weight}, seed=run.seed)


LABEL_STREAM = 29  # the random stream of stage 1b's choice of queries and its samples (SFT tasks use 0-3)
LABEL_TEMPERATURE = 1.0  # stage 1b samples as GRPO's rollouts do (GRPOConfig.temperature's default)


def sample_rewrites(model: torch.nn.Module, tok: Tokenizer, texts: list[str], seed: int, n: int, stream: int,
                    device: torch.device) -> list[tuple[str, str]]:
    """``n`` ``(query, rewrite)`` samples of ``model`` for ``texts`` in a seeded order, each pair once.

    The texts are cycled when ``n`` exceeds them (each draw a fresh sample); one rewrite each, at temperature
    :data:`LABEL_TEMPERATURE`, as GRPO samples; an empty rewrite is written as the tagger reads it
    (``EMPTY_REWRITE_TAG``). Deterministic for a given model, ``seed`` and ``stream``.
    """
    check(n >= 1 and len(texts) > 0, f"a labelling round needs queries and n >= 1 (got {len(texts)}, {n})")
    order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(
        mix_seed(seed, LABEL_STREAM * 10_007 + stream))).tolist()
    chosen = [texts[order[i % len(texts)]] for i in range(n)]
    generator = torch.Generator(device=device).manual_seed(mix_seed(seed, LABEL_STREAM + 100 * stream))
    rewrites = Rewriter(model, tok, device).rewrite(chosen, temperature=LABEL_TEMPERATURE, generator=generator)
    return list(dict.fromkeys((q, r if r else EMPTY_REWRITE_TAG) for q, r in zip(chosen, rewrites)))


def model_rewrite_pairs(model: torch.nn.Module, tok: Tokenizer, observed: ObservedShop, seed: int, n: int,
                        device: torch.device) -> list[tuple[str, str, int]]:
    """Stage 1b's labelling round: ``n`` rewrites of training queries sampled from ``model``, labelled by the
    annotation service (the door: counted against the run's label budget). ``(query, rewrite, label)``."""
    pairs = sample_rewrites(model, tok, observed.train_texts, seed, n, 0, device)
    return [(q, r, label) for (q, r), label in zip(pairs, observed.annotations.label(pairs))]


def ood_rewrite_pairs(model: torch.nn.Module, tok: Tokenizer, observed: ObservedShop, seed: int, n: int,
                      device: torch.device) -> list[tuple[str, str, int]]:
    """Stage 1b's out-of-domain labels: one rewrite of each of ``n`` logged searches nobody clicked on
    (:attr:`ObservedShop.null_texts`: the searches for products the shop does not sell are among them, about one
    in eight on the default world; the rest are in-domain searches whose session clicked nothing), labelled
    through the door.

    What the model actually writes for such a query (``grey oak doormat`` -> ``jeans grey``) is the hard
    negative that random catalog rewrites are not: the serving gate's. Each pair once; deterministic.
    """
    check(1 <= n <= MAX_LABEL_OOD, f"out-of-domain labels: n must be between 1 and {MAX_LABEL_OOD} (got {n})")
    check(len(observed.null_texts) > 0, "--label-ood: the logs hold no search that nobody clicked on")
    texts = observed.null_texts[:n]
    pairs = sample_rewrites(model, tok, texts, seed, len(texts), 3, device)
    return [(q, r, label) for (q, r), label in zip(pairs, observed.annotations.label(pairs))]


def label_mixture(rewrite_pairs: list[tuple[str, str]], relevance_pairs: list[tuple[str, str, int]] | None,
                  tok: Tokenizer, run: SFTRunConfig, label: TrainConfig, max_len: int,
                  pairs: list[tuple[str, str, int]]) -> TaskMixture:
    """Stage 1b's batches: stage 1's rewrite and relevance tasks, and the labelled model rewrites.

    The rewrite task keeps its share of the batch (``run.rewrite_fraction``); the
    relevance slots are split ``1 - run.label_share : run.label_share`` between
    stage 1's relevance pairs and ``pairs`` (balanced across labels by repeating
    the rarer ones: :func:`qrw.data.balanced_relevance_examples`), both with the
    relevance loss weight.
    """
    base = sft_mixture(rewrite_pairs, relevance_pairs, tok, run, label, max_len)
    n_relevance = base.counts["relevance"]
    check(n_relevance >= 2, f"--label-batch-size is too small to share the relevance slots (got {label.batch_size})")
    n_labelled = max(1, min(n_relevance - 1, round(n_relevance * run.label_share)))
    datasets = base.datasets | {"labelled": balanced_relevance_examples(pairs, tok, max_len, run.seed, "over")}
    counts = base.counts | {"relevance": n_relevance - n_labelled, "labelled": n_labelled}
    return TaskMixture(datasets, counts=counts, weights=base.weights | {"labelled": run.relevance_weight},
                       seed=run.seed)
