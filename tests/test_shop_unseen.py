"""The evaluation's unseen-intent segment and its baselines (qrw.shop.shop.Shop, qrw.scorecard.evaluate_run).

A query is *unseen* when its intent occurs in no training query, no logged query
and no mined pair. Checked by hand on a tiny world: each of the three sources
is planted in turn and must flip exactly the queries of that intent.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from qrw.scorecard import evaluate_run, format_summary
from qrw.shop.baselines import DictionaryRewriter
from qrw.shop.lexicon import Intent
from qrw.shop.logs import click_pairs
from qrw.shop.metrics import rewrite_metrics
from qrw.shop.mining import MinedPair
from qrw.shop.shop import BASELINE_LABELS, BASELINES, UNSEEN, Shop
from qrw.shop.world import World, WorldConfig

TINY = dict(seed=2, n_products=300, n_train_queries=200, n_val_queries=40, n_test_queries=60, n_log_sessions=300,
            mining_sessions_per_query=1)


@pytest.fixture(scope="module")
def world() -> World:
    return World(WorldConfig(**TINY))


def test_unseen_is_no_training_logged_or_mined_intent_by_hand(world):
    test = world.queries["test"]
    unseen = Shop(world).unseen(test)
    by_hand = [not any(q.intent == other.intent for other in world.queries["train"] + world.log_queries)
               and not any(q.intent == p.intent for p in world.mined_pairs) for q in test]
    assert unseen.tolist() == by_hand
    assert 0 < unseen.sum() < len(test)  # both kinds present
    assert not Shop(world).unseen(world.queries["train"]).any()  # a training query's intent is seen by definition
    made_up = dataclasses.replace(test[0], intent=Intent("no such category"))
    assert Shop(world).unseen([made_up]).tolist() == [True]


@pytest.mark.parametrize("source", ["train", "log", "mined"])
def test_each_source_makes_an_intent_seen(source):
    """Plant one unseen test intent into one source: exactly the test queries of that intent become seen."""
    world = World(WorldConfig(**TINY))
    test = world.queries["test"]
    before = Shop(world).unseen(test)
    target = test[int(np.flatnonzero(before)[0])].intent
    if source == "train":
        world.queries["train"].append(dataclasses.replace(world.queries["train"][0], intent=target))
    elif source == "log":
        world.log_queries.append(dataclasses.replace(world.log_queries[0], intent=target))
    else:
        world._mined_pairs = list(world.mined_pairs) + [MinedPair("a query", "a rewrite", "rephrased", 2, target)]
    after = Shop(world).unseen(test)
    flipped = before & ~after
    assert flipped.tolist() == [q.intent == target for q in test] and not (after & ~before).any()


def gold_stub(world):
    """A rewriter that writes the gold rewrite of every query of the world (no model)."""
    golds = {q.text: q.gold for split in ("val", "test") for q in world.queries[split]}

    class Stub:
        def rewrite(self, texts, return_well_formed=False):
            out = [golds[t] for t in texts]
            return (out, [True] * len(out)) if return_well_formed else out
    return Stub()


def test_evaluate_run_reports_the_unseen_group_and_the_baselines(world):
    shop = Shop(world)
    test = world.queries["test"]
    results = evaluate_run(shop, gold_stub(world), name="stub", baselines=True, tagging=False)
    unseen = shop.unseen(test)
    assert results["segments"][-2:] == ["all", UNSEEN] and results["n_unseen"] == int(unseen.sum())
    assert list(results["rows"]) == [BASELINE_LABELS[b] for b in BASELINES] + ["stub"]
    assert BASELINE_LABELS["gold-dictionary"] == "gold-dictionary (upper bound)"
    # the unseen row is the mean over exactly those queries
    none = rewrite_metrics(world, shop.engine, shop.users, test, None)
    row = results["rows"]["no rewrite"][UNSEEN]
    assert row["n"] == unseen.sum()
    for m in ("relevance", "recall", "ucvr"):
        assert row[m] == pytest.approx(np.nanmean(none[m][unseen]))
    # the dictionary a shop has is fit on its logs' clicks; the upper bound on the gold pairs
    logged = DictionaryRewriter().fit_pairs(click_pairs(shop.observed.sessions, world.titles))
    gold_fit = DictionaryRewriter().fit(world.queries["train"])
    texts = [q.text for q in test]
    assert shop.baseline_rewrites("dictionary", test) == logged.rewrite(texts)
    assert shop.baseline_rewrites("gold-dictionary", test) == gold_fit.rewrite(texts)
    assert logged.rewrite(texts) != gold_fit.rewrite(texts)
    dictionary = rewrite_metrics(world, shop.engine, shop.users, test, logged.rewrite(texts))
    row = results["rows"]["dictionary"][UNSEEN]
    assert row["accuracy"] == pytest.approx(np.nanmean(dictionary["accuracy"][unseen]))
    gold = rewrite_metrics(world, shop.engine, shop.users, test, [q.gold for q in test])
    diff = results["vs_dictionary"][UNSEEN]["relevance"]["lift"]
    assert diff == pytest.approx(np.mean(gold["relevance"][unseen] - dictionary["relevance"][unseen]))
    text = format_summary(results)
    assert f"{UNSEEN}: the {int(unseen.sum())} of {len(test)} queries" in text
    assert "gold-dictionary (upper bound)" in text and "upper bounds" in text
