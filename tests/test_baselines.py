"""Dictionary rewriter mined from training pairs; gold / broadened / complement rewrites."""

from __future__ import annotations

import pytest

from qrw.shop.baselines import DictionaryRewriter, broadened_rewrites, complement_rewrites, gold_rewrites
from qrw.shop.lexicon import Intent, Query
from qrw.shop.world import World, WorldConfig


def pair(text: str, gold: str) -> Query:
    return Query(text, Intent("x"), gold, "head", "train")


def test_mines_variants_fillers_and_phrases_from_hand_made_pairs():
    train = [
        pair("cheap tv", "television"), pair("samsung tv", "samsung television"), pair("tv black", "television black"),
        pair("best tv 4k", "television 4k"), pair("phone case black", "protective case black"),
        pair("phone case", "protective case"), pair("cheap phone case", "protective case"),
        pair("phone", "smartphone"), pair("best phone", "smartphone"), pair("apple phone", "apple smartphone"),
        pair("phone black", "smartphone black"), pair("cheap blk phone", "smartphone black"),
        pair("blk tv", "television black"), pair("best blk phone", "smartphone black"),
        pair("sammy telly", "samsung television"),  # both words rare: neither is guessed alone
        pair("cheap sd card", "memory card"), pair("sd card black", "memory card black"),
        pair("best sd card", "memory card"),
    ]
    rewriter = DictionaryRewriter().fit(train)
    assert rewriter.mapping["tv"] == ("television",)
    assert rewriter.mapping["phone"] == ("smartphone",)
    assert rewriter.mapping["blk"] == ("black",)
    assert rewriter.mapping["phone case"] == ("protective", "case")
    assert rewriter.mapping["sd card"] == ("memory", "card")          # catalog phrase in gold order
    assert "cheap" not in rewriter.mapping and "best" not in rewriter.mapping
    assert "sammy" not in rewriter.mapping and "telly" not in rewriter.mapping
    assert rewriter.mapping["sammy telly"] == ("samsung", "television")
    assert rewriter.rewrite(["cheap blk tv", "apple phone case", "sd card", "tv 4k", "telly", "televsion",
                             "sammy telly black"]) == [
        "black television", "apple protective case", "memory card", "television 4k", "", "",
        "samsung television black"]


@pytest.fixture(scope="module")
def world() -> World:
    return World(WorldConfig(seed=4, n_products=600, n_train_queries=3000, n_val_queries=50, n_test_queries=300,
                             n_log_sessions=0))


def test_dictionary_on_a_world_knows_training_variants_not_typos_or_log_only(world):
    judge = world.judge
    rewriter = DictionaryRewriter().fit(world.queries["train"])

    def accuracy(queries):
        rewrites = rewriter.rewrite([q.text for q in queries])
        return sum(judge.grade_rewrite(q.intent, r) == 2 for q, r in zip(queries, rewrites)) / len(queries)

    test = world.queries["test"]
    head = [q for q in test if q.segment == "head"]
    tail = [q for q in test if q.segment == "tail"]
    assert accuracy(world.queries["train"]) > 0.85
    assert accuracy(head) > 0.8
    assert accuracy(tail) < accuracy(head) - 0.3
    # Every emitted word is catalog vocabulary.
    catalog = {w for q in world.queries["train"] for w in q.gold.split()}
    for r in rewriter.rewrite([q.text for q in test]):
        assert set(r.split()) <= catalog


def test_reference_rewrites(world):
    test = world.queries["test"]
    judge = world.judge
    assert gold_rewrites(test) == [q.gold for q in test]
    for q, broad, complement in zip(test, broadened_rewrites(test), complement_rewrites(test)):
        assert broad == q.intent.category
        assert judge.grade_rewrite(q.intent, broad) == (2 if not q.intent.brand and not q.intent.attrs else 1)
        assert judge.grade_rewrite(q.intent, complement) == 0
        assert complement in world.lexicon.complements[q.intent.category]
