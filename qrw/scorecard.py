"""Offline evaluation of a rewriter: its scorecard on held-out queries, beside the baselines.

For every rewriter (no rewrite, the dictionary a shop can fit on its logs, the
upper bounds that read the hidden gold: the dictionary fit on gold pairs and
the gold rewrite; a trained model) and every difficulty segment plus ``all``
and ``unseen`` (queries whose intent occurs in no training query, logged query
or mined pair; it overlaps the segments) (:func:`evaluate_run`):

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

The serving gate's evaluation (:func:`evaluate_gate`, :func:`choose_gate_threshold`,
:func:`format_gate`) lives in :mod:`qrw.gate` and is re-exported here.

The command ``python -m qrw.evaluate`` prints them (and runs the simulated
online A/B test of :mod:`qrw.shop.abtest`). Departure from the paper: the
metrics are computed against the world's oracle judge instead of human raters.
"""

from __future__ import annotations

import numpy as np

from qrw.config import check
from qrw.gate import (GATE_DIFFS, GATE_QUERY_CHECKS, GATE_TARGET, OOD_QUERIES, OOD_SETS,  # noqa: F401  (re-exported)
                      QUERY_CHECK_TEXT, choose_gate_threshold, evaluate_gate, format_gate, query_check_passes)
from qrw.shop.abtest import paired_diff_ci
from qrw.shop.pooled import pooled_paired_diff
from qrw.shop.metrics import METRICS, rewrite_metrics
from qrw.shop.relevance import held_out_mined_pairs
from qrw.shop.shop import BASELINE_LABELS, BASELINES, UNSEEN, Shop


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

    Returns a JSON-ready dict: ``rows`` (rewriter name -> segment -> metric; the
    baselines under :data:`qrw.shop.shop.BASELINE_LABELS`), the segments being the
    world's difficulty segments, ``all`` and ``unseen`` (the queries whose intent
    occurs in no training query, logged query or mined pair: :meth:`Shop.unseen`;
    it overlaps the others; ``n_unseen`` counts them), with the baselines also
    ``vs_dictionary`` (segment -> metric -> the paired difference model - the
    log-fit dictionary over the segment's queries and its 95% interval),
    ``tagging`` (when asked), a few ``samples`` (query, rewrite, gold), and every
    ``rewrites`` with its ``well_formed`` flag (in query order; not for JSON).
    """
    queries = ctx.world.queries[split]
    rewrites, well_formed = rewriter.rewrite([q.text for q in queries], return_well_formed=True)
    unseen = ctx.unseen(queries)
    groups = {UNSEEN: unseen}
    rows = {}
    if baselines:
        for baseline in BASELINES:
            given = ctx.baseline_rewrites(baseline, queries)
            rows[BASELINE_LABELS[baseline]] = ctx.score(queries, given, groups)
            if baseline == "dictionary":
                dictionary = given
    rows[name] = ctx.score(queries, rewrites, groups)
    segments = list(ctx.world.SEGMENTS) + ["all", UNSEEN]
    results = {"split": split, "n_queries": len(queries), "n_unseen": int(unseen.sum()), "segments": segments,
               "model": name, "rows": rows,
               "samples": [{"query": q.text, "rewrite": r, "gold": q.gold, "segment": q.segment}
                           for q, r in list(zip(queries, rewrites))[:n_samples]],
               "rewrites": rewrites, "well_formed": well_formed}
    if baselines:
        base = rewrite_metrics(ctx.world, ctx.engine, ctx.users, queries, dictionary, k=ctx.k)
        model = rewrite_metrics(ctx.world, ctx.engine, ctx.users, queries, rewrites, k=ctx.k)
        of_segment = np.array([q.segment for q in queries])
        results["vs_dictionary"] = {}
        for seg in segments:
            rows_in = {"all": np.ones(len(queries), dtype=bool), UNSEEN: unseen}.get(seg, of_segment == seg)
            if rows_in.sum() >= 2:
                results["vs_dictionary"][seg] = {
                    m: paired_diff_ci(base[m][rows_in], model[m][rows_in])._asdict() for m in METRICS}
    if tagging:
        results["tagging"] = tagging_metrics(rewriter, ctx.world, split)
    return results


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
    if "n_unseen" in results:
        out.append(f"{UNSEEN}: the {results['n_unseen']} of {results['n_queries']} queries whose intent occurs in no "
                   f"training query, logged query or mined pair (they also count in their difficulty segment)")
    if BASELINE_LABELS["gold-dictionary"] in results["rows"]:
        out.append("dictionary: fit on the logs' (query, clicked title) pairs, as a shop can; gold-dictionary and "
                   "gold read the hidden gold rewrites (upper bounds)")
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


def compare_rewrites_pooled(replicates: list[tuple[Shop, list, list[str | None], list[str | None]]]) -> dict:
    """Paired before/after differences pooled over replicates (seeds): metric -> {before, after, diff, low, high,
    per_seed}.

    ``replicates[s] = (ctx, queries, before rewrites, after rewrites)``: each replicate's two rewriters on
    its own world's queries (a seed of a recipe against the same seed of another). Within a replicate the
    per-query difference is paired; across replicates :func:`qrw.shop.pooled.pooled_paired_diff` pools the
    seed means (t interval with N - 1 degrees of freedom; one replicate: :func:`compare_rewrites`'s
    interval). ``before``/``after`` are means over replicates of each one's mean.
    """
    check(len(replicates) >= 1, "compare_rewrites_pooled needs at least one replicate")
    pairs: dict[str, list] = {m: [] for m in METRICS}
    for ctx, queries, before, after in replicates:
        a = rewrite_metrics(ctx.world, ctx.engine, ctx.users, queries, before, k=ctx.k)
        b = rewrite_metrics(ctx.world, ctx.engine, ctx.users, queries, after, k=ctx.k)
        for m in METRICS:
            pairs[m].append((np.asarray(a[m], dtype=float), np.asarray(b[m], dtype=float)))
    out = {}
    for name, per in pairs.items():
        if any(int((np.isfinite(x) & np.isfinite(y)).sum()) < 2 for x, y in per):
            continue
        pooled = pooled_paired_diff(per)
        out[name] = {"before": float(np.mean([np.nanmean(x) for x, _ in per])),
                     "after": float(np.mean([np.nanmean(y) for _, y in per])), "diff": pooled.diff,
                     "low": pooled.low, "high": pooled.high, "per_seed": [c.lift for c in pooled.per_seed]}
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
