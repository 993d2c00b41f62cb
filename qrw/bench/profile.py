"""How close each stage runs to the hardware: time per step, share of time in matrix multiplies, FLOP rate.

``python -m qrw.bench profile`` runs a few steps of every stage of the pipeline, in
each precision, on a trained run (``--init runs/sft``, the default: real prompts,
real rewrite lengths) and prints per stage:

- seconds per step (median of ``--steps`` after a warm-up);
- the share of the profiled operator time spent in matrix multiplies (``aten::mm``,
  ``bmm``, ``addmm``: ``torch.profiler``'s self time, so nested ops count once);
- the model FLOPs of a step, counted by ``torch.utils.flop_counter.FlopCounterMode``
  (matrix multiplies only, forward and backward), divided by the step's time, and that
  rate as a share of the machine's measured matrix-multiply rate in the same
  precision (an (n, n) @ (n, n) product, best of 10).

Stages: stage 0 and stage 1 optimizer steps on the run's own batches (exactly
as ``train_sft.py`` builds them, packed in rows of 64 tokens); GRPO's rollout (P x G samples, the KV-cache
engine); the reference's scoring forward over the rollout; GRPO's update on the
groups with a reward signal (random advantages here: the cost does not depend on
their values). A stage far below the machine's rate is limited by everything that is
not a matrix multiply: small element-wise operators, casts, Python.
"""

from __future__ import annotations

import statistics
import time
from contextlib import nullcontext

import torch
from torch.utils.flop_counter import FlopCounterMode

from qrw.lm.precision import set_precision

MATMUL_OPS = ("aten::mm", "aten::bmm", "aten::addmm", "aten::_scaled_dot_product_flash_attention_for_cpu",
              "aten::_scaled_dot_product_flash_attention_for_cpu_backward")


def profile_step(step, steps: int) -> dict:
    """Run ``step()`` once to warm up, ``steps`` times timed, once under the profiler and once counting FLOPs."""
    step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS)
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return {"seconds": statistics.median(times), "matmul_share": matmul / max(total, 1e-9),
            "flops": counter.get_total_flops()}


def packed_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, data) -> torch.Tensor:
    """One stage-0/1 optimizer step on a packed batch (``qrw.data.collate(..., 64)``), as ``train_sft.py``
    takes it: the LM head at the targets only, the multi-task loss over the batch's target tokens,
    clipping at 1.0. Returns the loss."""
    from qrw.sft import multitask_loss

    model.train()
    logits = model(data.input_ids, document_ids=data.document_ids, select=data.target_mask.bool())
    loss, _ = multitask_loss(logits, data, float(data.target_mask.sum()))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss


def stage_steps(init: str, seed: int = 0) -> tuple[torch.nn.Module, dict]:
    """The run's model and ``name -> step()``: one step of each stage on that model (trained in place)."""
    from qrw.config import config_from_dict
    from qrw.data import collate
    from qrw.rewriter import Rewriter
    from qrw.rollout import groups_batch, rollout_logprobs, sample_groups, step_generator, step_queries
    from qrw.runs import load_run
    from qrw.oracle import stage1_pairs
    from qrw.shop.observation import observe_world
    from qrw.sft import SFTRunConfig, TrainConfig, pretrain_mixture, sft_mixture, stage1_budget
    from qrw.update import GRPOConfig, update_policy

    loaded = load_run(init)
    model, tok, world = loaded.model, loaded.tok, loaded.world
    config = loaded.config
    run = config_from_dict(SFTRunConfig, {"dtype": "fp32"} | config["run"])
    max_len = model.config.max_seq_len
    observed = observe_world(world, run.label_budget, run.label_disagreement)
    label_steps = config.get("label", {}).get("steps", 0)
    rewrites, relevance, _ = stage1_pairs(observed, world, run, stage1_budget(run, label_steps))
    stage0 = pretrain_mixture(observed, tok, run, config_from_dict(TrainConfig, config["pretrain"]), max_len)
    stage1 = sft_mixture(rewrites, relevance, tok, run, config_from_dict(TrainConfig, config["sft"]), max_len)
    batches = {"pretrain": stage0.batch(1), "sft": stage1.batch(1)}  # the run's own second step of each stage
    weights = {**stage0.weights, **stage1.weights}
    optimizer = torch.optim.AdamW(model.param_groups(0.1), lr=1e-6, fused=True)
    grpo = GRPOConfig()
    rewriter = Rewriter(model, tok, "cpu", max_new_tokens=grpo.max_new_tokens)
    queries = step_queries(observed.grpo_texts, 0, grpo.queries_per_step, seed)
    state = {}

    def sft_step(stage):
        def step():
            packed_step(model, optimizer, collate(batches[stage], tok.pad_id, weights, 64))
        return step

    def rollout():
        state["groups"] = sample_groups(rewriter, queries, grpo.group_size, temperature=1.0,
                                        generator=step_generator(seed, 0, "cpu"))
        state["batch"] = groups_batch(state["groups"], pad_id=tok.pad_id, eos_id=tok.eos_id, device=torch.device("cpu"))

    def reference():
        with torch.no_grad():
            state["ref"] = rollout_logprobs(model, state["batch"], temperature=1.0)

    def update():
        P, G = grpo.queries_per_step, grpo.group_size
        advantages = torch.randn(P, G, generator=torch.Generator().manual_seed(seed))
        keep = torch.ones(P, dtype=torch.bool)  # the defaults: no dynamic sampling, every group (README, GRPO)
        if grpo.beta > 0 and "ref" not in state:
            reference()
        update_policy(model, optimizer, state["batch"], advantages, keep, grpo,
                      old_logp=state["groups"].rollout.logprobs, ref_logp=state["ref"] if grpo.beta > 0 else None)

    return model, {"stage 0 step": sft_step("pretrain"), "stage 1 step": sft_step("sft"), "GRPO rollout": rollout,
            "GRPO reference scoring": reference, "GRPO update": update}


def bench_profile(init: str, dtypes: list[str], steps: int, seed: int = 0, matmul_gflops=None) -> list[dict]:
    """Profile every stage in every precision; print the table; return its rows.

    ``matmul_gflops(dtype=...)``: the machine's matrix-multiply rate (``qrw.bench.cli.matmul_gflops``, passed in
    by the command so that this module does not import the one that imports it).
    """
    rates = {"fp32": matmul_gflops(dtype=torch.float32), "bf16": matmul_gflops(dtype=torch.bfloat16)}
    print(f"threads {torch.get_num_threads()} | machine matmul (1024^3): fp32 {rates['fp32']:.0f} GFLOP/s, "
          f"bf16 {rates['bf16']:.0f} GFLOP/s | run {init} | median of {steps} steps")
    print(f"{'stage':<24} | {'dtype':<5} | {'s/step':>7} | {'matmul share':>12} | {'GFLOP/step':>10} | "
          f"{'GFLOP/s':>7} | {'of machine':>10}")
    rows = []
    for dtype in dtypes:
        model, steps_by_stage = stage_steps(init, seed)  # a fresh copy of the run per precision
        set_precision(model, dtype)
        for name, step in steps_by_stage.items():
            with torch.no_grad() if name in ("GRPO rollout", "GRPO reference scoring") else nullcontext():
                result = profile_step(step, steps)
            rate = result["flops"] / result["seconds"] / 1e9
            row = {"stage": name, "dtype": dtype, **result, "gflops_per_s": rate, "of_machine": rate / rates[dtype]}
            rows.append(row)
            print(f"{name:<24} | {dtype:<5} | {result['seconds']:>7.3f} | {result['matmul_share']:>11.0%} | "
                  f"{result['flops'] / 1e9:>10.2f} | {rate:>7.0f} | {row['of_machine']:>9.0%}")
    return rows

