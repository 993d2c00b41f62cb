"""Offline evaluation of rewriters on held-out queries, and the simulated online A/B test.

Offline (``python -m qrw.evaluate --ckpt DIR [--baselines]``). For every
rewriter (no rewrite, the dictionary baseline, the gold rewrite, a trained
model) and every difficulty segment plus ``all``:

- ``accuracy``: share of rewrites the judge grades 2 (meaning preserved exactly;
  undefined, shown as ``-``, for "no rewrite");
- ``relevance``: share of the results page's products that are Exact for the
  query's intent (relevance@k);
- ``recall``: share of the intent's Exact products (capped at k) on the page (recall@k);
- ``ucvr``: expected purchases per user on the page (the shopper simulator);
- ``length`` (words) and ``diversity`` (share of distinct rewrites).

and, for a model trained on the relevance task, the tagger's accuracy and
macro-F1 against the judge on the split's (query, rewrite, label) pairs.
The page is ``page(q, r) = dedupe(interleave(topk(r), topk(q)))[:k]``.

Online, simulated (``python -m qrw.evaluate --ab CONTROL TREATMENT --users N``),
the paper's A/B test in miniature (:func:`ab_test`, :func:`diff_ci`):
shoppers bring test queries, are randomised to a side, see that side's page
and buy or not (``UserSimulator.sample_sessions``); we report UCVR (purchases
per user) and relevance (share of Exact products on the served page) per side,
and the lift of treatment over control with a 95% confidence interval
(difference of two means, Welch / normal approximation).

Departures from the paper: offline metrics are computed against the world's
oracle judge instead of human raters; the online test is a simulation whose
users follow ``qrw.shop.users``'s click/purchase model, not live traffic.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

from qrw.config import Parser, UserError, check, config_from_dict, resolve_device, run_main
from qrw.shop.judge import EXACT
from qrw.shop.metrics import page_grades, rewrite_metrics
from qrw.shop.shop import BASELINES, Shop
from qrw.shop.users import UserSimulator
from qrw.shop.world import World, WorldConfig

METRICS = ("accuracy", "relevance", "recall", "ucvr")
Z_95 = 1.959963984540054  # the standard normal's 0.975 quantile: two-sided 95% intervals
MAX_AB_USERS = 10_000_000  # --users cap: keeps the per-user arrays (a few bytes each) well within memory
JSON_DIGITS = 6  # floats in --json output are rounded to this many decimals (byte-stable across runs)


# ---- relevance tagging -------------------------------------------------------------------------

def confusion_matrix(labels, predicted, n_classes: int = 3) -> np.ndarray:
    """(C, C) int counts: rows are the true (judge) label, columns the predicted one.

    >>> confusion_matrix([0, 1, 2, 2], [0, 2, 2, 2]).tolist()
    [[1, 0, 0], [0, 0, 1], [0, 0, 2]]
    """
    labels, predicted = np.asarray(labels, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    check(labels.shape == predicted.shape, f"{labels.size} labels but {predicted.size} predictions")
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    return confusion


def macro_f1(confusion) -> tuple[list[float], float]:
    """Per-class F1 and their unweighted mean (macro-F1) from a (C, C) confusion (rows = truth).

    ``F1_c = 2 P_c R_c / (P_c + R_c)`` with precision ``P_c = tp / column sum``
    and recall ``R_c = tp / row sum``; a class with no true positive has F1 0
    (also when it is neither present nor predicted: it still counts in the mean,
    so a tagger that never predicts a class is penalised).
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    f1s = []
    for c in range(confusion.shape[0]):
        tp = confusion[c, c]
        if tp == 0:
            f1s.append(0.0)
            continue
        precision = tp / confusion[:, c].sum()
        recall = tp / confusion[c, :].sum()
        f1s.append(float(2 * precision * recall / (precision + recall)))
    return f1s, float(np.mean(f1s))


def tagging_metrics(rewriter, world, split: str = "test") -> dict[str, float]:
    """The relevance tagger against the judge on the split's relevance pairs.

    Accuracy, macro-F1, per-class F1, the 3x3 confusion matrix (rows: judge, columns:
    tagger) and the accuracy per kind of perturbed rewrite (``World.perturbation_kind``).
    """
    pairs = world.relevance_examples(split)
    labels = np.array([label for _, _, label in pairs])
    predicted = np.array(rewriter.tag([q for q, _, _ in pairs], [r for _, r, _ in pairs]))
    confusion = confusion_matrix(labels, predicted)
    f1s, macro = macro_f1(confusion)
    intents = {q.text: q.intent for q in world.queries[split]}
    kinds = [world.perturbation_kind(intents[q], r) for q, r, _ in pairs]
    by_kind = {}
    for kind in world.PERTURBATION_KINDS:
        rows = np.array([k == kind for k in kinds])
        if rows.any():
            by_kind[kind] = {"n": int(rows.sum()), "accuracy": float((labels[rows] == predicted[rows]).mean())}
    return {"tag_accuracy": float((labels == predicted).mean()), "tag_macro_f1": macro, "tag_f1": f1s,
            "tag_pairs": int(len(labels)), "tag_confusion": confusion.tolist(), "tag_by_kind": by_kind}


# ---- offline evaluation --------------------------------------------------------------------------

def evaluate_run(ctx: Shop, rewriter, *, name: str, split: str = "test", baselines: bool = True,
                 tagging: bool = True, n_samples: int = 8) -> dict:
    """Greedy rewrites of the split's queries by ``rewriter``, scored beside the baselines.

    Returns a JSON-ready dict: ``rows`` (rewriter name -> segment -> metric),
    with the baselines also ``vs_dictionary`` (segment -> metric -> the paired
    difference model - dictionary over the segment's queries and its 95% interval),
    ``tagging`` (when asked), a few ``samples`` (query, rewrite, gold), and every
    ``rewrites`` with its ``well_formed`` flag (in query order; not for JSON).
    """
    queries = ctx.world.queries[split]
    rewrites, well_formed = rewriter.rewrite([q.text for q in queries], return_well_formed=True)
    rows = {}
    if baselines:
        rows["no rewrite"] = ctx.score(queries, ctx.baseline_rewrites("none", queries))
        dictionary = ctx.baseline_rewrites("dictionary", queries)
        rows["dictionary"] = ctx.score(queries, dictionary)
        rows["gold"] = ctx.score(queries, ctx.baseline_rewrites("gold", queries))
    rows[name] = ctx.score(queries, rewrites)
    segments = list(ctx.world.SEGMENTS) + ["all"]
    results = {"split": split, "n_queries": len(queries), "segments": segments, "model": name, "rows": rows,
               "samples": [{"query": q.text, "rewrite": r, "gold": q.gold, "segment": q.segment}
                           for q, r in list(zip(queries, rewrites))[:n_samples]],
               "rewrites": rewrites, "well_formed": well_formed}
    if baselines:
        base = rewrite_metrics(ctx.world, ctx.engine, ctx.users, queries, dictionary, k=ctx.k)
        model = rewrite_metrics(ctx.world, ctx.engine, ctx.users, queries, rewrites, k=ctx.k)
        of_segment = np.array([q.segment for q in queries])
        results["vs_dictionary"] = {}
        for seg in segments:
            rows_in = of_segment == seg if seg != "all" else np.ones(len(queries), dtype=bool)
            if rows_in.sum() >= 2:
                results["vs_dictionary"][seg] = {
                    m: paired_diff_ci(base[m][rows_in], model[m][rows_in])._asdict() for m in METRICS}
    if tagging:
        results["tagging"] = tagging_metrics(rewriter, ctx.world, split)
    return results


def _section(config: dict, name: str) -> dict:
    section = config.get(name)
    return section if isinstance(section, dict) else {}


def _sft_tasks(config: dict) -> list[str]:
    """An SFT run's stage-1 tasks (SFTRunConfig's default, both, when the config does not say)."""
    tasks = _section(config, "run").get("tasks", "rewrite,relevance")
    return tasks.split(",") if isinstance(tasks, str) else []


def run_name(config: dict) -> str:
    """The rewriter name of a run directory's ``config.json``: "multi-task SFT", "single-task SFT", "GRPO (fusion)"."""
    if config.get("kind") == "grpo":
        return f"GRPO ({_section(config, 'rewards').get('reward', '?')})"
    return "multi-task SFT" if "relevance" in _sft_tasks(config) else "single-task SFT"


def tagger_source(config: dict) -> str | None:
    """Where the run's relevance tagger was trained: ``"sft"``, ``"sft init"`` (GRPO) or None (single-task SFT).

    SFT runs train the tagger when ``config["run"]["tasks"]`` includes ``relevance``.
    GRPO trains only the rewrite task, but starts from an SFT run and shares its
    weights, so its tagger is the SFT init's (drifted by the policy updates): we
    tag with it anyway and say so.
    """
    if config.get("kind") == "grpo":
        return "sft init"
    return "sft" if "relevance" in _sft_tasks(config) else None


def _cell(value: float | None, metric: str) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return f"{value:.3f}" if metric != "length" else f"{value:.1f}"


def format_table(rows: dict[str, dict[str, dict[str, float]]], segments: list[str],
                 metrics: tuple[str, ...] = METRICS) -> str:
    """A fixed-width table: one line per (segment, rewriter), one column per metric."""
    name_w = max(12, *(len(n) for n in rows))
    header = f"{'segment':<8} {'rewriter':<{name_w}} " + " ".join(f"{m:>9}" for m in metrics)
    lines = [header, "-" * len(header)]
    for seg in segments:
        for name, summary in rows.items():
            row = summary.get(seg, {})
            lines.append(f"{seg:<8} {name:<{name_w}} " + " ".join(f"{_cell(row.get(m), m):>9}" for m in metrics))
    return "\n".join(lines)


def format_summary(results: dict, title: str = "") -> str:
    """The human-readable summary of :func:`evaluate_run`'s results."""
    out = [f"== {title or results.get('model', '')}: {results['n_queries']} {results['split']} queries =="]
    out.append(format_table(results["rows"], results["segments"], METRICS + ("length", "diversity")))
    if results.get("vs_dictionary"):
        out.append(f"{results['model']} minus dictionary, paired over the same queries (95% CI; * excludes 0):")
        for seg, diffs in results["vs_dictionary"].items():
            out.append(f"  {seg:<6} " + "  ".join(
                f"{m} {d['lift']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]{'*' if d['low'] > 0 or d['high'] < 0 else ''}"
                for m, d in diffs.items()))
    if "tagging" in results:
        t = results["tagging"]
        out.append(f"relevance tagger vs judge ({t['tag_pairs']} pairs): accuracy {t['tag_accuracy']:.3f} | "
                   f"macro-F1 {t['tag_macro_f1']:.3f}")
        if t.get("tag_by_kind"):
            out.append("  accuracy by kind of rewrite: " + ", ".join(
                f"{kind} {v['accuracy']:.2f} ({v['n']})" for kind, v in t["tag_by_kind"].items()))
    if results.get("samples"):
        out.append("samples (query -> rewrite | gold):")
        out += [f"  {s['query']!r} -> {s['rewrite']!r} | {s['gold']!r}" for s in results["samples"][:5]]
    return "\n".join(out)


# ---- the simulated online A/B test -------------------------------------------------------------

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


def compare_rewrites(ctx: Shop, queries, before: list[str], after: list[str],
                     extra: dict[str, tuple] | None = None) -> dict[str, dict[str, float]]:
    """Paired before/after differences on the same queries: metric -> {before, after, diff, low, high}.

    Metrics: accuracy, relevance, recall, ucvr (per query, from :func:`qrw.shop.metrics.rewrite_metrics`)
    and any ``extra`` ``name -> (before values, after values)`` (e.g. the fused reward).
    """
    a = rewrite_metrics(ctx.world, ctx.engine, ctx.users, queries, before, k=ctx.k)
    b = rewrite_metrics(ctx.world, ctx.engine, ctx.users, queries, after, k=ctx.k)
    pairs = {m: (a[m], b[m]) for m in METRICS}
    pairs.update(extra or {})
    out = {}
    for name, (x, y) in pairs.items():
        ci = paired_diff_ci(x, y)
        out[name] = {"before": float(np.nanmean(x)), "after": float(np.nanmean(y)), "diff": ci.lift,
                     "low": ci.low, "high": ci.high}
    return out


def format_comparison(comparison: dict[str, dict[str, float]], before: str, after: str) -> str:
    """One line per metric: before, after, difference and its paired 95% interval (* when it excludes 0)."""
    lines = [f"{'metric':<10} {before:>12} {after:>14} {'difference':>11}  paired 95% CI"]
    for name, c in comparison.items():
        star = " *" if c["low"] > 0 or c["high"] < 0 else ""
        lines.append(f"{name:<10} {c['before']:>12.4f} {c['after']:>14.4f} {c['diff']:>+11.4f}  "
                     f"[{c['low']:+.4f}, {c['high']:+.4f}]{star}")
    return "\n".join(lines)


def _sessions(users: UserSimulator, pages: np.ndarray, grades: np.ndarray, rows: np.ndarray,
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


def ab_test(users: UserSimulator, control_pages, control_grades, treatment_pages, treatment_grades,
            n_users: int, rng: np.random.Generator, z: float = Z_95) -> dict:
    """Simulate an online A/B test and compare the two sides (the pure core of ``--ab``).

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

    query_of_user = rng.integers(shape[0], size=n_users)  # (N,) row of each shopper's query
    treated = np.zeros(n_users, dtype=bool)
    treated[rng.permutation(n_users)[: n_users // 2]] = True  # (N,) complete randomisation
    out: dict = {"users": int(n_users), "z": z}
    samples: dict[str, dict[str, np.ndarray]] = {}
    for side, members in (("control", ~treated), ("treatment", treated)):
        rows = query_of_user[members]  # (n_side,)
        exact_share = (grades[side] == EXACT).mean(axis=1)  # (Q,) relevance of each query's page
        purchases = _sessions(users, pages[side], grades[side], rows, rng)  # (n_side,)
        samples[side] = {"ucvr": purchases, "relevance": exact_share[rows]}
        out[side] = {"users": int(len(rows)), "ucvr": float(purchases.mean()),
                     "relevance": float(exact_share[rows].mean()),
                     "expected_ucvr": float(users.expected_purchases(pages[side], grades[side]).mean()),
                     "expected_relevance": float(exact_share.mean())}
    out["lift"] = {}
    for metric in ("ucvr", "relevance"):
        ci = diff_ci(samples["control"][metric], samples["treatment"][metric], z)
        base = out["control"][metric]
        expected = out["treatment"][f"expected_{metric}"] - out["control"][f"expected_{metric}"]
        out["lift"][metric] = {"absolute": ci.lift, "relative": ci.lift / base if base > 0 else None,
                               "se": ci.se, "ci_low": ci.low, "ci_high": ci.high, "expected": expected}
    return out


def format_ab(result: dict, control: str, treatment: str, n_queries: int, seed: int) -> str:
    """The human-readable report of :func:`ab_test`."""
    c, t = result["control"], result["treatment"]
    confidence = 2 * (0.5 * (1 + math.erf(result["z"] / math.sqrt(2)))) - 1
    lines = [f"== simulated A/B test: control {control} vs treatment {treatment} ==",
             f"{result['users']:,} shoppers (query drawn uniformly from {n_queries} test queries, sides by complete "
             f"randomisation), seed {seed}",
             f"users: control {c['users']:,} | treatment {t['users']:,}",
             f"{'metric':<10} {'control':>9} {'treatment':>9} {'lift':>9} {'rel. lift':>9}  "
             f"{f'{confidence:.0%} CI of lift':<20} {'expected lift':>13}"]
    for metric in ("ucvr", "relevance"):
        lift = result["lift"][metric]
        relative = "-" if lift["relative"] is None else f"{lift['relative']:+.1%}"
        interval = f"[{lift['ci_low']:+.4f}, {lift['ci_high']:+.4f}]"
        verdict = "" if lift["ci_low"] <= 0 <= lift["ci_high"] else " *"
        lines.append(f"{metric:<10} {c[metric]:>9.4f} {t[metric]:>9.4f} {lift['absolute']:>+9.4f} {relative:>9}  "
                     f"{interval:<20} {lift['expected']:>+13.4f}{verdict}")
    lines.append("* = the interval excludes 0. CI: difference of means, Welch standard error, normal approximation. "
                 "expected lift: the closed-form population value the test estimates.")
    return "\n".join(lines)


# ---- deterministic JSON ------------------------------------------------------------------------

def jsonable(obj, digits: int = JSON_DIGITS):
    """``obj`` with floats rounded to ``digits`` decimals, NaN/inf as None, numpy scalars and tuples as JSON types."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, digits) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return round(value, digits) + 0.0 if math.isfinite(value) else None  # + 0.0: no "-0.0"
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist(), digits)
    return obj


def to_json(obj) -> str:
    """Deterministic JSON text: sorted keys, rounded floats, no NaN (see :func:`jsonable`)."""
    return json.dumps(jsonable(obj), sort_keys=True, indent=1, ensure_ascii=False)


# ---- command line ------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    p = Parser(prog="python -m qrw.evaluate",
               description="Evaluate a trained rewriter offline (--ckpt DIR), or run a simulated online A/B test "
                           "(--ab CONTROL TREATMENT).",
               epilog="examples:\n"
                      "  python -m qrw.evaluate --ckpt runs/sft --baselines          # offline table\n"
                      "  python -m qrw.evaluate --ckpt runs/sft --baselines --json   # the same, as JSON\n"
                      "  python -m qrw.evaluate --ab none runs/grpo --users 20000    # A/B: no rewrite vs GRPO\n"
                      "  python -m qrw.evaluate --ab none gold --ckpt runs/sft       # baselines in runs/sft's world")
    p.add_argument("--ckpt", default=None, metavar="DIR",
                   help="run directory to evaluate; with --ab, the run whose world a baselines-only test "
                        "uses (default: the default world of train_sft.py)")
    p.add_argument("--baselines", action="store_true", help="offline: also score no rewrite, dictionary and gold")
    p.add_argument("--ab", nargs=2, default=None, metavar=("CONTROL", "TREATMENT"),
                   help=f"simulated A/B test; each side a run directory or a baseline ({', '.join(BASELINES)}; "
                        "a baseline name wins over a directory of that name: write ./gold for the directory)")
    p.add_argument("--users", type=int, default=None,
                   help="--ab: number of simulated shoppers, split 50/50 (default: 20000)")
    p.add_argument("--seed", type=int, default=0, help="--ab: seed of the shoppers' queries, sides and sessions")
    p.add_argument("--split", default="test", choices=["test", "val"], help="queries to evaluate on")
    p.add_argument("--k", type=int, default=10, help="results page size (relevance@k, recall@k)")
    p.add_argument("--json", action="store_true",
                   help="print deterministic JSON (sorted keys, floats rounded to 6 decimals) instead of tables")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    return p.parse_args(argv)


def _read_run_config(run_dir: Path) -> dict:
    """A run directory's config.json (one-line UserError when missing or not a qrw run config)."""
    from qrw.checkpoint import CONFIG_NAME, read_json

    if not run_dir.is_dir():
        raise UserError(f"no run directory at {run_dir} (train one with `python train_sft.py`)")
    config = read_json(run_dir / CONFIG_NAME, "run config")
    if not isinstance(config, dict) or not isinstance(config.get("world"), dict):
        raise UserError(f"{run_dir / CONFIG_NAME} is not a qrw run config (no world section)")
    return config


def _world_diff(a: dict, b: dict) -> str:
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return ", ".join(f"{k} {a.get(k)} vs {b.get(k)}" for k in keys)


def offline_main(args: argparse.Namespace) -> int:
    """``--ckpt DIR``: the run's greedy rewrites on the split, with --baselines beside them."""
    from qrw.runs import load_run

    device = resolve_device(args.device)
    loaded = load_run(args.ckpt, device)
    name = run_name(loaded.config)
    source = tagger_source(loaded.config)
    ctx = Shop(loaded.world, k=args.k)
    results = evaluate_run(ctx, loaded.rewriter(device), name=name, split=args.split, baselines=args.baselines,
                           tagging=source is not None)
    results.pop("rewrites")
    results.pop("well_formed")
    results.update(kind=loaded.config.get("kind"), k=args.k, tagger=source)
    if args.json:
        print(to_json(results))
        return 0
    print(format_summary(results, title=f"{name} ({loaded.path})"))
    if source == "sft init":
        print("(GRPO does not train the tagger: it is the SFT init's, sharing weights with the updated policy)")
    elif source is None:
        print("(no tagging metrics: this run was trained without the relevance task)")
    return 0


def ab_main(args: argparse.Namespace) -> int:
    """``--ab CONTROL TREATMENT``: both sides' pages for every query of the split, then :func:`ab_test`."""
    from qrw.runs import load_run

    n_users = 20_000 if args.users is None else args.users
    check(4 <= n_users <= MAX_AB_USERS, f"--users must be between 4 and {MAX_AB_USERS:,} (got {n_users})")
    check(args.seed >= 0, f"--seed must be >= 0 (got {args.seed})")
    specs = list(args.ab)
    # Same world for both sides (and --ckpt), checked from config.json before any model is loaded.
    worlds: list[tuple[str, dict]] = []  # (run directory, its world config)
    for spec in specs:
        if spec in BASELINES:
            continue
        if not Path(spec).is_dir():
            raise UserError(f"--ab: {spec!r} is neither a run directory nor a baseline ({', '.join(BASELINES)})")
        worlds.append((spec, _read_run_config(Path(spec))["world"]))
    if args.ckpt is not None:
        worlds.append((args.ckpt, _read_run_config(Path(args.ckpt))["world"]))
    for spec, world in worlds[1:]:
        if world != worlds[0][1]:
            raise UserError(f"--ab: {worlds[0][0]} and {spec} come from different worlds "
                            f"({_world_diff(worlds[0][1], world)}); an A/B test needs one world")
    device = resolve_device(args.device)
    try:
        world_config = config_from_dict(WorldConfig, worlds[0][1]) if worlds else WorldConfig()
    except TypeError as e:  # a hand-edited config.json: a value of the wrong type
        raise UserError(f"{worlds[0][0]}: config.json has an invalid world section ({e})") from None
    world = World(world_config)
    ctx = Shop(world, k=args.k)
    queries = world.queries[args.split]
    texts = list(dict.fromkeys(q.text for q in queries))  # each side rewrites a distinct query once
    sides, labels = {}, {}
    for role, spec in zip(("control", "treatment"), specs):
        if spec in BASELINES:
            rewrites = ctx.baseline_rewrites(spec, queries)
            labels[role] = spec
        else:
            loaded = load_run(spec, device)
            by_text = dict(zip(texts, loaded.rewriter(device).rewrite(texts)))
            rewrites = [by_text[q.text] for q in queries]
            labels[role] = f"{run_name(loaded.config)} [{Path(spec).name}]"
        pages = ctx.engine.pages([q.text for q in queries], rewrites, args.k)  # (Q, k)
        sides[role] = (pages, page_grades(world.judge, [q.intent for q in queries], pages))
    result = ab_test(ctx.users, *sides["control"], *sides["treatment"], n_users, np.random.default_rng(args.seed))
    if args.json:
        print(to_json({"control": labels["control"], "treatment": labels["treatment"], "split": args.split,
                       "n_queries": len(queries), "k": args.k, "seed": args.seed, "result": result}))
    else:
        print(format_ab(result, labels["control"], labels["treatment"], len(queries), args.seed))
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    check(1 <= args.k <= 100, f"--k must be between 1 and 100 (got {args.k})")
    if args.ab is not None:
        check(not args.baselines, "--baselines applies to the offline evaluation (--ckpt without --ab)")
        return ab_main(args)
    check(args.ckpt is not None, "give --ckpt DIR (offline evaluation) or --ab CONTROL TREATMENT (A/B test)")
    check(args.users is None, "--users applies to the A/B test (--ab CONTROL TREATMENT)")
    return offline_main(args)


if __name__ == "__main__":
    run_main(main)
