"""``python -m qrw.explain``: one GRPO update, number by number, each stage beside its equation.

    python -m qrw.explain --ckpt runs/sft                       # 2 queries x G = 4, the default GRPO settings
    python -m qrw.explain --ckpt runs/sft --beta 0.04 --no-dynamic-sampling --scale group
    python -m qrw.explain --ckpt runs/smoke-sft --loss-type dr_grpo

It takes the run as the policy and a frozen reference (for an SFT run, a copy
of it; for a GRPO run, its SFT init, as in training), samples G
rewrites for each of a few logged queries, and prints, in the order of one step
of ``train_grpo.py``:

1. the prompts and the sampled rewrites (token ids and text)          qrw.rollout.sample_groups
2. every reward component and the fused reward                        qrw.rewards.RewardFunction
3. group mean, std and the advantages                                 qrw.grpo.group_advantages
4. per token: log pi_theta, log pi_old (the sampler's), log pi_ref,
   the ratio, whether it is clipped, and k3                           qrw.grpo.policy_loss, kl_k3
5. per sequence: its share of the loss; the normaliser, the loss      qrw.grpo.aggregate_loss, loss_normalizer
6. the update (qrw.update.update_policy -> grpo_update): its loss and
   gradient norm, which equal the hand computation above (a test pins it)
7. how far each sampled rewrite's log-probability moved after the step

To show a non-zero advantage it samples G rewrites for the first ``--candidates``
queries of the run's GRPO query stream and keeps ``--queries`` groups, those whose
G samples do not all get the same reward first (after SFT most groups are
unanimous). Every flag of
``train_grpo.py``'s GRPO and reward groups is accepted; ``--smoke``-sized runs work.
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import dataclass

import torch

from qrw.config import Parser, add_config_args, check, config_from_args, resolve_device, run_main
from qrw.grpo import (aggregate_loss, clipped_surrogate, dynamic_sampling_mask, group_advantages, kl_k3,
                      loss_normalizer, normalize_then_sum, sequence_ratio, token_logprobs)
from qrw.rewards import RewardConfig, RewardFunction
from qrw.rewriter import Rewriter
from qrw.rollout import (SampledGroups, completion_logits, frozen_reference, groups_batch, rollout_logprobs,
                         sample_groups, step_generator, step_queries)
from qrw.runs import load_run
from qrw.shop.shop import Shop
from qrw.update import GRPOConfig, update_policy

RULE = "-" * 100


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
    logp: torch.Tensor                 # (N, L) log pi_theta before the step
    old_logp: torch.Tensor             # (N, L) the sampler's
    ref_logp: torch.Tensor             # (N, L)
    ratio: torch.Tensor                # (N, L) or (N, 1) for gspo
    kl: torch.Tensor                   # (N, L) k3
    mask: torch.Tensor                 # (N, L) bool
    shares: torch.Tensor               # (N,) each sequence's share of the loss
    normalizer: float
    loss: float                        # by hand: sum of the shares
    grad_norm: float                   # by hand: the gradient of that loss
    update: dict                       # what grpo_update reported
    logp_after: torch.Tensor           # (N,) sequence log-prob after the step
    cfg: GRPOConfig
    aggregation: str                   # "sum" or "normalize-then-sum"


def parse_args(argv=None) -> argparse.Namespace:
    p = Parser(prog="python -m qrw.explain", description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, metavar="DIR", help="a finished run directory (SFT or GRPO)")
    p.add_argument("--queries", type=int, default=2, help="P: queries in the update")
    p.add_argument("--candidates", type=int, default=32, help="queries looked at to find P with a reward spread")
    p.add_argument("--seed", type=int, default=0, help="seed of the query order and the sampling")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    add_config_args(p, GRPOConfig, group_title="GRPO (as train_grpo.py)",
                    base=GRPOConfig(group_size=4, max_new_tokens=12))
    add_config_args(p, RewardConfig, group_title="rewards (as train_grpo.py)")
    return p.parse_args(argv)


def _pick_groups(rewriter, reward_fn, pool, cfg: GRPOConfig, num_queries: int, candidates: int, seed: int,
                 device) -> tuple[list, SampledGroups]:
    """Sample G rewrites for the stream's first ``candidates`` queries; keep ``num_queries`` groups,
    those with a reward spread first (in stream order)."""
    queries = step_queries(pool, 0, max(candidates, num_queries), seed)
    groups = sample_groups(rewriter, [q.text for q in queries], cfg.group_size, temperature=cfg.temperature,
                           generator=step_generator(seed, 0, device))
    scores = reward_fn([q for q in queries for _ in range(cfg.group_size)], groups.rewrites, groups.well_formed)
    spread = dynamic_sampling_mask(reward_fn.as_tensor(scores, cfg.group_size)).tolist()
    order = [p for p in range(len(queries)) if spread[p]] + [p for p in range(len(queries)) if not spread[p]]
    chosen = sorted(order[:num_queries])
    return [queries[p] for p in chosen], groups.select(chosen)


def _advantages(reward_fn, rewards_cfg, scores, cfg) -> tuple[torch.Tensor, torch.Tensor]:
    G = cfg.group_size
    if rewards_cfg.aggregation == "sum":
        rewards = reward_fn.as_tensor(scores, G)  # (P, G)
        return group_advantages(rewards, scale=cfg.scale), dynamic_sampling_mask(rewards)
    components = {c: reward_fn.as_tensor(scores, G, c) for c in reward_fn.weights}  # name -> (P, G)
    keep = torch.stack([dynamic_sampling_mask(r) for r in components.values()]).any(0)
    return normalize_then_sum(components, reward_fn.weights), keep


def _by_hand(policy, batch, advantages, keep, old_logp, ref_logp, cfg: GRPOConfig) -> dict:
    """Eq. 3 token by token with the functions of qrw.grpo, and the gradient norm of its loss."""
    policy.zero_grad(set_to_none=True)
    logits = completion_logits(policy, batch.input_ids, batch.attention_mask, batch.completion_start)  # (N, L, V)
    logp = token_logprobs(logits, batch.completion_tokens, cfg.temperature)  # (N, L)
    mask = batch.completion_mask > 0  # (N, L)
    rows = keep.repeat_interleave(cfg.group_size)  # (N,) rows in the update
    zeros = torch.zeros_like(logp)
    logp_m, old_m, ref_m = (torch.where(mask, x, zeros) for x in (logp, old_logp, ref_logp))
    ratio = sequence_ratio(logp_m, old_m, mask) if cfg.loss_type == "gspo" else torch.exp(logp_m - old_m)
    advantage = advantages.reshape(-1, 1)  # (N, 1)
    clip_high = cfg.clip_low if cfg.clip_high is None else cfg.clip_high
    surrogate = clipped_surrogate(ratio, advantage, cfg.clip_low, clip_high)  # (N, L) or (N, 1)
    kl = torch.where(mask, kl_k3(logp_m, ref_m), zeros)  # (N, L)
    normalizer = loss_normalizer(batch.completion_mask, cfg.loss_type, cfg.max_new_tokens)  # the whole rollout's
    shares = torch.stack([aggregate_loss(surrogate[i:i + 1], kl[i:i + 1], cfg.beta, mask[i:i + 1], cfg.loss_type)
                          for i in range(logp.shape[0])]) / normalizer  # (N,)
    shares = torch.where(rows, shares, torch.zeros_like(shares))  # skipped groups add nothing (A = 0, beta = 0)
    loss = shares.sum()
    loss.backward()
    grads = [p.grad for p in policy.parameters() if p.grad is not None]
    grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item()
    policy.zero_grad(set_to_none=True)
    return {"logp": logp.detach(), "ratio": ratio.detach(), "kl": kl.detach(), "mask": mask,
            "shares": shares.detach(), "normalizer": normalizer, "loss": loss.item(), "grad_norm": grad_norm}


def _reference_model(run, device):
    """A GRPO run's reference is its SFT init (``config.json``: run.init); an SFT run is its own reference."""
    init = run.config.get("run", {}).get("init") if run.config.get("kind") == "grpo" else None
    return load_run(init, device).model if init else None


def trace_update(run, cfg: GRPOConfig, rewards_cfg: RewardConfig, *, num_queries: int = 2, candidates: int = 16,
                 seed: int = 0, device="cpu") -> Trace:
    """Run one GRPO update on ``run`` (a :class:`qrw.runs.LoadedRun`) and record every number of it."""
    policy, tok = copy.deepcopy(run.model).to(device), run.tok
    reference = frozen_reference(_reference_model(run, device) or policy)
    reward_fn = RewardFunction(Shop(run.world), rewards_cfg,
                               tagger=Rewriter(reference, tok, device) if rewards_cfg.relevance_judge == "tagger" else None)
    rewriter = Rewriter(policy, tok, device, max_new_tokens=cfg.max_new_tokens)
    torch.manual_seed(seed)
    queries, groups = _pick_groups(rewriter, reward_fn, run.world.log_queries, cfg, num_queries, candidates, seed,
                                   device)
    scores = reward_fn([q for q in queries for _ in range(cfg.group_size)], groups.rewrites, groups.well_formed)
    advantages, has_signal = _advantages(reward_fn, rewards_cfg, scores, cfg)
    keep = has_signal if cfg.dynamic_sampling else torch.ones_like(has_signal)
    batch = groups_batch(groups, pad_id=tok.pad_id, eos_id=tok.eos_id, device=device)
    old_logp = groups.rollout.logprobs.to(device)  # (N, L)
    ref_logp = rollout_logprobs(reference, batch, temperature=cfg.temperature)  # (N, L)
    hand = _by_hand(policy, batch, advantages.to(device), keep, old_logp, ref_logp, cfg)
    optimizer = torch.optim.AdamW(policy.param_groups(cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.99))
    update = update_policy(policy, optimizer, batch, advantages, keep, cfg, old_logp=old_logp, ref_logp=ref_logp)
    after = rollout_logprobs(policy, batch, temperature=cfg.temperature)  # (N, L)
    mask = hand["mask"]
    tokens = [[tok.decode([t]) for t, m in zip(row, mrow) if m]
              for row, mrow in zip(batch.completion_tokens.tolist(), mask.tolist())]
    return Trace([q.text for q in queries], groups, tokens, scores, dict(reward_fn.weights),
                 reward_fn.as_tensor(scores, cfg.group_size), advantages, keep, hand["logp"].cpu(), old_logp.cpu(),
                 ref_logp.cpu(), hand["ratio"].cpu(), hand["kl"].cpu(), mask.cpu(), hand["shares"].cpu(),
                 hand["normalizer"], hand["loss"], hand["grad_norm"], update or {},
                 torch.where(mask, after, torch.zeros_like(after)).sum(1).cpu(), cfg, rewards_cfg.aggregation)


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
             "   qrw.rewards.normalize_then_sum"]
    for p in range(len(t.queries)):
        lines.append(f"  query {p}:")
        for name, weight in t.weights.items():
            row = torch.as_tensor(t.scores[name][p * G:(p + 1) * G], dtype=torch.float32)
            z = group_advantages(row.unsqueeze(0), scale="group")[0]
            lines.append(f"    {name:>11}: mean {row.mean().item():.4f}, std {row.std().item():.4f}, z = "
                         + " ".join(_f(v) for v in z.tolist()) + f"  (x {weight})")
        lines.append("    A = " + " ".join(_f(a) for a in t.advantages[p].tolist()) + ("" if t.keep[p] else skipped))
    return lines


def format_trace(t: Trace) -> str:
    cfg, G = t.cfg, t.cfg.group_size
    clip_high = cfg.clip_low if cfg.clip_high is None else cfg.clip_high
    lines = [RULE, f"one GRPO update: P = {len(t.queries)} queries x G = {G} samples, temperature {cfg.temperature}, "
             f"loss {cfg.loss_type}, rewards {t.aggregation}, beta {cfg.beta}, clip [1 - {cfg.clip_low}, 1 + {clip_high}], "
             f"lr {cfg.lr}", RULE,
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
    lines += [""] + _advantage_lines(t)
    lines += ["", "4. per token: rho = exp(logp - old_logp); l = -min(rho A, clip(rho) A) + beta k3;"
              " k3 = exp(ref - logp) - (ref - logp) - 1   qrw.grpo.policy_loss, kl_k3",
              f"    {'row':>4} {'token':>14} {'logp':>9} {'old':>9} {'ref':>9} {'ratio':>9} {'clipped':>8} {'k3':>9}"]
    for i, toks in enumerate(t.tokens):
        for j, token in enumerate(toks):
            ratio = t.ratio[i, 0 if t.ratio.shape[1] == 1 else j].item()
            a = t.advantages.reshape(-1)[i].item()
            clipped = (ratio > 1 + clip_high and a > 0) or (ratio < 1 - cfg.clip_low and a < 0)
            lines.append(f"    {i:>4} {token!r:>14} {t.logp[i, j].item():9.4f} {t.old_logp[i, j].item():9.4f} "
                         f"{t.ref_logp[i, j].item():9.4f} {ratio:9.6f} {'yes' if clipped else 'no':>8} "
                         f"{t.kl[i, j].item():9.2e}")
    lines += ["", f"5. aggregation '{cfg.loss_type}': loss = sum_i share_i; normaliser = {t.normalizer:g}"
              "   qrw.grpo.aggregate_loss / loss_normalizer",
              "    " + "  ".join(f"[{i}] {s:+.5f}" for i, s in enumerate(t.shares.tolist())),
              f"    loss (by hand) = {t.loss:+.6e}    gradient norm (by hand) = {t.grad_norm:.6e}", "",
              "6. the update: qrw.update.update_policy -> grpo_update (one optimizer step, AdamW)"]
    if t.update:
        lines.append(f"    grpo_update: loss {t.update['loss']:+.6e}, grad norm {t.update['grad_norm']:.6e}, "
                     f"ratio mean {t.update['ratio_mean']:.6f}, clip fractions {t.update['clip_frac_low']:.3f} / "
                     f"{t.update['clip_frac_high']:.3f}, optimizer steps {t.update['optimizer_steps']:.0f}")
    else:
        lines.append("    no group has a reward spread: nothing to update")
    before = torch.where(t.mask, t.logp, torch.zeros_like(t.logp)).sum(1)
    lines += ["", "7. log pi(rewrite | query) before -> after the step (A > 0 tends to rise, A < 0 to fall)"]
    for i in range(len(t.tokens)):
        lines.append(f"    [{i}] A {_f(t.advantages.reshape(-1)[i].item())}: {before[i].item():9.4f} -> "
                     f"{t.logp_after[i].item():9.4f} ({t.logp_after[i].item() - before[i].item():+.2e})")
    return "\n".join(lines + [RULE])


def main(argv=None) -> int:
    args = parse_args(argv)
    check(args.queries >= 1 and args.candidates >= 1, "--queries and --candidates must be >= 1")
    cfg = config_from_args(GRPOConfig, args, base=GRPOConfig(group_size=4, max_new_tokens=12))
    rewards_cfg = config_from_args(RewardConfig, args)
    device = resolve_device(args.device)
    run = load_run(args.ckpt, device)
    print(format_trace(trace_update(run, cfg, rewards_cfg, num_queries=args.queries, candidates=args.candidates,
                                    seed=args.seed, device=device)))
    return 0


if __name__ == "__main__":
    run_main(main)
