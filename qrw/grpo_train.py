"""The GRPO training loop (stage 2): rollouts -> rewards -> group advantages -> updates.

The math lives in :mod:`qrw.grpo` (pure functions, unit-tested against hand
computations); this module is the plumbing around it, in the fixed order of one
step (GRPO.md, "The loop and what it logs"):

1. take ``P`` training queries (a deterministic stream: step ``s`` -> the same queries on resume);
2. sample ``G`` rewrites per query from the current policy with the KV-cache
   engine (one prefill per query shared by its G samples), temperature ``T``;
3. score every rewrite with each reward component and fuse them (:mod:`qrw.rewards`);
4. ``group_advantages`` over the (P, G) fused rewards;
5. optionally drop zero-spread groups (DAPO dynamic sampling);
6. reference log-probs once, under ``no_grad``, from the frozen SFT model
   (only when ``beta > 0``); old log-probs once, inside :func:`qrw.grpo.grpo_update`;
7. ``mu`` passes of the clipped surrogate + ``beta`` * KL over minibatches.

Sampling at step ``s`` uses a generator seeded by ``(seed, s)``, so a resumed run
draws the same rewrites as an uninterrupted one. The learning rate warms up
linearly, then stays constant (the usual choice for RL fine-tuning).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from qrw.config import arg, check
from qrw.data import stream_indices
from qrw.grpo import (LOSS_TYPES, NonFiniteLossError, RolloutBatch, dynamic_sampling_mask, group_advantages,
                      grpo_update, rollout_logprobs, zero_spread_fraction)
from qrw.log import MetricsLog, log_line
from qrw.rewards import COMPONENTS


@dataclass
class GRPOConfig:
    """Hyperparameters of stage 2 (GRPO). Defaults fit a 2-core CPU in minutes.

    Two defaults depart from DeepSeekMath's GRPO, both measured on this task:

    - ``scale="none"`` (Dr. GRPO): the conversion reward differs by a few
      hundredths between rewrites of equal meaning (ranking ties, word order);
      dividing by a tiny group std blows that noise up to advantages of +-1,
      as large as the difference between a relevant and an irrelevant rewrite.
      Without std scaling an advantage is the reward difference itself.
    - ``dynamic_sampling=True`` (DAPO): after SFT most groups are unanimous
      (all G rewrites equal); they carry no policy-gradient signal, so the update
      skips them, which makes each step several times cheaper.
    """

    steps: int = arg(250, "GRPO steps (one rollout batch each)")
    queries_per_step: int = arg(64, "P: training queries per step")
    group_size: int = arg(8, "G: rewrites sampled per query (the group that advantages compare within)")
    temperature: float = arg(1.0, "sampling temperature (scoring uses the same temperature)")
    top_k: int = arg(0, "sample only from the k most likely tokens (0: off)")
    top_p: float = arg(1.0, "nucleus sampling threshold (1: off)")
    max_new_tokens: int = arg(24, "longest rewrite in tokens; longer ones are truncated (format reward 0)")
    lr: float = arg(3e-4, "learning rate (AdamW, linear warmup then constant)")
    warmup_steps: int = arg(5, "linear warmup steps")
    weight_decay: float = arg(0.0, "AdamW weight decay")
    max_grad_norm: float = arg(1.0, "max global gradient norm")
    beta: float = arg(0.04, "KL coefficient (k3 estimator, to the frozen SFT reference; 0 drops the reference)")
    clip_low: float = arg(0.2, "clip range below 1: ratio >= 1 - clip_low")
    clip_high: float | None = arg(None, "clip range above 1: ratio <= 1 + clip_high (default: clip_low; DAPO: 0.28)")
    loss_type: str = arg("grpo", "loss aggregation", choices=list(LOSS_TYPES))
    scale: str = arg("none", "advantage scaling: group std (DeepSeekMath), batch std, or none (Dr. GRPO)",
                     choices=["group", "batch", "none"])
    mu: int = arg(1, "optimisation passes per rollout batch (1: on-policy, ratio == 1 in value)")
    minibatch_size: int = arg(128, "completions per optimizer step within a pass")
    dynamic_sampling: bool = arg(True, "drop groups whose rewards are all equal before the update (DAPO)")
    log_every: int = arg(5, "steps between log lines (every step goes to metrics.jsonl)")
    sample_every: int = arg(25, "steps between printed sample rewrites with their rewards")
    ckpt_every: int = arg(25, "steps between checkpoints")

    def __post_init__(self) -> None:
        check(self.steps >= 0, f"--steps must be >= 0 (got {self.steps})")
        check(self.queries_per_step >= 1, f"--queries-per-step must be >= 1 (got {self.queries_per_step})")
        check(self.group_size >= 2, f"--group-size must be >= 2: GRPO compares samples within a group "
                                    f"(got {self.group_size})")
        check(math.isfinite(self.temperature) and self.temperature > 0,
              f"--temperature must be > 0 for sampling (got {self.temperature})")
        check(self.top_k >= 0, f"--top-k must be >= 0 (got {self.top_k})")
        check(0 < self.top_p <= 1, f"--top-p must be in (0, 1] (got {self.top_p})")
        check(self.max_new_tokens >= 1, f"--max-new-tokens must be >= 1 (got {self.max_new_tokens})")
        check(math.isfinite(self.lr) and self.lr > 0, f"--lr must be > 0 (got {self.lr})")
        check(self.warmup_steps >= 0 and self.weight_decay >= 0, "--warmup-steps and --weight-decay must be >= 0")
        check(self.max_grad_norm > 0, f"--max-grad-norm must be > 0 (got {self.max_grad_norm})")
        check(math.isfinite(self.beta) and self.beta >= 0, f"--beta must be >= 0 (got {self.beta})")
        check(self.clip_low > 0, f"--clip-low must be > 0 (got {self.clip_low})")
        check(self.clip_high is None or self.clip_high > 0, f"--clip-high must be > 0 (got {self.clip_high})")
        check(self.mu >= 1, f"--mu must be >= 1 (got {self.mu})")
        check(self.minibatch_size >= 1, f"--minibatch-size must be >= 1 (got {self.minibatch_size})")
        check(self.log_every >= 1 and self.sample_every >= 1 and self.ckpt_every >= 1,
              "--log-every, --sample-every and --ckpt-every must be >= 1")


def lr_at(step: int, cfg: GRPOConfig) -> float:
    """Linear warmup over ``warmup_steps``, then constant."""
    return cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr


def step_queries(train_queries: list, step: int, cfg: GRPOConfig, seed: int) -> list:
    """The ``P`` training queries of step ``step`` (epochs of seeded permutations)."""
    return [train_queries[i] for i in stream_indices(len(train_queries), step * cfg.queries_per_step,
                                                     cfg.queries_per_step, seed, task_index=17)]


def _stats(values: np.ndarray) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values))


def grpo_step(policy, reference, optimizer, rewriter, reward_fn, queries, cfg: GRPOConfig, step: int, seed: int,
              device: torch.device) -> tuple[dict, list]:
    """One GRPO step on ``queries``; returns (the logged record, sample rows for printing)."""
    P, G = len(queries), cfg.group_size
    t0 = time.perf_counter()
    # 1-2. rollouts: G samples per query, prompt-major rows (p * G + g)
    texts = rewriter.prepare([q.text for q in queries])
    generator = torch.Generator(device=device).manual_seed(seed * 1_000_003 + step)
    policy.eval()
    rollout = rewriter.rollout(texts, num_samples=G, temperature=cfg.temperature, top_k=cfg.top_k,
                               top_p=cfg.top_p, generator=generator)
    rewrites = rewriter.decode_rollout(rollout)
    lengths = rollout.mask.sum(1)  # (P*G,) completion tokens, EOS included
    finished = (rollout.tokens == rewriter.tok.eos_id).logical_and(rollout.mask > 0).any(1)  # (P*G,)
    well_formed = rewriter.well_formed(rollout)
    t1 = time.perf_counter()
    # 3. rewards
    repeated = [q for q in queries for _ in range(G)]
    scores = reward_fn(repeated, rewrites, well_formed)
    rewards = reward_fn.as_tensor(scores, G)  # (P, G)
    t2 = time.perf_counter()
    # 4-5. advantages, dynamic sampling
    advantages = group_advantages(rewards, scale=cfg.scale)  # (P, G)
    keep = dynamic_sampling_mask(rewards) if cfg.dynamic_sampling else torch.ones(P, dtype=torch.bool)  # (P,)
    record = {"stage": "grpo", "step": step + 1, "lr": lr_at(step, cfg)}
    for name in list(COMPONENTS) + ["fused", "ucvr", "page_relevance"]:  # logged whether weighted or not
        record[f"reward_{name}_mean"], record[f"reward_{name}_std"] = _stats(scores[name])
    record.update({"zero_spread_frac": zero_spread_fraction(rewards), "groups_kept": int(keep.sum()),
                   "adv_abs_mean": float(advantages.abs().mean()),
                   "length_mean": float(lengths.float().mean()), "length_min": int(lengths.min()),
                   "length_max": int(lengths.max()), "truncated_frac": float(1 - finished.float().mean()),
                   "diversity": float(np.mean([len(set(rewrites[p * G:(p + 1) * G])) / G for p in range(P)]))})
    # 6-7. update on the kept groups
    rows = keep.repeat_interleave(G)  # (P*G,)
    if rows.any():
        prompts = [prompt for prompt, kept in zip(rewriter.prompts(texts), keep.tolist()) if kept]
        batch = RolloutBatch.from_completions(prompts, rollout.tokens[rows].cpu(), G, pad_id=rewriter.tok.pad_id,
                                              eos_id=rewriter.tok.eos_id, mask=rollout.mask[rows].cpu())
        batch = RolloutBatch(batch.input_ids.to(device), batch.attention_mask.to(device), batch.completion_start,
                             batch.completion_mask.to(device))
        ref_logp = None
        if cfg.beta > 0:  # once per rollout batch, no gradient, from the frozen SFT model
            ref_logp = rollout_logprobs(reference, batch, temperature=cfg.temperature)  # (N, L)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        # the model has no dropout; eval() keeps it that way for any future model, so rho == 1 at mu = 1
        update = grpo_update(policy, optimizer, batch, advantages[keep].reshape(-1).to(device), mu=cfg.mu,
                             minibatch_size=cfg.minibatch_size, beta=cfg.beta, clip_low=cfg.clip_low,
                             clip_high=cfg.clip_high, loss_type=cfg.loss_type, temperature=cfg.temperature,
                             max_grad_norm=cfg.max_grad_norm, ref_logp=ref_logp)
        record.update(update)
    else:  # every group unanimous: nothing to learn from this batch, no optimizer step
        record.update({key: None for key in ("loss", "kl", "clip_frac_low", "clip_frac_high", "ratio_mean",
                                             "approx_kl", "entropy", "grad_norm")} | {"optimizer_steps": 0})
    t3 = time.perf_counter()
    record.update({"seconds": t3 - t0, "seconds_rollout": t1 - t0, "seconds_reward": t2 - t1,
                   "seconds_update": t3 - t2})
    samples = [(queries[p].text, rewrites[p * G + g], float(scores["fused"][p * G + g]),
                {c: float(scores[c][p * G + g]) for c in reward_fn.weights})
               for p in range(min(P, 2)) for g in range(min(G, 3))]
    return record, samples


def train_grpo(policy, reference, rewriter, reward_fn, train_queries, cfg: GRPOConfig, *, seed: int,
               device: torch.device, log: MetricsLog, save, start_step: int = 0, optimizer_state=None,
               stop_after: int | None = None, progress: bool = True) -> bool:
    """Run GRPO steps ``start_step .. cfg.steps - 1``; ``save(step, optimizer)`` checkpoints.

    Returns True when all steps ran, False when ``stop_after`` steps ran first
    (a checkpoint is written; continue with resume). A non-finite loss raises
    :class:`qrw.grpo.NonFiniteLossError` before any optimizer step of that batch.
    """
    optimizer = torch.optim.AdamW(policy.param_groups(cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.99))
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    bar = tqdm(range(start_step, cfg.steps), desc="grpo", initial=start_step, total=cfg.steps,
               disable=not progress, dynamic_ncols=True, leave=False)
    steps_run = 0
    for step in bar:
        queries = step_queries(train_queries, step, cfg, seed)
        try:
            record, samples = grpo_step(policy, reference, optimizer, rewriter, reward_fn, queries, cfg, step,
                                        seed, device)
        except NonFiniteLossError as e:
            raise NonFiniteLossError(f"grpo step {step + 1}: {e}; the last good checkpoint is kept") from None
        log.write(record)
        done = step + 1
        steps_run += 1
        bar.set_postfix(reward=f"{record['reward_fused_mean']:.3f}", kl=f"{record.get('kl') or 0.0:.4f}")
        if progress and (done % cfg.log_every == 0 or done == cfg.steps):
            def value(key: str) -> float:
                v = record.get(key)
                return float("nan") if v is None else v

            shown = {"loss": value("loss"), "reward": record["reward_fused_mean"],
                     "relevance": value("reward_page_relevance_mean"), "ucvr": record["reward_ucvr_mean"],
                     "kl": value("kl"), "clip": value("clip_frac_low") + value("clip_frac_high"),
                     "kept": record["groups_kept"], "len": record["length_mean"]}
            bar.write("grpo " + log_line(done, cfg.steps, shown, record["seconds"]) +
                      f" (rollout {record['seconds_rollout']:.2f} / reward {record['seconds_reward']:.2f} / "
                      f"update {record['seconds_update']:.2f})")
        if progress and done % cfg.sample_every == 0:
            for query, rewrite, fused, parts in samples:
                detail = " ".join(f"{k} {v:.2f}" for k, v in parts.items())
                bar.write(f"  {query!r} -> {rewrite!r}: reward {fused:.2f} ({detail})")
        stopping = stop_after is not None and steps_run >= stop_after and done < cfg.steps
        if done % cfg.ckpt_every == 0 or done == cfg.steps or stopping:
            save(done, optimizer)
        if stopping:
            bar.close()
            return False
    bar.close()
    return True
