"""The synthetic world's configuration, apart from the world (:mod:`qrw.shop.world`) and its hidden truth.

A training module may name a world's shape (how many products, queries, log sessions) without importing the
module that holds the intents, the gold rewrites and the judge (:mod:`qrw.shop.wall`).
"""

from __future__ import annotations

from dataclasses import dataclass

from qrw.config import arg, check


@dataclass
class WorldConfig:
    """Everything that shapes the synthetic world. Same config -> byte-identical world."""

    seed: int = arg(0, "random seed of the world (>= 0); the same seed gives byte-identical data")
    n_products: int = arg(3000, "number of products in the catalog")
    n_train_queries: int = arg(8000, "training queries (distinct intent + variant combinations)")
    n_val_queries: int = arg(500, "validation queries")
    n_test_queries: int = arg(1000, "test queries")
    n_log_sessions: int = arg(20000, "simulated search-log sessions (query -> clicked product) for pretraining")
    popularity_zipf: float = arg(1.0, "Zipf exponent of popularity within a category (0 = all equally popular)")
    p_canonical: float = arg(0.3, "probability that a query term is typed in catalog vocabulary")
    p_rare: float = arg(0.25, "share of rare variants among the user variants a query uses")
    p_log_only: float = arg(0.12, "share of log-only variants among the user variants a query uses")
    p_typo: float = arg(0.06, "probability of a one-letter typo per query word of >= 5 letters")
    p_filler: float = arg(0.35, "probability that a query carries a filler word (cheap, best, buy, ...)")
    max_query_words: int = arg(10, "longest query in words")
    mining_sessions_per_query: int = arg(6, "simulated shopping sessions started from each training query, "
                                         "mined for rewrite pairs (qrw.shop.mining)")

    def __post_init__(self) -> None:
        check(self.seed >= 0, "--seed must be >= 0")
        check(self.n_products >= 1, "--n-products must be >= 1")
        check(self.n_train_queries >= 1, "--n-train-queries must be >= 1")
        check(self.n_val_queries >= 1, "--n-val-queries must be >= 1")
        check(self.n_test_queries >= 1, "--n-test-queries must be >= 1")
        check(self.n_log_sessions >= 0, "--n-log-sessions must be >= 0")
        check(self.popularity_zipf >= 0, "--popularity-zipf must be >= 0")
        for name in ("p_canonical", "p_rare", "p_log_only", "p_typo", "p_filler"):
            value = getattr(self, name)
            check(0.0 <= value <= 1.0, f"--{name.replace('_', '-')} must be in [0, 1]")
        check(self.p_rare + self.p_log_only <= 1.0, "--p-rare + --p-log-only must be <= 1")
        check(self.max_query_words >= 6, "--max-query-words must be >= 6")
        check(self.mining_sessions_per_query >= 0, "--mining-sessions-per-query must be >= 0")
