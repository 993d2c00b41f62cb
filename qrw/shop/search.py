"""BM25 product search with a popularity prior, vectorised over a batch of queries.

The search engine whose results the rewriter tries to improve (in the paper,
JD.com's production engine; here Okapi BM25 over product titles, Robertson &
Zaragoza 2009). Text is lowercased and split on whitespace; a query reaches a
product only through words the title contains, which is exactly the lexical gap
query rewriting bridges.

Score of product d for query q, over the *distinct* known words t of q:

    bm25(q, d) = sum_t idf(t) * tf(t, d) * (k1 + 1) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))
    idf(t)     = log(1 + (N - df(t) + 0.5) / (df(t) + 0.5))          (Lucene's non-negative idf)
    rank(q, d) = bm25(q, d) + lam * log(popularity(d))   if d contains >= 1 word of q, else excluded

``lam`` (default 0.3) is the popularity prior that real engines blend with text
match. On the default world one matched title word is worth 1.5 ("black") to
6.8 (a rare brand) BM25 points, ~3.6 for a category word, while the prior puts a
best-seller ``lam * log(100) ~ 1.4`` points above a product 100x less popular
(the default within-category Zipf spans about that). So a query that names
every attribute ranks exact matches first, while a broad query ("television")
surfaces the category's best-sellers: good for conversion, not always
relevant to what the user wanted.

Departures from textbook BM25: repeated query words count once; unknown words
are ignored; ties at equal rank score are broken arbitrarily but
deterministically (``np.argpartition``).

Results are cached per distinct set of known query words (GRPO scores the
same queries and rewrites over and over).
"""

from __future__ import annotations

import numpy as np

from qrw.config import check


class SearchEngine:
    """BM25 + popularity prior over product titles.

    Args:
        titles: one title per product (product id = position).
        popularity: (n,) positive popularity per product.
        k1, b: BM25 term-frequency saturation and length normalisation.
        lam: weight of ``log(popularity)`` in the ranking score (see module doc).
        max_cache: cached result lists before the cache is cleared.

    The index is a dense (V, N) float64 matrix of per-word BM25 contributions
    (V title words x N products: about 300 x 3,000 for the default world, 7 MB).
    """

    def __init__(self, titles: list[str], popularity, k1: float = 1.2, b: float = 0.75, lam: float = 0.3,
                 max_cache: int = 200_000) -> None:
        popularity = np.asarray(popularity, dtype=np.float64)
        check(len(titles) >= 1, "the search engine needs at least one product title")
        check(popularity.shape == (len(titles),), "popularity must have one value per title")
        check(bool(np.all(popularity > 0)), "popularity must be positive (its log is the prior)")
        check(k1 >= 0 and 0 <= b <= 1 and lam >= 0, "BM25 needs k1 >= 0, 0 <= b <= 1, lam >= 0")
        self.k1, self.b, self.lam = k1, b, lam
        self.n_docs = len(titles)
        docs = [t.lower().split() for t in titles]
        self.vocab: dict[str, int] = {}
        for words in docs:
            for w in words:
                self.vocab.setdefault(w, len(self.vocab))
        tf = np.zeros((len(self.vocab), self.n_docs), dtype=np.float64)  # (V, N)
        for d, words in enumerate(docs):
            for w in words:
                tf[self.vocab[w], d] += 1.0
        lengths = np.array([len(words) for words in docs], dtype=np.float64)  # (N,)
        avgdl = max(lengths.mean(), 1e-9)
        df = (tf > 0).sum(axis=1)  # (V,)
        self.idf = np.log1p((self.n_docs - df + 0.5) / (df + 0.5))  # (V,)
        norm = k1 * (1.0 - b + b * lengths / avgdl)  # (N,)
        self.weights = self.idf[:, None] * tf * (k1 + 1.0) / (tf + norm[None, :])  # (V, N), 0 where tf == 0
        self.prior = lam * np.log(popularity)  # (N,)
        self._max_cache = max_cache
        self._cache: dict[tuple[tuple[int, ...], int], tuple[np.ndarray, np.ndarray]] = {}

    def _term_ids(self, text: str | None) -> tuple[int, ...]:
        """Sorted distinct vocabulary ids of the text's words (unknown words dropped)."""
        if not text:
            return ()
        vocab = self.vocab
        return tuple(sorted({vocab[w] for w in text.lower().split() if w in vocab}))

    def _score_topk(self, queries: list[tuple[int, ...]], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k ids (B, k) and rank scores (B, k) for queries given as word-id tuples (no cache)."""
        B = len(queries)
        ids = np.full((B, k), -1, dtype=np.int64)
        scores = np.full((B, k), -np.inf, dtype=np.float32)
        rows = [i for i, q in enumerate(queries) if q]
        kk = min(k, self.n_docs)
        for start in range(0, len(rows), 256):  # chunks bound memory: (256, N) float64
            chunk = rows[start:start + 256]
            flat = np.fromiter((t for i in chunk for t in queries[i]), dtype=np.int64)
            offsets = np.cumsum([0] + [len(queries[i]) for i in chunk[:-1]])
            bm25 = np.add.reduceat(self.weights[flat], offsets, axis=0)  # (C, N)
            ranked = np.where(bm25 > 0, bm25 + self.prior[None, :], -np.inf)  # (C, N)
            top = np.argpartition(-ranked, kk - 1, axis=1)[:, :kk] if kk < self.n_docs else \
                np.tile(np.arange(self.n_docs), (len(chunk), 1))  # (C, kk) unordered
            top_scores = np.take_along_axis(ranked, top, axis=1)  # (C, kk)
            order = np.argsort(-top_scores, axis=1, kind="stable")  # (C, kk)
            top = np.take_along_axis(top, order, axis=1)
            top_scores = np.take_along_axis(top_scores, order, axis=1)
            top = np.where(np.isfinite(top_scores), top, -1)
            ids[chunk, :kk] = top
            scores[chunk, :kk] = top_scores
        return ids, scores

    def search(self, texts: list[str], k: int = 10, use_cache: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Top-k products for each text.

        Returns ``ids`` (B, k) int64 and ``scores`` (B, k) float32 (rank score
        ``bm25 + lam * log(popularity)``), best first; slots past the matching
        products are -1 / -inf. A text with no title word matches nothing.
        ``use_cache=False`` recomputes everything (for benchmarks).
        """
        check(k >= 1, "k must be >= 1")
        keys = [self._term_ids(t) for t in texts]
        if not use_cache:
            return self._score_topk(keys, k)
        missing = list(dict.fromkeys(key for key in keys if (key, k) not in self._cache))
        if missing:
            if len(self._cache) + len(missing) > self._max_cache:
                self._cache.clear()
            new_ids, new_scores = self._score_topk(missing, k)
            for j, key in enumerate(missing):
                self._cache[(key, k)] = (new_ids[j], new_scores[j])
        ids = np.empty((len(texts), k), dtype=np.int64)
        scores = np.empty((len(texts), k), dtype=np.float32)
        for i, key in enumerate(keys):
            ids[i], scores[i] = self._cache[(key, k)]
        return ids, scores

    def pages(self, queries: list[str], rewrites: list[str | None] | None = None, k: int = 10) -> np.ndarray:
        """Result pages (B, k) int64 with the rewrite as an extra retrieval channel.

        ``page(q, r) = dedupe(interleave(topk(r), topk(q)))[:k]`` (rewrite channel
        first: r1, q1, r2, q2, ..., skipping duplicates and empty slots), and
        ``page(q) = topk(q)`` when the rewrite is None (or ``rewrites`` is None).
        Empty slots are -1.
        """
        check(rewrites is None or len(rewrites) == len(queries), "need one rewrite (or None) per query")
        query_ids, _ = self.search(queries, k)
        if rewrites is None:
            return query_ids
        has_rewrite = [i for i, r in enumerate(rewrites) if r is not None]
        pages = query_ids.copy()
        if not has_rewrite:
            return pages
        rewrite_ids, _ = self.search([rewrites[i] for i in has_rewrite], k)
        for row, i in enumerate(has_rewrite):
            page, seen = [], set()
            for pair in zip(rewrite_ids[row].tolist(), query_ids[i].tolist()):
                for pid in pair:
                    if pid >= 0 and pid not in seen:
                        seen.add(pid)
                        page.append(pid)
            page = page[:k]
            pages[i, :len(page)] = page
            pages[i, len(page):] = -1
        return pages
