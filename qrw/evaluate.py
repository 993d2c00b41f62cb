"""Offline evaluation of rewriters on held-out queries.

For every rewriter (no rewrite, the dictionary baseline, the gold rewrite, a
trained model) and every difficulty segment plus ``all``:

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
"""

from __future__ import annotations

import numpy as np

from qrw.baselines import DictionaryRewriter, gold_rewrites
from qrw.metrics import rewrite_metrics, summarize
from qrw.search import SearchEngine
from qrw.users import UserSimulator

METRICS = ("accuracy", "relevance", "recall", "ucvr")


class EvalContext:
    """The world's search engine, shoppers and dictionary baseline, built once per evaluation."""

    def __init__(self, world, k: int = 10):
        self.world = world
        self.k = k
        self.engine = SearchEngine(world.titles, world.popularity)
        self.users = UserSimulator(world)
        self._dictionary: DictionaryRewriter | None = None

    @property
    def dictionary(self) -> DictionaryRewriter:
        if self._dictionary is None:
            self._dictionary = DictionaryRewriter().fit(self.world.queries["train"])
        return self._dictionary

    def score(self, queries, rewrites: list[str | None]) -> dict[str, dict[str, float]]:
        """Per-segment and overall means of the page metrics, plus rewrite length and diversity."""
        per_example = rewrite_metrics(self.world, self.engine, self.users, queries, rewrites, k=self.k)
        summary = summarize(per_example, [q.segment for q in queries])
        if any(r is not None for r in rewrites):
            segments = np.array([q.segment for q in queries])
            lengths = np.array([len(r.split()) if r else 0 for r in rewrites], dtype=float)
            for seg, row in summary.items():
                idx = np.arange(len(queries)) if seg == "all" else np.flatnonzero(segments == seg)
                chosen = [rewrites[i] for i in idx]
                row["length"] = float(lengths[idx].mean()) if len(idx) else float("nan")
                row["diversity"] = len(set(chosen)) / max(len(chosen), 1)
        return summary


def tagging_metrics(rewriter, world, split: str = "test") -> dict[str, float]:
    """The relevance tagger against the judge: accuracy, macro-F1 and the 3x3 confusion matrix."""
    pairs = world.relevance_examples(split)
    labels = np.array([label for _, _, label in pairs])
    predicted = np.array(rewriter.tag([q for q, _, _ in pairs], [r for _, r, _ in pairs]))
    confusion = np.zeros((3, 3), dtype=int)  # rows: judge label, columns: predicted
    np.add.at(confusion, (labels, predicted), 1)
    f1s = []
    for c in range(3):
        tp = confusion[c, c]
        precision = tp / max(confusion[:, c].sum(), 1)
        recall = tp / max(confusion[c, :].sum(), 1)
        f1s.append(0.0 if tp == 0 else 2 * precision * recall / (precision + recall))
    return {"tag_accuracy": float((labels == predicted).mean()), "tag_macro_f1": float(np.mean(f1s)),
            "tag_pairs": int(len(labels)), "tag_confusion": confusion.tolist()}


def evaluate_run(ctx: EvalContext, rewriter, *, name: str, split: str = "test", baselines: bool = True,
                 tagging: bool = True, n_samples: int = 8) -> dict:
    """Greedy rewrites of the split's queries by ``rewriter``, scored beside the baselines.

    Returns a JSON-ready dict: ``rows`` (rewriter name -> segment -> metric),
    ``tagging`` (when asked), a few ``samples`` (query, rewrite, gold) and every
    ``rewrites`` (in query order).
    """
    queries = ctx.world.queries[split]
    rewrites = rewriter.rewrite([q.text for q in queries])
    rows = {}
    if baselines:
        rows["no rewrite"] = ctx.score(queries, [None] * len(queries))
        rows["dictionary"] = ctx.score(queries, ctx.dictionary.rewrite([q.text for q in queries]))
    if baselines:
        rows["gold"] = ctx.score(queries, gold_rewrites(queries))
    rows[name] = ctx.score(queries, rewrites)
    results = {"split": split, "n_queries": len(queries), "segments": list(ctx.world.SEGMENTS) + ["all"],
               "model": name, "rows": rows,
               "samples": [{"query": q.text, "rewrite": r, "gold": q.gold, "segment": q.segment}
                           for q, r in list(zip(queries, rewrites))[:n_samples]],
               "rewrites": rewrites}
    if tagging:
        results["tagging"] = tagging_metrics(rewriter, ctx.world, split)
    return results


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
    if "tagging" in results:
        t = results["tagging"]
        out.append(f"relevance tagger vs judge ({t['tag_pairs']} pairs): accuracy {t['tag_accuracy']:.3f} | "
                   f"macro-F1 {t['tag_macro_f1']:.3f}")
    if results.get("samples"):
        out.append("samples (query -> rewrite | gold):")
        out += [f"  {s['query']!r} -> {s['rewrite']!r} | {s['gold']!r}" for s in results["samples"][:5]]
    return "\n".join(out)
