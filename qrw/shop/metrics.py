"""Per-example rewrite metrics and their summaries by difficulty segment.

The paper's offline metrics (accuracy, recall, relevance) and its online one
(UCVR), computed against the synthetic world's oracle instead of human raters
and live traffic. For a query q (true intent I) with rewrite r and the page
``P = SearchEngine.pages(q, r)`` of k slots:

- ``grade``     judge grade of r for I in {0, 1, 2} (NaN when r is None)
- ``accuracy``  1.0 if grade == 2 else 0.0 (NaN when r is None)
- ``relevance`` share of the k slots holding an EXACT product for I (precision@k;
                empty slots count as not relevant)
- ``recall``    EXACT products on P / min(#EXACT products in the catalog, k)
                (NaN when the catalog has none)
- ``ucvr``      expected purchases per user on P (``UserSimulator.expected_purchases``)

All are vectorised: one search call for the batch, cached product grades per intent.
"""

from __future__ import annotations

import warnings

import numpy as np

from qrw.config import check
from qrw.shop.judge import EXACT, IRRELEVANT
from qrw.shop.tables import SEGMENTS

# The metrics every table and comparison reports, in their column order (rewrite_metrics also returns "grade").
METRICS = ("accuracy", "relevance", "recall", "ucvr")


def page_grades(judge, intents, page_ids: np.ndarray) -> np.ndarray:
    """(B, k) int8 grade of each page product for its row's intent (empty slots: IRRELEVANT)."""
    page_ids = np.asarray(page_ids)
    grades = np.full(page_ids.shape, IRRELEVANT, dtype=np.int8)
    for i, intent in enumerate(intents):
        row = page_ids[i]
        present = row >= 0
        grades[i, present] = judge.grade_products(intent)[row[present]]
    return grades


def rewrite_metrics(world, engine, users, queries, rewrites, k: int = 10) -> dict[str, np.ndarray]:
    """Per-example metrics (module doc) for ``queries`` (list[Query]) and ``rewrites`` (list[str | None] or None).

    Returns ``{"accuracy", "grade", "relevance", "recall", "ucvr"}`` -> (B,) float64.
    """
    B = len(queries)
    if rewrites is None:
        rewrites = [None] * B
    check(len(rewrites) == B, f"need one rewrite per query: {len(rewrites)} rewrites for {B} queries")
    judge = world.judge
    intents = [q.intent for q in queries]
    pages = engine.pages([q.text for q in queries], rewrites, k)  # (B, k)
    grades = page_grades(judge, intents, pages)  # (B, k)
    exact_on_page = (grades == EXACT).sum(axis=1).astype(np.float64)  # (B,)
    exact_total = np.array([judge.exact_count(intent) for intent in intents], dtype=np.float64)  # (B,)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(exact_total > 0, exact_on_page / np.minimum(exact_total, k), np.nan)
    rewrite_grade = np.array([np.nan if r is None else judge.grade_rewrite(intent, r)
                              for intent, r in zip(intents, rewrites)], dtype=np.float64)
    accuracy = np.where(np.isnan(rewrite_grade), np.nan, (rewrite_grade == 2).astype(np.float64))
    return {
        "accuracy": accuracy,
        "grade": rewrite_grade,
        "relevance": exact_on_page / k,
        "recall": recall,
        "ucvr": users.expected_purchases(pages, grades),
    }


def summarize(per_example: dict[str, np.ndarray], segments: list[str]) -> dict[str, dict[str, float]]:
    """Means per segment and overall: ``{segment | "all": {metric: mean, ..., "n": count}}``.

    Means ignore NaN (a metric that is NaN for every example of a group is NaN).
    Segments appear in ``World.SEGMENTS`` order when they are world segments,
    else in order of first appearance; ``"all"`` comes last.
    """
    segments = np.asarray(segments)
    present = list(dict.fromkeys(segments.tolist()))
    ordered = [s for s in SEGMENTS if s in present] + [s for s in present if s not in SEGMENTS]
    groups = {s: segments == s for s in ordered}
    groups["all"] = np.ones(len(segments), dtype=bool)
    out: dict[str, dict[str, float]] = {}
    for name, mask in groups.items():
        row: dict[str, float] = {}
        for metric, values in per_example.items():
            values = np.asarray(values, dtype=np.float64)
            check(values.shape == mask.shape, f"metric {metric!r} has {values.shape[0]} values for "
                                              f"{mask.shape[0]} segments")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                row[metric] = float(np.nanmean(values[mask])) if mask.any() else float("nan")
        row["n"] = int(mask.sum())
        out[name] = row
    return out
