"""``python -m qrw.explain``: one GRPO update, number by number, each stage beside its equation.

    python -m qrw.explain                                  # the classroom run (python train_grpo.py --classroom)
    python -m qrw.explain --ckpt runs/classroom-sft --beta 0  # the SFT model (its own reference: k3 = 0)
    python -m qrw.explain --mu 1 --minibatch-size 4        # train_grpo's shape: one pass, several minibatches
    python -m qrw.explain --ckpt runs/sft --loss-type dr_grpo

It takes the run as the policy and a frozen reference (for an SFT run, a copy
of it; for a GRPO run, its SFT init, as in training), samples G
rewrites for each of a few logged queries, and prints, in the order of one step
of ``train_grpo.py``:

1. the prompts and the sampled rewrites (token ids and text)          qrw.rollout.sample_groups
2. every reward component and the fused reward                        qrw.rewards.RewardFunction
3. group mean, std and the advantages                                 qrw.grpo.normalize_then_sum / group_advantages
4. the update, one optimizer step at a time (``--mu`` passes x the
   minibatches of ``--minibatch-size``): before each step, by hand,
   per token log pi_theta, log pi_old (the sampler's), log pi_ref,
   the ratio, whether it is clipped, and k3; each sequence's share
   of the loss (policy-gradient part + beta * KL part), the loss and
   its gradient norm; then ``grpo_update``'s own loss and gradient
   norm for that step, which equal them (a test pins it)            qrw.grpo.policy_loss, qrw.update.grpo_update
5. how far each sampled rewrite's log-probability moved over the update

Only the first optimizer step is on-policy (ratio 1, nothing clipped); the
default ``--mu 2`` (two passes over the rollout, each one step) makes the
second step off-policy, where tokens are clipped. The per-token table shows
what teaches (sequences with clipped tokens, or one example) and counts the
rest. The steps are those ``qrw.update.update_policy`` takes (a test checks the
weights after them equal its own).

To show a non-zero advantage it samples G rewrites for the first ``--candidates``
queries of the run's GRPO query stream and keeps ``--queries`` groups, those whose
G samples do not all get the same reward first.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from qrw.config import Parser, add_config_args, check, config_from_args, resolve_device, run_main
from qrw.grpo import (LOG_RATIO_BOUND, aggregate_loss, clipped_surrogate, dynamic_sampling_mask, group_advantages,
                      kl_k3, normalize_then_sum, sequence_ratio, token_logprobs)
from qrw.oracle import OracleView
from qrw.rewards import RewardConfig, RewardFunction
from qrw.rewriter import Rewriter
from qrw.rollout import (RolloutBatch, SampledGroups, completion_logits, frozen_reference, groups_batch,
                         rollout_logprobs, sample_groups, step_generator, step_queries)
from qrw.runs import load_run
from qrw.shop.shop import Shop
from qrw.update import GRPOConfig, global_normalizer, grpo_update

RULE = "-" * 100
DEFAULT_CKPT = "runs/classroom-grpo"
# the GRPO fields one update uses (the rest, steps, warmup, logging, checkpoints, are train_grpo.py's loop)
UPDATE_FIELDS = ("group_size", "temperature", "max_new_tokens", "lr", "weight_decay", "max_grad_norm", "beta",
                 "clip_low", "clip_high", "loss_type", "scale", "mu", "minibatch_size", "microbatch_size",
                 "dynamic_sampling")
EXPLAIN_GRPO = dict(group_size=4, max_new_tokens=12, mu=2, minibatch_size=0)  # explain's defaults over GRPOConfig's


@dataclass
class Step:
    """One optimizer step of the update, computed by hand just before ``grpo_update`` takes it."""

    pass_index: int                    # 0-based pass over the rollout (of cfg.mu)
    minibatch: int                     # 0-based minibatch within the pass
    rows: list[int]                    # b rollout rows (indices into the N = P * G rows)
    logp: torch.Tensor                 # (b, L) log pi_theta before the step
    ratio: torch.Tensor                # (b, L), or (b, 1) for gspo
    kl: torch.Tensor                   # (b, L) k3 to the reference, 0 on padding
    clipped: torch.Tensor              # (b, L) bool: the clip zeroes this token's policy gradient
    shares: torch.Tensor               # (b,) each sequence's share of the loss
    kl_shares: torch.Tensor            # (b,) the beta * KL part of each share
    normalizer: float
    loss: float                        # by hand: sum of the shares
    grad_norm: float                   # by hand: the gradient norm of that loss (before clipping)
    update: dict                       # what grpo_update reported for this step


@dataclass
class Trace:
    """Every number of one GRPO update (tensors on the CPU; rows prompt-major, N = P * G)."""

    queries: list[str]
    groups: SampledGroups
    tokens: list[list[str]]            # N lists of completion token strings (up to and including EOS)
    scores: dict                       # reward name -> (N,) numpy
    weights: dict                      # fusion weights
    rewards: torch.Tensor              # (P, G) fused
    advantages: torch.Tensor           # (P, G)
    keep: torch.Tensor                 # (P,) groups in the update
    old_logp: torch.Tensor             # (N, L) the sampler's
    ref_logp: torch.Tensor             # (N, L)
    mask: torch.Tensor                 # (N, L) bool
    steps: list[Step]                  # the optimizer steps, in order
    logp_before: torch.Tensor          # (N,) sequence log-prob before the update
    logp_after: torch.Tensor           # (N,) sequence log-prob after it
    cfg: GRPOConfig
    aggregation: str                   # "sum" or "normalize-then-sum"


def parse_args(argv=None) -> argparse.Namespace:
    p = Parser(prog="python -m qrw.explain", description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", default=DEFAULT_CKPT, metavar="DIR", help="a finished run directory (SFT or GRPO)")
    p.add_argument("--queries", type=int, default=2, help="P: queries in the update")
    p.add_argument("--candidates", type=int, default=32, help="queries looked at to find P with a reward spread")
    p.add_argument("--show", type=int, default=3, help="sequences per step whose tokens the table prints")
    p.add_argument("--seed", type=int, default=0, help="seed of the query order and the sampling")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    add_config_args(p, GRPOConfig, group_title="GRPO (as train_grpo.py)", base=GRPOConfig(**EXPLAIN_GRPO),
                    skip=tuple(f.name for f in dataclasses.fields(GRPOConfig) if f.name not in UPDATE_FIELDS))
    add_config_args(p, RewardConfig, group_title="rewards (as train_grpo.py)")
    return p.parse_args(argv)


def _pick_groups(rewriter, reward_fn, pool, cfg: GRPOConfig, num_queries: int, candidates: int, seed: int,
                 device) -> tuple[list, SampledGroups]:
    """Sample G rewrites for the stream's first ``candidates`` queries; keep ``num_queries`` groups,
    those with a reward spread first (in stream order)."""
    queries = step_queries(pool, 0, max(candidates, num_queries), seed)
    groups = sample_groups(rewriter, queries, cfg.group_size, temperature=cfg.temperature,
                           generator=step_generator(seed, 0, device))
    scores = reward_fn([q for q in queries for _ in range(cfg.group_size)], groups.rewrites, groups.well_formed)
    spread = dynamic_sampling_mask(reward_fn.as_tensor(scores, cfg.group_size)).tolist()
    order = [p for p in range(len(queries)) if spread[p]] + [p for p in range(len(queries)) if not spread[p]]
    chosen = sorted(order[:num_queries])
    return [queries[p] for p in chosen], groups.select(chosen)


def _advantages(reward_fn, rewards_cfg, scores, cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, G) advantages and the (P,) groups with a spread, as train_grpo.py computes them."""
    G = cfg.group_size
    if rewards_cfg.aggregation == "sum":
        rewards = reward_fn.as_tensor(scores, G)  # (P, G)
        return group_advantages(rewards, scale=cfg.scale), dynamic_sampling_mask(rewards)
    components = {c: reward_fn.as_tensor(scores, G, c) for c in reward_fn.weights}  # name -> (P, G)
    keep = torch.stack([dynamic_sampling_mask(r) for r in components.values()]).any(0)
    return normalize_then_sum(components, reward_fn.weights), keep


def _by_hand(policy, batch: RolloutBatch, advantages, old_logp, ref_logp, cfg: GRPOConfig, normalizer: float) -> dict:
    """Eq. 3 token by token on one minibatch with the functions of qrw.grpo, and the gradient norm of its loss.

    ``advantages`` (b,), ``old_logp`` and ``ref_logp`` (b, L); ``normalizer`` as grpo_update divides by.
    """
    policy.zero_grad(set_to_none=True)
    logits = completion_logits(policy, batch.input_ids, batch.attention_mask, batch.completion_start)  # (b, L, V)
    logp = token_logprobs(logits, batch.completion_tokens, cfg.temperature)  # (b, L)
    mask = batch.completion_mask > 0  # (b, L)
    zeros = torch.zeros_like(logp)
    logp_m, old_m, ref_m = (torch.where(mask, x, zeros) for x in (logp, old_logp, ref_logp))
    if cfg.loss_type == "gspo":
        ratio = sequence_ratio(logp_m, old_m, mask)  # (b, 1)
    else:
        ratio = torch.exp((logp_m - old_m).clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND))  # (b, L)
    advantage = advantages.reshape(-1, 1)  # (b, 1)
    clip_high = cfg.clip_low if cfg.clip_high is None else cfg.clip_high
    surrogate = clipped_surrogate(ratio, advantage, cfg.clip_low, clip_high)  # (b, L) or (b, 1)
    kl = torch.where(mask, kl_k3(logp_m, ref_m), zeros)  # (b, L)
    per_row = lambda s, k: torch.stack([aggregate_loss(s[i:i + 1], k[i:i + 1], cfg.beta, mask[i:i + 1],  # noqa: E731
                                                       cfg.loss_type) for i in range(logp.shape[0])]) / normalizer
    shares = per_row(surrogate, kl)  # (b,)
    kl_shares = per_row(torch.zeros_like(surrogate), kl).detach()  # (b,) beta * KL part alone
    loss = shares.sum()
    loss.backward()
    grads = [p.grad for p in policy.parameters() if p.grad is not None]
    grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item()
    policy.zero_grad(set_to_none=True)
    clipped = mask & (((ratio > 1 + clip_high) & (advantage > 0)) | ((ratio < 1 - cfg.clip_low) & (advantage < 0)))
    return {"logp": logp.detach(), "ratio": ratio.detach(), "kl": kl.detach(), "clipped": clipped,
            "shares": shares.detach(), "kl_shares": kl_shares, "loss": loss.item(), "grad_norm": grad_norm}


def _reference_model(run, device):
    """A GRPO run's reference is its SFT init (``config.json``: run.init); an SFT run is its own reference."""
    init = run.config.get("run", {}).get("init") if run.config.get("kind") == "grpo" else None
    return load_run(init, device).model if init else None


def traced_steps(policy, optimizer, batch: RolloutBatch, advantages, keep, cfg: GRPOConfig, *, old_logp,
                 ref_logp) -> list[Step]:
    """:func:`qrw.update.update_policy`, one optimizer step at a time, each computed by hand before it is taken.

    The kept groups' rows, cut into ``cfg.mu`` passes of minibatches of
    ``cfg.minibatch_size`` (0: all kept rows) in row order, each normalised by its
    rows' normaliser times whole / kept (dynamic sampling): for each minibatch,
    :func:`_by_hand`, then ``grpo_update`` on that minibatch alone (one pass, one
    step), which is the step update_policy takes there.
    """
    G = advantages.shape[1]
    kept_rows = keep.repeat_interleave(G).nonzero().squeeze(1)  # (N_kept,)
    if kept_rows.numel() == 0:
        return []
    kept = batch.select(kept_rows.to(batch.input_ids.device))
    scale = (global_normalizer(batch.completion_mask, cfg.loss_type, cfg.max_new_tokens)
             / global_normalizer(kept.completion_mask, cfg.loss_type, cfg.max_new_tokens))  # whole / kept
    size = cfg.minibatch_size or kept_rows.numel()
    flat = advantages.reshape(-1)  # (N,)
    steps = []
    for pass_index in range(cfg.mu):
        for m, start in enumerate(range(0, kept_rows.numel(), size)):
            local = torch.arange(start, min(start + size, kept_rows.numel()))  # (b,) rows of `kept`
            rows = kept_rows[local]  # (b,) rollout rows
            mini = kept.select(local.to(batch.input_ids.device))
            adv, old, ref = flat[rows].to(old_logp.device), old_logp[rows], ref_logp[rows]
            normalizer = global_normalizer(mini.completion_mask, cfg.loss_type, cfg.max_new_tokens) * scale
            hand = _by_hand(policy, mini, adv, old, ref, cfg, normalizer)
            update = grpo_update(policy, optimizer, mini, adv, mu=1, minibatch_size=len(rows),
                                 microbatch_size=cfg.microbatch_size, beta=cfg.beta, clip_low=cfg.clip_low,
                                 clip_high=cfg.clip_high, loss_type=cfg.loss_type, temperature=cfg.temperature,
                                 max_grad_norm=cfg.max_grad_norm, old_logp=old,
                                 ref_logp=ref if cfg.beta > 0 else None, max_len=cfg.max_new_tokens,
                                 normalizer_scale=scale)
            steps.append(Step(pass_index, m, rows.tolist(), hand["logp"].cpu(), hand["ratio"].cpu(),
                              hand["kl"].cpu(), hand["clipped"].cpu(), hand["shares"].cpu(),
                              hand["kl_shares"].cpu(), normalizer, hand["loss"], hand["grad_norm"], update))
    return steps


def trace_update(run, cfg: GRPOConfig, rewards_cfg: RewardConfig, *, num_queries: int = 2, candidates: int = 16,
                 seed: int = 0, device="cpu") -> Trace:
    """Run one GRPO update on ``run`` (a :class:`qrw.runs.LoadedRun`) and record every number of it."""
    policy, tok = copy.deepcopy(run.model).to(device), run.tok
    reference = frozen_reference(_reference_model(run, device) or policy)
    shop = Shop(run.world)
    uses_oracle = (rewards_cfg.relevance_judge == "oracle" or rewards_cfg.conversion_judge == "oracle"
                   or "recall" in rewards_cfg.weights())
    reward_fn = RewardFunction(shop.observed, rewards_cfg,
                               tagger=Rewriter(reference, tok, device) if rewards_cfg.relevance_judge == "tagger" else None,
                               oracle=OracleView(shop) if uses_oracle else None)
    rewriter = Rewriter(policy, tok, device, max_new_tokens=cfg.max_new_tokens)
    torch.manual_seed(seed)
    queries, groups = _pick_groups(rewriter, reward_fn, shop.observed.grpo_texts, cfg, num_queries, candidates, seed,
                                   device)
    scores = reward_fn([q for q in queries for _ in range(cfg.group_size)], groups.rewrites, groups.well_formed)
    advantages, has_signal = _advantages(reward_fn, rewards_cfg, scores, cfg)
    keep = has_signal if cfg.dynamic_sampling else torch.ones_like(has_signal)
    batch = groups_batch(groups, pad_id=tok.pad_id, eos_id=tok.eos_id, device=device)
    old_logp = groups.rollout.logprobs.to(device)  # (N, L)
    ref_logp = rollout_logprobs(reference, batch, temperature=cfg.temperature)  # (N, L)
    mask = batch.completion_mask > 0  # (N, L)
    sequence_logp = lambda: torch.where(mask, rollout_logprobs(policy, batch, temperature=cfg.temperature),  # noqa
                                        torch.zeros_like(old_logp)).sum(1).cpu()  # (N,)
    before = sequence_logp()
    optimizer = torch.optim.AdamW(policy.param_groups(cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.99))
    steps = traced_steps(policy, optimizer, batch, advantages, keep, cfg, old_logp=old_logp, ref_logp=ref_logp)
    tokens = [[tok.decode([t]) for t, m in zip(row, mrow) if m]
              for row, mrow in zip(batch.completion_tokens.tolist(), mask.tolist())]
    return Trace(list(queries), groups, tokens, scores, dict(reward_fn.weights),
                 reward_fn.as_tensor(scores, cfg.group_size), advantages, keep, old_logp.cpu(), ref_logp.cpu(),
                 mask.cpu(), steps, before, sequence_logp(), cfg, rewards_cfg.aggregation)


def _f(x: float) -> str:
    return f"{x:+.4f}"


def _advantage_lines(t: Trace) -> list[str]:
    """Step 3: the group statistics and the advantages, for the run's aggregation."""
    G, skipped = t.cfg.group_size, "   <- no spread: skipped (dynamic sampling)"
    if t.aggregation == "sum":
        formula = {"group": "(r_i - mean_group) / (std_group + eps)", "batch": "(r_i - mean_group) / (std_all + eps)",
                   "none": "r_i - mean_group  (Dr. GRPO)"}[t.cfg.scale]
        lines = [f"3. advantages of the fused reward: A_i = {formula}   qrw.grpo.group_advantages"]
        for p in range(len(t.queries)):
            row = t.rewards[p]
            lines.append(f"  query {p}: mean {row.mean().item():.4f}, std {row.std().item():.4f} (unbiased), A = "
                         + " ".join(_f(a) for a in t.advantages[p].tolist()) + ("" if t.keep[p] else skipped))
        return lines
    lines = ["3. advantages, normalize-then-sum: A_i = sum_k w_k (r_k,i - mean_group r_k) / (std_group r_k + eps)"
             "   qrw.grpo.normalize_then_sum"]
    for p in range(len(t.queries)):
        lines.append(f"  query {p}:")
        for name, weight in t.weights.items():
            row = torch.as_tensor(t.scores[name][p * G:(p + 1) * G], dtype=torch.float32)
            z = group_advantages(row.unsqueeze(0), scale="group")[0]
            lines.append(f"    {name:>11}: mean {row.mean().item():.4f}, std {row.std().item():.4f}, z = "
                         + " ".join(_f(v) for v in z.tolist()) + f"  (x {weight})")
        lines.append("    A = " + " ".join(_f(a) for a in t.advantages[p].tolist()) + ("" if t.keep[p] else skipped))
    return lines


def _token_lines(t: Trace, s: Step, show: int) -> list[str]:
    """The per-token table of one step: the sequences with the most clipped tokens (or, with none clipped, the
    one with the largest |A|), at most ``show`` of them, and a count of the rest."""
    cfg, flat = t.cfg, t.advantages.reshape(-1)
    mask = t.mask[s.rows]  # (b, L)
    counts = s.clipped.sum(1).tolist()  # (b,)
    order = sorted(range(len(s.rows)), key=lambda k: (-counts[k], -abs(flat[s.rows[k]].item())))
    shown = [k for k in order if counts[k] > 0][:show] or order[:1]
    lines = [f"    {'row':>4} {'token':>14} {'logp':>9} {'old':>9} {'ref':>9} {'ratio':>9} {'k3':>9}  clipped"]
    for k in shown:
        i, a = s.rows[k], flat[s.rows[k]].item()
        lines.append(f"    [{i}] {t.groups.rewrites[i]!r}, A {_f(a)}: {counts[k]} of {len(t.tokens[i])} tokens clipped")
        for j, token in enumerate(t.tokens[i]):
            ratio = s.ratio[k, 0 if s.ratio.shape[1] == 1 else j].item()
            mark = ("  <- CLIPPED: " + ("rho > 1 + eps_high, A > 0" if a > 0 else "rho < 1 - eps_low, A < 0")
                    if s.clipped[k, j] else "")
            lines.append(f"    {i:>4} {token!r:>14} {s.logp[k, j].item():9.4f} {t.old_logp[i, j].item():9.4f} "
                         f"{t.ref_logp[i, j].item():9.4f} {ratio:9.6f} {s.kl[k, j].item():9.2e}{mark}")
    rest = [k for k in range(len(s.rows)) if k not in shown]
    if rest:
        n = int(mask[rest].sum())
        ratios = (s.ratio[rest].expand(-1, mask.shape[1]) if s.ratio.shape[1] == 1 else s.ratio[rest])[mask[rest]]
        lines.append(f"    ... and {n} tokens of {len(rest)} more sequences: ratio in [{ratios.min().item():.6f}, "
                     f"{ratios.max().item():.6f}], {int(s.clipped[rest].sum())} clipped")
    return lines


def _step_lines(t: Trace, index: int, s: Step, show: int) -> list[str]:
    cfg = t.cfg
    passes = f"pass {s.pass_index + 1} of {cfg.mu}, minibatch {s.minibatch + 1}"
    on_policy = ("on-policy: pi_theta = pi_old, so rho = 1 (up to the sampler's float rounding), nothing is clipped"
                 if index == 0 else f"off-policy: {index} step(s) have moved pi_theta since the rollout, so rho != 1")
    n_tok = int(t.mask[s.rows].sum())
    u = s.update
    pg = (s.shares - s.kl_shares).sum().item()
    lines = [f"  optimizer step {index + 1} of {len(t.steps)} ({passes}; rows {s.rows[0]}..{s.rows[-1]}): {on_policy}",
             f"    clipped tokens: {int(s.clipped.sum())} of {n_tok}; ratio mean {u['ratio_mean']:.6f}"]
    lines += _token_lines(t, s, show)
    lines += [f"    shares of the loss (normaliser {s.normalizer:g}; policy-gradient part + beta * KL part):",
              "    " + "  ".join(f"[{i}] {v:+.5f}" for i, v in zip(s.rows, s.shares.tolist())),
              f"    loss (by hand) = {s.loss:+.6e}  = policy gradient {pg:+.6e} + beta * KL {s.kl_shares.sum().item():+.6e}"
              f";  gradient norm (by hand) = {s.grad_norm:.6e}",
              f"    grpo_update:     loss {u['loss']:+.6e}, grad norm {u['grad_norm']:.6e}, clip fractions "
              f"{u['clip_frac_low']:.3f} low / {u['clip_frac_high']:.3f} high; then the gradient is clipped to "
              f"norm {cfg.max_grad_norm:g} and AdamW steps (lr {cfg.lr:g})"]
    return lines


def format_trace(t: Trace, show: int = 3) -> str:
    """The trace as text, in the order of one step of train_grpo.py."""
    cfg, G = t.cfg, t.cfg.group_size
    clip_high = cfg.clip_low if cfg.clip_high is None else cfg.clip_high
    lines = [RULE, f"one GRPO update: P = {len(t.queries)} queries x G = {G} samples, temperature {cfg.temperature}, "
             f"loss {cfg.loss_type}, rewards {t.aggregation}, beta {cfg.beta}, clip [1 - {cfg.clip_low}, 1 + {clip_high}], "
             f"lr {cfg.lr}, mu {cfg.mu}, minibatch {cfg.minibatch_size or 'the whole rollout'}", RULE,
             "1. rollout: G rewrites per query from pi_old = the current policy   qrw.rollout.sample_groups"]
    for p, query in enumerate(t.queries):
        lines.append(f"  query {p}: {query!r}")
        for g in range(G):
            i = p * G + g
            lines.append(f"    [{i}] {t.groups.rewrites[i]!r:40} tokens {t.tokens[i]}")
    names = list(t.weights)
    lines += ["", "2. rewards r_i = sum_k w_k r_k,i  (fusion weights " +
              ", ".join(f"{k} {w}" for k, w in t.weights.items()) + ")   qrw.rewards.RewardFunction",
              "    row  " + "".join(f"{k:>12}" for k in names) + f"{'fused':>12}"]
    for i in range(len(t.groups.rewrites)):
        lines.append(f"    [{i}]  " + "".join(f"{t.scores[k][i]:12.4f}" for k in names) + f"{t.scores['fused'][i]:12.4f}")
    lines += [""] + _advantage_lines(t) + [""]
    if not t.steps:
        lines.append("4. no group has a reward spread: nothing to update")
    else:
        lines += [f"4. the update: {cfg.mu} pass(es) over the kept rows in minibatches of "
                  f"{cfg.minibatch_size or 'all of them'} = {len(t.steps)} optimizer step(s)   "
                  "qrw.update.update_policy -> grpo_update",
                  "   per token: rho = exp(logp - old); l = -min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A) + "
                  "beta k3;  k3 = exp(ref - logp) - (ref - logp) - 1   qrw.grpo.policy_loss, kl_k3",
                  "   clipped: the clip zeroes the token's policy gradient (rho > 1 + eps_high with A > 0, or "
                  "rho < 1 - eps_low with A < 0; on the other side min() keeps the unclipped, worse term)",
                  f"   the loss sums the shares ('{cfg.loss_type}': qrw.grpo.aggregate_loss / loss_normalizer)"]
        for index, s in enumerate(t.steps):
            lines += [""] + _step_lines(t, index, s, show)
    lines += ["", f"5. log pi(rewrite | query) before -> after the {len(t.steps)} step(s) "
              "(A > 0 tends to rise, A < 0 to fall)"]
    for i in range(len(t.tokens)):
        lines.append(f"    [{i}] A {_f(t.advantages.reshape(-1)[i].item())}: {t.logp_before[i].item():9.4f} -> "
                     f"{t.logp_after[i].item():9.4f} ({t.logp_after[i].item() - t.logp_before[i].item():+.2e})")
    return "\n".join(lines + [RULE])


def main(argv=None) -> int:
    args = parse_args(argv)
    check(args.queries >= 1 and args.candidates >= 1 and args.show >= 1,
          "--queries, --candidates and --show must be >= 1")
    cfg = config_from_args(GRPOConfig, args, base=GRPOConfig(**EXPLAIN_GRPO))
    rewards_cfg = config_from_args(RewardConfig, args)
    check(Path(args.ckpt).is_dir() or args.ckpt != DEFAULT_CKPT,
          f"no run at {DEFAULT_CKPT}: train the classroom run first (python train_grpo.py --classroom), "
          "or pass --ckpt DIR")
    device = resolve_device(args.device)
    run = load_run(args.ckpt, device)
    print(format_trace(trace_update(run, cfg, rewards_cfg, num_queries=args.queries, candidates=args.candidates,
                                    seed=args.seed, device=device), show=args.show))
    return 0


if __name__ == "__main__":
    run_main(main)
