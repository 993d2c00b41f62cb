"""BM25 search: parity with a naive per-document scorer, result pages, cache, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qrw.config import UserError
from qrw.shop.search import SearchEngine


def naive_rank_scores(titles, popularity, query, k1, b, lam):
    """Per-document loop, straight from the textbook formula: {doc id: rank score} for matching docs."""
    docs = [t.lower().split() for t in titles]
    n = len(docs)
    avgdl = sum(len(d) for d in docs) / n
    scores = {}
    for d, words in enumerate(docs):
        total, matched = 0.0, False
        for term in set(query.lower().split()):
            tf = words.count(term)
            if tf == 0:
                continue
            matched = True
            df = sum(term in other for other in docs)
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            total += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(words) / avgdl))
        if matched:
            scores[d] = total + lam * math.log(popularity[d])
    return scores


def random_corpus(rng, n_docs, vocab_size):
    vocab = [f"w{i}" for i in range(vocab_size)]
    titles = [" ".join(rng.choice(vocab, size=rng.integers(1, 9))) for _ in range(n_docs)]
    popularity = rng.uniform(0.1, 100.0, size=n_docs)
    return vocab, titles, popularity


@pytest.mark.parametrize("seed", range(6))
def test_topk_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    vocab, titles, popularity = random_corpus(rng, n_docs=int(rng.integers(5, 60)), vocab_size=25)
    k1, b, lam = float(rng.uniform(0.5, 2.0)), float(rng.uniform(0, 1)), float(rng.choice([0.0, 0.3, 1.0]))
    engine = SearchEngine(titles, popularity, k1=k1, b=b, lam=lam)
    queries = [" ".join(rng.choice(vocab + ["unknown", "W3"], size=rng.integers(1, 5))) for _ in range(30)]
    k = 7
    ids, scores = engine.search(queries, k=k)
    assert ids.shape == scores.shape == (len(queries), k)
    assert ids.dtype == np.int64 and scores.dtype == np.float32
    for q, query in enumerate(queries):
        expected = naive_rank_scores(titles, popularity, query, k1, b, lam)
        best = sorted(expected.values(), reverse=True)[:k]
        got = [s for s in scores[q] if np.isfinite(s)]
        np.testing.assert_allclose(got, best, rtol=1e-5, atol=1e-5)
        assert (ids[q, len(best):] == -1).all() and np.isneginf(scores[q, len(best):]).all()
        for rank, doc in enumerate(ids[q, :len(best)]):
            assert doc in expected and abs(expected[doc] - best[rank]) < 1e-4
        # ids are exact wherever the score is unique
        values = np.array(sorted(expected.values(), reverse=True))
        for rank, score in enumerate(best):
            if np.sum(np.abs(values - score) < 1e-9) == 1:
                assert expected[int(ids[q, rank])] == pytest.approx(score, abs=1e-9)


def test_hand_computed_single_document():
    # One doc "a b", avgdl = 2: idf(a) = log(1 + 0.5/1.5), tf = 1 -> score = idf * (k1 + 1) / (1 + k1).
    engine = SearchEngine(["a b"], [1.0], k1=1.2, b=0.75, lam=0.5)
    ids, scores = engine.search(["a", "a a", "c", ""], k=2)
    expected = math.log(1 + 0.5 / 1.5)
    assert ids[0].tolist() == [0, -1] and scores[0, 0] == pytest.approx(expected, rel=1e-6)
    assert scores[1, 0] == pytest.approx(expected, rel=1e-6)  # repeated query words count once
    assert ids[2].tolist() == [-1, -1] and ids[3].tolist() == [-1, -1]


def test_popularity_prior_breaks_text_ties():
    titles = ["red shoe", "red shoe", "red shoe"]
    engine = SearchEngine(titles, [1.0, 50.0, 5.0], lam=0.3)
    ids, scores = engine.search(["red shoe"], k=3)
    assert ids[0].tolist() == [1, 2, 0]
    assert scores[0, 0] - scores[0, 1] == pytest.approx(0.3 * math.log(10), rel=1e-5)


def test_k_larger_than_catalog_and_cache_consistency():
    rng = np.random.default_rng(7)
    _, titles, popularity = random_corpus(rng, n_docs=6, vocab_size=5)
    engine = SearchEngine(titles, popularity)
    queries = ["w0 w1", "w2", "w0 w1", "w4 w3 w2 w1 w0"]
    cached = engine.search(queries, k=10)
    again = engine.search(queries, k=10)
    fresh = engine.search(queries, k=10, use_cache=False)
    for a, b_ in zip(cached, fresh):
        np.testing.assert_array_equal(a, b_)
    for a, b_ in zip(cached, again):
        np.testing.assert_array_equal(a, b_)
    assert (cached[0][3, :6] >= 0).all() and (cached[0][3, 6:] == -1).all()


def test_pages_interleave_rewrite_channel_first_and_dedupe():
    # Popularity orders products within a word; "x y" (id 5) is longer and least popular, so last.
    titles = ["x", "x", "x", "y", "y", "x y"]
    popularity = [6.0, 5.0, 4.0, 3.0, 2.0, 0.5]
    engine = SearchEngine(titles, popularity, lam=1.0)
    assert engine.search(["x"], k=4)[0][0].tolist() == [0, 1, 2, 5]
    assert engine.search(["y"], k=4)[0][0].tolist() == [3, 4, 5, -1]
    pages = engine.pages(["x", "x", "x", "x", "nothing", "x"], ["y", None, "zzz", "x", "y", "y"], k=4)
    assert pages[0].tolist() == [3, 0, 4, 1]      # r1 q1 r2 q2
    assert pages[1].tolist() == [0, 1, 2, 5]      # no rewrite: the query's own top-k
    assert pages[2].tolist() == [0, 1, 2, 5]      # a rewrite that matches nothing adds nothing
    assert pages[3].tolist() == [0, 1, 2, 5]      # rewrite == query: duplicates removed
    assert pages[4].tolist() == [3, 4, 5, -1]     # empty query channel: rewrite results, then padding
    assert engine.pages(["x"], ["y"], k=8)[0].tolist() == [3, 0, 4, 1, 5, 2, -1, -1]  # 5 deduped
    np.testing.assert_array_equal(engine.pages(["x"], None, k=4), engine.search(["x"], k=4)[0])


def test_bad_input_is_a_user_error():
    with pytest.raises(UserError):
        SearchEngine(["a"], [0.0])
    with pytest.raises(UserError):
        SearchEngine(["a", "b"], [1.0])
    with pytest.raises(UserError):
        SearchEngine([], [])
    engine = SearchEngine(["a"], [1.0])
    with pytest.raises(UserError):
        engine.search(["a"], k=0)
    with pytest.raises(UserError):
        engine.pages(["a", "b"], ["a"])
