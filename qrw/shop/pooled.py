"""Paired differences pooled over seeds: the interval ``python -m qrw.reproduce --seeds N`` judges the claims by.

Each seed s is a whole replicate of the experiment: its own world (``WorldConfig.seed``
is the run seed), hence its own n_s test queries, its own training runs. Within a
seed both arms are scored on the same queries, so the per-query paired difference
``d_sq = after_sq - before_sq`` is the unit there (:func:`qrw.shop.abtest.paired_diff_ci`);
across seeds nothing is shared.

Estimate: ``D = (1/N) sum_s m_s``, the mean over seeds of each seed's mean paired
difference ``m_s`` (every seed weighs the same, whatever its query count).

Its variance is ``Var(D) = (1/N^2) sum_s (tau^2 + v_s)``: ``tau^2`` the variance
*between* seeds (what the training seed and the world change), ``v_s = sd(d_s)^2 / n_s``
the query-sampling variance of ``m_s`` (known well from hundreds of queries). Two
estimates of it (a random-effects meta-analysis of N "studies", with equal weights):

- between: ``s_m^2 / N``, the sample variance (ddof 1) of the N seed means over N.
  Unbiased whatever tau is (each ``m_s`` already carries its query noise), but from
  N values only, hence the Student t quantile with N - 1 degrees of freedom
  (the Hartung-Knapp-Sidik-Jonkman interval; with equal weights it is the plain
  t interval over seed means);
- within: ``sum_s v_s / N^2``, the variance if the seeds did not differ at all
  (tau = 0; the "fixed-effect" variance).

Interval: ``D -/+ t_{N-1} * sqrt(max(between, within))``. The max is Knapp and
Hartung's ad-hoc modification (Roever, Knapp and Friede 2015, BMC Med Res Methodol
15:99): three seeds that happen to agree closely must not give an interval narrower
than their query noise allows. With N = 1 it is exactly ``paired_diff_ci`` (normal
quantile, ``se = sd(d) / sqrt(n)``), the single-seed interval used so far.

Why not the two-level bootstrap (resample seeds, then queries within each): with
N = 3 its variance is about ``((N-1)/N) tau^2 / N + ((2N-1)/N) mean(v) / N``: the
between-seed part shrunk by 2/3 and, with a normal-like percentile quantile instead
of t_2 = 4.30, an interval that covers about 75% of the time when seeds differ
(while counting query noise twice when they do not); ``test_pooled_coverage``
measures this rule's coverage. What it costs: few seeds buy wide intervals
(t_1 = 12.7 for two seeds, t_2 = 4.30 for three), which is what they can tell.
Numpy and ``math`` only.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from qrw.config import check
from qrw.shop.abtest import Z_95, LiftCI, paired_diff_ci


class PooledDiff(NamedTuple):
    """A paired difference pooled over seeds (module doc) and what it is made of."""

    diff: float  # D: mean over seeds of each seed's mean paired difference
    se: float  # sqrt(max(between, within))
    low: float
    high: float
    quantile: float  # t_{N-1} (N >= 2) or the normal quantile (N = 1)
    per_seed: tuple[LiftCI, ...]  # each seed's paired_diff_ci (its mean difference and per-query interval)


def student_t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with integer ``df`` >= 1, in closed form (Abramowitz and Stegun 26.7.3-4).

    With ``theta = atan(t / sqrt(df))`` and ``c = cos(theta)^2``, ``P(|T| < t)`` is
    ``(2/pi) (theta + sin(theta) cos(theta) (1 + 2/3 c + 2*4/(3*5) c^2 + ...))`` for odd df
    (the sum has (df - 1) / 2 terms; none for df = 1) and
    ``sin(theta) (1 + 1/2 c + 1*3/(2*4) c^2 + ...)`` for even df (df / 2 terms).

    >>> round(student_t_cdf(1.0, 1), 6)  # Cauchy: 1/2 + atan(1)/pi
    0.75
    >>> round(student_t_cdf(2.0, 2), 6)  # df 2: 1/2 + t / (2 sqrt(2 + t^2))
    0.908248
    """
    check(df >= 1 and int(df) == df, f"degrees of freedom must be an integer >= 1 (got {df})")
    theta = math.atan(abs(t) / math.sqrt(df))
    c = math.cos(theta) ** 2
    if df % 2:
        term, total = 1.0, 0.0
        for k in range(1, (df - 1) // 2 + 1):  # term k: prod_{j<=k} (2j) / (2j + 1) * c^k, after the leading 1
            total += term
            term *= (2 * k) / (2 * k + 1) * c
        inside = 2 / math.pi * (theta + (math.sin(theta) * math.cos(theta) * total if df > 1 else 0.0))
    else:
        term, total = 1.0, 0.0
        for k in range(1, df // 2 + 1):
            total += term
            term *= (2 * k - 1) / (2 * k) * c
        inside = math.sin(theta) * total
    return 0.5 + math.copysign(inside / 2, t)


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with integer ``df`` (bisection on :func:`student_t_cdf`, to 1e-10).

    >>> round(t_quantile(0.975, 2), 4), round(t_quantile(0.975, 10), 4)
    (4.3027, 2.2281)
    """
    check(0.5 <= p < 1, f"t_quantile takes p in [0.5, 1) (got {p})")
    low, high = 0.0, 1.0
    while student_t_cdf(high, df) < p:
        high *= 2
    while high - low > 1e-10 * max(1.0, high):
        mid = (low + high) / 2
        low, high = (mid, high) if student_t_cdf(mid, df) < p else (low, mid)
    return (low + high) / 2


def pooled_paired_diff(seeds: list[tuple[np.ndarray, np.ndarray]], z: float = Z_95) -> PooledDiff:
    """Pool one metric's paired difference over seeds: ``seeds[s] = (before values, after values)`` per query.

    Each seed's pairs are that seed's test queries under the two arms (NaN pairs
    dropped, as :func:`paired_diff_ci` does); ``z`` sets the confidence (1.96: 95%),
    turned into the t quantile at the same probability. See the module doc.

    >>> one = pooled_paired_diff([([0, 1, 1, 0], [1, 1, 1, 1])])  # one seed: paired_diff_ci
    >>> round(one.diff, 4), round(one.low, 4), round(one.high, 4)
    (0.5, -0.0658, 1.0658)
    >>> two = pooled_paired_diff([([0, 0, 0], [1, 1, 0]), ([0, 0], [0, 1])])  # seed means 2/3 and 1/2
    >>> round(two.diff, 4), round(two.quantile, 3)
    (0.5833, 12.706)
    """
    check(len(seeds) >= 1, "pooled_paired_diff needs at least one seed")
    per_seed = tuple(paired_diff_ci(before, after, z) for before, after in seeds)
    if len(per_seed) == 1:
        only = per_seed[0]
        return PooledDiff(only.lift, only.se, only.low, only.high, z, per_seed)
    n = len(per_seed)
    means = np.array([c.lift for c in per_seed])  # (N,) seed means m_s
    between = float(means.var(ddof=1)) / n
    within = sum(c.se ** 2 for c in per_seed) / n ** 2
    se = math.sqrt(max(between, within))
    quantile = t_quantile(0.5 * (1 + math.erf(z / math.sqrt(2))), n - 1)
    diff = float(means.mean())
    return PooledDiff(diff, se, diff - quantile * se, diff + quantile * se, quantile, per_seed)
