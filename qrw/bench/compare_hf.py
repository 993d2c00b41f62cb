"""The HF transformers side of ``python -m qrw.bench compare``: one Llama, two libraries, the same weights.

:class:`Sizes` is the work of every workload (the TRL side's too). :func:`hf_llama` builds HF's
``LlamaForCausalLM`` with random weights and :func:`qrw_from_hf` loads them one to one into qrw's
``Transformer``; :func:`autocast_forward` is the bf16 wrapper of both libraries;
:func:`side_by_side` the alternating clock; :func:`time_generation` and :func:`time_training` the two
workloads timed against HF (see :mod:`qrw.bench.compare` for what each measures).
"""

from __future__ import annotations

import contextlib
import functools
import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from qrw.lm.generate import sample
from qrw.lm.model import ModelConfig, Transformer


@dataclass(frozen=True)
class Sizes:
    """The work of each workload (issue 12's numbers)."""

    gen_prompts: int = 64
    gen_prompt_len: int = 32
    gen_new_tokens: int = 64
    train_batch: int = 64
    train_len: int = 48
    grpo_prompts: int = 8
    grpo_group: int = 8
    grpo_prompt_len: int = 16
    grpo_new_tokens: int = 16
    grpo_beta: float = 0.04


# ---- the two models, one set of weights ------------------------------------------------------------

def hf_llama(shape: dict, seed: int):
    """A randomly initialised ``LlamaForCausalLM`` of ``shape`` (a :data:`SHAPES` entry); pad and EOS are
    the two top ids, no BOS."""
    from transformers import LlamaConfig, LlamaForCausalLM

    V = shape["vocab_size"]
    config = LlamaConfig(vocab_size=V, hidden_size=shape["d_model"], intermediate_size=shape["d_ff"],
                         num_hidden_layers=shape["n_layer"], num_attention_heads=shape["n_head"],
                         num_key_value_heads=shape["n_head"], max_position_embeddings=shape["max_seq_len"],
                         rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True, attention_bias=False,
                         mlp_bias=False, bos_token_id=None, eos_token_id=V - 1, pad_token_id=V - 2)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def qrw_from_hf(hf_model, shape: dict) -> Transformer:
    """qrw's ``Transformer`` holding ``hf_model``'s weights: HF's ``model.`` prefix dropped, names otherwise equal."""
    model = Transformer(ModelConfig(**shape))
    state = {name.removeprefix("model."): tensor for name, tensor in hf_model.state_dict().items()}
    model.load_state_dict(state, strict=True)  # every name on both sides, or an error
    return model


@torch.no_grad()
def max_logit_difference(hf_model, model: Transformer, seed: int, batch: int = 4, length: int = 96) -> float:
    """max |logits_HF - logits_qrw| over a (batch, length) random batch, fp32, eval mode."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size - 2, (batch, length), generator=gen)  # (B, T)
    hf_model.eval(), model.eval()
    return float((hf_model(ids).logits.float() - model(ids)).abs().max())


@contextlib.contextmanager
def autocast_forward(models, dtype: torch.dtype, device_type: str):
    """Run every ``forward`` of ``models`` under ``torch.autocast(device_type, dtype)`` (fp32: unchanged).

    The wrapper keeps the wrapped signature (``functools.wraps``): HF's ``generate`` reads it to decide
    which arguments the model takes (``logits_to_keep`` among them). Restored on exit.
    """
    models = [m for m in models if m is not None]
    if dtype == torch.float32:
        yield
        return
    saved = [m.__dict__.get("forward") for m in models]  # an instance-level forward (TRL patches one) or None
    for m in models:
        inner = m.forward

        @functools.wraps(inner)
        def forward(*args, _inner=inner, **kwargs):
            with torch.autocast(device_type, dtype=dtype):
                return _inner(*args, **kwargs)

        m.forward = forward
    try:
        yield
    finally:
        for m, old in zip(models, saved):
            if old is None:
                del m.forward
            else:
                m.forward = old


# ---- timing ---------------------------------------------------------------------------------------

def seconds(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def side_by_side(ours, theirs, repeats: int, warmup: int, device: torch.device) -> tuple[float, float]:
    """Median seconds of ``ours()`` and ``theirs()``, run alternately ``repeats`` times after ``warmup`` runs each."""
    for _ in range(warmup):
        ours(), theirs()
    times_ours, times_theirs = [], []
    for _ in range(repeats):
        times_ours.append(seconds(ours, device))
        times_theirs.append(seconds(theirs, device))
    return statistics.median(times_ours), statistics.median(times_theirs)


# ---- generation and training step ----------------------------------------------------------------

def time_generation(hf_model, model: Transformer, sizes: Sizes, dtype, repeats: int, device, seed: int):
    """Median seconds of one sampling call (``sizes.gen_prompts`` prompts) for qrw and HF."""
    V = model.config.vocab_size
    gen = torch.Generator().manual_seed(seed)
    prompts = torch.randint(0, V - 2, (sizes.gen_prompts, sizes.gen_prompt_len), generator=gen)  # (B, P)
    prompt_lists, prompts = prompts.tolist(), prompts.to(device)
    hf_model.eval(), model.eval()

    def ours():
        sample(model, prompt_lists, max_new_tokens=sizes.gen_new_tokens, temperature=1.0, eos_id=V - 1,
               pad_id=V - 2)

    def theirs():
        hf_model.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=True, temperature=1.0,
                          top_k=0, top_p=1.0, max_new_tokens=sizes.gen_new_tokens, use_cache=True,
                          eos_token_id=V - 1, pad_token_id=V - 2)

    with autocast_forward([model, hf_model], dtype, device.type):
        return side_by_side(ours, theirs, repeats, warmup=1, device=device)


def lm_loss(model: Transformer, ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over every position of (B, T) ``ids`` that has a next token, the way qrw's
    training computes it (``qrw.sft.multitask_loss``): the LM head runs only at the B * (T - 1) positions with a
    target (``select=``), in row-major order, so the targets are ``ids[:, 1:]`` flattened and neither the logits
    of the last column nor a shifted copy of the (B, T, V) logits is ever made. HF's loss computes all B * T rows
    of logits and shifts the labels instead; the loss is the same (tests/test_bench_compare.py)."""
    has_target = torch.ones_like(ids, dtype=torch.bool)  # (B, T)
    has_target[:, -1] = False
    logits = model(ids, select=has_target)  # (B * (T - 1), V) float32
    return F.cross_entropy(logits, ids[:, 1:].reshape(-1))


def train_steps(hf_model, model: Transformer, sizes: Sizes, seed: int, device):
    """Four closures over one random (B, T) batch: qrw step, HF step, qrw forward+backward, HF forward+backward."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (sizes.train_batch, sizes.train_len), generator=gen).to(device)
    hf_model.train(), model.train()
    optimizers = {id(m): torch.optim.AdamW(m.parameters(), lr=1e-4) for m in (model, hf_model)}

    def qrw_loss():
        return lm_loss(model, ids)

    def hf_loss():
        return hf_model(input_ids=ids, labels=ids).loss  # HF shifts the labels itself

    def forward_backward(m, loss_fn):
        loss_fn().backward()
        m.zero_grad(set_to_none=True)

    def step(m, loss_fn):
        loss_fn().backward()
        optimizers[id(m)].step()
        optimizers[id(m)].zero_grad(set_to_none=True)

    return (functools.partial(step, model, qrw_loss), functools.partial(step, hf_model, hf_loss),
            functools.partial(forward_backward, model, qrw_loss), functools.partial(forward_backward, hf_model, hf_loss))


def time_training(hf_model, model: Transformer, sizes: Sizes, dtype, repeats: int, device, seed: int):
    """Median seconds of (qrw step, HF step, qrw forward+backward, HF forward+backward)."""
    ours, theirs, ours_fb, theirs_fb = train_steps(hf_model, model, sizes, seed, device)
    with autocast_forward([model, hf_model], dtype, device.type):
        step = side_by_side(ours, theirs, repeats, warmup=2, device=device)
        fwd_bwd = side_by_side(ours_fb, theirs_fb, repeats, warmup=1, device=device)
    return step + fwd_bwd
