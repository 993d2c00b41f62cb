"""The trained model as a product: rewrite queries, tag (query, rewrite) relevance.

:class:`Rewriter` wraps a model and its tokenizer with the two tasks of the paper:

- ``rewrite``: ``<|bos|><|rewrite|>{query}<|sep|>`` -> sampled or greedy rewrite
  (the KV-cache engine of :mod:`qrw.lm.generate`);
- ``relevance_probs``: ``<|bos|><|relevance|>{query}<|sep|>{rewrite}<|sep|>`` -> the
  softmax over the three label-token logits ``<|rel_0|> <|rel_1|> <|rel_2|>`` at the
  label position: one forward pass, no sampling. Used for the tagging metrics and
  as the learned relevance reward of GRPO;
- ``serve``: the serving gate, the relevance task at serving time. The greedy
  rewrite is served only when the model's own tagger vouches for it,
  ``P(label 2 | query, rewrite) > threshold`` (:meth:`Rewriter.gate_scores`,
  :func:`apply_gate`); otherwise the rewrite is ``None`` and the query is
  searched alone, ``page(q) = topk(q)``, the path of the "no rewrite" baseline.
  The score is P(equivalent), not the expected grade ``(P1 + 2 P2) / 2``: only
  label 2 says the meaning is kept, and on the default SFT and GRPO runs the two
  gave about the same trade-off (at 5% of out-of-domain queries served, P2
  served 24% and 12% of in-domain test rewrites, the expected grade 22% and
  12%). The threshold is chosen on validation data by
  :func:`qrw.scorecard.choose_gate_threshold`.

Input handling: queries are normalised
(:func:`qrw.lm.tokenizer.normalize_query`: trimmed, whitespace collapsed, lowercased);
an empty or whitespace-only query is a :class:`~qrw.config.UserError`; a query
longer than ``max_query_tokens`` tokens is truncated to its first
``max_query_tokens`` tokens with a warning (any Unicode is accepted: the tokenizer
is byte-level).
"""

from __future__ import annotations

import warnings

import torch

from qrw.config import UserError, check
from qrw.lm.generate import Rollout, sample
from qrw.lm.tokenizer import SPECIAL_TOKENS, Tokenizer, normalize_query, relevance_prompt, rewrite_prompt

GATE_SCORES = ("equivalent", "relevant")  # what the serving gate thresholds: P(2), or 1 - P(0)
EMPTY_REWRITE_TAG = "-"  # what the tagger reads for an empty rewrite (as the GRPO tagger reward does)


def apply_gate(rewrites: list[str], scores, threshold: float | None) -> list[str | None]:
    """The rewrites served: ``rewrites[i]`` when ``scores[i] > threshold``, else None (query searched alone).

    ``threshold=None`` is the gate off: every rewrite is served. A strict ``>``, so
    ``threshold = 1`` serves nothing and a threshold read off a score (see
    :func:`qrw.scorecard.choose_gate_threshold`) does not serve that score.

    >>> apply_gate(["tv", "sofa", "kicks"], [0.9, 0.2, 0.5], 0.5)
    ['tv', None, None]
    """
    scores = [float(s) for s in scores]
    check(len(scores) == len(rewrites), f"{len(rewrites)} rewrites but {len(scores)} gate scores")
    if threshold is None:
        return list(rewrites)
    check(0.0 <= threshold <= 1.0, f"the gate threshold must be in [0, 1] (got {threshold})")
    return [r if s > threshold else None for r, s in zip(rewrites, scores)]


class Rewriter:
    """A model + tokenizer pair that rewrites queries and tags rewrite relevance."""

    def __init__(self, model: torch.nn.Module, tok: Tokenizer, device: torch.device | str = "cpu",
                 max_new_tokens: int = 32, batch_size: int = 256):
        self.model = model
        self.tok = tok
        self.device = torch.device(device)
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        # room for <|bos|><|rewrite|> ... <|sep|> and the completion in the context window; a relevance
        # prompt <|bos|><|relevance|> q <|sep|> r <|sep|> + label gives half of the rest to each text
        check(max_new_tokens + 4 <= model.config.max_seq_len,
              f"max_new_tokens {max_new_tokens} leaves no room for a query in a {model.config.max_seq_len}-token context")
        self.max_query_tokens = model.config.max_seq_len - max_new_tokens - 3
        self.max_pair_tokens = (model.config.max_seq_len - 5) // 2

    # ---- inputs -------------------------------------------------------------------
    def prepare(self, queries: list[str]) -> list[str]:
        """Normalise queries; reject empty ones; truncate over-long ones (with a warning)."""
        if not queries:
            raise UserError("no queries given")
        out = []
        for q in queries:
            if not isinstance(q, str):
                raise UserError(f"a query must be a string, got {type(q).__name__}")
            text = normalize_query(q)
            if not text:
                raise UserError("empty query (only whitespace)")
            ids = self.tok.encode(text)
            if len(ids) > self.max_query_tokens:
                text = self.tok.decode(ids[: self.max_query_tokens]).strip()
                warnings.warn(f"query truncated to its first {self.max_query_tokens} tokens", stacklevel=2)
            out.append(text)
        return out

    def _clip(self, text: str) -> str:
        """``text`` cut to at most ``max_pair_tokens`` tokens (keeps relevance prompts in the context)."""
        ids = self.tok.encode(text)
        return text if len(ids) <= self.max_pair_tokens else self.tok.decode(ids[: self.max_pair_tokens])

    # ---- rewrite generation -----------------------------------------------------------
    def prompts(self, queries: list[str]) -> list[list[int]]:
        """The rewrite prompt ``<|bos|><|rewrite|>{query}<|sep|>`` of each (prepared) query."""
        return [rewrite_prompt(self.tok, q) for q in queries]

    @torch.no_grad()
    def rollout(self, queries: list[str], *, num_samples: int = 1, temperature: float = 0.0,
                top_k: int = 0, top_p: float = 1.0, generator: torch.Generator | None = None) -> Rollout:
        """Sample ``num_samples`` rewrites per (already prepared) query; rows are prompt-major."""
        return sample(self.model, self.prompts(queries), num_samples=num_samples, max_new_tokens=self.max_new_tokens,
                      temperature=temperature, top_k=top_k, top_p=top_p, eos_id=self.tok.eos_id,
                      pad_id=self.tok.pad_id, generator=generator)

    def decode_rollout(self, rollout: Rollout) -> list[str]:
        """The text of each completion, up to (excluding) its first EOS; stray special tokens are dropped.

        (A special token inside a completion is malformed output: see :meth:`well_formed`.)
        """
        texts = []
        for tokens, mask in zip(rollout.tokens.tolist(), rollout.mask.tolist()):
            ids = [t for t, m in zip(tokens, mask) if m > 0]
            texts.append(normalize_query(self.tok.decode(ids, skip_special=True)))
        return texts

    def well_formed(self, rollout: Rollout) -> list[bool]:
        """Per completion: it ended with EOS (not cut at ``max_new_tokens``) and holds no other special token."""
        n_special = len(SPECIAL_TOKENS)  # special tokens are ids 0 .. n_special - 1
        out = []
        for tokens, mask in zip(rollout.tokens.tolist(), rollout.mask.tolist()):
            ids = [t for t, m in zip(tokens, mask) if m > 0]
            out.append(bool(ids) and ids[-1] == self.tok.eos_id and all(t >= n_special for t in ids[:-1]))
        return out

    def rewrite(self, queries: list[str], *, num_samples: int = 1, temperature: float = 0.0,
                top_k: int = 0, top_p: float = 1.0, generator: torch.Generator | None = None,
                return_well_formed: bool = False):
        """Rewrites of ``queries`` (greedy at temperature 0), ``num_samples`` per query, prompt-major.

        With ``return_well_formed``, returns ``(texts, well_formed)`` (see :meth:`well_formed`).
        """
        queries = self.prepare(queries)
        texts: list[str] = []
        flags: list[bool] = []
        was_training = self.model.training
        self.model.eval()
        for i in range(0, len(queries), self.batch_size):
            chunk = queries[i:i + self.batch_size]
            rollout = self.rollout(chunk, num_samples=num_samples, temperature=temperature, top_k=top_k,
                                   top_p=top_p, generator=generator)
            texts += self.decode_rollout(rollout)
            flags += self.well_formed(rollout)
        self.model.train(was_training)
        return (texts, flags) if return_well_formed else texts

    # ---- relevance tagging -------------------------------------------------------------
    @torch.no_grad()
    def relevance_probs(self, queries: list[str], rewrites: list[str]) -> torch.Tensor:
        """P(label = 0, 1, 2 | query, rewrite) for each pair: (N, 3) float, rows sum to 1.

        One forward over right-padded ``relevance_prompt``s; the label position is the
        last prompt token (its logits predict the label token).
        """
        if len(queries) != len(rewrites):
            raise UserError(f"{len(queries)} queries but {len(rewrites)} rewrites")
        queries = [self._clip(q) for q in self.prepare(queries)]
        rewrites = [self._clip(normalize_query(r)) for r in rewrites]
        label_ids = torch.tensor(self.tok.rel_ids, device=self.device)
        was_training = self.model.training
        self.model.eval()
        out = []
        for i in range(0, len(queries), self.batch_size):
            prompts = [relevance_prompt(self.tok, q, r) for q, r in
                       zip(queries[i:i + self.batch_size], rewrites[i:i + self.batch_size])]
            T = max(len(p) for p in prompts)
            ids = torch.full((len(prompts), T), self.tok.pad_id, dtype=torch.long)
            attention = torch.zeros(len(prompts), T, dtype=torch.bool)
            for b, p in enumerate(prompts):
                ids[b, :len(p)] = torch.tensor(p)
                attention[b, :len(p)] = True
            ids, attention = ids.to(self.device), attention.to(self.device)
            logits = self.model(ids, attention_mask=attention)  # (b, T, V)
            last = attention.sum(1) - 1  # (b,) index of the last prompt token
            label_logits = logits[torch.arange(len(prompts), device=self.device), last][:, label_ids]  # (b, 3)
            out.append(torch.softmax(label_logits.float(), dim=-1).cpu())
        self.model.train(was_training)
        return torch.cat(out)  # (N, 3)

    def tag(self, queries: list[str], rewrites: list[str]) -> list[int]:
        """The most probable relevance label (0, 1, 2) of each (query, rewrite) pair."""
        return self.relevance_probs(queries, rewrites).argmax(-1).tolist()

    # ---- the serving gate ---------------------------------------------------------------
    def gate_scores(self, queries: list[str], rewrites: list[str], score: str = "equivalent") -> list[float]:
        """How much the tagger vouches for each rewrite, in [0, 1] (:data:`GATE_SCORES`).

        ``"equivalent"``: P(label 2 | query, rewrite); ``"relevant"``: 1 - P(label 0 |
        query, rewrite), which vouches for partial rewrites (label 1) too.
        """
        check(score in GATE_SCORES, f"the gate score must be one of {', '.join(GATE_SCORES)} (got {score!r})")
        rewrites = [r if r else EMPTY_REWRITE_TAG for r in rewrites]
        probs = self.relevance_probs(queries, rewrites)
        return (probs[:, 2] if score == "equivalent" else 1.0 - probs[:, 0]).tolist()

    def serve(self, queries: list[str], threshold: float | None) -> tuple[list[str | None], list[str], list[float]]:
        """Greedy rewrites through the gate: ``(served, rewrites, scores)``, ``served[i]`` None when gated.

        ``threshold=None``: the gate is off (every rewrite served, no tagger pass).
        """
        rewrites = self.rewrite(queries)
        scores = [float("nan")] * len(rewrites) if threshold is None else self.gate_scores(queries, rewrites)
        return apply_gate(rewrites, scores, threshold), rewrites, scores
