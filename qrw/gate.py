"""The serving gate, evaluated: its threshold chosen on validation data, its cost and what it stops.

The gate (the relevance task at serving time, :meth:`qrw.rewriter.Rewriter.serve`)
serves a rewrite only when a tagger vouches for it; otherwise the query is
searched alone. :func:`choose_gate_threshold` picks the threshold on validation
data and :func:`evaluate_gate` adds to :func:`qrw.scorecard.evaluate_run`'s
results the split's metrics with the gate on, their paired difference with the
gate off, and the share of out-of-domain queries that still get a rewrite
served, off and on, for two sets (:data:`OOD_SETS`): the out-of-domain searches
the shop's logs hold (:meth:`qrw.shop.shop.Shop.logged_ood_queries`; the same
nouns recur, and the tagger and the shop's vocabulary may have seen them) and
queries of nouns the logs never hold (:mod:`qrw.shop.ood`'s val / test nouns).

With a query check (:data:`GATE_QUERY_CHECKS`) the gate reads the query too,
from the shop's observed side only (serving is production): no rewrite for a
query in which the dictionary fit on the logs reads no product (``"dictionary"``,
:meth:`qrw.shop.shop.Shop.reads_product`) or that has a word the shop has never
seen (``"vocabulary"``, :meth:`qrw.shop.shop.Shop.knows_query`). Both need the
shop, which :class:`~qrw.rewriter.Rewriter` does not hold: the commands
(``python -m qrw.evaluate``, ``python -m qrw.rewrite``) apply them.
"""

from __future__ import annotations

import math

import numpy as np

from qrw.config import check
from qrw.rewriter import apply_gate
from qrw.shop.abtest import paired_diff_ci
from qrw.shop.metrics import rewrite_metrics
from qrw.shop.shop import UNSEEN, Shop


GATE_TARGET = 0.05  # default: share of out-of-domain validation queries the chosen threshold may serve a rewrite
OOD_QUERIES = 300   # default: out-of-domain queries per split and set (val to choose the threshold, test to measure)
# The out-of-domain sets the gate is chosen on (val) and measured on (test): "logged", the out-of-domain searches the
# shop's logs hold (qrw.shop.shop.Shop.logged_ood_queries: the same nouns recur; the tagger and the vocabulary may
# have seen them), and "unseen", nouns the logs never hold (qrw.shop.ood's val / test nouns).
OOD_SETS = ("logged", "unseen")
# Paired on-minus-off differences of the gate, per query over every query: the page metrics, and whether an
# irrelevant (judge grade 0) rewrite was served. Accuracy is not paired: with the gate on it is the accuracy of
# the served rewrites only (a gated query has no rewrite, as "no rewrite" has none), a different population.
GATE_DIFFS = ("relevance", "recall", "ucvr", "irrelevant_served")
# The gate's query check: "none" (the tagger alone); "dictionary": a rewrite is served only for a query in which the
# dictionary fit on the shop's logs reads a catalog category or brand (qrw.shop.shop.Shop.reads_product);
# "vocabulary": only for a query whose every word the shop knows, one typo forgiven in long words
# (qrw.shop.shop.Shop.knows_query).
GATE_QUERY_CHECKS = ("none", "dictionary", "vocabulary")
QUERY_CHECK_TEXT = {"dictionary": "the dictionary fit on the shop's logs reads a catalog category or brand in the "
                                  "query",
                    "vocabulary": "the shop knows every word of the query (its titles, logs, training queries and "
                                  "mined pairs; one typo forgiven from 5 letters)"}


def query_check_passes(ctx: Shop, query_check: str, texts: list[str]) -> list[bool]:
    """Per query, whether it passes the gate's ``query_check`` (:data:`GATE_QUERY_CHECKS`)."""
    check(query_check in GATE_QUERY_CHECKS,
          f"the gate's query check must be one of {', '.join(GATE_QUERY_CHECKS)} (got {query_check!r})")
    if query_check == "none":
        return [True] * len(texts)
    return ctx.reads_product(texts) if query_check == "dictionary" else ctx.knows_query(texts)


def choose_gate_threshold(ood_scores, target: float = GATE_TARGET) -> float:
    """The smallest threshold that serves a rewrite to at most ``target`` of the out-of-domain queries.

    Criterion: a rewrite is served when its score is ``> t``, so the share of
    queries served, out-of-domain and in-domain alike, can only fall as ``t``
    rises. Among the thresholds that keep the out-of-domain (validation) share
    at or below ``target``, the smallest serves the most in-domain rewrites
    (bound the false alarms, keep the most of the rest). It is the
    ``(m + 1)``-th largest out-of-domain score, ``m = floor(target * n)``:
    exactly the scores above it are served, at most ``m`` of them (fewer with
    ties), and any lower threshold serves that score too. In-domain scores do
    not move this choice; report their served share beside it.

    >>> choose_gate_threshold([0.1, 0.9, 0.3, 0.8, 0.2], target=0.2)  # m = 1: only 0.9 stays above
    0.8
    """
    scores = np.sort(np.asarray(ood_scores, dtype=np.float64))[::-1]  # (n,) largest first
    check(scores.ndim == 1 and len(scores) >= 1, "choose_gate_threshold needs at least one out-of-domain score")
    check(bool(np.all(np.isfinite(scores))), "gate scores must be finite")
    check(0.0 <= target < 1.0, f"the out-of-domain target share must be in [0, 1) (got {target})")
    m = math.floor(target * len(scores) + 1e-9)  # the served count allowed (1e-9: 0.05 * 300 is 15.000000000000002)
    return float(scores[m])


def _served_share(served: list) -> float:
    return float(np.mean([r is not None for r in served])) if served else float("nan")


def evaluate_gate(ctx: Shop, rewriter, results: dict, *, threshold: float | str, target: float = GATE_TARGET,
                  n_ood: int = OOD_QUERIES, n_samples: int = 5, judge=None, score: str = "equivalent",
                  judge_name: str = "frozen SFT init's tagger (the reward's relevance model)",
                  query_check: str = "none") -> dict:
    """The serving gate on :func:`evaluate_run`'s ``results`` (with its ``rewrites``), added to them in place.

    ``judge``: the model whose tagger scores the rewrites (default ``rewriter``'s own);
    ``score``: what it thresholds, P(equivalent) or 1 - P(irrelevant)
    (:meth:`qrw.rewriter.Rewriter.gate_scores`).
    For a GRPO run pass its frozen SFT init, the relevance model of its reward: the
    policy's updates move the tagger it shares weights with, uncalibrating it.
    ``judge_name``: what ``judge`` is, for the report.
    ``query_check`` (:data:`GATE_QUERY_CHECKS`, :func:`query_check_passes`): a query
    that fails it (``"dictionary"``: the shop reads no product in it;
    ``"vocabulary"``: it has a word the shop does not know) gets score 0, never
    served; the threshold is then chosen, and the gate measured, on these scores
    (``ood`` and ``in_domain`` report the share of queries the check passes).

    ``threshold``: a number in [0, 1], or ``"auto"``: chosen on validation data,
    the largest of :func:`choose_gate_threshold`'s picks on each of the
    :data:`OOD_SETS` of val (so that each serves at most ``target``), with the
    served share of the in-domain val rewrites reported beside it (``auto``
    needs ``results`` on the test split: it does not measure on what it chose on).
    ``n_ood``: queries per out-of-domain set and split (the logged set may hold fewer).

    Adds ``rows["<model> + gate"]`` (the split scored with gated rewrites: the
    page metrics over every query, accuracy over the served rewrites) and
    ``results["gate"]``: ``threshold``, ``score``, ``chosen`` (the val figures
    when ``auto``), ``in_domain`` (served share per segment, the paired
    on-minus-off differences of :data:`GATE_DIFFS` with 95% intervals, the
    share of irrelevant rewrites served off and on, and ``by_grade``: per judge
    grade of the rewrite, how many and the share served: how well the tagger
    tells the rewrites apart), ``ood`` (the split's out-of-domain queries of
    nouns the logs never hold: served share off and on, a few samples) and
    ``ood_logged`` (the same for the split's half of the out-of-domain searches
    the logs hold, and ``served_on_traffic``: the served share weighted by how
    often each was searched). ``chosen`` holds the val shares of both
    (``ood_served``, ``ood_logged_served``) and each set's ``thresholds``.
    Returns ``results["gate"]``.
    """
    split, name = results["split"], results["model"]
    queries = ctx.world.queries[split]
    scorer = rewriter if judge is None else judge
    query_check_passes(ctx, query_check, [])  # a bad name fails here, before any work

    def gate_scores(texts: list[str], rewrites: list[str]) -> tuple[list[float], float]:
        """The tagger's scores, 0 where the query fails the query check; and the share that passes it."""
        scores, passes = scorer.gate_scores(texts, rewrites, score), query_check_passes(ctx, query_check, texts)
        return [s if ok else 0.0 for s, ok in zip(scores, passes)], float(np.mean(passes)) if passes else 1.0

    def ood_report(texts: list[str], at: str) -> dict:
        """One set of out-of-domain queries: served share off and on, the query check's pass share, samples."""
        if not texts:
            return {"split": at, "n": 0, "served_off": float("nan"), "served_on": float("nan"),
                    "query_passed": float("nan"), "samples": [], "scores": []}
        rewrites_ = rewriter.rewrite(texts)
        scores_, passed_ = gate_scores(texts, rewrites_)
        served_ = apply_gate(rewrites_, scores_, threshold) if threshold != "auto" else rewrites_
        return {"split": at, "n": len(texts), "served_off": _served_share(rewrites_),
                "served_on": _served_share(served_), "query_passed": passed_, "scores": scores_,
                "samples": [{"query": q, "rewrite": r, "score": s_, "served": g is not None}
                            for q, r, s_, g in list(zip(texts, rewrites_, scores_, served_))[:n_samples]]}

    def ood_sets(at: str) -> dict[str, list[str]]:
        """:data:`OOD_SETS` of split ``at``: the logged searches' half, and nouns the logs never hold."""
        return {"logged": ctx.logged_ood_queries(at, n_ood), "unseen": ctx.ood_queries(at, n_ood)}

    chosen = None
    if threshold == "auto":
        check(split == "test", "--gate auto chooses the threshold on val: evaluate it on the test split")
        val = {kind: ood_report(texts, "val") for kind, texts in ood_sets("val").items()}
        thresholds = {kind: choose_gate_threshold(v["scores"], target) for kind, v in val.items() if v["n"]}
        threshold = max(thresholds.values())
        val_texts = [q.text for q in ctx.world.queries["val"]]
        in_scores, _ = gate_scores(val_texts, rewriter.rewrite(val_texts))

        def share(scores_) -> float:
            return float(np.mean(np.asarray(scores_) > threshold)) if len(scores_) else float("nan")
        chosen = {"split": "val", "target": target, "thresholds": thresholds,
                  "n_ood": val["unseen"]["n"], "ood_served": share(val["unseen"]["scores"]),
                  "n_ood_logged": val["logged"]["n"], "ood_logged_served": share(val["logged"]["scores"]),
                  "n_in_domain": len(val_texts), "in_domain_served": share(in_scores),
                  "criterion": "smallest threshold serving at most the target share of each set of out-of-domain "
                               "val queries (logged searches; nouns never logged)"}
    check(isinstance(threshold, (int, float)) and 0.0 <= threshold <= 1.0,
          f"the gate threshold must be a number in [0, 1] or 'auto' (got {threshold!r})")
    threshold = float(threshold)

    rewrites = results["rewrites"]
    texts = [q.text for q in queries]
    scores, passed = gate_scores(texts, rewrites)
    served = apply_gate(rewrites, scores, threshold)
    unseen = ctx.unseen(queries)
    results["rows"][f"{name} + gate"] = ctx.score(queries, served, {UNSEEN: unseen})
    off = rewrite_metrics(ctx.world, ctx.engine, ctx.users, queries, rewrites, k=ctx.k)
    on = rewrite_metrics(ctx.world, ctx.engine, ctx.users, queries, served, k=ctx.k)
    is_served = np.array([r is not None for r in served])
    off["irrelevant_served"] = (off["grade"] == 0).astype(np.float64)  # every rewrite served with the gate off
    on["irrelevant_served"] = ((off["grade"] == 0) & is_served).astype(np.float64)
    of_segment = np.array([q.segment for q in queries])
    groups = {seg: of_segment == seg for seg in ctx.world.SEGMENTS} | {"all": np.ones(len(queries), dtype=bool),
                                                                        UNSEEN: unseen}
    in_domain = {
        "n": len(queries),
        "query_passed": passed,
        "served": {seg: float(is_served[mask].mean()) for seg, mask in groups.items() if mask.any()},
        "irrelevant_served": {"off": float(off["irrelevant_served"].mean()),
                              "on": float(on["irrelevant_served"].mean())},
        "by_grade": {str(g): {"n": int((off["grade"] == g).sum()),
                              "served": float(is_served[off["grade"] == g].mean())}
                     for g in (0, 1, 2) if (off["grade"] == g).any()},
        "diff": {m: paired_diff_ci(off[m], on[m])._asdict() for m in GATE_DIFFS},
    }

    test_sets = {kind: ood_report(texts, split) for kind, texts in ood_sets(split).items()}
    logged = test_sets["logged"]
    if logged["n"]:  # weighted by how often each search was logged: the share of out-of-domain traffic served
        weights = ctx.logged_counts(ctx.logged_ood_queries(split, n_ood)).astype(np.float64)
        on_ = np.asarray(logged["scores"]) > threshold
        logged["served_on_traffic"] = float((weights * on_).sum() / weights.sum())
    for report in test_sets.values():
        del report["scores"]
    results["gate"] = {
        "threshold": threshold, "chosen": chosen, "query_check": query_check,
        "score": ("P(label 2 | query, rewrite)" if score == "equivalent" else "1 - P(label 0 | query, rewrite)")
                 + " of the " + ("model's own tagger" if judge is None else judge_name),
        "in_domain": in_domain, "ood": test_sets["unseen"], "ood_logged": logged,
    }
    return results["gate"]


def format_gate(gate: dict, split: str = "test") -> str:
    """The human-readable report of :func:`evaluate_gate`."""
    query_check = gate.get("query_check", "none")
    read = "" if query_check == "none" else QUERY_CHECK_TEXT[query_check] + " and "
    out = [f"serving gate: a rewrite is served iff {read}{gate['score']} > {gate['threshold']:.4f}; "
           f"otherwise the query is searched alone"]
    if gate.get("chosen"):
        c = gate["chosen"]
        picks = ", ".join(f"{kind} {t:.4f}" for kind, t in c.get("thresholds", {}).items())
        out.append(f"  threshold chosen on {c['split']}: {c['criterion']} ({c['target']:.0%}; {picks}); there "
                   f"{_share(c.get('ood_logged_served'))} of {c.get('n_ood_logged', 0)} logged and "
                   f"{_share(c['ood_served'])} of {c['n_ood']} never-logged out-of-domain and "
                   f"{c['in_domain_served']:.1%} of {c['n_in_domain']} in-domain rewrites are served")
    o, d = gate["ood"], gate["in_domain"]
    logged = gate.get("ood_logged")
    if logged is not None:
        traffic = (f" ({logged['served_on_traffic']:.1%} of their logged searches)"
                   if "served_on_traffic" in logged else "")
        out.append(f"out-of-domain {logged['split']} searches the logs hold ({logged['n']}): rewrite served, gate off "
                   f"{_share(logged['served_off'])} | gate on {_share(logged['served_on'])}{traffic}")
    out.append(f"out-of-domain {o['split']} queries, nouns never logged ({o['n']}): rewrite served, gate off "
               f"{o['served_off']:.1%} | gate on {o['served_on']:.1%}")
    if query_check != "none":
        passed_logged = "" if logged is None else f"{_share(logged['query_passed'])} of the logged and "
        out.append(f"query check ({query_check}): passed by {passed_logged}{o['query_passed']:.1%} of the "
                   f"never-logged out-of-domain and {d['query_passed']:.1%} of the in-domain {split} queries")
    segments = ", ".join(f"{s} {v:.1%}" for s, v in d["served"].items() if s != "all")
    irrelevant = d["irrelevant_served"]
    out.append(f"in-domain {split} queries ({d['n']}): rewrite served, gate off 100.0% | gate on "
               f"{d['served']['all']:.1%} ({segments}); irrelevant rewrite served {irrelevant['off']:.1%} -> "
               f"{irrelevant['on']:.1%}")
    if d.get("by_grade"):
        out.append("  served by the judge's grade of the rewrite: " + ", ".join(
            f"grade {g} {v['served']:.1%} of {v['n']}" for g, v in d["by_grade"].items()))
    out.append("gate on minus off, paired over the same in-domain queries (95% CI; * excludes 0):")
    out.append("  " + "  ".join(
        f"{m} {v['lift']:+.4f} [{v['low']:+.4f}, {v['high']:+.4f}]{'*' if v['low'] > 0 or v['high'] < 0 else ''}"
        for m, v in d["diff"].items()))
    for label, ood in (("logged", logged or {}), ("never-logged", o)):
        if ood.get("samples"):
            out.append(f"{label} out-of-domain samples (query -> rewrite | score, served):")
            out += [f"  {s['query']!r} -> {s['rewrite']!r} | {s['score']:.3f} {'served' if s['served'] else 'gated'}"
                    for s in ood["samples"]]
    return "\n".join(out)


def _share(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.1%}"
