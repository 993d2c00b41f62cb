"""A GRPO rollout: G rewrites sampled per query, packed and scored by a model.

Stage 2 of qrw (``train_grpo.py``) takes, every step, P training queries and
samples a *group* of G rewrites for each from the current policy with the
KV-cache engine (one prefill per query shared by its G samples). This module
holds what turns those samples into tensors that GRPO's math
(:mod:`qrw.grpo`) can use:

- :func:`sample_groups`: the G samples per query, their text, and whether each
  is well formed (ended with EOS, no stray special token);
- :func:`pack_rollout` / :class:`RolloutBatch`: prompt + completion rows,
  left-padded so that every completion starts at the same column;
- :func:`completion_logits`, :func:`sequence_logprobs`, :func:`rollout_logprobs`:
  one forward pass scores every completion token (the shift aligned: the
  output at position t scores token t + 1);
- :func:`frozen_reference`: pi_ref, the frozen SFT model of the KL penalty.

Rows are prompt-major everywhere: row ``p * G + g`` is sample g of query p, so
``rewards.view(P, G)[p, g]`` belongs to it. Tensor names as in :mod:`qrw.grpo`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from qrw.data import QUERY_STREAM, mix_seed, stream_indices
from qrw.grpo import completion_mask, token_logprobs
from qrw.lm.generate import Rollout


def step_queries(pool: list, step: int, count: int, seed: int) -> list:
    """The ``count`` training queries of GRPO step ``step`` (epochs of seeded permutations of ``pool``)."""
    return [pool[i] for i in stream_indices(len(pool), step * count, count, seed, task_index=QUERY_STREAM)]


def step_generator(seed: int, step: int, device: torch.device | str, rank: int = 0) -> torch.Generator:
    """The random generator of step ``step``'s sampling: a resumed run draws the same rewrites.

    Under torchrun rank r > 0 draws from its own stream, seeded by (seed, step, r); rank 0 from a single process's.
    """
    stream = mix_seed(seed, step) if rank == 0 else mix_seed(mix_seed(seed, step), rank)
    return torch.Generator(device=device).manual_seed(stream)


@dataclass
class SampledGroups:
    """G sampled rewrites for each of P queries (rows prompt-major: ``p * G + g``)."""

    prompts: list[list[int]]
    """P rewrite prompts ``<|bos|><|rewrite|>{query}<|sep|>`` as token ids."""
    rollout: Rollout
    """The sampler's output: ``tokens`` (N, L), ``mask`` (N, L) up to and including the first EOS."""
    rewrites: list[str]
    """N rewrite texts (special tokens dropped)."""
    well_formed: list[bool]
    """N flags: ended with EOS and held no other special token (the format rule needs it)."""
    group_size: int
    """G."""

    @property
    def lengths(self) -> Tensor:
        """(N,) completion tokens, EOS included."""
        return self.rollout.mask.sum(1)  # (N, L) -> (N,)

    def select(self, prompts: list[int]) -> "SampledGroups":
        """The groups of the given prompt indices (in that order)."""
        G = self.group_size
        rows = [p * G + g for p in prompts for g in range(G)]
        index = torch.tensor(rows, dtype=torch.long, device=self.rollout.tokens.device)  # (n * G,)
        r = self.rollout
        rollout = Rollout(r.tokens[index], r.mask[index], r.logprobs[index],
                          torch.arange(len(prompts), device=index.device).repeat_interleave(G),
                          None if r.logits is None else r.logits[index])
        return SampledGroups([self.prompts[p] for p in prompts], rollout, [self.rewrites[i] for i in rows],
                             [self.well_formed[i] for i in rows], G)


@torch.no_grad()
def sample_groups(rewriter, queries: list[str], group_size: int, *, temperature: float,
                  generator: torch.Generator | None = None) -> SampledGroups:
    """Sample ``group_size`` rewrites per query from ``rewriter``'s model (in eval mode: no dropout).

    Samples come from the unfiltered ``softmax(logits / temperature)``, the
    distribution that the ratio and the KL score them under: no top-k or nucleus
    filter is offered (sampling under a filter and scoring without it would be
    another policy; property 26 of docs/GRPO_TESTS.md).

    Args:
        rewriter: a :class:`qrw.rewriter.Rewriter` (model, tokenizer, ``max_new_tokens``).
        queries: P query texts (normalised and length-checked here).
        group_size: G.
        temperature: the sampling temperature (scoring uses the same).
        generator: the step's random generator (a resumed run draws the same samples).
    """
    texts = rewriter.prepare(queries)
    rewriter.model.eval()
    rollout = rewriter.rollout(texts, num_samples=group_size, temperature=temperature, generator=generator)
    return SampledGroups(rewriter.prompts(texts), rollout, rewriter.decode_rollout(rollout),
                         rewriter.well_formed(rollout), group_size)


def pack_rollout(prompts: list[list[int]], completions: Tensor, num_samples: int,
                 pad_id: int) -> tuple[Tensor, Tensor, int]:
    """Build the (prompt + completion) batch that scores a rollout in one forward.

    Prompts are left-padded to a common length so that every completion starts
    at the same column, ``completion_start``. Rows are prompt-major, as the
    sampler emits them: row ``p * G + g`` is prompt p followed by completion
    ``completions[p * G + g]``, so ``rewards.view(P, G)[p, g]`` belongs to it.

    Args:
        prompts: P non-empty lists of token ids.
        completions: (N, L) completion token ids, N = P * num_samples.
        num_samples: G, completions per prompt (>= 1).
        pad_id: the id written into the left padding.

    Returns:
        input_ids: (N, S + L) long, S the longest prompt.
        attention_mask: (N, S + L) bool, False on the left padding only
            (tokens after EOS are masked in the loss, not here).
        completion_start: S, the column of the first completion token.
    """
    if not prompts:
        raise ValueError("pack_rollout needs at least one prompt")
    if any(len(prompt) == 0 for prompt in prompts):
        raise ValueError("every prompt must have at least one token (its last token scores the first completion token)")
    if not (isinstance(num_samples, int) and num_samples >= 1):
        raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
    if completions.dim() != 2 or completions.shape[1] < 1:
        raise ValueError(f"completions must be (N, L) with L >= 1, got {tuple(completions.shape)}")
    if completions.shape[0] != len(prompts) * num_samples:
        raise ValueError(f"expected N = {len(prompts)} prompts x {num_samples} samples = "
                         f"{len(prompts) * num_samples} completions, got {completions.shape[0]}")
    prompt_len = max(len(prompt) for prompt in prompts)
    prompt_ids = torch.full((len(prompts), prompt_len), pad_id, dtype=torch.long)  # (P, S)
    prompt_real = torch.zeros((len(prompts), prompt_len), dtype=torch.bool)  # (P, S)
    for p, prompt in enumerate(prompts):
        prompt_ids[p, prompt_len - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        prompt_real[p, prompt_len - len(prompt):] = True
    device = completions.device
    prompt_ids = prompt_ids.to(device).repeat_interleave(num_samples, dim=0)  # (P, S) -> (N, S), row p*G+g = prompt p
    prompt_real = prompt_real.to(device).repeat_interleave(num_samples, dim=0)  # (N, S)
    input_ids = torch.cat([prompt_ids, completions.long()], dim=1)  # (N, S + L)
    attention_mask = torch.cat([prompt_real, torch.ones_like(completions, dtype=torch.bool)], dim=1)  # (N, S + L)
    return input_ids, attention_mask, prompt_len


@dataclass
class RolloutBatch:
    """One rollout, packed for scoring: N left-padded prompt + completion rows.

    Build it with :meth:`from_completions`. ``completion_tokens`` is the view
    ``input_ids[:, completion_start:]``.
    """

    input_ids: Tensor
    """(N, T) long: left-padded prompt, then the L completion tokens."""
    attention_mask: Tensor
    """(N, T) bool: False on the prompt's left padding."""
    completion_start: int
    """Column of the first completion token (every row: prompts are left-padded)."""
    completion_mask: Tensor
    """(N, L) float 0/1: completion tokens that count in the loss (up to and including EOS)."""

    def __post_init__(self) -> None:
        num_rows, total = self.input_ids.shape
        if tuple(self.attention_mask.shape) != (num_rows, total):
            raise ValueError(f"attention_mask must be {(num_rows, total)}, got {tuple(self.attention_mask.shape)}")
        if not 1 <= self.completion_start < total:
            raise ValueError(f"completion_start must be in [1, {total}), got {self.completion_start}")
        expected = (num_rows, total - self.completion_start)
        if tuple(self.completion_mask.shape) != expected:
            raise ValueError(f"completion_mask must be {expected}, got {tuple(self.completion_mask.shape)}")

    @classmethod
    def from_completions(cls, prompts: list[list[int]], completions: Tensor, num_samples: int, *,
                         pad_id: int, eos_id: int, mask: Tensor | None = None) -> "RolloutBatch":
        """Pack a rollout (see :func:`pack_rollout`); ``mask`` defaults to ``completion_mask(completions, eos_id)``."""
        input_ids, attention_mask, start = pack_rollout(prompts, completions, num_samples, pad_id)
        mask = completion_mask(completions, eos_id) if mask is None else mask.float()
        return cls(input_ids, attention_mask, start, mask)

    @property
    def completion_tokens(self) -> Tensor:
        """(N, L) the completion token ids."""
        return self.input_ids[:, self.completion_start:]

    @property
    def num_sequences(self) -> int:
        return self.input_ids.shape[0]

    @property
    def completion_length(self) -> int:
        """L, the number of completion columns."""
        return self.input_ids.shape[1] - self.completion_start

    def select(self, rows: Tensor) -> "RolloutBatch":
        """The sub-batch of the given row indices (a (b,) long tensor)."""
        return RolloutBatch(self.input_ids[rows], self.attention_mask[rows], self.completion_start,
                            self.completion_mask[rows])


def completion_logits(model: nn.Module, input_ids: Tensor, attention_mask: Tensor,
                      completion_start: int) -> Tensor:
    """The logits that score each completion token, in one forward pass.

    A causal LM's output at position t predicts token t + 1, so the L
    completion tokens at columns ``completion_start .. T-1`` are scored by the
    outputs at ``completion_start - 1 .. T-2``. The last column's output would
    score a token that does not exist, so it is not computed.

    Args:
        model: ``model(input_ids (B, T), attention_mask (B, T) bool, select=(B, T) bool) -> logits (N, V)``
            at the N selected positions in row-major order (:class:`qrw.lm.model.Transformer`'s
            contract): the LM head runs on the completion's columns only.
        input_ids: (B, T) left-padded prompt + completion.
        attention_mask: (B, T) bool, False on padding.
        completion_start: column of the first completion token (>= 1).

    Returns:
        (B, L, V) logits, L = T - completion_start; ``[:, j]`` scores
        ``input_ids[:, completion_start + j]``.
    """
    total = input_ids.shape[1]
    if not 1 <= completion_start < total:
        raise ValueError(f"completion_start must be in [1, {total}), got {completion_start}")
    if not bool(attention_mask[:, completion_start - 1].all()):
        raise ValueError("the token before completion_start must be a real prompt token in every row "
                         "(prompts must be left-padded and non-empty)")
    B, L = input_ids.shape[0], total - completion_start
    scoring = torch.zeros(B, total - 1, dtype=torch.bool, device=input_ids.device)  # (B, T-1)
    scoring[:, completion_start - 1:] = True  # the LM head runs on these columns only
    logits = model(input_ids[:, :-1], attention_mask[:, :-1], select=scoring)  # (B * L, V): drop the last input
    return logits.view(B, L, -1)  # (B, L, V)


def sequence_logprobs(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, completion_start: int,
                      temperature: float = 1.0) -> Tensor:
    """log pi(completion token | prompt, earlier completion tokens) for every completion column.

    Args:
        model, input_ids, attention_mask, completion_start: as in :func:`completion_logits`.
        temperature: the sampling temperature.

    Returns:
        (B, L) float32 log-probs (with gradient if the model has one);
        positions after EOS hold the log-prob of the padding and are masked
        by the caller.
    """
    logits = completion_logits(model, input_ids, attention_mask, completion_start)  # (B, L, V)
    return token_logprobs(logits, input_ids[:, completion_start:], temperature)  # (B, L)


@torch.no_grad()
def rollout_logprobs(model: nn.Module, batch: RolloutBatch, *, temperature: float = 1.0,
                     chunk_size: int | None = None) -> Tensor:
    """Score a whole rollout without gradient: the old (pi_old) or reference (pi_ref) log-probs.

    Computed once per rollout batch. Run the model with dropout off (eval
    mode) so that scoring is deterministic.

    Returns:
        (N, L) float32 log-probs.
    """
    chunk_size = batch.num_sequences if chunk_size is None else max(int(chunk_size), 1)
    chunks = []
    for start in range(0, batch.num_sequences, chunk_size):
        part = batch.select(torch.arange(start, min(start + chunk_size, batch.num_sequences),
                                         device=batch.input_ids.device))
        chunks.append(sequence_logprobs(model, part.input_ids, part.attention_mask, part.completion_start,
                                        temperature))  # (chunk, L)
    return torch.cat(chunks, dim=0)  # (N, L)


def frozen_reference(policy: nn.Module) -> nn.Module:
    """A deep copy of ``policy`` to serve as pi_ref: eval mode, ``requires_grad`` False everywhere."""
    reference = copy.deepcopy(policy)
    reference.eval()
    reference.requires_grad_(False)
    return reference


def groups_batch(groups: SampledGroups, *, pad_id: int, eos_id: int, device: torch.device) -> RolloutBatch:
    """The whole rollout as a :class:`RolloutBatch` on ``device`` (N = P * G rows, prompt-major)."""
    batch = RolloutBatch.from_completions(groups.prompts, groups.rollout.tokens.cpu(), groups.group_size,
                                          pad_id=pad_id, eos_id=eos_id, mask=groups.rollout.mask.cpu())
    return RolloutBatch(batch.input_ids.to(device), batch.attention_mask.to(device), batch.completion_start,
                        batch.completion_mask.to(device))
