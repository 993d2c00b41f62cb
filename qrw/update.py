"""Stage 2's hyperparameters and its update step: mu optimisation passes over one rollout.

``train_grpo.py`` writes the GRPO loop out step by step (queries -> rollout ->
rewards -> advantages -> update -> log -> checkpoint). The update is here, and
the loss is three calls from the script::

    train_grpo.main -> update_policy -> grpo_update -> qrw.grpo.policy_loss

- :class:`GRPOConfig`: every hyperparameter of stage 2, one documented field each
  (the command line is generated from it);
- :func:`update_policy`: :func:`grpo_update` on the step's groups (with
  ``--dynamic-sampling``, an opt-in: those with a signal), normalised by the whole
  rollout, with the sampler's log-probs as pi_old;
- :func:`grpo_update`: mu passes over minibatches, each a gradient accumulation
  over micro-batches of :func:`qrw.grpo.policy_loss` with the minibatch's
  normaliser, then gradient clipping and one optimizer step.

The math itself (advantages, ratio, clipped surrogate, k3 KL, aggregation) is
in :mod:`qrw.grpo`; sampling and scoring a rollout in :mod:`qrw.rollout`.

Under torchrun (:mod:`qrw.distributed`) each rank holds the groups of its share of
the step's queries. The update is then the single-process update of all ranks'
rows concatenated in rank order: the minibatches are cut from that global row
order (each rank forwards the rows it holds, :func:`qrw.distributed.held_rows`),
every normaliser and the dynamic sampling scale are counted over all ranks
(:func:`global_normalizer`), and the gradients are summed over the ranks before
clipping, so every rank takes the same optimizer step. In a single process each
of these calls is the identity: the loss computation itself never sees a rank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qrw import distributed
from qrw.config import NonFiniteLossError, arg, check, config_from_dict, invariant
from qrw.grpo import LOSS_TYPES, check_loss_args, loss_normalizer, policy_loss, token_logprobs
from qrw.rollout import RolloutBatch, completion_logits, rollout_logprobs

@dataclass
class GRPOConfig:
    """Hyperparameters of stage 2 (GRPO). Defaults fit a 2-core CPU in minutes.

    The defaults keep a KL penalty (k3 estimator, to the frozen SFT reference,
    every step), five times DeepSeekMath's (``beta=0.2``; theirs is 0.04), and
    update on every group. With learned rewards that penalty is what keeps the
    policy where the tagger and the conversion model can be trusted: behind the
    wall, at 0.04 the policy learned degenerate rewrites both rewards prize
    (validation accuracy 0.518 -> 0.160 after 250 steps); at 0.2 it stayed near
    its init (0.518 -> 0.532), chosen on validation queries (seed 0,
    docs/EXPERIMENTS.md, "Behind the wall"). Two defaults depart from DeepSeekMath's GRPO:

    - ``scale="none"`` (Dr. GRPO), for ``--aggregation sum``: an advantage is the
      fused reward's difference from its group mean. (The default aggregation,
      ``normalize-then-sum`` in :class:`qrw.rewards.RewardConfig`, z-scores each
      reward within its group instead.)
    - ``minibatch_size=128``: the rollout is split into minibatches of 128, so a
      step takes several optimizer steps; only the first is on-policy (ratio == 1
      in value). ``--minibatch-size 0`` makes each pass one optimizer step over
      the whole rollout.

    ``dynamic_sampling=True`` (DAPO, needs ``beta=0``) skips the groups whose
    rewards are all equal: they carry no policy-gradient signal, so the update
    is cheaper; the loss is still divided by the *whole* rollout's normaliser, so
    the gradient equals the full batch's. With ``beta=0`` the KL to the SFT model
    is still measured over all samples every ``kl_every`` steps (a log only).

    DeepSeekMath's GRPO (one on-policy update per rollout, group std, KL 0.04):
    ``--aggregation sum --scale group --mu 1 --minibatch-size 0``.
    """

    steps: int = arg(100, "GRPO steps (one rollout batch each; 100 chosen on validation queries: 250 bought no "
                           "more there, docs/PERFORMANCE.md)")
    queries_per_step: int = arg(64, "P: training queries per step")
    group_size: int = arg(8, "G: rewrites sampled per query (the group that advantages compare within)")
    temperature: float = arg(1.0, "sampling temperature (scoring uses the same temperature)", advanced=True)
    max_new_tokens: int = arg(24, "longest rewrite in tokens; longer ones are truncated (format reward 0)",
                              advanced=True)
    lr: float = arg(3e-4, "learning rate (AdamW, linear warmup then constant)")
    warmup_steps: int = arg(5, "linear warmup steps", advanced=True)
    weight_decay: float = arg(0.0, "AdamW weight decay", advanced=True)
    max_grad_norm: float = arg(1.0, "max global gradient norm", advanced=True)
    beta: float = arg(0.2, "KL coefficient (k3 estimator, to the frozen SFT reference; DeepSeekMath's is 0.04, "
                      "chosen here on validation queries behind the wall: it keeps the policy where the learned "
                      "rewards can be trusted; > 0 needs --no-dynamic-sampling)")
    clip_low: float = arg(0.2, "clip range below 1, 0 < clip_low < 1: ratio >= 1 - clip_low", advanced=True)
    clip_high: float | None = arg(None, "clip range above 1, > 0: ratio <= 1 + clip_high "
                                  "(None: clip_low; DAPO: 0.28)", advanced=True)
    loss_type: str = arg("grpo", "loss aggregation", choices=list(LOSS_TYPES))
    scale: str = arg("none", "with --aggregation sum: advantage scaling by the group std (DeepSeekMath), the "
                     "batch std, or none (Dr. GRPO)",
                     choices=["group", "batch", "none"], advanced=True)
    mu: int = arg(1, "optimisation passes over each rollout (with --minibatch-size 0 and mu 1: one on-policy "
                  "update, ratio == 1 in value)")
    minibatch_size: int = arg(128, "completions per optimizer step within a pass (0: the whole rollout, one step)",
                              advanced=True)
    microbatch_size: int = arg(128, "completions per forward/backward (gradient accumulation: memory, not math)",
                               advanced=True)
    dynamic_sampling: bool = arg(False, "skip groups whose rewards are all equal in the update (DAPO; the loss is "
                                 "still normalised by the whole rollout; needs --beta 0)", advanced=True)
    log_every: int = arg(5, "steps between log lines (every step goes to metrics.jsonl)", advanced=True)
    kl_every: int = arg(5, "with --beta 0: steps between measurements of the KL to the SFT reference over all "
                        "samples (a forward of the reference over the whole rollout; with --beta > 0 the loss "
                        "needs it every step)", advanced=True)
    sample_every: int = arg(25, "steps between printed sample rewrites with their rewards", advanced=True)
    ckpt_every: int = arg(25, "steps between checkpoints", advanced=True)

    def __post_init__(self) -> None:
        check(self.steps >= 0, f"--steps must be >= 0 (got {self.steps})")
        check(self.queries_per_step >= 1, f"--queries-per-step must be >= 1 (got {self.queries_per_step})")
        check(self.group_size >= 2, f"--group-size must be >= 2: GRPO compares samples within a group "
                                    f"(got {self.group_size})")
        check(math.isfinite(self.temperature) and self.temperature > 0,
              f"--temperature must be > 0 for sampling (got {self.temperature})")
        check(self.max_new_tokens >= 1, f"--max-new-tokens must be >= 1 (got {self.max_new_tokens})")
        check(math.isfinite(self.lr) and self.lr > 0, f"--lr must be > 0 (got {self.lr})")
        check(self.warmup_steps >= 0 and self.weight_decay >= 0, "--warmup-steps and --weight-decay must be >= 0")
        check(self.max_grad_norm > 0, f"--max-grad-norm must be > 0 (got {self.max_grad_norm})")
        check(math.isfinite(self.beta) and self.beta >= 0, f"--beta must be >= 0 (got {self.beta})")
        check(0 < self.clip_low < 1, f"--clip-low must be > 0 and < 1, so that the lower clip 1 - clip_low is "
                                     f"a ratio in (0, 1) (got {self.clip_low})")
        check(self.clip_high is None or (math.isfinite(self.clip_high) and self.clip_high > 0),
              f"--clip-high must be a finite number > 0 (got {self.clip_high})")
        check(self.mu >= 1, f"--mu must be >= 1 (got {self.mu})")
        check(self.minibatch_size >= 0, f"--minibatch-size must be >= 0 (got {self.minibatch_size})")
        check(self.microbatch_size >= 1, f"--microbatch-size must be >= 1 (got {self.microbatch_size})")
        check(not (self.dynamic_sampling and self.beta > 0),
              f"--beta {self.beta} with dynamic sampling would drop the KL gradient of the skipped groups: "
              "pass --no-dynamic-sampling, or --beta 0 (DAPO)")
        check(self.log_every >= 1 and self.sample_every >= 1 and self.ckpt_every >= 1 and self.kl_every >= 1,
              "--log-every, --sample-every, --ckpt-every and --kl-every must be >= 1")


def grpo_config_from_saved(saved: dict) -> GRPOConfig:
    """The :class:`GRPOConfig` of a run's ``config.json`` (``--resume``). Runs saved while GRPO still had
    ``top_k``/``top_p`` fields hold their only allowed values (0 and 1: no filter); those keys are dropped."""
    check(saved.get("top_k", 0) == 0 and saved.get("top_p", 1.0) == 1.0, "this run sampled under a top-k/top-p "
          "filter, which GRPO no longer offers")
    return config_from_dict(GRPOConfig, {k: v for k, v in saved.items() if k not in ("top_k", "top_p")})


def update_policy(policy: nn.Module, optimizer: torch.optim.Optimizer, batch: RolloutBatch, advantages: Tensor,
                  keep: Tensor, cfg: GRPOConfig, *, old_logp: Tensor, ref_logp: Tensor | None) -> dict[str, float] | None:
    """One GRPO update on the groups that dynamic sampling kept; None when no group was kept.

    The dropped groups' rows are left out of the computation, but not out of the
    normaliser: every minibatch's normaliser is multiplied by ``loss_normalizer(all
    rows) / loss_normalizer(kept rows)``, so the gradient equals the whole rollout's
    (a dropped row has A = 0 and, since dynamic sampling needs beta = 0, adds
    exactly 0). "dr_grpo" divides by the fixed budget ``cfg.max_new_tokens``,
    never by the rollout's longest completion.

    Args:
        batch: the whole rollout, N = P * G rows (under torchrun: this rank's groups); advantages: (P, G);
            keep: (P,) bool.
        old_logp: (N, L) the sampler's log-probs (pi_old: equal to a re-scoring forward).
        ref_logp: (N, L) the frozen SFT model's log-probs, used when ``cfg.beta > 0``.
    """
    if distributed.all_reduce_sum(int(keep.sum())) == 0:  # no group kept (on any rank)
        return None
    G = advantages.shape[1]
    rows = keep.repeat_interleave(G).nonzero().squeeze(1).to(batch.input_ids.device)  # (N_kept,) row indices
    kept = batch.select(rows)
    scale = (global_normalizer(batch.completion_mask, cfg.loss_type, cfg.max_new_tokens)
             / global_normalizer(kept.completion_mask, cfg.loss_type, cfg.max_new_tokens))  # whole / kept
    return grpo_update(policy, optimizer, kept, advantages.reshape(-1)[rows.cpu()].to(rows.device), mu=cfg.mu,
                       minibatch_size=cfg.minibatch_size or distributed.all_reduce_sum(kept.num_sequences),
                       microbatch_size=cfg.microbatch_size, beta=cfg.beta, clip_low=cfg.clip_low,
                       clip_high=cfg.clip_high, loss_type=cfg.loss_type, temperature=cfg.temperature,
                       max_grad_norm=cfg.max_grad_norm, old_logp=old_logp[rows],
                       ref_logp=ref_logp[rows] if cfg.beta > 0 else None, max_len=cfg.max_new_tokens,
                       normalizer_scale=scale)


def grpo_update(policy: nn.Module, optimizer: torch.optim.Optimizer, batch: RolloutBatch, advantages: Tensor, *,
                mu: int, minibatch_size: int, beta: float, clip_low: float, clip_high: float | None, loss_type: str,
                temperature: float, max_grad_norm: float | None, ref_logp: Tensor | None = None,
                old_logp: Tensor | None = None, microbatch_size: int | None = None, max_len: int | None = None,
                generator: torch.Generator | None = None, normalizer_scale: float = 1.0) -> dict[str, float]:
    """Take mu optimisation passes over one rollout batch (the inner loop of GRPO).

    ::

        old_logp = log pi_old(completions)        the sampler's (or one forward here), no gradient
        for pass in 1..mu:
            for minibatch in batch (minibatch_size sequences each):
                for micro-batch in minibatch (microbatch_size each):
                    loss = policy_loss(..., normalizer=loss_normalizer(minibatch) * normalizer_scale)
                    loss.backward()               gradients accumulate
                clip the gradient norm to max_grad_norm; optimizer.step()

    Each micro-batch's summed loss is divided by the *minibatch's* normaliser, so
    the accumulated gradient is that of the whole minibatch (property 20 of
    docs/GRPO_TESTS.md). Only the first optimizer step is on-policy (rho == 1 in
    value). Keep dropout off (``policy.eval()`` still trains) so that rho is 1
    where it should be. ``advantages``: (N,) or (P, G); ``ref_logp``/``old_logp``:
    (N, L); the loss arguments as in :func:`qrw.grpo.policy_loss`; ``generator``
    shuffles the rows each pass; ``normalizer_scale`` multiplies every minibatch's
    normaliser (dynamic sampling: whole rollout / kept rows, :func:`update_policy`).

    Under torchrun the minibatches are cut from all ranks' rows in rank order and
    each rank forwards the rows it holds; the bookkeeping is four calls into
    :mod:`qrw.distributed`, outside the loss: the rows a rank holds, the
    normaliser counted over the ranks, the minibatch loss and the gradients
    summed over the ranks before clipping (every rank takes the same step).

    Returns means over the optimizer steps of ``loss`` and ``grad_norm`` (before
    clipping), token-weighted means of ``clip_frac_low``, ``clip_frac_high``,
    ``ratio_mean``, ``approx_kl``, ``entropy`` (and ``kl`` with ref_logp), and
    ``optimizer_steps``. A NaN/inf loss or gradient norm raises
    :class:`NonFiniteLossError` before the optimizer steps.
    """
    num_rows, length = batch.num_sequences, batch.completion_length
    microbatch_size = minibatch_size if microbatch_size is None else microbatch_size
    clip_high = clip_low if clip_high is None else clip_high
    _check_update_args(num_rows, length, advantages, ref_logp, old_logp, mu=mu, minibatch_size=minibatch_size,
                       microbatch_size=microbatch_size, max_grad_norm=max_grad_norm, temperature=temperature,
                       beta=beta, clip_low=clip_low, clip_high=clip_high, loss_type=loss_type)
    advantages = advantages.detach().reshape(num_rows)  # (P, G) or (N,) -> (N,), prompt-major
    max_len = length if max_len is None else max_len
    parameters = [p for p in policy.parameters() if p.requires_grad]
    invariant(bool(parameters), "the policy has no trainable parameters")
    if old_logp is None:  # pi_old: the policy as it was when the rollout was sampled
        old_logp = rollout_logprobs(policy, batch, temperature=temperature, chunk_size=microbatch_size)  # (N, L)
    old_logp = old_logp.detach()

    token_keys = ["clip_frac_low", "clip_frac_high", "ratio_mean", "approx_kl", "entropy"] + ["kl"] * (ref_logp is not None)
    totals = dict.fromkeys(token_keys, 0.0) | {"tokens": 0.0}
    losses, grad_norms = [], []
    offset, total_rows = distributed.rows_of_rank(num_rows)  # (0, N) in one process
    for pass_index in range(mu):
        order = torch.randperm(total_rows, generator=generator) if generator is not None else torch.arange(total_rows)
        order = order.to(batch.input_ids.device)  # (N,)
        for start in range(0, total_rows, minibatch_size):
            rows = distributed.held_rows(order[start:start + minibatch_size], offset, num_rows)  # (b,) this minibatch
            where = f"pass {pass_index + 1}/{mu}, minibatch starting at row {start}"
            normalizer = global_normalizer(batch.completion_mask[rows], loss_type, max_len) * normalizer_scale
            optimizer.zero_grad(set_to_none=True)
            minibatch_loss = 0.0
            for micro_start in range(0, rows.numel(), microbatch_size):
                micro_rows = rows[micro_start:micro_start + microbatch_size]  # (m,)
                micro = batch.select(micro_rows)
                logits = completion_logits(policy, micro.input_ids, micro.attention_mask,
                                           micro.completion_start)  # (m, L, V)
                logp = token_logprobs(logits, micro.completion_tokens, temperature)  # (m, L)
                loss, stats = policy_loss(
                    logp, old_logp[micro_rows], advantages[micro_rows], micro.completion_mask,
                    ref_logp=None if ref_logp is None else ref_logp[micro_rows], beta=beta,
                    clip_low=clip_low, clip_high=clip_high, loss_type=loss_type, max_len=max_len,
                    normalizer=normalizer)
                _check_finite_loss(loss, optimizer, where)
                loss.backward()
                stats["entropy"] = mean_entropy(logits, micro.completion_mask, temperature)
                for key in token_keys:
                    totals[key] += stats[key] * stats["num_tokens"]
                totals["tokens"] += stats["num_tokens"]
                minibatch_loss += loss.item()
            losses.append(distributed.all_reduce_sum(minibatch_loss))  # the whole minibatch's loss
            distributed.all_reduce_gradients(parameters)  # sum over the ranks: the whole minibatch's gradient
            grad_norms.append(_clip_and_step(parameters, optimizer, max_grad_norm, where))

    totals = distributed.all_reduce_sum(totals)  # token-weighted sums over the ranks
    result = {key: totals[key] / max(totals["tokens"], 1.0) for key in token_keys}
    result["loss"] = sum(losses) / len(losses)
    result["grad_norm"] = sum(grad_norms) / len(grad_norms)
    result["optimizer_steps"] = float(len(losses))
    return result


def global_normalizer(mask: Tensor, loss_type: str, max_len: int) -> float:
    """:func:`qrw.grpo.loss_normalizer` of the rows that all ranks hold together (this process's in one process).

    Every normaliser is a count of sequences or tokens, so the ranks' counts add
    up (:func:`qrw.distributed.count_over_ranks`).
    """
    return distributed.count_over_ranks(loss_normalizer(mask, loss_type, max_len), holds_rows=mask.shape[0] > 0)


def token_entropy(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Entropy of softmax(logits / T) at every position, in nats (a diagnostic).

    Args:
        logits: (B, T, V).

    Returns:
        (B, T) float32: ``-sum_v pi_v log pi_v``.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logprobs = F.log_softmax(logits.float() / temperature, dim=-1)  # (B, T, V)
    return -(logprobs.exp() * logprobs).sum(dim=-1)  # (B, T, V) -> (B, T)


@torch.no_grad()
def mean_entropy(logits: Tensor, mask: Tensor, temperature: float) -> float:
    """The mean :func:`token_entropy` over the completion tokens (``mask`` (B, T) > 0) of ``logits`` (B, T, V)."""
    entropy = token_entropy(logits.detach(), temperature)  # (B, T)
    valid = mask > 0  # (B, T)
    return (torch.where(valid, entropy, torch.zeros_like(entropy)).sum() / valid.sum().clamp(min=1)).item()


def _check_finite_loss(loss: Tensor, optimizer: torch.optim.Optimizer, where: str) -> None:
    """Raise :class:`NonFiniteLossError` (gradients dropped, no step) on a NaN/inf loss."""
    if not bool(torch.isfinite(loss)):
        optimizer.zero_grad(set_to_none=True)
        raise NonFiniteLossError(
            f"non-finite GRPO loss ({loss.item()}) in {where}: the optimizer was not stepped. Check the "
            f"rewards and advantages for NaN, lower the learning rate, and resume from the last good checkpoint.")


def _clip_and_step(parameters: list[Tensor], optimizer: torch.optim.Optimizer, max_grad_norm: float | None,
                   where: str) -> float:
    """Clip the global gradient norm, then step; a NaN/inf norm raises before the step. Returns the norm."""
    grad_norm = torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm if max_grad_norm is not None else float("inf"))
    if not bool(torch.isfinite(grad_norm)):
        optimizer.zero_grad(set_to_none=True)
        raise NonFiniteLossError(f"non-finite gradient norm ({grad_norm.item()}) in {where}: "
                                 "the optimizer was not stepped.")
    optimizer.step()
    return grad_norm.item()


def _check_update_args(num_rows: int, length: int, advantages: Tensor, ref_logp: Tensor | None,
                       old_logp: Tensor | None, *, mu, minibatch_size, microbatch_size, max_grad_norm, temperature,
                       beta, clip_low, clip_high, loss_type) -> None:
    if not (isinstance(mu, int) and mu >= 1):
        raise ValueError(f"mu (optimisation passes per rollout) must be an int >= 1, got {mu!r}")
    if not (isinstance(minibatch_size, int) and minibatch_size >= 1):
        raise ValueError(f"minibatch_size must be an int >= 1, got {minibatch_size!r}")
    if not (isinstance(microbatch_size, int) and microbatch_size >= 1):
        raise ValueError(f"microbatch_size must be an int >= 1, got {microbatch_size!r}")
    if max_grad_norm is not None and not max_grad_norm > 0:
        raise ValueError(f"max_grad_norm must be > 0 (or None for no clipping), got {max_grad_norm}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    check_loss_args(beta, clip_low, clip_high, loss_type, ref_logp is not None)
    if advantages.numel() != num_rows:
        raise ValueError(f"expected {num_rows} advantages (one per completion), got shape {tuple(advantages.shape)}")
    for name, value in (("ref_logp", ref_logp), ("old_logp", old_logp)):
        if value is not None and tuple(value.shape) != (num_rows, length):
            raise ValueError(f"{name} must be (N, L) = {(num_rows, length)}, got {tuple(value.shape)}")
