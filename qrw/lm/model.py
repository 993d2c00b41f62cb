"""A decoder-only transformer with Llama conventions, in plain PyTorch.

Architecture (Touvron et al., "LLaMA", arXiv 2302.13971), read top to bottom::

    x = embed_tokens(ids)                                  token embedding, no position embedding
    for each layer:
        x = x + self_attn(input_layernorm(x))              RMSNorm -> causal attention with RoPE
        x = x + mlp(post_attention_layernorm(x))           RMSNorm -> SwiGLU MLP
    logits = lm_head(norm(x))                              final RMSNorm, head tied to the embedding

Conventions:
- No biases anywhere. RMSNorm is computed in float32 and has a learned scale.
- Rotary position embeddings (Su et al., arXiv 2104.09864) in the *rotate-half*
  form of HuggingFace's Llama: dimension i of a head is paired with i + D/2,
  not with its neighbour. Parameter names follow HF Llama, so a state dict maps
  one to one (``embed_tokens``/``layers``/``norm`` <-> ``model.*``, ``lm_head``
  <-> ``lm_head``) with no permutation of the q/k projections.
- Attention (:func:`attention`) is written out, softmax(q k^T / sqrt(D) + mask) v with
  the softmax in float32, on the CPU; on CUDA it is ``F.scaled_dot_product_attention``
  (the fused kernels). The CPU choice is measured: at this model's shapes
  PyTorch's CPU flash kernel is as fast as the explicit form in float32 and 2-4x
  slower in bfloat16 (``python -m qrw.bench attention``). Both forms take the
  same boolean (B, 1, T, S) mask, or none for plain causal attention.
- Precision (``qrw.lm.precision``): under bfloat16 autocast the matrix multiplies
  run in bfloat16 while the residual stream, RMSNorm, softmax and the LM head
  (hence the logits, the loss and every log-probability) stay in float32.
- Padding: ``attention_mask`` (B, T) bool, True = real token, may pad on the
  left (generation, GRPO scoring) or the right (training). Positions are then
  ``cumsum(mask) - 1`` clamped at 0, so a sequence gets the same positions and
  the same logits at its real tokens whatever padding surrounds it. A pad
  query attends to itself only if nothing else is visible, so no row of the
  attention matrix is empty and nothing is NaN; outputs at pad positions are
  meaningless and must be masked by the caller.
- Packing (training): ``document_ids`` (B, T) long numbers the examples laid side
  by side in a row (-1 = pad). A token attends only to earlier tokens of its own
  document and its position restarts at 0 where the document starts, so each
  example gets exactly the logits it would get alone in a row.
- KV cache (``qrw.lm.generate.KVCache``): ``forward(..., cache=cache)`` appends the
  new keys/values and the new tokens' mask to the cache and attends over
  everything cached so far; positions continue from each row's count of real
  tokens.

Departures from Llama: no grouped-query attention (n_kv_head == n_head), the
LM head is tied to the embedding by default (Llama 1/2 untie it; set
``tie_embeddings=False`` for that), and initialisation follows GPT-2 (normal,
std 0.02, residual output projections scaled by 1/sqrt(2 * n_layer)).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from qrw.config import Parser, arg, check, invariant, run_main


@dataclass
class ModelConfig:
    """Shape of the transformer. Defaults are the ``cpu`` preset."""

    vocab_size: int = arg(2048, "vocabulary size (the tokenizer's vocab_size)")
    n_layer: int = arg(4, "number of transformer blocks")
    n_head: int = arg(4, "attention heads per block")
    d_model: int = arg(192, "residual stream width")
    d_ff: int = arg(512, "hidden width of the SwiGLU MLP (Llama: ~8/3 * d_model)")
    max_seq_len: int = arg(128, "context window in tokens (prompt + completion)")
    rope_theta: float = arg(10000.0, "RoPE base frequency")
    norm_eps: float = arg(1e-5, "RMSNorm epsilon")
    tie_embeddings: bool = arg(True, "share the LM head weight with the token embedding")
    init_std: float = arg(0.02, "std of the normal initialisation of weights")

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_layer", "n_head", "d_model", "d_ff", "max_seq_len"):
            value = getattr(self, name)
            check(isinstance(value, int) and not isinstance(value, bool) and value > 0,
                  f"model {name} must be a positive integer, got {value!r}")
        check(self.d_model % self.n_head == 0, f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")
        check(self.head_dim % 2 == 0, f"head dim d_model/n_head = {self.head_dim} must be even for rotary embeddings")
        check(self.rope_theta > 0, f"rope_theta must be > 0, got {self.rope_theta}")
        check(self.norm_eps > 0, f"norm_eps must be > 0, got {self.norm_eps}")
        check(self.init_std > 0, f"init_std must be > 0, got {self.init_std}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @classmethod
    def preset(cls, name: str, vocab_size: int, **overrides) -> "ModelConfig":
        """A named configuration (see ``PRESETS``) for a tokenizer of ``vocab_size`` ids.

        ``overrides`` replace individual fields, e.g. ``preset("cpu", 3000, n_layer=6)``.
        """
        check(name in PRESETS, f"unknown model preset {name!r}; choose from {', '.join(PRESETS)}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - fields)
        check(not unknown, f"unknown ModelConfig fields: {', '.join(unknown)}")
        return cls(**{**PRESETS[name], "vocab_size": vocab_size, **overrides})


# Parameter counts below are for the vocabulary in brackets, tied embeddings.
PRESETS: dict[str, dict] = {
    # unit tests: runs in milliseconds [vocab 300: ~30k params]
    "tiny": dict(n_layer=2, n_head=2, d_model=32, d_ff=64, max_seq_len=64),
    # default: full pipeline in minutes on 2 CPU cores [vocab 2048: ~2.2M params]
    "cpu": dict(n_layer=4, n_head=4, d_model=192, d_ff=512, max_seq_len=128),
    # one GPU, an hour or so [vocab 8192: ~23M params]
    "gpu-25m": dict(n_layer=6, n_head=8, d_model=512, d_ff=1408, max_seq_len=256),
    # one GPU, larger [vocab 16384: ~98M params]
    "gpu-100m": dict(n_layer=12, n_head=12, d_model=768, d_ff=2048, max_seq_len=256),
}


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * weight, computed in float32 (Zhang & Sennrich, 2019)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (x32 * self.weight.float()).type_as(x)


def rope_tables(head_dim: int, max_seq_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles, each (max_seq_len, head_dim), rotate-half layout.

    Frequency j (0 <= j < D/2) is theta^(-2j/D); dims j and j + D/2 share it.
    """
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)  # (D/2,)
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float64), inv_freq)        # (S, D/2)
    angles = torch.cat([angles, angles], dim=-1)                                          # (S, D)
    return angles.cos().float(), angles.sin().float()


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
    """softmax(q k^T / sqrt(D) masked) v: q (B, H, T, D), k and v (B, H, S, D), ``attn_mask`` (B, 1, T, S) bool
    (True = may attend) or None for plain causal (T == S). Returns (B, H, T, D) in v's dtype.

    On CUDA this is ``F.scaled_dot_product_attention``; elsewhere it is written out,
    with the scores and the softmax in float32 (the reference the fused kernel is
    tested against: tests/test_model.py).
    """
    if q.is_cuda:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=attn_mask is None)
    T, S = q.shape[-2], k.shape[-2]
    if attn_mask is None:
        attn_mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)  # (T, S) causal
    scores = (q @ k.transpose(-2, -1)).float() * (1.0 / math.sqrt(q.shape[-1]))    # (B, H, T, S)
    scores = scores.masked_fill(~attn_mask, float("-inf"))
    return scores.softmax(dim=-1).to(v.dtype) @ v                                 # (B, H, T, D)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate queries or keys ``x`` (B, H, T, D) by angles ``cos``/``sin`` (B, 1, T, D)."""
    return (x * cos + rotate_half(x) * sin).type_as(x)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with rotary position embeddings."""

    def __init__(self, config: ModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.head_dim = config.n_head, config.head_dim
        d = config.d_model
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(self, x, cos, sin, attn_mask=None, cache=None):
        """``x`` (B, T, C); ``cos``/``sin`` (B, 1, T, D); ``attn_mask`` (B, 1, T, S) bool or None (= causal)."""
        B, T, C = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        v = self.v_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)  # (B, H, S, D): everything cached so far
        y = attention(q, k, v, attn_mask)  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.o_proj(y)


class MLP(nn.Module):
    """SwiGLU (Shazeer, arXiv 2002.05202): down(silu(gate(x)) * up(x))."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.up_proj = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.down_proj = nn.Linear(config.d_ff, config.d_model, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))  # (B, T, d_ff) -> (B, T, C)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: ModelConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(config.d_model, config.norm_eps)
        self.self_attn = CausalSelfAttention(config, layer_idx)
        self.post_attention_layernorm = RMSNorm(config.d_model, config.norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, attn_mask=None, cache=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, attn_mask, cache)
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x


def attention_mask_4d(key_mask: torch.Tensor, query_start: int, T: int) -> torch.Tensor:
    """Boolean SDPA mask (B, 1, T, S): True where query t may attend to key s.

    ``key_mask`` (B, S) marks real keys; the T queries sit at key indices
    ``query_start .. query_start + T - 1``. A query sees real keys at or before
    itself, and always itself (so a pad query's row is never empty: no NaN).
    """
    S = key_mask.shape[1]
    query_idx = torch.arange(query_start, query_start + T, device=key_mask.device)[:, None]  # (T, 1)
    key_idx = torch.arange(S, device=key_mask.device)[None, :]                               # (1, S)
    causal = key_idx <= query_idx                                                            # (T, S)
    allowed = causal[None] & key_mask[:, None, :]                                            # (B, T, S)
    allowed = allowed | (key_idx == query_idx)[None]                                         # (B, T, S)
    return allowed[:, None]                                                                  # (B, 1, T, S)


def document_attention_mask(document_ids: torch.Tensor) -> torch.Tensor:
    """Block-diagonal causal SDPA mask (B, 1, T, T) for packed rows: True where query t may attend to key s.

    ``document_ids`` (B, T) long, -1 = pad. A query sees the keys at or before it that
    belong to the same document; a pad query sees itself only (no empty row, no NaN).
    """
    T = document_ids.shape[1]
    idx = torch.arange(T, device=document_ids.device)
    causal = idx[None, :] <= idx[:, None]                                # (T, S)
    same = document_ids[:, :, None] == document_ids[:, None, :]          # (B, T, S)
    allowed = causal[None] & same & (document_ids[:, None, :] >= 0)      # (B, T, S)
    allowed = allowed | torch.eye(T, dtype=torch.bool, device=document_ids.device)[None]  # (B, T, S)
    return allowed[:, None]                                              # (B, 1, T, S)


def document_positions(document_ids: torch.Tensor) -> torch.Tensor:
    """Rotary positions (B, T) that restart at 0 at the first token of every document (run of equal ids)."""
    B, T = document_ids.shape
    idx = torch.arange(T, device=document_ids.device).expand(B, T)      # (B, T)
    starts = torch.ones_like(document_ids, dtype=torch.bool)            # (B, T)
    starts[:, 1:] = document_ids[:, 1:] != document_ids[:, :-1]
    start_idx = torch.where(starts, idx, torch.zeros_like(idx)).cummax(dim=1).values  # (B, T)
    return idx - start_idx


class Transformer(nn.Module):
    """The language model. ``forward`` returns float32 logits (B, T, V)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList([Block(config, i) for i in range(config.n_layer)])
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        cos, sin = rope_tables(config.head_dim, config.max_seq_len, config.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)  # (max_seq_len, D)
        self.register_buffer("rope_sin", sin, persistent=False)  # (max_seq_len, D)
        self.compute_dtype: torch.dtype | None = None  # bfloat16: autocast around forward (qrw.lm.precision)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 init: every weight ~ N(0, init_std); o_proj and down_proj (which write into the
        residual stream) ~ N(0, init_std / sqrt(2 * n_layer)) so the stream's variance does not
        grow with depth; RMSNorm scales = 1."""
        std = self.config.init_std
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=std)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)
        for layer in self.layers:
            for proj in (layer.self_attn.o_proj, layer.mlp.down_proj):
                nn.init.normal_(proj.weight, mean=0.0, std=std / math.sqrt(2 * self.config.n_layer))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                positions: torch.Tensor | None = None, cache=None,
                select: torch.Tensor | None = None, document_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits; see :meth:`_forward` for the arguments. Under autocast when ``compute_dtype`` is set
        (otherwise a caller's own autocast context, if any, applies as usual)."""
        if self.compute_dtype is None:
            return self._forward(input_ids, attention_mask, positions, cache, select, document_ids)
        with torch.autocast(input_ids.device.type, dtype=self.compute_dtype):
            return self._forward(input_ids, attention_mask, positions, cache, select, document_ids)

    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 positions: torch.Tensor | None = None, cache=None,
                 select: torch.Tensor | None = None, document_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits for every position (or only the ``select``ed ones).

        Args:
            input_ids: (B, T) long token ids in [0, vocab_size) (not range-checked here:
                callers such as ``qrw.lm.generate`` validate user input).
            attention_mask: (B, T) bool, True = real token; None = all real. Left or right padding.
            positions: (B, T) long rotary positions; default ``cumsum(mask) - 1`` clamped at 0
                (continuing from the cache's per-row count when a cache is given).
            cache: a ``qrw.lm.generate.KVCache``; the new keys, values and mask are appended to it.
            select: (B, T) bool; when given, the LM head runs only where it is True (training
                needs logits only at loss-masked targets: a prompt-heavy batch skips most of
                the head's work).
            document_ids: (B, T) long, packed training rows (``qrw.data.collate``): attention
                stays within each document and positions restart per document (-1 = pad).
                Excludes ``attention_mask`` and ``cache``.
        Returns:
            logits: (B, T, vocab_size) float32, or (N, vocab_size) for the N selected positions
            in row-major order. The logits at t score token t + 1.

        The checks' messages are built only when a check fails (``lambda``): a shape formatted into a
        string on every call would make ``torch.compile`` specialise on it and recompile per shape.
        """
        invariant(input_ids.dim() == 2, lambda: f"input_ids must be (B, T), got shape {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        invariant(T > 0, "input_ids has no tokens")
        invariant(not input_ids.is_floating_point(), lambda: f"input_ids must be integer token ids, got {input_ids.dtype}")
        if attention_mask is not None:
            invariant(attention_mask.shape == (B, T), lambda: f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape {(B, T)}")
            attention_mask = attention_mask.bool()
        start = 0 if cache is None else cache.length
        invariant(start + T <= self.config.max_seq_len,
              lambda: f"sequence of {start + T} tokens exceeds the context window ({self.config.max_seq_len})")

        # Positions and the attention mask.
        if document_ids is not None:
            invariant(attention_mask is None and cache is None, "document_ids excludes attention_mask and cache")
            invariant(document_ids.shape == (B, T), lambda: f"document_ids shape {tuple(document_ids.shape)} != input_ids shape {(B, T)}")
            if positions is None:
                positions = document_positions(document_ids)  # (B, T)
            attn_mask = document_attention_mask(document_ids)  # (B, 1, T, T)
        elif cache is None and attention_mask is None:
            attn_mask = None  # plain causal: the fused kernel
            if positions is None:
                positions = torch.arange(T, device=input_ids.device).expand(B, T)  # (B, T)
        else:
            mask = attention_mask if attention_mask is not None else torch.ones(B, T, dtype=torch.bool, device=input_ids.device)
            if positions is None:
                offset = 0 if cache is None else cache.next_position(B, input_ids.device)[:, None]  # (B, 1)
                positions = (offset + mask.long().cumsum(1) - 1).clamp(min=0)  # (B, T)
            key_mask = mask if cache is None else cache.append_mask(mask)  # (B, S)
            attn_mask = attention_mask_4d(key_mask, start, T)  # (B, 1, T, S)
        cos = self.rope_cos[positions][:, None]  # (B, 1, T, D)
        sin = self.rope_sin[positions][:, None]  # (B, 1, T, D)

        x = self.embed_tokens(input_ids)  # (B, T, C)
        for layer in self.layers:
            x = layer(x, cos, sin, attn_mask, cache)
        x = self.norm(x)  # (B, T, C)
        if select is not None:
            invariant(select.shape == (B, T), lambda: f"select shape {tuple(select.shape)} != input_ids shape {(B, T)}")
            x = x[select.bool()]  # (N, C)
        with torch.autocast(x.device.type, enabled=False):  # the head in float32: logits feed losses and log-probs
            logits = F.linear(x.float(), self.lm_head.weight.float())  # (B, T, V) or (N, V)
        if cache is not None:
            cache.advance(T)
        return logits

    # ----- bookkeeping -----

    def num_params(self) -> int:
        """Number of distinct parameters (a tied head counts once).

        Closed form: V*d (embedding) [+ V*d untied head] + n_layer * (4*d^2 + 3*d*d_ff + 2*d) + d.
        """
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs (forward + backward) per token at context length ``seq_len`` (default max_seq_len).

        ``6 * N_matmul + 12 * n_layer * d_model * seq_len`` (Kaplan et al. 2020; PaLM,
        Chowdhery et al. 2022, appendix B): each weight of a matmul costs 2 FLOPs
        forward and 4 backward; attention scores and the weighted sum cost
        2 * 2 * seq_len * d_model per layer forward, times 3 for training. N_matmul
        is every parameter except the input embedding (a gather, not a matmul) and
        the norm scales; a tied head counts as the matmul it is. Causal masking's
        halving of the attention term is ignored, as in PaLM. Inference costs a third.
        """
        c = self.config
        T = c.max_seq_len if seq_len is None else seq_len
        n_matmul = c.n_layer * (4 * c.d_model ** 2 + 3 * c.d_model * c.d_ff) + c.vocab_size * c.d_model
        return 6 * n_matmul + 12 * c.n_layer * c.d_model * T

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: weight decay on the matrices of the blocks (and an untied head), none on
        RMSNorm scales and the token embedding (tied head included), as in nanoGPT/Llama recipes:
        decaying an embedding row pulls rarely seen tokens towards 0 for no benefit."""
        check(weight_decay >= 0, f"weight_decay must be >= 0, got {weight_decay}")
        embedding = self.embed_tokens.weight
        decay, no_decay = [], []
        for p in self.parameters():  # distinct parameters, so a tied head appears once
            (decay if p.dim() >= 2 and p is not embedding else no_decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def main() -> None:
    parser = Parser(prog="python -m qrw.lm.model", description="Print a model preset: config, parameters, FLOPs per token.")
    parser.add_argument("--preset", default="cpu", choices=list(PRESETS), help="model preset (default: cpu)")
    parser.add_argument("--vocab-size", type=int, default=2048, help="vocabulary size (default: 2048)")
    args = parser.parse_args()
    config = ModelConfig.preset(args.preset, args.vocab_size)
    with torch.device("meta"):
        model = Transformer(config)
    n = model.num_params()
    n_embed = config.vocab_size * config.d_model
    print(f"preset {args.preset}: {config}")
    print(f"parameters: {n:,} ({n / 1e6:.2f}M; {n - n_embed:,} excluding the token embedding)")
    print(f"training FLOPs per token at seq_len {config.max_seq_len}: {model.flops_per_token():,} "
          f"({model.flops_per_token() / 1e6:.1f} MFLOP); inference ~1/3 of that")


if __name__ == "__main__":
    run_main(main)
