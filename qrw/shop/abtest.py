"""The simulated online A/B test and the confidence intervals it and the offline comparisons use.

The paper's A/B test in miniature (:func:`ab_test`): shoppers bring test
queries, are randomised to a side, see that side's page and buy or not
(``UserSimulator.sample_sessions``); we report UCVR (purchases per user) and
relevance (share of Exact products on the served page) per side, and the lift
of treatment over control with a 95% confidence interval (:func:`diff_ci`:
difference of two means, Welch / normal approximation). Offline comparisons of
two rewriters on the same queries use the paired interval (:func:`paired_diff_ci`).

Departure from the paper: the test is a simulation whose users follow
:mod:`qrw.shop.users`'s click/purchase model, not live traffic. Numpy only.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from qrw.config import check
from qrw.shop.judge import EXACT
from qrw.shop.users import UserSimulator

Z_95 = 1.959963984540054  # the standard normal's 0.975 quantile: two-sided 95% intervals
MAX_AB_USERS = 10_000_000  # cap on shoppers: keeps the per-user arrays (a few bytes each) well within memory
AB_METRICS = ("ucvr", "relevance")  # what the A/B test measures per shopper


class LiftCI(NamedTuple):
    """Absolute lift ``mean(treatment) - mean(control)``, its standard error and confidence interval."""

    lift: float
    se: float
    low: float
    high: float


def diff_ci(control, treatment, z: float = Z_95) -> LiftCI:
    """Confidence interval of the difference of two means (Welch's unpooled standard error, normal quantile).

    ``lift = mean(t) - mean(c)``, ``se = sqrt(s_t^2 / n_t + s_c^2 / n_c)`` with
    sample variances (ddof = 1), interval ``lift -/+ z * se`` (z = 1.96: 95%).

    Assumptions: the two samples are independent, each of i.i.d. draws with finite
    variance, and large enough for the central limit theorem to make ``lift``
    normal (for a 0/1 outcome with rate p, roughly ``n p >= 10`` and
    ``n (1 - p) >= 10`` per side). The normal quantile replaces Welch's
    t quantile (Welch-Satterthwaite degrees of freedom), which it matches to
    about 1% from a few hundred users per side; with tiny samples the interval
    is somewhat too narrow.

    >>> diff_ci([0, 1, 1, 0], [1, 1, 1, 0, 1])  # doctest: +ELLIPSIS
    LiftCI(lift=0.3..., se=0.3511..., low=-0.3883..., high=0.9883...)
    """
    control = np.asarray(control, dtype=np.float64)
    treatment = np.asarray(treatment, dtype=np.float64)
    check(control.ndim == 1 and treatment.ndim == 1, "diff_ci needs two 1-D samples")
    check(len(control) >= 2 and len(treatment) >= 2,
          f"diff_ci needs >= 2 values per side (got {len(control)} control, {len(treatment)} treatment)")
    lift = float(treatment.mean() - control.mean())
    se = math.sqrt(treatment.var(ddof=1) / len(treatment) + control.var(ddof=1) / len(control))
    return LiftCI(lift, se, lift - z * se, lift + z * se)


def paired_diff_ci(before, after, z: float = Z_95) -> LiftCI:
    """Confidence interval of ``mean(after - before)`` for paired per-query values (NaN pairs dropped).

    The same queries scored under two rewriters: the standard error is that of
    the mean per-query difference, ``sd(after - before) / sqrt(n)``, far smaller
    than :func:`diff_ci`'s unpaired one when both rewriters agree on most queries.

    >>> paired_diff_ci([0, 1, 1, 0], [1, 1, 1, 1])  # doctest: +ELLIPSIS
    LiftCI(lift=0.5, se=0.288..., low=-0.065..., high=1.065...)
    """
    before = np.asarray(before, dtype=np.float64)
    after = np.asarray(after, dtype=np.float64)
    check(before.shape == after.shape and before.ndim == 1, "paired_diff_ci needs two 1-D samples of one length")
    diff = (after - before)[~(np.isnan(before) | np.isnan(after))]
    check(len(diff) >= 2, "paired_diff_ci needs >= 2 complete pairs")
    lift = float(diff.mean())
    se = float(diff.std(ddof=1) / math.sqrt(len(diff)))
    return LiftCI(lift, se, lift - z * se, lift + z * se)


# ---- the simulated online A/B test -------------------------------------------------------------

def ab_test(users: UserSimulator, control_pages, control_grades, treatment_pages, treatment_grades,
            n_users: int, rng: np.random.Generator, z: float = Z_95) -> dict:
    """Simulate an online A/B test and compare the two sides (the pure core of ``python -m qrw.evaluate --ab``).

    Args:
        users: the shopper simulator (``sample_sessions``, ``expected_purchases``).
        control_pages, treatment_pages: (Q, k) int64 result pages, row q = the page each
            side serves for query q of the population (-1 = empty slot).
        control_grades, treatment_grades: (Q, k) product grades of those pages for
            query q's true intent (``qrw.shop.metrics.page_grades``).
        n_users: shoppers in the test (>= 4, so that each side has >= 2).
        rng: the only source of randomness; the same seed gives the same result.
        z: normal quantile of the interval (1.96: 95%).

    The experiment, in draw order: each shopper brings a query drawn uniformly from
    the Q rows (with replacement); shoppers are split by complete randomisation
    (a random permutation gives ``n_users // 2`` to treatment, the rest to control);
    each shopper has one session on their side's page for their query (control's
    sessions first, then treatment's). Per shopper we record ``purchase`` (0/1:
    UCVR is its mean) and ``relevance`` (share of the k slots holding an Exact
    product; empty slots count as not relevant).

    Statistics, per metric (:func:`diff_ci`): absolute lift = treatment mean -
    control mean, 95% interval by Welch's standard error and the normal
    approximation; relative lift = absolute / control mean (None when the
    control mean is 0; no interval). Why it is valid here: shoppers are i.i.d.
    (independent query draws and sessions, no interference between them) and
    the assignment is independent of them, so each side is an i.i.d. sample of
    its own size. The interval targets the lift over *this* query mix (uniform
    over the Q queries), reported as ``expected``: the difference of the
    population means computed in closed form, which a correct interval covers
    95% of the time. The two metrics are tested separately (no multiple-testing
    correction), at a fixed sample size (no peeking).

    Returns ``{"users", "z", "control": side, "treatment": side, "lift": {metric: lift}}``
    with ``side = {"users", "ucvr", "relevance", "expected_ucvr", "expected_relevance"}``
    and ``lift = {"absolute", "relative", "se", "ci_low", "ci_high", "expected"}``.
    """
    pages, grades = _checked_sides(n_users, control_pages, control_grades, treatment_pages, treatment_grades)
    query_of_user, treated = assign_shoppers(n_users, pages["control"].shape[0], rng)
    out: dict = {"users": int(n_users), "z": z}
    samples: dict[str, dict[str, np.ndarray]] = {}
    for side, members in (("control", ~treated), ("treatment", treated)):
        out[side], samples[side] = _run_side(users, pages[side], grades[side], query_of_user[members], rng)
    out["lift"] = {metric: _lift(samples, out, metric, z) for metric in AB_METRICS}
    return out


def _checked_sides(n_users, control_pages, control_grades, treatment_pages, treatment_grades):
    """``({side: (Q, k) pages}, {side: (Q, k) grades})`` after checking the shopper count and the shapes."""
    check(isinstance(n_users, (int, np.integer)) and n_users >= 4,
          f"--users must be >= 4 (at least 2 shoppers per side; got {n_users})")
    check(n_users <= MAX_AB_USERS, f"--users must be <= {MAX_AB_USERS:,} (got {n_users:,})")
    pages = {"control": np.asarray(control_pages), "treatment": np.asarray(treatment_pages)}
    grades = {"control": np.asarray(control_grades), "treatment": np.asarray(treatment_grades)}
    shape = pages["control"].shape
    check(len(shape) == 2 and shape[0] >= 1 and shape[1] >= 1, "pages must be (Q, k) with Q, k >= 1")
    for side in ("control", "treatment"):
        check(pages[side].shape == shape and grades[side].shape == shape,
              f"every pages/grades array must have the same (Q, k) shape {shape}")
    return pages, grades


def assign_shoppers(n_users: int, n_queries: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each shopper's query row, drawn uniformly with replacement, then the sides by complete randomisation.

    Returns ``(query_of_user (N,) int, treated (N,) bool)``: exactly ``n_users // 2`` shoppers are treated.
    """
    query_of_user = rng.integers(n_queries, size=n_users)  # (N,) row of each shopper's query
    treated = np.zeros(n_users, dtype=bool)
    treated[rng.permutation(n_users)[: n_users // 2]] = True  # (N,) complete randomisation
    return query_of_user, treated


def _run_side(users: UserSimulator, pages: np.ndarray, grades: np.ndarray, rows: np.ndarray,
              rng: np.random.Generator) -> tuple[dict, dict[str, np.ndarray]]:
    """One side's summary (:func:`ab_test`'s ``side``) and its per-shopper samples of each metric."""
    exact_share = (grades == EXACT).mean(axis=1)  # (Q,) relevance of each query's page
    purchases = sample_purchases(users, pages, grades, rows, rng)  # (n_side,)
    summary = {"users": int(len(rows)), "ucvr": float(purchases.mean()),
               "relevance": float(exact_share[rows].mean()),
               "expected_ucvr": float(users.expected_purchases(pages, grades).mean()),
               "expected_relevance": float(exact_share.mean())}
    return summary, {"ucvr": purchases, "relevance": exact_share[rows]}


def _lift(samples: dict[str, dict[str, np.ndarray]], out: dict, metric: str, z: float) -> dict:
    """:func:`ab_test`'s ``lift`` of one metric: the interval of the sample difference and the closed-form value."""
    ci = diff_ci(samples["control"][metric], samples["treatment"][metric], z)
    base = out["control"][metric]
    expected = out["treatment"][f"expected_{metric}"] - out["control"][f"expected_{metric}"]
    return {"absolute": ci.lift, "relative": ci.lift / base if base > 0 else None,
            "se": ci.se, "ci_low": ci.low, "ci_high": ci.high, "expected": expected}


def sample_purchases(users: UserSimulator, pages: np.ndarray, grades: np.ndarray, rows: np.ndarray,
                     rng: np.random.Generator, chunk_slots: int = 1 << 22) -> np.ndarray:
    """(len(rows),) purchases (0/1) of one sampled session per shopper on ``pages[rows]``.

    Shoppers are simulated in chunks of about ``chunk_slots`` page slots (bounded
    memory); the chunking depends only on the shapes, so results stay seeded.
    """
    chunk = max(1, chunk_slots // pages.shape[1])
    purchases = np.zeros(len(rows), dtype=np.int8)
    for start in range(0, len(rows), chunk):
        idx = rows[start:start + chunk]
        _, purchases[start:start + chunk] = users.sample_sessions(pages[idx], grades[idx], rng)
    return purchases
