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

- **On-policy when mu = 1: rho == 1 in value.** The old log-probs are computed
  once per rollout batch, without gradient, before the first optimisation pass.
  With one pass over one minibatch the policy has not moved yet, so rho = 1 and
  the loss value is just -A, but its gradient is still -A * grad(log pi): the
  ratio is exp(logp - old_logp) with ``old_logp`` a constant. With mu > 1 (or
  several minibatches) the policy moves between steps and rho != 1: ``old_logp``
  must stay the rollout-time value, never ``logp.detach()``.
- The std of the advantage is the unbiased sample std (divides by G - 1), as in
  TRL and verl. A group whose rewards are all equal gets exactly 0 (chosen with
  ``torch.where``, not left to ``eps``), never NaN.
- The k3 KL is evaluated on tokens sampled from pi_old, not pi_theta, as in
  every public implementation; the two coincide when mu = 1.
- Masked token positions may hold anything (pad tokens, -inf): they are
  replaced by 0 *before* any ``exp``, so they contribute exactly 0 to both the
  loss and its gradient (a plain ``* mask`` would turn 0 * inf into NaN).
- Rewards are fused (weighted sum) before normalisation (:func:`fuse_rewards`).

Tensor names: P prompts, G completions per prompt, N = P * G sequences (rows
are prompt-major: row ``p * G + g`` is sample g of prompt p), B sequences in a
(mini/micro-)batch, T tokens, L completion tokens, V vocabulary entries.

The math (top of the file) is pure torch functions with no I/O; below it,
:func:`grpo_update` runs the mu optimisation passes over a rollout batch.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qrw.config import NonFiniteLossError  # noqa: F401  (raised by grpo_update; re-exported here)

ADVANTAGE_SCALES = ("group", "batch", "none")
LOSS_TYPES = ("grpo", "dapo", "dr_grpo", "gspo")


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


def fuse_rewards(components: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    """The weighted sum of reward components (the paper's reward fusion).

    ``fused = sum_k weights[k] * components[k]``, taken on the raw rewards,
    BEFORE any group normalisation: normalising each component first would
    give a component with a tiny spread the same pull as one with a large
    spread, and would change what the weights mean.

    Args:
        components: name -> rewards, all of one shape, (P, G) or (N,).
        weights: name -> weight, exactly one finite weight per component.

    Returns:
        The fused rewards, same shape as the components, floating.

    Raises:
        ValueError: no components, shapes differ, a component has no weight,
            a weight names no component, or a weight is not finite.
    """
    if not components:
        raise ValueError("fuse_rewards needs at least one reward component")
    missing = sorted(set(components) - set(weights))
    unknown = sorted(set(weights) - set(components))
    if missing:
        raise ValueError(f"no weight given for reward component(s): {', '.join(missing)}")
    if unknown:
        raise ValueError(f"weight(s) given for unknown reward component(s): {', '.join(unknown)} "
                         f"(components: {', '.join(sorted(components))})")
    shapes = {name: tuple(value.shape) for name, value in components.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"reward components must all have the same shape, got {shapes}")
    fused = None
    for name, value in components.items():
        weight = float(weights[name])
        if not math.isfinite(weight):
            raise ValueError(f"weight for reward {name!r} must be finite, got {weight}")
        term = weight * _float(value)  # same shape as the component
        fused = term if fused is None else fused + term
    return fused


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

    Args:
        logp: (...) log pi_theta of the sampled tokens.
        ref_logp: (...) log pi_ref of the same tokens, same shape.

    Returns:
        (...) per-token estimates, >= 0.
    """
    log_ratio = ref_logp - logp  # log(pi_ref / pi_theta)
    return torch.exp(log_ratio) - log_ratio - 1


# ---------------------------------------------------------------------------
# The clipped surrogate loss and its aggregation
# ---------------------------------------------------------------------------


def _check_loss_args(beta: float, clip_low: float, clip_high: float, loss_type: str, has_ref: bool) -> None:
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
    the gradients reproduces the full minibatch's gradient (STYLE.md rule 8).

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
    """The clipped surrogate loss of GRPO and its variants (minus DeepSeekMath eq. 3).

    Per token, with ``rho_t = exp(logp_t - old_logp_t)`` and A broadcast over
    the tokens of its completion::

        l_t = -min(rho_t A, clip(rho_t, 1 - clip_low, 1 + clip_high) A) + beta * kl_k3(logp_t, ref_logp_t)

    The min makes the objective pessimistic: once the ratio has moved past the
    clip boundary in the direction the advantage favours (rho > 1 + clip_high
    with A > 0, rho < 1 - clip_low with A < 0) the gradient is 0; everywhere
    else it is ``-A rho grad(log pi)``. Aggregation, with m = mask and
    n_i = sum_t m_it (``max(., 1)`` guards empty sequences)::

        "grpo":    1/B sum_i sum_t l_it m_it / n_i        (eq. 3: each sequence weighs the same)
        "dapo":    sum_it l_it m_it / sum_it m_it         (each token weighs the same)
        "dr_grpo": sum_it l_it m_it / (B * max_len)       (constant normaliser)
        "gspo":    1/B sum_i [-min(s_i A_i, clip(s_i, ...) A_i) + beta sum_t m_it kl_it / n_i],
                   s_i = exp(sum_t m_it (logp_it - old_logp_it) / n_i)

    A sequence with no unmasked token contributes 0, and a batch with no
    unmasked token gives a loss of exactly 0. Values at masked positions never
    matter, even if they are -inf.

    Args:
        logp: (B, T) log pi_theta of the completion tokens (with gradient).
        old_logp: (B, T) log pi_old of the same tokens, from the rollout (no
            gradient; detached here).
        advantages: (B,) one advantage per completion (detached here).
        mask: (B, T) 0/1 completion mask (bool or float).
        ref_logp: (B, T) log pi_ref, required when beta > 0; when given, the
            KL is also reported in the stats even if beta = 0.
        beta: KL coefficient (DeepSeekMath: 0.04; Dr. GRPO and DAPO: 0).
        clip_low: eps_low, the ratio may fall to 1 - clip_low (> 0).
        clip_high: eps_high, the ratio may rise to 1 + clip_high (> 0;
            None means clip_low; DAPO's clip-higher: 0.28).
        loss_type: "grpo", "dapo", "dr_grpo" or "gspo".
        max_len: "dr_grpo"'s length budget, default T.
        normalizer: override the denominator; gradient accumulation passes
            ``loss_normalizer`` of the whole minibatch (default: this batch's).

    Returns:
        loss: scalar tensor.
        stats: floats over the unmasked tokens, computed without gradient:
            ``clip_frac_low`` (share with rho < 1 - clip_low and A < 0),
            ``clip_frac_high`` (rho > 1 + clip_high and A > 0), ``ratio_mean``,
            ``approx_kl`` (mean k3 of KL(pi_old || pi_theta), cleanrl's
            approx_kl: how far this update has moved the policy),
            ``kl`` (mean k3 of KL(pi_theta || pi_ref), only when ref_logp is
            given) and ``num_tokens``. For "gspo" the ratio in the clip
            fractions and ratio_mean is the sequence ratio s_i, counted on
            each of the sequence's tokens.
    """
    clip_high = clip_low if clip_high is None else clip_high
    _check_loss_args(beta, clip_low, clip_high, loss_type, ref_logp is not None)
    if logp.dim() != 2:
        raise ValueError(f"logp must be (B, T), got {tuple(logp.shape)}")
    for name, value in (("old_logp", old_logp), ("mask", mask), ("ref_logp", ref_logp)):
        if value is not None and tuple(value.shape) != tuple(logp.shape):
            raise ValueError(f"{name} must have logp's shape {tuple(logp.shape)}, got {tuple(value.shape)}")
    if tuple(advantages.shape) != (logp.shape[0],):
        raise ValueError(f"advantages must be (B,) = ({logp.shape[0]},), got {tuple(advantages.shape)}")

    valid = mask > 0  # (B, T) bool
    zeros = torch.zeros_like(logp)  # (B, T)
    # Replace masked positions by 0 before any exp: they then contribute exactly 0 to the value
    # and the gradient (torch.where sends no gradient to the unselected branch).
    logp = torch.where(valid, logp, zeros)  # (B, T)
    old_logp = torch.where(valid, old_logp.detach().to(logp.dtype), zeros)  # (B, T)
    advantage = advantages.detach().to(logp.dtype).unsqueeze(1)  # (B,) -> (B, 1), broadcast over tokens
    num_tokens = valid.sum(dim=1)  # (B,)
    lengths = num_tokens.clamp(min=1).to(logp.dtype)  # (B,) n_i, at least 1
    log_ratio = logp - old_logp  # (B, T), 0 on masked tokens
    kl = None
    if ref_logp is not None:
        ref_logp = torch.where(valid, ref_logp.detach().to(logp.dtype), zeros)  # (B, T)
        kl = torch.where(valid, kl_k3(logp, ref_logp), zeros)  # (B, T)

    if loss_type == "gspo":
        sequence_ratio = torch.exp(log_ratio.sum(dim=1) / lengths)  # (B, T) -> (B,): s_i
        sequence_advantage = advantage.squeeze(1)  # (B,)
        clipped = sequence_ratio.clamp(1 - clip_low, 1 + clip_high)  # (B,)
        sequence_loss = -torch.minimum(sequence_ratio * sequence_advantage, clipped * sequence_advantage)  # (B,)
        if beta > 0:
            sequence_loss = sequence_loss + beta * kl.sum(dim=1) / lengths  # (B,)
        sequence_loss = torch.where(num_tokens > 0, sequence_loss, torch.zeros_like(sequence_loss))  # (B,)
        numerator = sequence_loss.sum()
        ratio = sequence_ratio.unsqueeze(1).expand_as(logp)  # (B,) -> (B, T), for the stats
    else:
        ratio = torch.exp(log_ratio)  # (B, T)
        clipped = ratio.clamp(1 - clip_low, 1 + clip_high)  # (B, T)
        token_loss = -torch.minimum(ratio * advantage, clipped * advantage)  # (B, T)
        if beta > 0:
            token_loss = token_loss + beta * kl  # (B, T)
        token_loss = torch.where(valid, token_loss, zeros)  # (B, T)
        if loss_type == "grpo":
            numerator = (token_loss.sum(dim=1) / lengths).sum()  # (B, T) -> (B,) -> scalar
        else:  # "dapo", "dr_grpo": a plain token sum, normalised below
            numerator = token_loss.sum()

    if normalizer is None:
        normalizer = loss_normalizer(valid, loss_type, max_len)
    elif not normalizer > 0:
        raise ValueError(f"normalizer must be > 0, got {normalizer}")
    loss = numerator / normalizer

    with torch.no_grad():
        count = valid.sum().clamp(min=1).to(logp.dtype)  # scalar

        def masked_mean(values: Tensor) -> Tensor:
            return torch.where(valid, values, zeros).sum() / count

        low = valid & (ratio < 1 - clip_low) & (advantage < 0)  # (B, T)
        high = valid & (ratio > 1 + clip_high) & (advantage > 0)  # (B, T)
        names = ["clip_frac_low", "clip_frac_high", "ratio_mean", "approx_kl", "num_tokens"]
        values = [low.sum() / count, high.sum() / count, masked_mean(ratio),
                  masked_mean(kl_k3(old_logp, logp)), valid.sum().to(logp.dtype)]
        if kl is not None:
            names.append("kl")
            values.append(kl.sum() / count)
        stats = dict(zip(names, torch.stack(values).tolist()))  # one device sync for all stats
    return loss, stats


# ---------------------------------------------------------------------------
# Rollout batches and scoring them with a model
# ---------------------------------------------------------------------------


def pack_rollout(prompts: list[list[int]], completions: Tensor, num_samples: int,
                 pad_id: int) -> tuple[Tensor, Tensor, int]:
    """Build the (prompt + completion) batch that scores a rollout in one forward.

    Prompts are left-padded to a common length so that every completion starts
    at the same column, ``completion_start``. Rows are prompt-major, as the
    sampler emits them: row ``p * G + g`` is prompt p followed by completion
    ``completions[p * G + g]``, so ``rewards.view(P, G)[p, g]`` belongs to it.

    Args:
        prompts: P non-empty lists of token ids.
        completions: (N, L) completion token ids, N = P * num_samples.
        num_samples: G, completions per prompt (>= 1).
        pad_id: the id written into the left padding.

    Returns:
        input_ids: (N, S + L) long, S the longest prompt.
        attention_mask: (N, S + L) bool, False on the left padding only
            (tokens after EOS are masked in the loss, not here).
        completion_start: S, the column of the first completion token.
    """
    if not prompts:
        raise ValueError("pack_rollout needs at least one prompt")
    if any(len(prompt) == 0 for prompt in prompts):
        raise ValueError("every prompt must have at least one token (its last token scores the first completion token)")
    if not (isinstance(num_samples, int) and num_samples >= 1):
        raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
    if completions.dim() != 2 or completions.shape[1] < 1:
        raise ValueError(f"completions must be (N, L) with L >= 1, got {tuple(completions.shape)}")
    if completions.shape[0] != len(prompts) * num_samples:
        raise ValueError(f"expected N = {len(prompts)} prompts x {num_samples} samples = "
                         f"{len(prompts) * num_samples} completions, got {completions.shape[0]}")
    prompt_len = max(len(prompt) for prompt in prompts)
    prompt_ids = torch.full((len(prompts), prompt_len), pad_id, dtype=torch.long)  # (P, S)
    prompt_real = torch.zeros((len(prompts), prompt_len), dtype=torch.bool)  # (P, S)
    for p, prompt in enumerate(prompts):
        prompt_ids[p, prompt_len - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        prompt_real[p, prompt_len - len(prompt):] = True
    device = completions.device
    prompt_ids = prompt_ids.to(device).repeat_interleave(num_samples, dim=0)  # (P, S) -> (N, S), row p*G+g = prompt p
    prompt_real = prompt_real.to(device).repeat_interleave(num_samples, dim=0)  # (N, S)
    input_ids = torch.cat([prompt_ids, completions.long()], dim=1)  # (N, S + L)
    attention_mask = torch.cat([prompt_real, torch.ones_like(completions, dtype=torch.bool)], dim=1)  # (N, S + L)
    return input_ids, attention_mask, prompt_len


@dataclass
class RolloutBatch:
    """One rollout, packed for scoring: N left-padded prompt + completion rows.

    Build it with :meth:`from_completions`. ``completion_tokens`` is the view
    ``input_ids[:, completion_start:]``.
    """

    input_ids: Tensor
    """(N, T) long: left-padded prompt, then the L completion tokens."""
    attention_mask: Tensor
    """(N, T) bool: False on the prompt's left padding."""
    completion_start: int
    """Column of the first completion token (every row: prompts are left-padded)."""
    completion_mask: Tensor
    """(N, L) float 0/1: completion tokens that count in the loss (up to and including EOS)."""

    def __post_init__(self) -> None:
        num_rows, total = self.input_ids.shape
        if tuple(self.attention_mask.shape) != (num_rows, total):
            raise ValueError(f"attention_mask must be {(num_rows, total)}, got {tuple(self.attention_mask.shape)}")
        if not 1 <= self.completion_start < total:
            raise ValueError(f"completion_start must be in [1, {total}), got {self.completion_start}")
        expected = (num_rows, total - self.completion_start)
        if tuple(self.completion_mask.shape) != expected:
            raise ValueError(f"completion_mask must be {expected}, got {tuple(self.completion_mask.shape)}")

    @classmethod
    def from_completions(cls, prompts: list[list[int]], completions: Tensor, num_samples: int, *,
                         pad_id: int, eos_id: int, mask: Tensor | None = None) -> "RolloutBatch":
        """Pack a rollout (see :func:`pack_rollout`); ``mask`` defaults to ``completion_mask(completions, eos_id)``."""
        input_ids, attention_mask, start = pack_rollout(prompts, completions, num_samples, pad_id)
        mask = completion_mask(completions, eos_id) if mask is None else mask.float()
        return cls(input_ids, attention_mask, start, mask)

    @property
    def completion_tokens(self) -> Tensor:
        """(N, L) the completion token ids."""
        return self.input_ids[:, self.completion_start:]

    @property
    def num_sequences(self) -> int:
        return self.input_ids.shape[0]

    @property
    def completion_length(self) -> int:
        """L, the number of completion columns."""
        return self.input_ids.shape[1] - self.completion_start

    def select(self, rows: Tensor) -> "RolloutBatch":
        """The sub-batch of the given row indices (a (b,) long tensor)."""
        return RolloutBatch(self.input_ids[rows], self.attention_mask[rows], self.completion_start,
                            self.completion_mask[rows])


def completion_logits(model: nn.Module, input_ids: Tensor, attention_mask: Tensor,
                      completion_start: int) -> Tensor:
    """The logits that score each completion token, in one forward pass.

    A causal LM's output at position t predicts token t + 1, so the L
    completion tokens at columns ``completion_start .. T-1`` are scored by the
    outputs at ``completion_start - 1 .. T-2``. The last column's output would
    score a token that does not exist, so it is not computed.

    Args:
        model: ``model(input_ids (B, T), attention_mask (B, T) bool) -> logits (B, T, V)``.
        input_ids: (B, T) left-padded prompt + completion.
        attention_mask: (B, T) bool, False on padding.
        completion_start: column of the first completion token (>= 1).

    Returns:
        (B, L, V) logits, L = T - completion_start; ``[:, j]`` scores
        ``input_ids[:, completion_start + j]``.
    """
    total = input_ids.shape[1]
    if not 1 <= completion_start < total:
        raise ValueError(f"completion_start must be in [1, {total}), got {completion_start}")
    if not bool(attention_mask[:, completion_start - 1].all()):
        raise ValueError("the token before completion_start must be a real prompt token in every row "
                         "(prompts must be left-padded and non-empty)")
    logits = model(input_ids[:, :-1], attention_mask[:, :-1])  # (B, T-1, V): drop the last input
    return logits[:, completion_start - 1:]  # (B, L, V)


def sequence_logprobs(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, completion_start: int,
                      temperature: float = 1.0) -> Tensor:
    """log pi(completion token | prompt, earlier completion tokens) for every completion column.

    Args:
        model, input_ids, attention_mask, completion_start: as in :func:`completion_logits`.
        temperature: the sampling temperature.

    Returns:
        (B, L) float32 log-probs (with gradient if the model has one);
        positions after EOS hold the log-prob of the padding and are masked
        by the caller.
    """
    logits = completion_logits(model, input_ids, attention_mask, completion_start)  # (B, L, V)
    return token_logprobs(logits, input_ids[:, completion_start:], temperature)  # (B, L)


@torch.no_grad()
def rollout_logprobs(model: nn.Module, batch: RolloutBatch, *, temperature: float = 1.0,
                     chunk_size: int | None = None) -> Tensor:
    """Score a whole rollout without gradient: the old (pi_old) or reference (pi_ref) log-probs.

    Computed once per rollout batch. Run the model with dropout off (eval
    mode) so that scoring is deterministic.

    Returns:
        (N, L) float32 log-probs.
    """
    chunk_size = batch.num_sequences if chunk_size is None else max(int(chunk_size), 1)
    chunks = []
    for start in range(0, batch.num_sequences, chunk_size):
        part = batch.select(torch.arange(start, min(start + chunk_size, batch.num_sequences),
                                         device=batch.input_ids.device))
        chunks.append(sequence_logprobs(model, part.input_ids, part.attention_mask, part.completion_start,
                                        temperature))  # (chunk, L)
    return torch.cat(chunks, dim=0)  # (N, L)


def frozen_reference(policy: nn.Module) -> nn.Module:
    """A deep copy of ``policy`` to serve as pi_ref: eval mode, ``requires_grad`` False everywhere."""
    reference = copy.deepcopy(policy)
    reference.eval()
    reference.requires_grad_(False)
    return reference


# ---------------------------------------------------------------------------
# The update: mu optimisation passes over one rollout batch
# ---------------------------------------------------------------------------


def grpo_update(
    policy: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: RolloutBatch,
    advantages: Tensor,
    *,
    mu: int,
    minibatch_size: int,
    beta: float,
    clip_low: float,
    clip_high: float | None,
    loss_type: str,
    temperature: float,
    max_grad_norm: float | None,
    ref_logp: Tensor | None = None,
    old_logp: Tensor | None = None,
    microbatch_size: int | None = None,
    max_len: int | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Take mu optimisation passes over one rollout batch (the inner loop of GRPO).

    ::

        old_logp = log pi_old(completions)        once, no gradient (unless given)
        for pass in 1..mu:
            for minibatch in batch (minibatch_size sequences each):
                for micro-batch in minibatch (microbatch_size each):
                    loss = policy_loss(..., normalizer=loss_normalizer(minibatch))
                    loss.backward()               gradients accumulate
                clip the gradient norm to max_grad_norm; optimizer.step()

    Dividing every micro-batch's summed loss by the *minibatch's* normalizer
    (dapo: its unmasked tokens; grpo, gspo: its sequences; dr_grpo: sequences
    x max_len) makes the accumulated gradient that of the whole minibatch.
    With mu = 1 and a single minibatch the update is on-policy: rho == 1 in
    value. The module's train/eval mode is left as it is: keep dropout off
    (``policy.eval()`` still trains) so that rho is 1 where it should be.

    Args:
        policy: the model being trained (``model(ids, mask) -> logits``).
        optimizer: steps the policy's parameters, once per minibatch.
        batch: the rollout, N sequences.
        advantages: (N,) or (P, G) prompt-major, one per completion.
        mu: optimisation passes over the batch (DeepSeekMath: 1).
        minibatch_size: sequences per optimizer step.
        beta, clip_low, clip_high, loss_type: as in :func:`policy_loss`.
        temperature: the sampling temperature (scoring must match it).
        max_grad_norm: clip the global gradient norm (None: no clipping).
        ref_logp: (N, L) reference log-probs (required when beta > 0).
        old_logp: (N, L) rollout-time log-probs; computed here if None.
        microbatch_size: sequences per forward (default minibatch_size).
        max_len: "dr_grpo"'s length budget (default L).
        generator: if given, shuffle the rows each pass with it.

    Returns:
        Means over all minibatches of all passes: ``loss``, ``grad_norm``
        (before clipping); token-weighted means: ``clip_frac_low``,
        ``clip_frac_high``, ``ratio_mean``, ``approx_kl``, ``entropy`` and,
        when ref_logp is given, ``kl``; and ``optimizer_steps``.

    Raises:
        ValueError: invalid arguments or shapes.
        NonFiniteLossError: the loss or the gradient norm is NaN/inf; the
            optimizer is not stepped and the gradients are cleared.
    """
    num_rows, length = batch.num_sequences, batch.completion_length
    if not (isinstance(mu, int) and mu >= 1):
        raise ValueError(f"mu (optimisation passes per rollout) must be an int >= 1, got {mu!r}")
    if not (isinstance(minibatch_size, int) and minibatch_size >= 1):
        raise ValueError(f"minibatch_size must be an int >= 1, got {minibatch_size!r}")
    microbatch_size = minibatch_size if microbatch_size is None else microbatch_size
    if not (isinstance(microbatch_size, int) and microbatch_size >= 1):
        raise ValueError(f"microbatch_size must be an int >= 1, got {microbatch_size!r}")
    if max_grad_norm is not None and not max_grad_norm > 0:
        raise ValueError(f"max_grad_norm must be > 0 (or None for no clipping), got {max_grad_norm}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    clip_high = clip_low if clip_high is None else clip_high
    _check_loss_args(beta, clip_low, clip_high, loss_type, ref_logp is not None)
    if advantages.numel() != num_rows:
        raise ValueError(f"expected {num_rows} advantages (one per completion), got shape {tuple(advantages.shape)}")
    advantages = advantages.detach().reshape(num_rows)  # (P, G) or (N,) -> (N,), prompt-major
    for name, value in (("ref_logp", ref_logp), ("old_logp", old_logp)):
        if value is not None and tuple(value.shape) != (num_rows, length):
            raise ValueError(f"{name} must be (N, L) = {(num_rows, length)}, got {tuple(value.shape)}")
    max_len = length if max_len is None else max_len
    parameters = [p for p in policy.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError("the policy has no trainable parameters")

    if old_logp is None:  # pi_old: the policy as it was when the rollout was sampled
        old_logp = rollout_logprobs(policy, batch, temperature=temperature, chunk_size=microbatch_size)  # (N, L)
    old_logp = old_logp.detach()

    device = batch.input_ids.device
    token_keys = ["clip_frac_low", "clip_frac_high", "ratio_mean", "approx_kl", "entropy"]
    if ref_logp is not None:
        token_keys.append("kl")
    token_sums = dict.fromkeys(token_keys, 0.0)
    total_tokens = 0.0
    losses, grad_norms = [], []
    for pass_index in range(mu):
        order = torch.randperm(num_rows, generator=generator) if generator is not None else torch.arange(num_rows)
        order = order.to(device)  # (N,)
        for start in range(0, num_rows, minibatch_size):
            rows = order[start:start + minibatch_size]  # (b,)
            normalizer = loss_normalizer(batch.completion_mask[rows], loss_type, max_len)
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
                if not bool(torch.isfinite(loss)):
                    optimizer.zero_grad(set_to_none=True)
                    raise NonFiniteLossError(
                        f"non-finite GRPO loss ({loss.item()}) in pass {pass_index + 1}/{mu}, minibatch starting "
                        f"at row {start}: the optimizer was not stepped. Check the rewards and advantages for "
                        f"NaN, lower the learning rate, and resume from the last good checkpoint.")
                loss.backward()
                with torch.no_grad():
                    entropy = token_entropy(logits.detach(), temperature)  # (m, L)
                    valid = micro.completion_mask > 0  # (m, L)
                    stats["entropy"] = (torch.where(valid, entropy, torch.zeros_like(entropy)).sum()
                                        / valid.sum().clamp(min=1)).item()
                for key in token_keys:
                    token_sums[key] += stats[key] * stats["num_tokens"]
                total_tokens += stats["num_tokens"]
                minibatch_loss += loss.item()
            grad_norm = torch.nn.utils.clip_grad_norm_(
                parameters, max_grad_norm if max_grad_norm is not None else float("inf"))
            if not bool(torch.isfinite(grad_norm)):
                optimizer.zero_grad(set_to_none=True)
                raise NonFiniteLossError(
                    f"non-finite gradient norm ({grad_norm.item()}) in pass {pass_index + 1}/{mu}, minibatch "
                    f"starting at row {start}: the optimizer was not stepped.")
            optimizer.step()
            losses.append(minibatch_loss)
            grad_norms.append(grad_norm.item())

    result = {key: token_sums[key] / max(total_tokens, 1.0) for key in token_keys}
    result["loss"] = sum(losses) / len(losses)
    result["grad_norm"] = sum(grad_norms) / len(grad_norms)
    result["optimizer_steps"] = float(len(losses))
    return result
