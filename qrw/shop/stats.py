"""The numbers of ``python -m qrw.world --stats``: counts and the lexical-gap table on test queries.

``world_stats`` measures the world with the simple rewriters of
:mod:`qrw.shop.baselines` (none, the dictionary fit on gold pairs, gold, broadened, complement) on
BM25 pages (:mod:`qrw.shop.search`) with the shopper simulator
(:mod:`qrw.shop.users`), and describes the mined rewrite pairs
(:mod:`qrw.shop.mining`): how many, and the share the judge grades 2 / 1 / 0,
overall and per kind of drift; ``format_stats`` renders the result as a table.
"""

from __future__ import annotations

import dataclasses
import math
import time

from qrw.shop.baselines import DictionaryRewriter, broadened_rewrites, complement_rewrites, gold_rewrites
from qrw.shop.metrics import METRICS, rewrite_metrics, summarize
from qrw.shop.mining import KINDS, MinedPair
from qrw.shop.search import SearchEngine
from qrw.shop.tables import SEGMENTS, SPLITS, TIERS
from qrw.shop.users import UserConfig, UserSimulator
from qrw.shop.world import World

REWRITERS = ("none", "gold-dictionary", "gold", "broadened", "complement")  # the gold-fit dictionary: an upper bound


def _round(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 4)


def world_stats(world: World, k: int = 10) -> tuple[dict, float]:
    """Counts and the lexical-gap table on test queries; also BM25 queries/s (kept out of the dict).

    Returns ``(stats, queries_per_second)``; ``stats`` is deterministic for a config.
    """
    lexicon = world.lexicon
    counts = {
        "products": len(world.products),
        "categories": len({p.category for p in world.products}),
        "brands": len({p.brand for p in world.products}),
        "canonical_terms": len(lexicon.forms),
        "variants": {tier: len(lexicon.variants(tier)) for tier in TIERS[1:]},
        "queries": {s: {seg: sum(q.segment == seg for q in world.queries[s]) for seg in SEGMENTS}
                    | {"all": len(world.queries[s])} for s in SPLITS},
        "log_sessions": len(world.logs),
        "relevance_examples_train": len(world.relevance_examples("train")),
        "pretrain_texts": len(world.pretrain_texts()),
    }
    engine = SearchEngine(world.titles, world.popularity)
    users = UserSimulator(world, UserConfig())
    test = world.queries["test"]
    dictionary = DictionaryRewriter().fit(world.queries["train"])
    rewrites = {
        "none": None,
        "gold-dictionary": dictionary.rewrite([q.text for q in test]),
        "gold": gold_rewrites(test),
        "broadened": broadened_rewrites(test),
        "complement": complement_rewrites(test),
    }
    segments = [q.segment for q in test]
    table: dict[str, dict[str, dict[str, float | None]]] = {}
    for name in REWRITERS:
        per_example = rewrite_metrics(world, engine, users, test, rewrites[name], k=k)
        summary = summarize(per_example, segments)
        for segment, metrics in summary.items():
            table.setdefault(segment, {})[name] = {m: _round(metrics[m]) for m in METRICS}
    texts = [q.text for q in test] + [q.gold for q in test]
    start = time.perf_counter()
    engine.search(texts, k=k, use_cache=False)
    qps = len(texts) / max(time.perf_counter() - start, 1e-9)
    stats = {"config": dataclasses.asdict(world.config), "counts": counts, "lexical_gap_test": table, "k": k,
             "mined_pairs": mined_pair_stats(world.mined_pairs)}
    return stats, qps


def grade_shares(pairs: list[MinedPair]) -> dict[str, float | int | None]:
    """``pairs`` (count), the shares graded 2 / 1 / 0 and the share below 2 (None when there are no pairs).

    >>> from qrw.shop.lexicon import Intent
    >>> grade_shares([MinedPair("q", "r", "rephrased", g, Intent("kettle")) for g in (2, 2, 1, 0)])
    {'pairs': 4, 'grade_2': 0.5, 'grade_1': 0.25, 'grade_0': 0.25, 'below_2': 0.5}
    """
    n = len(pairs)
    shares = {f"grade_{g}": _round(sum(p.grade == g for p in pairs) / n) if n else None for g in (2, 1, 0)}
    below = _round(sum(p.grade < 2 for p in pairs) / n) if n else None
    return {"pairs": n, **shares, "below_2": below}


def mined_pair_stats(pairs: list[MinedPair]) -> dict:
    """The mined rewrite pairs: grade shares overall (``all``) and per kind of drift, training queries covered."""
    return {"all": grade_shares(pairs),
            "by_kind": {kind: grade_shares([p for p in pairs if p.kind == kind]) for kind in KINDS},
            "queries": len({p.query for p in pairs})}


def format_stats(stats: dict, qps: float | None = None, build_seconds: float | None = None) -> str:
    """Human-readable rendering of ``world_stats``."""
    c = stats["counts"]
    lines = [f"world: {c['products']} products, {c['categories']} categories, {c['brands']} brands, "
             f"{c['canonical_terms']} canonical terms",
             "variants: " + ", ".join(f"{t} {n}" for t, n in c["variants"].items()),
             f"search-log sessions: {c['log_sessions']}, pretraining texts: {c['pretrain_texts']}, "
             f"relevance examples (train): {c['relevance_examples_train']}",
             "queries:  " + "  ".join(f"{s:>6}" for s in (*SEGMENTS, "all"))]
    for split in SPLITS:
        q = c["queries"][split]
        lines.append(f"  {split:<6}  " + "  ".join(f"{q[s]:>6}" for s in (*SEGMENTS, "all")))
    k = stats["k"]
    lines.append("")
    lines.append(f"lexical gap on test queries (k = {k}; accuracy = judge grade 2; ucvr = expected purchases/user)")
    header = f"{'segment':<7} {'rewriter':<11} {'accuracy':>8} {'relevance@' + str(k):>12} " \
             f"{'recall@' + str(k):>9} {'ucvr':>7}"
    lines.append(header)
    for segment, rows in stats["lexical_gap_test"].items():
        for name in REWRITERS:
            m = rows[name]
            cells = ["-" if m[x] is None else f"{m[x]:.3f}" for x in METRICS]
            lines.append(f"{segment:<7} {name:<11} {cells[0]:>8} {cells[1]:>12} {cells[2]:>9} {cells[3]:>7}")
    mined = stats["mined_pairs"]
    lines.append("")
    lines.append(f"mined rewrite pairs: {mined['all']['pairs']} from {mined['queries']} training queries "
                 f"(grade = the judge's grade of the rewrite for the first query's intent)")
    lines.append(f"{'kind':<18} {'pairs':>6} {'grade 2':>8} {'grade 1':>8} {'grade 0':>8} {'below 2':>8}")
    for kind, row in [*mined["by_kind"].items(), ("all", mined["all"])]:
        cells = ["-" if row[x] is None else f"{row[x]:.3f}" for x in ("grade_2", "grade_1", "grade_0", "below_2")]
        lines.append(f"{kind:<18} {row['pairs']:>6} " + " ".join(f"{c:>8}" for c in cells))
    if qps is not None:
        lines.append("")
        lines.append(f"BM25 throughput: {qps:,.0f} queries/s (uncached batch of test queries and gold rewrites)")
    if build_seconds is not None:
        lines.append(f"world build: {build_seconds:.2f} s")
    return "\n".join(lines)
