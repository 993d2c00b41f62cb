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

The command is written in three modules: this one (the shapes, FLOPs and :func:`run_compare`, which
prints the tables), :mod:`qrw.bench.compare_hf` (the sizes, the HF ``LlamaForCausalLM`` with qrw's weights,
the bf16 wrapper, the side-by-side clock, the generation and training workloads) and
:mod:`qrw.bench.compare_trl` (the GRPO workload: qrw's step beside TRL's ``GRPOTrainer``).
"""

from __future__ import annotations

import copy
import json
import platform

import torch

from qrw.config import UserError, check
from qrw.lm.generate import sample
from qrw.lm.model import Transformer
from qrw.bench.compare_hf import (Sizes, autocast_forward, hf_llama, max_logit_difference, qrw_from_hf,
                                  time_generation, time_training, train_steps)
from qrw.bench.compare_trl import time_grpo

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


def require_bench_deps(need_trl: bool) -> None:
    """Import transformers (and trl, datasets) or raise a one-line :class:`UserError` naming the extra."""
    try:
        import transformers  # noqa: F401
        if need_trl:
            import datasets  # noqa: F401
            import trl  # noqa: F401
    except ImportError:
        raise UserError(INSTALL_HINT) from None


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
