"""Batched sampling with a preallocated KV cache, and the naive reference it must match.

``sample`` is the engine used by evaluation and GRPO rollouts:

1. the B prompts, of different lengths, are left-padded to the longest (P
   tokens) with an attention mask, so every row's last prompt token sits in
   the last column and positions are ``cumsum(mask) - 1`` (a prompt gets the
   same positions, hence the same logits, alone or in a batch);
2. one prefill runs the B prompts through the model, filling a KV cache
   preallocated for P + max_new_tokens positions;
3. the cache is repeated G times along the batch (``repeat_interleave``): the G
   samples of a prompt share that one prefill, and the N = B * G rows are
   prompt-major (row ``p * G + g`` is sample g of prompt p);
4. each step feeds one token per row, attends over the cache, and samples.
   A row stops after its first EOS (later tokens are ``pad_id``); the loop
   stops when every row has stopped or after max_new_tokens.

``naive_generate`` has the same signature and semantics but recomputes the
full forward over the whole (left-padded) sequence at every step, with no
cache and no shared prefill. It is the reference the tests compare against.

Sampling: logits / temperature -> top-k -> top-p (nucleus) -> inverse-CDF
sampling with one uniform per row per step drawn from ``generator``. Both
engines draw the same uniforms in the same order, so one seed gives the same
samples from both. Temperature 0 is greedy (argmax; no randomness consumed).

Returned log-probs are ``log_softmax(logits / T)`` at the sampled token, over
the *unfiltered* distribution (top-k/top-p change what is sampled, not the
score), with T = 1 for greedy decoding; this is what GRPO re-scores with the
policy (:func:`qrw.grpo.token_logprobs`).

Both run under ``torch.no_grad()``, not ``inference_mode``: the returned tensors
feed GRPO's training forward, and inference tensors cannot be saved for backward.

Departures from common engines: no stop strings, no repetition penalty, no
speculative decoding; the cache is not shrunk as rows finish (finished rows
keep computing pad tokens that are thrown away).
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from qrw.config import invariant


class KVCache:
    """Per-layer key/value tensors (B, H, max_len, D) written in place as generation proceeds.

    ``length`` is the number of filled positions (the same for every row: rows are
    padded, not ragged). ``key_mask`` (B, max_len) marks which filled positions hold
    real tokens, and ``positions`` (B,) counts each row's real tokens so far (the
    next rotary position). Storage is allocated on the first write, with the dtype
    and device of the keys, so the cache follows autocast.
    """

    def __init__(self, n_layer: int, max_len: int):
        self.n_layer, self.max_len = n_layer, max_len
        self.k: list[torch.Tensor | None] = [None] * n_layer
        self.v: list[torch.Tensor | None] = [None] * n_layer
        self.key_mask: torch.Tensor | None = None   # (B, max_len) bool
        self.positions: torch.Tensor | None = None  # (B,) long
        self.length = 0

    def next_position(self, batch_size: int, device) -> torch.Tensor:
        """(B,) rotary position of each row's next real token."""
        if self.positions is None:
            return torch.zeros(batch_size, dtype=torch.long, device=device)
        return self.positions

    def append_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """Record the (B, T) mask of the tokens being added; return the (B, length + T) key mask."""
        B, T = mask.shape
        invariant(self.length + T <= self.max_len, f"KV cache full: {self.length} + {T} > {self.max_len}")
        if self.key_mask is None:
            self.key_mask = torch.zeros(B, self.max_len, dtype=torch.bool, device=mask.device)
            self.positions = torch.zeros(B, dtype=torch.long, device=mask.device)
        self.key_mask[:, self.length:self.length + T] = mask
        self.positions = self.positions + mask.long().sum(1)  # (B,)
        return self.key_mask[:, :self.length + T]  # (B, S)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write layer ``layer``'s new keys/values (B, H, T, D); return all cached ones (B, H, length + T, D)."""
        B, H, T, D = k.shape
        if self.k[layer] is None:
            self.k[layer] = k.new_zeros(B, H, self.max_len, D)
            self.v[layer] = v.new_zeros(B, H, self.max_len, D)
        end = self.length + T
        self.k[layer][:, :, self.length:end] = k
        self.v[layer][:, :, self.length:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]  # (B, H, S, D)

    def advance(self, T: int) -> None:
        """Mark T more positions as filled (called by the model after all layers wrote)."""
        self.length += T

    def repeat_interleave(self, repeats: int) -> "KVCache":
        """A new cache whose row ``b * repeats + g`` is a copy of row b (prompt-major)."""
        out = KVCache(self.n_layer, self.max_len)
        rep = lambda t: None if t is None else t.repeat_interleave(repeats, dim=0)  # noqa: E731
        out.k = [rep(t) for t in self.k]
        out.v = [rep(t) for t in self.v]
        out.key_mask, out.positions, out.length = rep(self.key_mask), rep(self.positions), self.length
        return out


@dataclass
class Rollout:
    """Sampled completions, N = num_prompts * num_samples rows, prompt-major.

    tokens: (N, L) long, completion tokens; ``pad_id`` after the first EOS.
    mask: (N, L) float, 1 up to and including the first EOS (all 1 if no EOS).
    logprobs: (N, L) float, log_softmax(logits / T) of each sampled token (0 where mask is 0).
    prompt_index: (N,) long, the prompt each row continues (row p * G + g -> p).
    logits: (N, L, V) float32 raw logits that produced each token, only with ``return_logits=True``.

    L is the number of decoding steps actually run: max_new_tokens (after clamping
    to the context window), or fewer if every row stopped earlier.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    logprobs: torch.Tensor
    prompt_index: torch.Tensor
    logits: torch.Tensor | None = None


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set logits outside the top-k / nucleus set to -inf (a new tensor; the input is not modified).

    ``logits`` (N, V). ``top_k`` > 0 keeps exactly the k largest (ties broken by
    ``torch.topk``). ``top_p`` < 1 then keeps the smallest set of most probable
    tokens whose probability (renormalised after top-k) reaches ``top_p``; the
    most probable token is always kept. 0 / 1.0 disable them.
    """
    if top_k > 0 and top_k < logits.shape[-1]:
        top_values, top_indices = torch.topk(logits, top_k, dim=-1)                  # (N, k)
        logits = torch.full_like(logits, float("-inf")).scatter(-1, top_indices, top_values)  # (N, V)
    if top_p < 1.0:
        sorted_logits, sorted_indices = torch.sort(logits, dim=-1, descending=True)  # (N, V)
        sorted_probs = F.softmax(sorted_logits, dim=-1)                              # (N, V)
        mass_before = sorted_probs.cumsum(-1) - sorted_probs                         # (N, V)
        remove_sorted = mass_before >= top_p  # the set already reached top_p without this token
        remove_sorted[..., 0] = False
        remove = torch.zeros_like(remove_sorted).scatter(-1, sorted_indices, remove_sorted)  # (N, V)
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


def sample_next(logits: torch.Tensor, temperature: float, top_k: int, top_p: float,
                generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoding step: (N, V) float32 logits -> (tokens (N,), logprobs (N,)).

    Greedy when ``temperature == 0``. Otherwise inverse-CDF sampling from
    softmax(filter_logits(logits / T)) with one uniform per row from ``generator``
    (drawn on the generator's device, then moved). Log-probs are of the unfiltered
    ``log_softmax(logits / T)`` (T = 1 when greedy).
    """
    if temperature == 0:
        tokens = logits.argmax(-1)  # (N,)
        logprobs = F.log_softmax(logits, dim=-1)  # (N, V)
    else:
        scaled = logits if temperature == 1.0 else logits / temperature  # (N, V)
        logprobs = F.log_softmax(scaled, dim=-1)  # (N, V)
        if top_k > 0 or top_p < 1.0:
            probs = F.softmax(filter_logits(scaled, top_k, top_p), dim=-1)  # (N, V)
        else:  # unfiltered: the same distribution, without a second softmax
            probs = logprobs.exp()  # (N, V)
        cdf = probs.cumsum(-1)  # (N, V)
        gen_device = generator.device if generator is not None else logits.device
        u = torch.rand(logits.shape[0], generator=generator, device=gen_device).to(logits.device)  # (N,)
        # First index whose cdf exceeds u * total: zero-probability tokens are never picked.
        tokens = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)[:, 0]  # (N,)
        tokens = tokens.clamp(max=logits.shape[-1] - 1)
    return tokens, logprobs.gather(-1, tokens[:, None])[:, 0]


def _check_request(model, prompts, num_samples, max_new_tokens, temperature, top_k, top_p, eos_id, pad_id) -> int:
    """Validate a generation request (one-line UserErrors); return max_new_tokens clamped to the context window."""
    V, window = model.config.vocab_size, model.config.max_seq_len
    invariant(isinstance(prompts, (list, tuple)) and len(prompts) > 0, "no prompts to generate from")
    for i, p in enumerate(prompts):
        invariant(isinstance(p, (list, tuple)), f"prompt {i} must be a list of token ids, got {type(p).__name__}")
        invariant(len(p) > 0, f"prompt {i} is empty")
        invariant(all(isinstance(t, numbers.Integral) and 0 <= t < V for t in p), f"prompt {i} has a token id outside [0, {V})")
        invariant(len(p) < window, f"prompt {i} has {len(p)} tokens: too long for the context window of {window} "
                               f"(at most {window - 1}, to leave room for one new token)")
    invariant(isinstance(num_samples, int) and num_samples >= 1, f"num_samples must be >= 1, got {num_samples}")
    invariant(isinstance(max_new_tokens, int) and max_new_tokens >= 1, f"max_new_tokens must be >= 1, got {max_new_tokens}")
    invariant(temperature >= 0, f"temperature must be >= 0, got {temperature}")
    invariant(isinstance(top_k, int) and top_k >= 0, f"top_k must be an integer >= 0, got {top_k}")
    invariant(0 < top_p <= 1, f"top_p must be in (0, 1], got {top_p}")
    for name, value in (("eos_id", eos_id), ("pad_id", pad_id)):
        invariant(isinstance(value, numbers.Integral) and 0 <= value < V, f"{name} must be a token id in [0, {V}), got {value!r}")
    longest = max(len(p) for p in prompts)
    if longest + max_new_tokens > window:
        warnings.warn(f"max_new_tokens clamped from {max_new_tokens} to {window - longest}: the longest prompt "
                      f"({longest}) plus the completion must fit the context window ({window})", stacklevel=4)
    return min(max_new_tokens, window - longest)


def left_pad(prompts: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists to the longest: (ids (B, P) long, mask (B, P) bool, True = real)."""
    P = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (P - len(p)) + list(p) for p in prompts], dtype=torch.long, device=device)  # (B, P)
    mask = torch.tensor([[False] * (P - len(p)) + [True] * len(p) for p in prompts], device=device)  # (B, P)
    return ids, mask


class _Decoder:
    """Bookkeeping shared by both engines: sampling, EOS tracking, the output tensors."""

    def __init__(self, N, device, temperature, top_k, top_p, eos_id, pad_id, generator, return_logits):
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.eos_id, self.pad_id, self.generator, self.return_logits = eos_id, pad_id, generator, return_logits
        self.done = torch.zeros(N, dtype=torch.bool, device=device)  # (N,) emitted EOS already
        self.tokens, self.masks, self.logprobs, self.logits = [], [], [], []

    def step(self, logits: torch.Tensor) -> torch.Tensor:
        """Sample from (N, V) logits; record; return the (N,) tokens to feed next."""
        token, logprob = sample_next(logits, self.temperature, self.top_k, self.top_p, self.generator)
        alive = ~self.done
        token = torch.where(alive, token, torch.full_like(token, self.pad_id))
        self.tokens.append(token)
        self.masks.append(alive.float())
        self.logprobs.append(torch.where(alive, logprob, torch.zeros_like(logprob)))
        if self.return_logits:
            self.logits.append(logits)
        self.done = self.done | (token == self.eos_id)
        return token

    def all_done(self) -> bool:
        return bool(self.done.all())

    def rollout(self, num_prompts: int, num_samples: int) -> Rollout:
        device = self.done.device
        return Rollout(
            tokens=torch.stack(self.tokens, 1),      # (N, L)
            mask=torch.stack(self.masks, 1),         # (N, L)
            logprobs=torch.stack(self.logprobs, 1),  # (N, L)
            prompt_index=torch.arange(num_prompts, device=device).repeat_interleave(num_samples),  # (N,)
            logits=torch.stack(self.logits, 1) if self.return_logits else None,  # (N, L, V)
        )


@torch.no_grad()
def sample(model, prompts: list[list[int]], *, num_samples: int = 1, max_new_tokens: int,
           temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, eos_id: int, pad_id: int,
           generator: torch.Generator | None = None, return_logits: bool = False) -> Rollout:
    """Sample ``num_samples`` completions for each prompt with a KV cache (see the module docstring).

    Args:
        model: a ``qrw.lm.model.Transformer`` (put it in eval mode; it is not switched here).
        prompts: B non-empty lists of token ids, each shorter than the context window.
        num_samples: G completions per prompt, sharing one prefill.
        max_new_tokens: completion budget, clamped (with a warning) to
            ``max_seq_len - longest prompt`` so that every row fits the context window.
        temperature: 0 = greedy; otherwise logits are divided by it before sampling.
        top_k, top_p: sampling filters (0 and 1.0 disable them).
        eos_id, pad_id: stop token; filler after a row's EOS (may equal eos_id).
        generator: source of randomness (on any device); None = torch's default.
        return_logits: also return the raw (N, L, V) logits of every step (for tests).
    Returns:
        Rollout with N = B * G prompt-major rows.
    """
    max_new_tokens = _check_request(model, prompts, num_samples, max_new_tokens, temperature, top_k, top_p, eos_id, pad_id)
    device = model.rope_cos.device
    B, G = len(prompts), num_samples
    ids, mask = left_pad(prompts, pad_id, device)  # (B, P), (B, P)
    cache = KVCache(model.config.n_layer, ids.shape[1] + max_new_tokens)
    logits = model(ids, attention_mask=mask, cache=cache)[:, -1]  # prefill: (B, V) at each last prompt token
    if G > 1:
        cache = cache.repeat_interleave(G)
        logits = logits.repeat_interleave(G, dim=0)  # (N, V)
    decoder = _Decoder(B * G, device, temperature, top_k, top_p, eos_id, pad_id, generator, return_logits)
    for step in range(max_new_tokens):
        token = decoder.step(logits)  # (N,)
        if decoder.all_done() or step == max_new_tokens - 1:
            break
        logits = model(token[:, None], cache=cache)[:, -1]  # (N, 1) -> (N, V)
    return decoder.rollout(B, G)


@torch.no_grad()
def naive_generate(model, prompts: list[list[int]], *, num_samples: int = 1, max_new_tokens: int,
                   temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, eos_id: int, pad_id: int,
                   generator: torch.Generator | None = None, return_logits: bool = False) -> Rollout:
    """Reference for :func:`sample`: same arguments and result, but every step runs the
    full forward over prompt + completion so far, with no cache and no shared prefill.
    Quadratic in length; use it in tests and benchmarks only."""
    max_new_tokens = _check_request(model, prompts, num_samples, max_new_tokens, temperature, top_k, top_p, eos_id, pad_id)
    device = model.rope_cos.device
    B, G = len(prompts), num_samples
    ids, mask = left_pad(prompts, pad_id, device)  # (B, P)
    ids, mask = ids.repeat_interleave(G, dim=0), mask.repeat_interleave(G, dim=0)  # (N, P)
    decoder = _Decoder(B * G, device, temperature, top_k, top_p, eos_id, pad_id, generator, return_logits)
    for _ in range(max_new_tokens):
        logits = model(ids, attention_mask=mask)[:, -1]  # (N, P + t, V) -> (N, V)
        token = decoder.step(logits)  # (N,)
        if decoder.all_done():
            break
        ids = torch.cat([ids, token[:, None]], dim=1)  # (N, P + t + 1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)  # (N, P + t + 1)
    return decoder.rollout(B, G)


def rollout_inputs(prompts: list[list[int]], rollout: Rollout, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt + completion of every rollout row as one left-padded batch, for re-scoring.

    Returns ``ids`` (N, P + L) and ``attention_mask`` (N, P + L) bool: the prompts
    left-padded to P (repeated per sample), then the L completion columns, masked
    after each row's EOS. The logits at columns ``P - 1 .. P + L - 2`` score the
    completion tokens, i.e. ``logits[:, P - 1:-1]`` lines up with ``rollout.tokens``.
    """
    device = rollout.tokens.device
    ids, mask = left_pad(prompts, pad_id, device)  # (B, P)
    ids, mask = ids[rollout.prompt_index], mask[rollout.prompt_index]  # (N, P)
    ids = torch.cat([ids, rollout.tokens], dim=1)  # (N, P + L)
    mask = torch.cat([mask, rollout.mask.bool()], dim=1)  # (N, P + L)
    return ids, mask
