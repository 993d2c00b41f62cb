"""``python -m qrw.bench compare``: qrw against HF transformers and TRL, side by side in one process.

One Llama shape (default ``d256``: d_model 256, 4 layers, 4 heads, d_ff 688, vocabulary 4096, tied head,
context 128) is built as HF's ``LlamaForCausalLM`` with random weights, and its state dict is loaded one to
one into qrw's ``Transformer`` (HF's ``model.`` prefix dropped, nothing permuted). The two models' logits
must agree within 1e-4 before anything is timed. Then, for each dtype:

- generation: 64 prompts of 32 random tokens, 64 new tokens each, sampling at temperature 1 with a KV
  cache: ``qrw.lm.generate.sample`` vs ``LlamaForCausalLM.generate(do_sample=True, top_k=0, use_cache=True)``.
  Both engines keep decoding every row for all 64 steps (a row that samples EOS decodes pad), so
  tokens/s = 64 * 64 / seconds for both.
- training step: B=64 rows of T=48 random tokens, cross-entropy on every position, one AdamW step
  (``torch.optim.AdamW`` for both): qrw's ``Transformer`` (no mask: plain causal) with its training loss
  (:func:`lm_loss`: the LM head only where there is a target) vs ``LlamaForCausalLM(input_ids, labels=input_ids)``; also forward + backward alone. tokens/s = 64 * 48 / s.
- GRPO step: 8 prompts of 16 random tokens x G=8 samples of 16 new tokens, beta 0.04 (k3 KL to a frozen
  reference that is scored once), loss "grpo", advantages scaled by the group's std, one optimizer step,
  reward = the length of the decoded completion text. qrw runs the step of ``train_grpo.py``:
  ``sample_groups`` -> rewards -> ``group_advantages`` -> ``groups_batch`` (``pack_rollout``) -> reference
  log-probs -> ``update_policy`` (``grpo_update``: policy forward/backward, clip, AdamW). TRL runs
  ``GRPOTrainer.train()``; a callback times each step from ``on_step_begin`` to ``on_step_end`` (generate,
  decode, reward, reference forward, policy forward/backward, clip, AdamW, scheduler), then runs and times
  one qrw step, so the two alternate (:func:`time_grpo`). Neither computes pi_old separately (on-policy:
  the sampler's log-probs, or TRL's detached current ones). The first step of each is warm-up.

Prompts are random token ids. TRL wants text, so token i is the word ``t{i}`` of a word-level tokenizer
(:func:`word_tokenizer`; the two top ids are pad and EOS), and qrw's ``sample_groups`` gets the same
prompts through :class:`IdRewriter`, which decodes completions to the same words.

bf16 is ``torch.autocast(device, torch.bfloat16)`` around every forward of every model of both libraries
(:func:`autocast_forward`), with fp32 weights and optimizer state: whatever each library's code does under
autocast is what gets timed. (Autocast's cache of bf16 weight copies lasts one forward, so both libraries
cast the weights again at every decoding step.) TRL's own ``bf16`` flag stays off (it autocasts only its scoring forwards,
not generation) and so does its default gradient checkpointing (it would recompute the forward).

Each number is the median of ``repeats`` timed runs after warm-up. qrw's runs and HF's (TRL's) alternate,
so load from a neighbour on a shared machine hits both alike. ratio = qrw's speed / theirs (> 1: qrw is
faster).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import platform
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from qrw.config import UserError, check
from qrw.grpo import group_advantages
from qrw.lm.generate import sample
from qrw.lm.model import ModelConfig, Transformer
from qrw.rollout import frozen_reference, groups_batch, rollout_logprobs, sample_groups
from qrw.update import GRPOConfig, update_policy

SHAPES: dict[str, dict] = {
    # the shape of issue 12: qrw's "cpu" preset widened to d 256 (Llama's d_ff ~ 8/3 d), vocabulary 4096
    "d256": dict(vocab_size=4096, n_layer=4, n_head=4, d_model=256, d_ff=688, max_seq_len=128),
    # for tests: the same workloads in seconds
    "tiny": dict(vocab_size=256, n_layer=2, n_head=2, d_model=32, d_ff=64, max_seq_len=128),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
WORKLOADS = ("generate", "train", "grpo")
LOGIT_TOLERANCE = 1e-4
INSTALL_HINT = "python -m qrw.bench compare needs transformers and trl: pip install -e .[bench]"


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


def require_bench_deps(need_trl: bool) -> None:
    """Import transformers (and trl, datasets) or raise a one-line :class:`UserError` naming the extra."""
    try:
        import transformers  # noqa: F401
        if need_trl:
            import datasets  # noqa: F401
            import trl  # noqa: F401
    except ImportError:
        raise UserError(INSTALL_HINT) from None


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

def _seconds(fn, device: torch.device) -> float:
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
        times_ours.append(_seconds(ours, device))
        times_theirs.append(_seconds(theirs, device))
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


# ---- GRPO step -------------------------------------------------------------------------------------

def text_length_reward(completions: list[str], **kwargs) -> list[float]:
    """The trivial reward of the GRPO workload: characters in the decoded completion (a TRL reward function)."""
    return [float(len(text)) for text in completions]


def word_tokenizer(vocab_size: int):
    """A ``transformers`` tokenizer whose token i is the word ``t{i}``; ids V-2 and V-1 are ``<pad>`` and ``<eos>``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(vocab_size - 2)} | {"<pad>": vocab_size - 2, "<eos>": vocab_size - 1}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", padding_side="left")


class IdRewriter:
    """What ``qrw.rollout.sample_groups`` needs of a ``qrw.rewriter.Rewriter``, for prompts of random ids.

    A query is the text ``"t12 t873 ..."`` of its token ids (what TRL's tokenizer reads); a completion
    decodes to the words of its tokens before EOS (what TRL's ``batch_decode`` gives its reward function).
    """

    def __init__(self, model: Transformer, max_new_tokens: int):
        self.model, self.max_new_tokens = model, max_new_tokens
        self.pad_id, self.eos_id = model.config.vocab_size - 2, model.config.vocab_size - 1

    def prepare(self, queries: list[str]) -> list[str]:
        return list(queries)

    def prompts(self, queries: list[str]) -> list[list[int]]:
        return [[int(word[1:]) for word in query.split()] for query in queries]

    def rollout(self, queries, *, num_samples, temperature, top_k, top_p, generator):
        return sample(self.model, self.prompts(queries), num_samples=num_samples, max_new_tokens=self.max_new_tokens,
                      temperature=temperature, top_k=top_k, top_p=top_p, eos_id=self.eos_id, pad_id=self.pad_id,
                      generator=generator)

    def decode_rollout(self, rollout) -> list[str]:
        return [" ".join(f"t{t}" for t, m in zip(tokens, mask) if m > 0 and t < self.pad_id)
                for tokens, mask in zip(rollout.tokens.tolist(), rollout.mask.tolist())]

    def well_formed(self, rollout) -> list[bool]:
        return [bool(ids) and ids[-1] == self.eos_id
                for ids in ([t for t, m in zip(tokens, mask) if m > 0]
                            for tokens, mask in zip(rollout.tokens.tolist(), rollout.mask.tolist()))]


def grpo_prompts(vocab_size: int, sizes: Sizes, steps: int, seed: int) -> list[str]:
    """``steps * grpo_prompts`` prompts of random ids as text, ``grpo_prompts`` per step."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size - 2, (steps * sizes.grpo_prompts, sizes.grpo_prompt_len), generator=gen)
    return [" ".join(f"t{t}" for t in row) for row in ids.tolist()]


def qrw_grpo_step(model: Transformer, sizes: Sizes, prompts: list[str], device, seed: int):
    """qrw's GRPO step as ``train_grpo.py`` takes it: returns ``step(index)`` (prompts of step ``index``)
    and the two models (policy, frozen reference) whose forwards it runs."""
    P, G = sizes.grpo_prompts, sizes.grpo_group
    cfg = GRPOConfig(queries_per_step=P, group_size=G, max_new_tokens=sizes.grpo_new_tokens, beta=sizes.grpo_beta,
                     dynamic_sampling=False, mu=1, minibatch_size=0, microbatch_size=P * G, loss_type="grpo",
                     lr=1e-5, temperature=1.0)
    policy, reference = model, frozen_reference(model)
    rewriter = IdRewriter(policy, cfg.max_new_tokens)
    optimizer = torch.optim.AdamW(policy.param_groups(cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.99))
    keep = torch.ones(P, dtype=torch.bool)  # no dynamic sampling: every group is updated

    def step(index: int) -> None:
        generator = torch.Generator(device=device).manual_seed(seed + index)
        groups = sample_groups(rewriter, prompts[index * P:(index + 1) * P], G, temperature=cfg.temperature,
                               generator=generator)
        rewards = torch.tensor(text_length_reward(groups.rewrites)).view(P, G)  # (N,) -> (P, G)
        advantages = group_advantages(rewards, scale="group")  # (P, G)
        batch = groups_batch(groups, pad_id=rewriter.pad_id, eos_id=rewriter.eos_id, device=device)
        ref_logp = rollout_logprobs(reference, batch, temperature=cfg.temperature)  # (N, L)
        update_policy(policy, optimizer, batch, advantages, keep, cfg, old_logp=groups.rollout.logprobs.to(device),
                      ref_logp=ref_logp)

    return step, [policy, reference]


def time_grpo(hf_model, model: Transformer, sizes: Sizes, dtype, repeats: int, device,
              seed: int) -> tuple[float, float, str]:
    """Median seconds of a qrw GRPO step and of a TRL ``GRPOTrainer`` step, and the optimizer TRL used.

    TRL's loop owns its steps, so qrw's run inside it: TRL's step-end callback stops TRL's clock, then
    takes and times one qrw step on the same prompts; the two alternate as in :func:`side_by_side`. The
    first step of each is warm-up.
    """
    import transformers
    from datasets import Dataset
    from trl import GRPOConfig as TRLGRPOConfig
    from trl import GRPOTrainer

    prompts = grpo_prompts(hf_model.config.vocab_size, sizes, repeats + 1, seed)
    qrw_step, qrw_models = qrw_grpo_step(model, sizes, prompts, device, seed)

    class Alternate(transformers.TrainerCallback):
        def __init__(self):
            self.trl, self.qrw, self.start = [], [], 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            if device.type == "cuda":
                torch.cuda.synchronize()
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if device.type == "cuda":
                torch.cuda.synchronize()
            self.trl.append(time.perf_counter() - self.start)
            self.qrw.append(_seconds(functools.partial(qrw_step, len(self.qrw)), device))

    V = hf_model.config.vocab_size
    threads = torch.get_num_threads()
    timer = Alternate()
    with tempfile.TemporaryDirectory() as workdir, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        hf_model.save_pretrained(f"{workdir}/model")  # TRL builds its reference model from this directory
        args = TRLGRPOConfig(
            output_dir=f"{workdir}/out", per_device_train_batch_size=sizes.grpo_prompts * sizes.grpo_group,
            num_generations=sizes.grpo_group, max_completion_length=sizes.grpo_new_tokens, beta=sizes.grpo_beta,
            loss_type="grpo", scale_rewards="group", temperature=1.0, top_k=0, top_p=1.0, learning_rate=1e-5,
            max_steps=repeats + 1, bf16=False, gradient_checkpointing=False, use_cpu=device.type == "cpu",
            report_to="none", save_strategy="no", logging_steps=10_000, disable_tqdm=True, seed=seed,
            shuffle_dataset=False, dataloader_num_workers=0, model_init_kwargs={"dtype": "float32"})
        trainer = GRPOTrainer(model=f"{workdir}/model", reward_funcs=text_length_reward, args=args,
                              train_dataset=Dataset.from_dict({"prompt": prompts}),
                              processing_class=word_tokenizer(V), callbacks=[timer])
        trainer.remove_callback(transformers.PrinterCallback)  # no log lines in the tables
        torch.set_num_threads(threads)  # in case the trainer's setup changed it
        with autocast_forward([trainer.model, trainer.ref_model] + qrw_models, dtype, device.type):
            trainer.train()
        optimizer = type(trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer)
        fused = any(group.get("fused") for group in trainer.optimizer.param_groups)
    return (statistics.median(timer.qrw[1:]), statistics.median(timer.trl[1:]),
            f"{optimizer.__name__}{' (fused)' if fused else ''}")


def cpu_description() -> str:
    """The CPU's model name and its bf16 matrix instructions (from /proc/cpuinfo; the platform's name elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "cpu")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    bf16 = [flag for flag in ("avx512_bf16", "amx_bf16") if flag in flags]
    return f"{name}, {'+'.join(bf16) if bf16 else 'no bf16 matrix instructions'}"


# ---- FLOPs and the command ---------------------------------------------------------------------------

def workload_flops(model: Transformer, sizes: Sizes) -> dict[str, float]:
    """Model FLOPs per generated token, per trained token, and per GRPO step (``flops_per_token``'s formula).

    GRPO: decoding N * L tokens, one reference forward and one policy forward+backward over the N rows of
    prompt + completion (the prefill of the P prompts is left out: under 2%).
    """
    decode = model.flops_per_token(sizes.gen_prompt_len + sizes.gen_new_tokens // 2) / 3
    train = model.flops_per_token(sizes.train_len)
    N, L = sizes.grpo_prompts * sizes.grpo_group, sizes.grpo_new_tokens
    scored = sizes.grpo_prompt_len + L - 1
    grpo = (N * L * model.flops_per_token(sizes.grpo_prompt_len + L // 2) / 3
            + N * scored * model.flops_per_token(scored) * (1 / 3 + 1))
    return {"decode_per_token": decode, "train_per_token": train, "grpo_per_step": grpo}


def print_profile(label: str, fn, top: int) -> None:
    """Top ``top`` operators of one call of ``fn`` by self CPU time, and the share of the matrix multiplies."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    matmul = sum(e.self_cpu_time_total for e in events if e.key in ("aten::mm", "aten::addmm", "aten::bmm"))
    print(f"  profile {label}: {total / 1e3:.1f} ms of self CPU time, matmuls (mm/addmm/bmm) {100 * matmul / total:.0f}%")
    for e in events[:top]:
        print(f"    {e.key:<48} {e.self_cpu_time_total / 1e3:>8.1f} ms {100 * e.self_cpu_time_total / total:>5.1f}% "
              f"{e.count:>6} calls")


def _row(workload: str, dtype: str, unit: str, ours: float, theirs: float, flops: float) -> dict:
    """One result; ``ours``/``theirs`` are rates (higher is better) or seconds (unit "s")."""
    ratio = theirs / ours if unit == "s" else ours / theirs
    rate = (lambda x: flops / x) if unit == "s" else (lambda x: x * flops)
    return dict(workload=workload, dtype=dtype, unit=unit, qrw=ours, theirs=theirs, ratio=ratio,
                qrw_gflops=rate(ours) / 1e9, theirs_gflops=rate(theirs) / 1e9)


def _print_table(title: str, other: str, rows: list[dict]) -> None:
    print(title)
    print(f"  {'dtype':<5} | {'qrw':>9} | {other:>9} | {'ratio':>6} | {'qrw GFLOP/s':>11} | {other + ' GFLOP/s':>14}")
    for r in rows:
        fmt = (lambda x: f"{x:>9.3f}") if r["unit"] == "s" else (lambda x: f"{x:>9.0f}")
        print(f"  {r['dtype']:<5} | {fmt(r['qrw'])} | {fmt(r['theirs'])} | {r['ratio']:>5.2f}x | "
              f"{r['qrw_gflops']:>11.1f} | {r['theirs_gflops']:>14.1f}")


def run_compare(shape_name: str, dtypes: list[str], workloads: list[str], repeats: int, device: torch.device,
                seed: int, json_path: str | None, profile_top: int, matmul_gflops) -> dict:
    """Run the comparison, print its tables and return (and optionally write) the numbers.

    ``matmul_gflops(device=, dtype=, shape=)`` measures the hardware (``qrw.bench.cli.matmul_gflops``;
    passed in because ``qrw.bench.cli`` imports this module).
    """
    require_bench_deps(need_trl="grpo" in workloads)
    import transformers

    check(device.type != "cuda" or torch.cuda.is_available(), "--device cuda requested but CUDA is not available")
    shape, sizes = SHAPES[shape_name], Sizes()
    hf_base = hf_llama(shape, seed).to(device)
    base = qrw_from_hf(hf_base, shape).to(device)
    versions = f"torch {torch.__version__}, transformers {transformers.__version__}"
    if "grpo" in workloads:
        import trl
        versions += f", trl {trl.__version__}"
    hardware_name = cpu_description() if device.type == "cpu" else torch.cuda.get_device_name()
    print(f"device {device} ({hardware_name}) | threads {torch.get_num_threads()} | {versions}")
    print(f"shape {shape_name}: {shape} | {base.num_params() / 1e6:.2f}M parameters")
    model_shape = (sizes.train_batch * sizes.train_len, shape["d_model"], shape["d_ff"])
    hardware = {}
    for name in dtypes:
        hardware[name] = {"1024^3": matmul_gflops(device=device, dtype=DTYPES[name]),
                          "model": matmul_gflops(device=device, dtype=DTYPES[name], shape=model_shape)}
    print("matmul GFLOP/s: " + " | ".join(
        f"{name} {rates['1024^3']:.0f} (1024^3), {rates['model']:.0f} ({model_shape[0]}x{model_shape[1]} @ "
        f"{model_shape[1]}x{model_shape[2]})" for name, rates in hardware.items()))
    flops = workload_flops(base, sizes)
    print(f"model FLOPs: {flops['train_per_token'] / 1e6:.1f}M per trained token (T={sizes.train_len}), "
          f"{flops['decode_per_token'] / 1e6:.1f}M per decoded token, {flops['grpo_per_step'] / 1e9:.1f}G per GRPO step")
    difference = max_logit_difference(hf_base, base, seed)
    print(f"weights: HF LlamaForCausalLM -> qrw Transformer, max |logit difference| {difference:.1e} "
          f"(tolerance {LOGIT_TOLERANCE:.0e}) on 4 x 96 random tokens, fp32")
    if not difference <= LOGIT_TOLERANCE:
        raise RuntimeError(f"HF and qrw logits differ by {difference} > {LOGIT_TOLERANCE}: the weight mapping is "
                           "broken or one model changed its math; nothing timed")
    result = {"shape": shape_name, "config": shape, "device": f"{device} ({hardware_name})", "threads": torch.get_num_threads(),
              "versions": versions, "repeats": repeats, "matmul_gflops": hardware, "flops": flops,
              "max_logit_difference": difference, "rows": [], "includes": {}}

    def fresh():  # a new pair for each measurement: no workload sees another's optimizer updates
        hf = copy.deepcopy(hf_base)
        return hf, qrw_from_hf(hf, shape).to(device)

    if "generate" in workloads:
        rows = []
        for name in dtypes:
            hf, model = fresh()
            ours, theirs = time_generation(hf, model, sizes, DTYPES[name], repeats, device, seed)
            n = sizes.gen_prompts * sizes.gen_new_tokens
            rows.append(_row("generate", name, "tokens/s", n / ours, n / theirs, flops["decode_per_token"]))
            if profile_top:
                with autocast_forward([model, hf], DTYPES[name], device.type):
                    V = shape["vocab_size"]
                    ids = torch.randint(0, V - 2, (sizes.gen_prompts, sizes.gen_prompt_len), device=device)
                    print_profile(f"qrw generate {name}", lambda: sample(
                        model, ids.tolist(), max_new_tokens=sizes.gen_new_tokens, eos_id=V - 1, pad_id=V - 2), profile_top)
                    print_profile(f"HF generate {name}", lambda: hf.generate(
                        ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=0, top_p=1.0,
                        max_new_tokens=sizes.gen_new_tokens, eos_token_id=V - 1, pad_token_id=V - 2), profile_top)
        _print_table(f"generation: {sizes.gen_prompts} prompts x {sizes.gen_prompt_len} tokens, "
                     f"{sizes.gen_new_tokens} new tokens, sampling (T=1), KV cache: tokens/s", "HF", rows)
        result["rows"] += rows
    if "train" in workloads:
        steps, fwd_bwds = [], []
        n = sizes.train_batch * sizes.train_len
        for name in dtypes:
            hf, model = fresh()
            ours, theirs, ours_fb, theirs_fb = time_training(hf, model, sizes, DTYPES[name], repeats, device, seed)
            steps.append(_row("train_step", name, "tokens/s", n / ours, n / theirs, flops["train_per_token"]))
            fwd_bwds.append(_row("forward_backward", name, "tokens/s", n / ours_fb, n / theirs_fb,
                                 flops["train_per_token"]))
            if profile_top:
                qrw_step, hf_step, _, _ = train_steps(hf, model, sizes, seed, device)
                with autocast_forward([model, hf], DTYPES[name], device.type):
                    print_profile(f"qrw train step {name}", qrw_step, profile_top)
                    print_profile(f"HF train step {name}", hf_step, profile_top)
        _print_table(f"training step: B={sizes.train_batch}, T={sizes.train_len}, cross-entropy on every position, "
                     f"AdamW: tokens/s", "HF", steps)
        _print_table("  forward + backward alone: tokens/s", "HF", fwd_bwds)
        result["rows"] += steps + fwd_bwds
    if "grpo" in workloads:
        rows = []
        for name in dtypes:
            hf, model = fresh()
            ours, theirs, optimizer = time_grpo(hf, model, sizes, DTYPES[name], repeats, device, seed)
            rows.append(_row("grpo_step", name, "s", ours, theirs, flops["grpo_per_step"]))
        result["includes"]["grpo"] = {
            "both": f"{sizes.grpo_prompts} prompts x G={sizes.grpo_group} x {sizes.grpo_new_tokens} new tokens "
                    f"(prompts of {sizes.grpo_prompt_len} random ids as words), reward = characters of the decoded "
                    f"completion, advantages scaled by the group std, loss 'grpo', beta {sizes.grpo_beta} "
                    "(reference forward), one policy forward + backward, clip 1.0, one AdamW step",
            "qrw": "sample_groups (KV cache, decode) -> rewards -> group_advantages -> groups_batch -> "
                   "rollout_logprobs(reference) -> update_policy (pi_old = the sampler's log-probs), torch AdamW",
            "trl": f"GRPOTrainer step from on_step_begin to on_step_end: generate (HF generate), decode, reward, "
                   f"reference forward (fused LM head), policy forward/backward, clip, {optimizer}, LR scheduler; "
                   "no gradient checkpointing, bf16 flag off (autocast as for qrw)"}
        _print_table(f"GRPO step: {sizes.grpo_prompts} prompts x G={sizes.grpo_group}, {sizes.grpo_new_tokens} new "
                     f"tokens, beta {sizes.grpo_beta}, one update: seconds per step (ratio = TRL s / qrw s)", "TRL", rows)
        for who, text in result["includes"]["grpo"].items():
            print(f"  {who}: {text}")
        result["rows"] += rows
    print("ratio = qrw's speed / theirs (> 1: qrw faster); GFLOP/s = model FLOPs (flops_per_token) per second")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {json_path}")
    return result
