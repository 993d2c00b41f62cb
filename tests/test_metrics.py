"""Rewrite metrics: hand-checked per-example values, summaries by segment, the lexical gap in miniature."""

from __future__ import annotations

import numpy as np
import pytest

from qrw.config import UserError
from qrw.shop.baselines import broadened_rewrites, complement_rewrites, gold_rewrites
from qrw.shop.judge import EXACT
from qrw.shop.metrics import page_grades, rewrite_metrics, summarize
from qrw.shop.search import SearchEngine
from qrw.shop.tables import SEGMENTS
from qrw.shop.users import UserSimulator
from qrw.shop.world import World, WorldConfig


@pytest.fixture(scope="module")
def setup():
    # The default catalog size (the tension needs categories larger than a page), few queries.
    world = World(WorldConfig(seed=2, n_train_queries=300, n_val_queries=50, n_test_queries=400, n_log_sessions=0))
    return world, SearchEngine(world.titles, world.popularity), UserSimulator(world)


def test_per_example_metrics_match_a_direct_computation(setup):
    world, engine, users = setup
    queries = world.queries["test"][:50]
    rewrites = gold_rewrites(queries)
    rewrites[0] = None
    rewrites[1] = "cheap nothing"  # parses to no intent: grade 0
    m = rewrite_metrics(world, engine, users, queries, rewrites, k=10)
    assert set(m) == {"accuracy", "grade", "relevance", "recall", "ucvr"}
    assert all(v.shape == (50,) for v in m.values())
    assert np.isnan(m["accuracy"][0]) and np.isnan(m["grade"][0])
    assert m["grade"][1] == 0 and m["accuracy"][1] == 0
    assert (m["accuracy"][2:] == 1).all()
    pages = engine.pages([q.text for q in queries], rewrites, k=10)
    for i, q in enumerate(queries):
        grades = world.judge.grade_products(q.intent)
        on_page = [grades[p] for p in pages[i] if p >= 0]
        n_exact = sum(g == EXACT for g in on_page)
        assert m["relevance"][i] == pytest.approx(n_exact / 10)
        assert m["recall"][i] == pytest.approx(n_exact / min(world.judge.exact_count(q.intent), 10))
    np.testing.assert_allclose(m["ucvr"], users.expected_purchases(pages, page_grades(world.judge,
                                                                                      [q.intent for q in queries],
                                                                                      pages)))
    assert ((m["recall"] >= 0) & (m["recall"] <= 1)).all()


def test_page_grades_marks_empty_slots_irrelevant(setup):
    world, _, _ = setup
    intent = world.queries["test"][0].intent
    best_exact = int(np.flatnonzero(world.judge.grade_products(intent) == EXACT)[0])
    grades = page_grades(world.judge, [intent], np.array([[best_exact, -1]]))
    assert grades.tolist() == [[EXACT, 0]]


def test_summarize_by_segment():
    per_example = {"accuracy": np.array([1.0, 0.0, np.nan, 1.0]), "ucvr": np.array([0.2, 0.4, 0.6, 0.8])}
    summary = summarize(per_example, ["tail", "head", "head", "tail"])
    assert list(summary) == ["head", "tail", "all"]  # world segment order, then "all"
    assert summary["head"] == {"accuracy": 0.0, "ucvr": pytest.approx(0.5), "n": 2}
    assert summary["tail"]["accuracy"] == 1.0 and summary["tail"]["ucvr"] == pytest.approx(0.5)
    assert summary["all"]["accuracy"] == pytest.approx(2 / 3) and summary["all"]["n"] == 4
    nothing = summarize({"accuracy": np.array([np.nan, np.nan])}, ["head", "head"])
    assert np.isnan(nothing["head"]["accuracy"])
    with pytest.raises(UserError):
        summarize({"ucvr": np.zeros(3)}, ["head"])


def test_lexical_gap_and_tension_in_a_small_world(setup):
    """Direction of the default world's figures (python -m qrw.world --stats), on a small world."""
    world, engine, users = setup
    test = world.queries["test"]
    segments = [q.segment for q in test]
    assert set(segments) == set(SEGMENTS)
    results = {name: summarize(rewrite_metrics(world, engine, users, test, rewrites), segments)["all"]
               for name, rewrites in [("none", None), ("gold", gold_rewrites(test)),
                                      ("broadened", broadened_rewrites(test)),
                                      ("complement", complement_rewrites(test))]}
    assert results["gold"]["recall"] > 1.5 * results["none"]["recall"]
    assert results["gold"]["accuracy"] == 1.0 and results["complement"]["accuracy"] == 0.0
    assert results["broadened"]["relevance"] < 0.7 * results["gold"]["relevance"]
    assert results["broadened"]["recall"] < 0.7 * results["gold"]["recall"]
    assert results["broadened"]["ucvr"] > 0.85 * results["gold"]["ucvr"]
    assert results["complement"]["ucvr"] < results["gold"]["ucvr"]
