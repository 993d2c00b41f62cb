"""Offline evaluation of a rewriter: its scorecard on held-out queries, beside the baselines.

For every rewriter (no rewrite, the dictionary baseline, the gold rewrite, a
trained model) and every difficulty segment plus ``all`` (:func:`evaluate_run`):

- ``accuracy``: share of rewrites the judge grades 2 (meaning preserved exactly;
  undefined, shown as ``-``, for "no rewrite");
- ``relevance``: share of the results page's products that are Exact for the
  query's intent (relevance@k);
- ``recall``: share of the intent's Exact products (capped at k) on the page (recall@k);
- ``ucvr``: expected purchases per user on the page (the shopper simulator);
- ``length`` (words) and ``diversity`` (share of distinct rewrites);

the paired difference model - dictionary per metric with its 95% interval,
and, for a model trained on the relevance task, the tagger's accuracy and
macro-F1 against the judge on the split's (query, rewrite, label) pairs
(:func:`tagging_metrics`). The page is ``page(q, r) = dedupe(interleave(topk(r), topk(q)))[:k]``.
:func:`compare_rewrites` is the paired before/after comparison that
``train_grpo.py`` prints; the ``format_*`` functions render all of these as text.

The serving gate (the relevance task at serving time, :meth:`qrw.rewriter.Rewriter.serve`):
:func:`choose_gate_threshold` picks its threshold on validation data and
:func:`evaluate_gate` adds to :func:`evaluate_run`'s results the split's
metrics with the gate on (a rewrite the tagger does not vouch for is not
served: the query is searched alone), their paired difference with the gate
off, and the share of out-of-domain queries (:mod:`qrw.shop.ood`) that still
get a rewrite served, off and on. With a query check (:data:`GATE_QUERY_CHECKS`)
the gate reads the query too: no rewrite for a query in which the shop reads no
product (``"dictionary"``, :meth:`qrw.shop.shop.Shop.reads_product`) or that has
a word the shop has never seen (``"vocabulary"``, :meth:`qrw.shop.shop.Shop.knows_query`).
Both need the shop, which :class:`~qrw.rewriter.Rewriter` does not hold: the
commands (``python -m qrw.evaluate``, ``python -m qrw.rewrite``) apply them.

The command ``python -m qrw.evaluate`` prints them (and runs the simulated
online A/B test of :mod:`qrw.shop.abtest`). Departure from the paper: the
metrics are computed against the world's oracle judge instead of human raters.
"""

from __future__ import annotations

import math

import numpy as np

from qrw.config import check
from qrw.rewriter import apply_gate
from qrw.shop.abtest import paired_diff_ci
from qrw.shop.metrics import METRICS, rewrite_metrics
from qrw.shop.relevance import held_out_mined_pairs
from qrw.shop.shop import Shop


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
    tagger), the accuracy per kind of perturbed rewrite (``World.perturbation_kind``)
    and, under ``tag_mined``, :func:`mined_tagging_metrics`.
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
            "tag_pairs": int(len(labels)), "tag_confusion": confusion.tolist(), "tag_by_kind": by_kind,
            "tag_mined": mined_tagging_metrics(rewriter, world, split)}


def mined_tagging_metrics(rewriter, world, split: str = "test") -> dict:
    """The tagger against the judge on held-out mined pairs: the split's queries, mined as production would.

    The pairs come from :func:`qrw.shop.relevance.held_out_mined_pairs` (sessions
    started from the split's queries, never trained on). Accuracy overall and
    per kind of mined pair (rephrased, broadened, brand switched, ...): the
    rewrites a relevance reward meets in production, beside the perturbed ones.
    """
    pairs = held_out_mined_pairs(world, split)
    if not pairs:
        return {"n": 0}
    labels = np.array([p.grade for p in pairs])
    predicted = np.array(rewriter.tag([p.query for p in pairs], [p.rewrite for p in pairs]))
    kinds = np.array([p.kind for p in pairs])
    by_kind = {str(kind): {"n": int((kinds == kind).sum()),
                           "accuracy": float((labels[kinds == kind] == predicted[kinds == kind]).mean())}
               for kind in dict.fromkeys(kinds.tolist())}
    return {"n": len(pairs), "accuracy": float((labels == predicted).mean()),
            "confusion": confusion_matrix(labels, predicted).tolist(), "by_kind": by_kind}


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


# ---- the serving gate ---------------------------------------------------------------------------

GATE_TARGET = 0.05  # default: share of out-of-domain validation queries the chosen threshold may serve a rewrite
OOD_QUERIES = 300   # default: out-of-domain queries per split (val to choose the threshold, test to measure it)
# Paired on-minus-off differences of the gate, per query over every query: the page metrics, and whether an
# irrelevant (judge grade 0) rewrite was served. Accuracy is not paired: with the gate on it is the accuracy of
# the served rewrites only (a gated query has no rewrite, as "no rewrite" has none), a different population.
GATE_DIFFS = ("relevance", "recall", "ucvr", "irrelevant_served")
# The gate's query check: "none" (the tagger alone); "dictionary": a rewrite is served only for a query in which the
# shop's mined dictionary reads a catalog category or brand (qrw.shop.shop.Shop.reads_product); "vocabulary": only
# for a query whose every word the shop knows, one typo forgiven in long words (qrw.shop.shop.Shop.knows_query).
GATE_QUERY_CHECKS = ("none", "dictionary", "vocabulary")
QUERY_CHECK_TEXT = {"dictionary": "the shop's dictionary reads a catalog category or brand in the query",
                    "vocabulary": "the shop knows every word of the query (its titles, logs and training queries; "
                                  "one typo forgiven from 5 letters)"}


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

    ``threshold``: a number in [0, 1], or ``"auto"``: chosen on validation data
    by :func:`choose_gate_threshold` from the out-of-domain val queries, with
    the served share of the in-domain val rewrites reported beside it (``auto``
    needs ``results`` on the test split: it does not measure on what it chose on).

    Adds ``rows["<model> + gate"]`` (the split scored with gated rewrites: the
    page metrics over every query, accuracy over the served rewrites) and
    ``results["gate"]``: ``threshold``, ``score``, ``chosen`` (the val figures
    when ``auto``), ``in_domain`` (served share per segment, the paired
    on-minus-off differences of :data:`GATE_DIFFS` with 95% intervals, the
    share of irrelevant rewrites served off and on, and ``by_grade``: per judge
    grade of the rewrite, how many and the share served: how well the tagger
    tells the rewrites apart) and ``ood`` (the split's out-of-domain queries:
    served share off and on, a few samples).
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

    chosen = None
    if threshold == "auto":
        check(split == "test", "--gate auto chooses the threshold on val: evaluate it on the test split")
        val_texts = [q.text for q in ctx.world.queries["val"]]
        val_ood = ctx.ood_queries("val", n_ood)
        ood_scores, _ = gate_scores(val_ood, rewriter.rewrite(val_ood))
        threshold = choose_gate_threshold(ood_scores, target)
        in_scores, _ = gate_scores(val_texts, rewriter.rewrite(val_texts))
        chosen = {"split": "val", "target": target, "n_ood": len(val_ood), "n_in_domain": len(val_texts),
                  "ood_served": float(np.mean(np.asarray(ood_scores) > threshold)),
                  "in_domain_served": float(np.mean(np.asarray(in_scores) > threshold)),
                  "criterion": "smallest threshold serving at most the target share of out-of-domain val queries"}
    check(isinstance(threshold, (int, float)) and 0.0 <= threshold <= 1.0,
          f"the gate threshold must be a number in [0, 1] or 'auto' (got {threshold!r})")
    threshold = float(threshold)

    rewrites = results["rewrites"]
    texts = [q.text for q in queries]
    scores, passed = gate_scores(texts, rewrites)
    served = apply_gate(rewrites, scores, threshold)
    results["rows"][f"{name} + gate"] = ctx.score(queries, served)
    off = rewrite_metrics(ctx.world, ctx.engine, ctx.users, queries, rewrites, k=ctx.k)
    on = rewrite_metrics(ctx.world, ctx.engine, ctx.users, queries, served, k=ctx.k)
    is_served = np.array([r is not None for r in served])
    off["irrelevant_served"] = (off["grade"] == 0).astype(np.float64)  # every rewrite served with the gate off
    on["irrelevant_served"] = ((off["grade"] == 0) & is_served).astype(np.float64)
    of_segment = np.array([q.segment for q in queries])
    in_domain = {
        "n": len(queries),
        "query_passed": passed,
        "served": {seg: float(is_served[of_segment == seg].mean()) for seg in ctx.world.SEGMENTS
                   if (of_segment == seg).any()} | {"all": float(is_served.mean())},
        "irrelevant_served": {"off": float(off["irrelevant_served"].mean()),
                              "on": float(on["irrelevant_served"].mean())},
        "by_grade": {str(g): {"n": int((off["grade"] == g).sum()),
                              "served": float(is_served[off["grade"] == g].mean())}
                     for g in (0, 1, 2) if (off["grade"] == g).any()},
        "diff": {m: paired_diff_ci(off[m], on[m])._asdict() for m in GATE_DIFFS},
    }

    ood = ctx.ood_queries(split, n_ood)
    ood_rewrites = rewriter.rewrite(ood)
    ood_scores, ood_passed = gate_scores(ood, ood_rewrites)
    ood_served = apply_gate(ood_rewrites, ood_scores, threshold)
    results["gate"] = {
        "threshold": threshold, "chosen": chosen, "query_check": query_check,
        "score": ("P(label 2 | query, rewrite)" if score == "equivalent" else "1 - P(label 0 | query, rewrite)")
                 + " of the " + ("model's own tagger" if judge is None else judge_name),
        "in_domain": in_domain,
        "ood": {"split": split, "n": len(ood), "served_off": _served_share(ood_rewrites),
                "served_on": _served_share(ood_served), "query_passed": ood_passed,
                "samples": [{"query": q, "rewrite": r, "score": s, "served": g is not None}
                            for q, r, s, g in list(zip(ood, ood_rewrites, ood_scores, ood_served))[:n_samples]]},
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
        out.append(f"  threshold chosen on {c['split']}: {c['criterion']} ({c['target']:.0%}); there "
                   f"{c['ood_served']:.1%} of {c['n_ood']} out-of-domain and {c['in_domain_served']:.1%} of "
                   f"{c['n_in_domain']} in-domain rewrites are served")
    o, d = gate["ood"], gate["in_domain"]
    out.append(f"out-of-domain {o['split']} queries ({o['n']}): rewrite served, gate off {o['served_off']:.1%} | "
               f"gate on {o['served_on']:.1%}")
    if query_check != "none":
        out.append(f"query check ({query_check}): passed by {o['query_passed']:.1%} of the out-of-domain and "
                   f"{d['query_passed']:.1%} of the in-domain {split} queries")
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
    if o.get("samples"):
        out.append("out-of-domain samples (query -> rewrite | score, served):")
        out += [f"  {s['query']!r} -> {s['rewrite']!r} | {s['score']:.3f} {'served' if s['served'] else 'gated'}"
                for s in o["samples"]]
    return "\n".join(out)


# ---- what a run directory holds ----------------------------------------------------------------

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


# ---- text ---------------------------------------------------------------------------------------

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
        m = t.get("tag_mined") or {}
        if m.get("n"):
            out.append(f"  held-out mined pairs ({m['n']}): accuracy {m['accuracy']:.3f}; by kind: " + ", ".join(
                f"{kind} {v['accuracy']:.2f} ({v['n']})" for kind, v in m["by_kind"].items()))
    if results.get("samples"):
        out.append("samples (query -> rewrite | gold):")
        out += [f"  {s['query']!r} -> {s['rewrite']!r} | {s['gold']!r}" for s in results["samples"][:5]]
    if results.get("gate"):
        out.append(format_gate(results["gate"], results["split"]))
    return "\n".join(out)


# ---- paired before/after comparison -----------------------------------------------------------

def compare_rewrites(ctx: Shop, queries, before: list[str], after: list[str],
                     extra: dict[str, tuple] | None = None) -> dict[str, dict[str, float]]:
    """Paired before/after differences on the same queries: metric -> {before, after, diff, low, high}.

    Metrics: accuracy, relevance, recall, ucvr (per query, from :func:`qrw.shop.metrics.rewrite_metrics`)
    and any ``extra`` ``name -> (before values, after values)`` (e.g. the fused reward). A metric
    defined on fewer than 2 queries on both sides is left out (accuracy against "no rewrite").
    """
    a = rewrite_metrics(ctx.world, ctx.engine, ctx.users, queries, before, k=ctx.k)
    b = rewrite_metrics(ctx.world, ctx.engine, ctx.users, queries, after, k=ctx.k)
    pairs = {m: (a[m], b[m]) for m in METRICS}
    pairs.update(extra or {})
    out = {}
    for name, (x, y) in pairs.items():
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        if int((np.isfinite(x) & np.isfinite(y)).sum()) < 2:
            continue
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


# ---- what kinds of rewrites a policy writes (reward hacking shows here) ---------------------------

HACKING = {"attribute dropped": ("attribute dropped", "partial, mixed"), "no category": ("unparsable",),
           "category or brand swapped": ("category swapped", "complement", "brand swapped")}
"""The drifts a learned relevance reward lets through (README, "GRPO"), as sums of rewrite kinds.
"unparsable" is a rewrite with no category (or a slot named twice); "partial, mixed" dropped
something and added something else."""


DROPPED_VALUES = ("values dropped, read", "values dropped, unread")
"""Keys of :func:`dropped_attribute_values`: dropped attribute values that the rules' dictionary reads in the
query (the ``anchors`` rule sees them dropped) and those it does not (no rule sees them)."""


def dropped_attribute_values(world, queries, rewrites: list[str], readings: list[str]) -> dict[str, int]:
    """The attribute values that rewrites of :data:`HACKING`'s "attribute dropped" kinds give up, split by
    whether the ``anchors`` rule can see it: ``readings[i]`` is the rules' dictionary reading of query i
    (``Shop.dictionary``, the anchors of :class:`qrw.rewards.RewardFunction`); a value counts as *read* when
    its canonical word(s) appear there. Returns ``{DROPPED_VALUES[0]: n_read, DROPPED_VALUES[1]: n_unread}``
    (a rewrite that drops two values counts twice)."""
    read = unread = 0
    kinds = set(HACKING["attribute dropped"])
    for query, rewrite, reading in zip(queries, rewrites, readings):
        if world.perturbation_kind(query.intent, rewrite or "") not in kinds:
            continue
        parsed = world.judge.parse(rewrite or "")
        kept = parsed.attr_dict() if parsed is not None else {}
        for attribute, value in query.intent.attrs:
            if attribute not in kept:
                if f" {value} " in f" {reading or ''} ":
                    read += 1
                else:
                    unread += 1
    return {DROPPED_VALUES[0]: read, DROPPED_VALUES[1]: unread}


def rewrite_kinds(world, queries, rewrites: list[str]) -> dict[str, int]:
    """How many rewrites of each kind (``World.perturbation_kind``, in its order) and the :data:`HACKING` sums."""
    kinds = [world.perturbation_kind(q.intent, r or "") for q, r in zip(queries, rewrites)]
    counts = {kind: kinds.count(kind) for kind in world.PERTURBATION_KINDS}
    return counts | {name: sum(counts[k] for k in members) for name, members in HACKING.items()}
