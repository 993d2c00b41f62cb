"""The one door (qrw.shop.annotation): labels from texts, the budget, the disagreement rate, counts."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

import qrw.shop.annotation as annotation
from qrw.config import UserError
from qrw.shop.annotation import AnnotationService
from qrw.shop.ood import ood_queries
from qrw.shop.world import World, WorldConfig

TINY = dict(seed=3, n_products=300, n_train_queries=200, n_val_queries=40, n_test_queries=60, n_log_sessions=500)


@pytest.fixture(scope="module")
def world() -> World:
    return World(WorldConfig(**TINY))


@pytest.fixture(scope="module")
def examples(world) -> list[tuple[str, str, int]]:
    """(query, rewrite, judge grade) of training queries: perturbed rewrites of every label."""
    return world.relevance_examples("train", per_label=5)


def test_without_disagreement_labels_are_the_judges(world, examples):
    service = AnnotationService(world, budget=10**6, disagreement=0.0)
    assert service.label([(q, r) for q, r, _ in examples]) == [g for _, _, g in examples]
    q = world.log_queries[0]
    assert service.label([(q.text, q.gold), (q.text, "")]) == [2, 0]
    ood = ood_queries(world.config.seed, 3, "train")
    assert service.label([(text, q.gold) for text in ood]) == [0, 0, 0]  # nothing an out-of-domain search asks is sold


def test_query_intents_come_from_the_worlds_record(world, examples, monkeypatch):
    service = AnnotationService(world, budget=10**6, disagreement=0.0)
    queries = {q for q, _, _ in examples}
    real_parse = world.judge.parse

    def parse(text):
        assert text not in queries, "a query the world generated was parsed instead of looked up"
        return real_parse(text)

    monkeypatch.setattr(world.judge, "parse", parse)
    assert service.label([(q, r) for q, r, _ in examples[:50]]) == [g for _, _, g in examples[:50]]


def test_held_out_queries_are_refused(world):
    service = AnnotationService(world, budget=100)
    for split in ("val", "test"):
        with pytest.raises(ValueError, match="val/test"):
            service.label([(world.queries[split][0].text, "phone")])
    assert service.bought == 0


def test_budget_counts_and_caching(world, examples):
    pairs = [(q, r) for q, r, _ in examples[:6]]
    service = AnnotationService(world, budget=5, annotators=1)
    first = service.label(pairs[:3] + pairs[:1])  # a repeat in one call is bought once
    assert service.bought == 3 and service.pairs_labelled == 3 and service.remaining == 2 and service.asked == 4
    assert service.label(pairs[:3]) == first[:3] and service.bought == 3  # stored labels cost nothing
    with pytest.raises(UserError, match="label budget exceeded: 3 new pairs need 3 labels, 2 of 5 left"):
        service.label(pairs[3:])
    assert service.bought == 3 and service.pairs_labelled == 3  # a refused call buys nothing
    service.label(pairs[3:5])
    assert service.remaining == 0
    assert service.summary() == {"labels_bought": 5, "pairs_labelled": 5, "pairs_asked": 9, "budget": 5,
                                 "disagreement": 0.1, "annotators": 1}
    three = AnnotationService(world, budget=9, annotators=3)
    three.label(pairs[:3])
    assert three.bought == 9 and three.pairs_labelled == 3
    with pytest.raises(UserError, match="budget"):
        three.label(pairs[3:4])


def test_disagreement_rate_holds(world, examples):
    pairs = [(q, r) for q, r, _ in examples]
    truth = np.array([g for _, _, g in examples])
    p = 0.2
    labels = np.array(AnnotationService(world, budget=len(pairs), disagreement=p).label(pairs))
    differ = labels != truth
    n = len(pairs)
    assert n > 1000
    assert abs(differ.mean() - p) < 4 * np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(labels - truth)[differ] == 1)  # always a neighbouring grade
    ones = truth == 1  # a partial pair is moved up or down with equal odds
    assert abs((labels[ones & differ] == 0).mean() - 0.5) < 0.15
    # the median of three annotators: wrong on a grade-0 or grade-2 pair when >= 2 of 3 move it
    majority = np.array(AnnotationService(world, budget=3 * n, disagreement=p, annotators=3).label(pairs))
    ends = truth != 1
    expected = 3 * p ** 2 * (1 - p) + p ** 3
    assert abs((majority[ends] != truth[ends]).mean() - expected) < 4 * np.sqrt(expected / ends.sum())


def test_labels_are_deterministic_and_order_independent(world, examples):
    pairs = [(q, r) for q, r, _ in examples[:400]]
    forward = AnnotationService(world, budget=400, disagreement=0.3, seed=7).label(pairs)
    backward = AnnotationService(world, budget=400, disagreement=0.3, seed=7).label(pairs[::-1])
    assert forward == backward[::-1]
    assert AnnotationService(world, budget=400, disagreement=0.3, seed=8).label(pairs) != forward


def test_the_docstring_examples_run():
    assert doctest.testmod(annotation).failed == 0


@pytest.mark.parametrize("kwargs, match", [(dict(budget=-1), "budget"), (dict(budget=1, disagreement=1.5),
                                                                          "disagreement"),
                                           (dict(budget=1, annotators=2), "odd")])
def test_config_errors_are_one_line(world, kwargs, match):
    with pytest.raises(UserError, match=match):
        AnnotationService(world, **kwargs)
