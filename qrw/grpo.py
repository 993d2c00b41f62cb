"""GRPO: group relative policy optimisation, the math of qrw's stage 2.

GRPO (Shao et al., DeepSeekMath, arXiv 2402.03300) is PPO without a value
network. For each prompt q it samples a *group* of G completions o_1..o_G from
the policy that generated the rollout, pi_old, scores each with a reward r_i,
and uses the reward's standing inside its own group as the advantage
(section 4.1.2, outcome supervision: one advantage per completion, shared by
all of its tokens)::

    A_i = (r_i - mean(r_1..r_G)) / std(r_1..r_G)

The policy maximises the clipped surrogate of eq. 3, with a KL penalty to a
frozen reference policy pi_ref (the SFT model)::

    J(theta) = E[ 1/G sum_i 1/|o_i| sum_t { min(rho_it A_i, clip(rho_it, 1 - eps, 1 + eps) A_i)
                                             - beta KL_t[pi_theta || pi_ref] } ]
    rho_it   = pi_theta(o_it | q, o_i<t) / pi_old(o_it | q, o_i<t)

and estimates the per-token KL with the unbiased, always non-negative "k3"
estimator of eq. 4::

    KL_t = pi_ref / pi_theta - log(pi_ref / pi_theta) - 1

We *minimise* ``loss = -J``. The variants differ only where the algorithm does:

- **Dr. GRPO** (Liu et al., arXiv 2503.20783): no std scaling of the advantage
  (``scale="none"``) and no 1/|o_i| length normalisation: the summed token loss
  is divided by a constant B * max_len (``loss_type="dr_grpo"``). The 1/|o_i|
  of eq. 3 gives a short completion's tokens a larger weight than a long one's.
- **DAPO** (Yu et al., arXiv 2503.14476): asymmetric "clip-higher"
  (``clip_low=0.2, clip_high=0.28``), a token-level mean over the whole batch
  (``loss_type="dapo"``), and dynamic sampling: groups whose rewards are all
  equal carry no signal and are dropped (:func:`dynamic_sampling_mask`).
- **GSPO** (Zheng et al., arXiv 2507.18071): one importance ratio per
  sequence, the geometric mean of the token ratios
  ``s_i = exp(mean_t log rho_it)``, clipped per sequence (``loss_type="gspo"``).

Simplifications and conventions, stated up front:

- **On-policy with one pass over one minibatch: rho == 1 in value.** The old
  log-probs are those of the rollout (the sampler's own, equal to a re-scoring
  forward), fixed before the first optimisation step. Before that step the
  policy has not moved, so rho = 1 and the loss value is just -A, but its
  gradient is still -A * grad(log pi): the ratio is exp(logp - old_logp) with
  ``old_logp`` a constant. After the first optimizer step (a second minibatch,
  or mu > 1) the policy has moved and rho != 1: ``old_logp`` must stay the
  rollout-time value, never ``logp.detach()``.
- The std of the advantage is the unbiased sample std (divides by G - 1), as in
  TRL and verl. A group whose rewards are all equal gets exactly 0 (chosen with
  ``torch.where``, not left to ``eps``), never NaN.
- The k3 KL is evaluated on tokens sampled from pi_old, not pi_theta, as in
  every public implementation; the two coincide when mu = 1.
- Masked token positions may hold anything (pad tokens, -inf): they are
  replaced by 0 *before* any ``exp``, so they contribute exactly 0 to both the
  loss and its gradient (a plain ``* mask`` would turn 0 * inf into NaN).
- Several rewards (qrw's default) become one advantage in :func:`normalize_then_sum`:
  each reward z-scored within its group, then weighted and summed (GDPO). The
  alternative fuses the raw rewards first (:func:`qrw.rewards.fuse_rewards`), then
  :func:`group_advantages` normalises the sum once (``--aggregation sum``).
- **Log-ratios are bounded before exp**, as verl does: ``logp - old_logp`` (GSPO:
  its per-sequence mean) and k3's ``ref_logp - logp`` are clamped to
  [-LOG_RATIO_BOUND, LOG_RATIO_BOUND] = [-20, 20] (exp overflows float32 beyond
  about 88 nats; e^20 is far outside any clip range), so loss, gradient and
  statistics are finite for any finite log-probs. Inside the bound nothing
  changes, bit for bit; outside it the clamp passes zero gradient, on purpose.

Tensor names: P prompts, G completions per prompt, N = P * G sequences (rows
are prompt-major: row ``p * G + g`` is sample g of prompt p), B sequences in a
(mini/micro-)batch, T tokens, L completion tokens, V vocabulary entries.

This module is the math only: pure torch functions, no model, no optimiser, no
I/O, and no import from the rest of qrw (a test pins it). Sampling and scoring a
rollout with a model live in :mod:`qrw.rollout`, the mu optimisation passes
(``grpo_update``) in :mod:`qrw.update`; the loop is written out in ``train_grpo.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

ADVANTAGE_SCALES = ("group", "batch", "none")
LOSS_TYPES = ("grpo", "dapo", "dr_grpo", "gspo")
LOG_RATIO_BOUND = 20.0  # |log-ratio| limit before exp (verl's value); see "Log-ratios are bounded" above


# ---------------------------------------------------------------------------
# Rewards and advantages
# ---------------------------------------------------------------------------


def _check_groups(rewards: Tensor) -> None:
    if not isinstance(rewards, Tensor) or rewards.dim() != 2:
        shape = tuple(rewards.shape) if isinstance(rewards, Tensor) else type(rewards).__name__
        raise ValueError(f"rewards must be a (P, G) tensor (P prompts, G completions each), got {shape}")
    if rewards.shape[1] < 2:
        raise ValueError(f"group size G must be >= 2 to compare completions, got G = {rewards.shape[1]}")
    if not bool(torch.isfinite(rewards).all()):
        raise ValueError("rewards contain NaN or infinite values")


def _float(x: Tensor) -> Tensor:
    """``x`` as a floating tensor (float32 unless it already is floating)."""
    return x if x.is_floating_point() else x.float()


def group_advantages(rewards: Tensor, scale: str = "group", eps: float = 1e-6) -> Tensor:
    """Group-relative advantages, one per completion (DeepSeekMath section 4.1.2).

    ::

        scale="group": A_pg = (r_pg - mean_g r_p.) / (std_g r_p. + eps)   (GRPO)
        scale="batch": A_pg = (r_pg - mean_g r_p.) / (std(all P*G r) + eps)
        scale="none":  A_pg =  r_pg - mean_g r_p.                         (Dr. GRPO)

    std is the unbiased sample std (divides by n - 1), as in TRL and verl.
    The mean is always per group: only a completion's standing among the
    other samples of the same prompt matters, so adding a constant to a group
    changes nothing ("batch": the std is over all raw rewards, so add the same
    constant to every group). A group whose rewards are all equal ("zero spread") gets
    exactly 0 in every mode: there is nothing to learn from it, and 0 / (0 +
    eps) would only be 0 up to rounding of the mean.

    Args:
        rewards: (P, G) rewards, row p holds the G samples of prompt p. A flat
            (N,) prompt-major reward vector is ``rewards.view(P, G)``.
        scale: "group", "batch" or "none".
        eps: added to the std (>= 0).

    Returns:
        (P, G) advantages, floating.

    Example:
        >>> group_advantages(torch.tensor([[1.0, 0.0, 1.0, 0.0]])).round(decimals=3)
        tensor([[ 0.8660, -0.8660,  0.8660, -0.8660]])
    """
    _check_groups(rewards)
    if scale not in ADVANTAGE_SCALES:
        raise ValueError(f"unknown advantage scale {scale!r}; expected one of {ADVANTAGE_SCALES}")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    rewards = _float(rewards)
    centered = rewards - rewards.mean(dim=1, keepdim=True)  # (P, G) - (P, 1) -> (P, G)
    if scale == "group":
        advantages = centered / (rewards.std(dim=1, keepdim=True) + eps)  # (P, G) / (P, 1)
    elif scale == "batch":
        advantages = centered / (rewards.std() + eps)  # (P, G) / scalar std over all P*G rewards
    else:
        advantages = centered
    has_spread = dynamic_sampling_mask(rewards).unsqueeze(1)  # (P,) -> (P, 1)
    return torch.where(has_spread, advantages, torch.zeros_like(advantages))  # (P, G)


def normalize_then_sum(components: dict[str, Tensor], weights: dict[str, float], eps: float = 1e-6) -> Tensor:
    """Advantages from several rewards, each normalised within its group first: qrw's default.

    ::

        A_pg = sum_k w_k * (r_k,pg - mean_g r_k,p.) / (std_g r_k,p. + eps)

    Each component k is z-scored within its group (``group_advantages(r_k, "group")``:
    unbiased std, exactly 0 where r_k is constant in the group), so a reward with a
    small spread (conversion: a few hundredths) pulls as hard as one with a large
    spread (relevance: 0 / 0.5 / 1); the weights then say how much each objective
    counts. Source: GDPO (Liu et al., arXiv 2601.05242), TRL's
    ``multi_objective_aggregation="normalize_then_sum"``. qrw stops at the weighted sum
    (no further standardisation of the sum over the batch, which some descriptions of
    GDPO add; not checked against its code here).
    ``--aggregation sum`` instead fuses the raw rewards (:func:`qrw.rewards.fuse_rewards`)
    and normalises the fused reward once with :func:`group_advantages`.

    Args:
        components: name -> (P, G) rewards of one component.
        weights: name -> weight, exactly one per component.

    Returns:
        (P, G) advantages, floating.
    """
    if not components or set(components) != set(weights):
        raise ValueError(f"need one weight per reward component, got {sorted(components)} and {sorted(weights)}")
    total = None
    for name, rewards in components.items():
        term = float(weights[name]) * group_advantages(rewards, scale="group", eps=eps)  # (P, G)
        total = term if total is None else total + term  # (P, G)
    return total


def dynamic_sampling_mask(rewards: Tensor) -> Tensor:
    """Which groups carry a learning signal (DAPO's dynamic sampling).

    A group whose G rewards are all equal has all-zero advantages and adds
    nothing but KL to the loss; DAPO drops such groups (and would resample to
    refill the batch). Keep ``rewards[keep]`` and the matching rows.

    Args:
        rewards: (P, G) rewards.

    Returns:
        keep: (P,) bool, True where max(r_p.) != min(r_p.) (nonzero spread).
    """
    _check_groups(rewards)
    return rewards.amax(dim=1) != rewards.amin(dim=1)  # (P, G) -> (P,)


def zero_spread_fraction(rewards: Tensor) -> float:
    """Share of groups whose rewards are all equal (logged each step; 0.0 when P = 0)."""
    keep = dynamic_sampling_mask(rewards)  # (P,)
    return 0.0 if keep.numel() == 0 else 1.0 - keep.float().mean().item()


# ---------------------------------------------------------------------------
# Log-probabilities, masks and the KL estimator
# ---------------------------------------------------------------------------


def token_logprobs(logits: Tensor, targets: Tensor, temperature: float = 1.0) -> Tensor:
    """log pi(target | context) at every position: ``log_softmax(logits / T)[targets]``.

    The caller aligns the shift: ``logits[:, t]`` must be the model's output
    for the position that *precedes* ``targets[:, t]`` (see
    :func:`completion_logits`). Scoring must use the temperature used for
    sampling: the policy that generated the tokens is softmax(logits / T).

    Args:
        logits: (B, T, V) unnormalised scores (any float dtype; computed in float32).
        targets: (B, T) token ids in [0, V).
        temperature: T > 0.

    Returns:
        (B, T) float32 log-probabilities.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 to score tokens, got {temperature}")
    if logits.dim() != 3 or tuple(targets.shape) != tuple(logits.shape[:2]):
        raise ValueError(f"expected logits (B, T, V) and targets (B, T), got {tuple(logits.shape)} "
                         f"and {tuple(targets.shape)}")
    logprobs = F.log_softmax(logits.float() / temperature, dim=-1)  # (B, T, V)
    return logprobs.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)  # (B, T, 1) -> (B, T)


def completion_mask(tokens: Tensor, eos_id: int) -> Tensor:
    """Which completion tokens were generated: 1 up to and including the first EOS.

    The EOS itself is trained on (the policy must learn to stop); everything
    after it is padding. A row without EOS (truncated at the length budget) is
    all ones. Only the *first* EOS counts, so this is correct when the pad id
    equals the EOS id.

    Args:
        tokens: (B, L) completion token ids.
        eos_id: the end-of-sequence id.

    Returns:
        (B, L) float32 mask of 0.0 / 1.0.

    Example:
        >>> completion_mask(torch.tensor([[5, 2, 0, 0], [5, 6, 7, 8]]), eos_id=0)
        tensor([[1., 1., 1., 0.],
                [1., 1., 1., 1.]])
    """
    if tokens.dim() != 2:
        raise ValueError(f"tokens must be (B, L), got {tuple(tokens.shape)}")
    is_eos = (tokens == eos_id).long()  # (B, L)
    eos_before = is_eos.cumsum(dim=1) - is_eos  # (B, L): number of EOS strictly before position t
    return (eos_before == 0).float()  # (B, L)


def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token k3 estimator of KL(pi_theta || pi_ref) (DeepSeekMath eq. 4; Schulman 2020).

    ::

        k3 = pi_ref / pi_theta - log(pi_ref / pi_theta) - 1
           = exp(ref_logp - logp) - (ref_logp - logp) - 1

    Since x - 1 >= log x, k3 >= 0, with equality iff the log-probs are equal;
    for a small difference delta it is ~ delta^2 / 2. For tokens sampled from
    pi_theta its mean is the exact KL, because E_pi[pi_ref / pi] = 1. Its
    gradient is d k3 / d logp = 1 - pi_ref / pi_theta.

    The exponent ``ref_logp - logp`` is clamped to [-LOG_RATIO_BOUND,
    LOG_RATIO_BOUND] (+-20 nats) first, so k3 <= e^20 and stays finite; beyond
    the bound the estimate is constant and its gradient 0.

    Args:
        logp: (...) log pi_theta of the sampled tokens.
        ref_logp: (...) log pi_ref of the same tokens, same shape.

    Returns:
        (...) per-token estimates, >= 0.
    """
    log_ratio = (ref_logp - logp).clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND)  # log(pi_ref / pi_theta), bounded
    return torch.exp(log_ratio) - log_ratio - 1


# ---------------------------------------------------------------------------
# The clipped surrogate loss and its aggregation
# ---------------------------------------------------------------------------


def check_loss_args(beta: float, clip_low: float, clip_high: float, loss_type: str, has_ref: bool) -> None:
    """Raise ``ValueError`` on arguments :func:`policy_loss` cannot use: clip_low, clip_high > 0, beta >= 0.

    ``clip_low >= 1`` turns the lower clip off (no ratio is below 1 - clip_low <= 0);
    the command line refuses it (``GRPOConfig``: 0 < clip_low < 1), where it is a slip.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; expected one of {LOSS_TYPES}")
    if not clip_low > 0:
        raise ValueError(f"clip_low must be > 0, got {clip_low}")
    if not clip_high > 0:
        raise ValueError(f"clip_high must be > 0, got {clip_high}")
    if not beta >= 0:
        raise ValueError(f"beta (KL coefficient) must be >= 0, got {beta}")
    if beta > 0 and not has_ref:
        raise ValueError("beta > 0 needs ref_logp (the reference model's log-probs); pass it or set beta = 0")


def loss_normalizer(mask: Tensor, loss_type: str, max_len: int | None = None) -> float:
    """The denominator that :func:`policy_loss` divides its summed loss by.

    ::

        "grpo", "gspo": B                      (sum of per-sequence means / B)
        "dapo":         max(sum(mask), 1)      (token-level mean)
        "dr_grpo":      B * max_len            (a constant: no length bias)

    (B is clamped to at least 1.) Every numerator is a plain sum over
    sequences or tokens, so it adds up across micro-batches: computing each
    micro-batch's loss with the normalizer of the whole minibatch and summing
    the gradients reproduces the full minibatch's gradient.

    Args:
        mask: (B, T) completion mask.
        loss_type: one of LOSS_TYPES.
        max_len: the completion length budget for "dr_grpo" (default T; >= T).
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; expected one of {LOSS_TYPES}")
    num_sequences = max(mask.shape[0], 1)
    if loss_type == "dapo":
        return float(max(int((mask > 0).sum().item()), 1))
    if loss_type == "dr_grpo":
        max_len = mask.shape[1] if max_len is None else int(max_len)
        if max_len < max(mask.shape[1], 1):
            raise ValueError(f"max_len ({max_len}) must be >= the number of completion tokens T ({mask.shape[1]})")
        return float(num_sequences * max_len)
    return float(num_sequences)


def sequence_ratio(logp: Tensor, old_logp: Tensor, mask: Tensor) -> Tensor:
    """GSPO's sequence-level importance ratio (Zheng et al., arXiv 2507.18071, eq. 7).

    ::

        s_i = exp( sum_t m_it (logp_it - old_logp_it) / max(n_i, 1) )

    the geometric mean of the token ratios of sequence i; with one token it is
    that token's ratio (property 21 of docs/GRPO_TESTS.md). The mean log-ratio is clamped to
    [-LOG_RATIO_BOUND, LOG_RATIO_BOUND] before ``exp`` (s_i in [e^-20, e^20]).

    Args:
        logp, old_logp: (B, T) log-probs, already 0 at masked positions.
        mask: (B, T) bool, the completion tokens.

    Returns:
        (B, 1) ratios, broadcastable over the sequence's tokens.
    """
    lengths = mask.sum(dim=1, keepdim=True).clamp(min=1).to(logp.dtype)  # (B, 1) n_i
    mean_log_ratio = (logp - old_logp).sum(dim=1, keepdim=True) / lengths  # (B, T) -> (B, 1)
    return torch.exp(mean_log_ratio.clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND))  # (B, 1)


def clipped_surrogate(ratio: Tensor, advantage: Tensor, clip_low: float, clip_high: float) -> Tensor:
    """PPO's clipped surrogate, negated to a loss (DeepSeekMath eq. 3, inside the sums).

    ::

        l = -min(rho A, clip(rho, 1 - clip_low, 1 + clip_high) A)

    When A > 0 the loss stops falling once rho > 1 + clip_high; when A < 0,
    once rho < 1 - clip_low: there the gradient is 0. Elsewhere it is
    ``-A rho grad(log pi)``.

    Args:
        ratio: (B, T) token ratios pi_theta / pi_old, or (B, 1) sequence ratios (GSPO).
        advantage: (B, 1) one advantage per sequence, broadcast over its tokens.

    Returns:
        The broadcast shape of ``ratio`` and ``advantage``.
    """
    clipped = ratio.clamp(1 - clip_low, 1 + clip_high)
    return -torch.minimum(ratio * advantage, clipped * advantage)


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    ref_logp: Tensor | None = None,
    beta: float = 0.0,
    clip_low: float = 0.2,
    clip_high: float | None = None,
    loss_type: str = "grpo",
    max_len: int | None = None,
    normalizer: float | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """The loss of GRPO and its variants: minus DeepSeekMath eq. 3, per token then aggregated.

    ::

        l_t = -min(rho_t A, clip(rho_t, 1 - clip_low, 1 + clip_high) A) + beta * kl_k3(logp_t, ref_logp_t)
        rho_t = exp(clamp(logp_t - old_logp_t, -20, 20))   (GSPO: the sequence ratio s_i, :func:`sequence_ratio`)
        loss = aggregate_loss(l) / loss_normalizer(mask)

    A is broadcast over the tokens of its completion. A sequence with no unmasked
    token contributes 0, a batch with none gives exactly 0, and values at masked
    positions never matter, even -inf.

    Args:
        logp: (B, T) log pi_theta of the completion tokens (with gradient).
        old_logp: (B, T) log pi_old of the same tokens, from the rollout (treated as a constant).
        advantages: (B,) one per completion (treated as a constant).
        mask: (B, T) 0/1 completion mask.
        ref_logp: (B, T) log pi_ref, required when beta > 0 (then the KL is also in the stats).
        beta: KL coefficient (DeepSeekMath: 0.04; Dr. GRPO and DAPO: 0).
        clip_low, clip_high: the ratio is clipped to [1 - clip_low, 1 + clip_high]
            (clip_high None: clip_low; DAPO's clip-higher: 0.2 / 0.28).
        loss_type: "grpo", "dapo", "dr_grpo" or "gspo" (:func:`aggregate_loss`).
        max_len: "dr_grpo"'s length budget, default T.
        normalizer: the denominator; gradient accumulation passes the whole
            minibatch's :func:`loss_normalizer` (default: this batch's).

    Returns:
        ``(loss, stats)``: a scalar tensor and the floats of :func:`loss_stats`.
    """
    clip_high = clip_low if clip_high is None else clip_high
    _check_loss_inputs(logp, old_logp, advantages, mask, ref_logp, beta, clip_low, clip_high, loss_type)
    valid = mask > 0  # (B, T) bool
    logp = _zero_masked(logp, valid)  # (B, T)
    old_logp = _zero_masked(old_logp.detach().to(logp.dtype), valid)  # (B, T), a constant
    if ref_logp is not None:
        ref_logp = _zero_masked(ref_logp.detach().to(logp.dtype), valid)  # (B, T), a constant
    advantage = advantages.detach().to(logp.dtype).unsqueeze(1)  # (B,) -> (B, 1), broadcast over tokens
    kl = None if ref_logp is None else _zero_masked(kl_k3(logp, ref_logp), valid)  # (B, T)

    if loss_type == "gspo":
        ratio = sequence_ratio(logp, old_logp, valid)  # (B, 1): one ratio per sequence
    else:
        ratio = torch.exp((logp - old_logp).clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND))  # (B, T), bounded log-ratio
    surrogate = clipped_surrogate(ratio, advantage, clip_low, clip_high)  # (B, T), GSPO (B, 1)

    numerator = aggregate_loss(surrogate, kl, beta, valid, loss_type)
    if normalizer is None:
        normalizer = loss_normalizer(valid, loss_type, max_len)
    elif not normalizer > 0:
        raise ValueError(f"normalizer must be > 0, got {normalizer}")
    loss = numerator / normalizer
    return loss, loss_stats(ratio, advantage, logp, old_logp, kl, valid, clip_low, clip_high)


def aggregate_loss(surrogate: Tensor, kl: Tensor | None, beta: float, mask: Tensor, loss_type: str) -> Tensor:
    """The numerator of the loss: per-token (or per-sequence) losses summed as ``loss_type`` says.

    With m = mask, n_i = max(sum_t m_it, 1) and l_it = surrogate_it + beta * kl_it::

        "grpo":    sum_i sum_t l_it m_it / n_i          (eq. 3: each sequence weighs the same)
        "dapo":    sum_it l_it m_it                     (each token weighs the same)
        "dr_grpo": sum_it l_it m_it                     (no length normalisation)
        "gspo":    sum_i [surrogate_i + beta sum_t m_it kl_it / n_i]   (sequences with n_i = 0: 0)

    :func:`loss_normalizer` gives the matching denominator.

    Args:
        surrogate: (B, T) clipped token surrogates, or (B, 1) for "gspo".
        kl: (B, T) k3 per token (0 on masked tokens), or None.
        beta: KL coefficient.
        mask: (B, T) bool.
        loss_type: one of LOSS_TYPES.

    Returns:
        A scalar tensor.
    """
    lengths = mask.sum(dim=1).clamp(min=1).to(surrogate.dtype)  # (B,) n_i
    if loss_type == "gspo":
        sequence_loss = surrogate.squeeze(1)  # (B, 1) -> (B,)
        if beta > 0:
            sequence_loss = sequence_loss + beta * kl.sum(dim=1) / lengths  # (B,)
        has_tokens = mask.any(dim=1)  # (B,)
        return torch.where(has_tokens, sequence_loss, torch.zeros_like(sequence_loss)).sum()
    token_loss = surrogate + beta * kl if beta > 0 else surrogate  # (B, T)
    token_loss = _zero_masked(token_loss, mask)  # (B, T)
    if loss_type == "grpo":
        return (token_loss.sum(dim=1) / lengths).sum()  # (B, T) -> (B,) -> scalar
    return token_loss.sum()  # "dapo", "dr_grpo": a plain token sum


@torch.no_grad()
def loss_stats(ratio: Tensor, advantage: Tensor, logp: Tensor, old_logp: Tensor, kl: Tensor | None,
               mask: Tensor, clip_low: float, clip_high: float) -> dict[str, float]:
    """What a practitioner watches in an update, as masked means over the completion tokens.

    - ``clip_frac_low``: share of tokens with rho < 1 - clip_low and A < 0 (clipped below);
    - ``clip_frac_high``: share with rho > 1 + clip_high and A > 0 (clipped above);
    - ``ratio_mean``: mean rho (GSPO: the sequence ratio, counted on each of its tokens);
    - ``approx_kl``: mean k3 of KL(pi_old || pi_theta), cleanrl's approx_kl: how far
      this update has moved the policy;
    - ``kl``: mean k3 of KL(pi_theta || pi_ref), when the reference log-probs were given;
    - ``num_tokens``: the number of unmasked tokens.

    Args:
        ratio: (B, T) token ratios, or (B, 1) sequence ratios; advantage: (B, 1);
        logp, old_logp: (B, T), 0 on masked tokens; kl: (B, T) or None; mask: (B, T) bool.
    """
    count = mask.sum().clamp(min=1).to(logp.dtype)  # scalar
    low = mask & (ratio < 1 - clip_low) & (advantage < 0)  # (B, T)
    high = mask & (ratio > 1 + clip_high) & (advantage > 0)  # (B, T)
    names = ["clip_frac_low", "clip_frac_high", "ratio_mean", "approx_kl", "num_tokens"]
    values = [low.sum() / count, high.sum() / count, masked_mean(ratio.expand_as(logp), mask),
              masked_mean(kl_k3(old_logp, logp), mask), mask.sum().to(logp.dtype)]
    if kl is not None:
        names.append("kl")
        values.append(kl.sum() / count)
    return dict(zip(names, torch.stack(values).tolist()))  # one device sync for all stats


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over the positions where ``mask`` is nonzero (0 when there are none)."""
    mask = mask > 0
    return torch.where(mask, values, torch.zeros_like(values)).sum() / mask.sum().clamp(min=1)


def _zero_masked(values: Tensor, mask: Tensor) -> Tensor:
    """``values`` with masked positions 0 (``torch.where``: no gradient there, and no 0 * inf = NaN)."""
    return torch.where(mask, values, torch.zeros_like(values))


def _check_loss_inputs(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, ref_logp: Tensor | None,
                       beta: float, clip_low: float, clip_high: float, loss_type: str) -> None:
    check_loss_args(beta, clip_low, clip_high, loss_type, ref_logp is not None)
    if logp.dim() != 2:
        raise ValueError(f"logp must be (B, T), got {tuple(logp.shape)}")
    for name, value in (("old_logp", old_logp), ("mask", mask), ("ref_logp", ref_logp)):
        if value is not None and tuple(value.shape) != tuple(logp.shape):
            raise ValueError(f"{name} must have logp's shape {tuple(logp.shape)}, got {tuple(value.shape)}")
    if tuple(advantages.shape) != (logp.shape[0],):
        raise ValueError(f"advantages must be (B,) = ({logp.shape[0]},), got {tuple(advantages.shape)}")
