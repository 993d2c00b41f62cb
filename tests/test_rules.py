"""The rule rewards for a learned relevance judge's blind spots (``--rules``): by hand and in the reward function."""

from __future__ import annotations

import numpy as np
import pytest

from qrw.config import UserError
from qrw.oracle import OracleView
from qrw.rewards import RewardConfig, RewardFunction, format_reward, rule_rewards, stem
from qrw.shop.shop import Shop
from qrw.shop.world import World, WorldConfig

CATEGORIES = ("sneakers", "protective case", "smartphone")
BRANDS = {"nike", "adidas", "apple"}


def test_each_rule_by_hand():
    anchors = ["nike sneakers black"]
    assert rule_rewards(["nike sneakers black"], anchors, ("category",), CATEGORIES, BRANDS).tolist() == [1.0]
    assert rule_rewards(["nike black"], anchors, ("category",), CATEGORIES, BRANDS).tolist() == [0.0]
    assert rule_rewards(["nike sneakers"], anchors, ("anchors",), CATEGORIES, BRANDS).tolist() == [pytest.approx(2 / 3)]
    assert rule_rewards(["adidas sneakers black"], anchors, ("brand",), CATEGORIES, BRANDS).tolist() == [0.0]
    assert rule_rewards(["sneakers black"], anchors, ("brand",), CATEGORIES, BRANDS).tolist() == [1.0]  # dropping is not adding


def test_phrase_categories_match_whole_words_only():
    rules = ("category",)
    assert rule_rewards(["apple protective case"], [""], rules, CATEGORIES, BRANDS).tolist() == [1.0]
    assert rule_rewards(["apple protective"], [""], rules, CATEGORIES, BRANDS).tolist() == [0.0]
    assert rule_rewards(["smartphones"], [""], rules, CATEGORIES, BRANDS).tolist() == [0.0]  # not a category word


def test_no_anchors_and_rule_mean():
    assert rule_rewards(["anything"], [""], ("anchors",), CATEGORIES, BRANDS).tolist() == [1.0]
    got = rule_rewards(["nike sneakers"], ["apple smartphone"], ("category", "anchors", "brand"), CATEGORIES, BRANDS)
    assert got.tolist() == [pytest.approx((1 + 0 + 0) / 3)]


def test_config():
    assert RewardConfig().rule_list == ("category", "anchors", "brand", "vocabulary")  # the default hybrid reward has every rule
    assert "rules" not in RewardConfig(rules="none").weights() and RewardConfig(rules="none").rule_list == ()
    assert "rules" not in RewardConfig(rules="").weights()
    cfg = RewardConfig(rules="category, anchors", w_rules=0.25)
    assert cfg.rule_list == ("category", "anchors") and cfg.weights()["rules"] == 0.25
    with pytest.raises(UserError, match="unknown rule"):
        RewardConfig(rules="category,typo")


def test_reward_function_uses_the_dictionary_as_anchors():
    world = World(WorldConfig(seed=1, n_products=300, n_train_queries=60, n_val_queries=10, n_test_queries=20,
                              n_log_sessions=200))
    shop = Shop(world)
    queries = world.queries["test"][:10]
    gold = [" ".join(q.intent.category.split()) for q in queries]  # bare categories: drop the brand and attributes
    fn = RewardFunction(shop.observed, RewardConfig(rules="category,anchors,brand", relevance_judge="oracle"),
                        oracle=OracleView(shop))
    scores = fn(queries, gold)
    anchors = shop.observed.dictionary.rewrite([q.text for q in queries])  # fit on the logs' clicks, not on gold
    expected = rule_rewards(gold, [a or "" for a in anchors], ("category", "anchors", "brand"),
                            world.lexicon.category_names, set(world.lexicon.brands))
    np.testing.assert_allclose(scores["rules"], expected)
    assert all(scores["rules"] >= 2 / 3)  # every bare category passes the category and brand checks
    np.testing.assert_allclose(scores["fused"], scores["relevance"] + scores["conversion"] + 0.5 * scores["format"]
                               + 0.5 * scores["rules"])
    off = RewardFunction(shop.observed, RewardConfig(rules="none", relevance_judge="oracle"),
                         oracle=OracleView(shop))(queries, gold)
    assert not off["rules"].any()  # off: zeros, not in the fusion


def test_vocabulary_rule_scores_the_share_of_index_words():
    vocab = {"xiaomi", "power", "bank"}
    got = rule_rewards(["xiaomi power bank", "quality xiaomi power bank with xiaomi's's's's's deals", "", "deals"],
                       [""] * 4, ("vocabulary",), CATEGORIES, BRANDS, vocab)
    assert got.tolist() == pytest.approx([1.0, 3 / 7, 0.0, 0.0])
    with pytest.raises(UserError, match="vocabulary"):
        rule_rewards(["xiaomi"], [""], ("vocabulary",), CATEGORIES, BRANDS)


def test_one_category_rule_by_hand():
    rules = ("one-category",)
    got = rule_rewards(["apple smartphone", "smartphone protective case", "apple", "smartphone smartphone",
                        "protective case black", "protective black case"], [""] * 6, rules, CATEGORIES, BRANDS)
    assert got.tolist() == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]  # one; two; none; one named twice; a phrase; a broken phrase


def test_every_gold_rewrite_names_one_category():
    """The rule cannot cost a rewrite the judge grades equivalent: every gold rewrite passes it."""
    world = World(WorldConfig(seed=4, n_products=300, n_train_queries=300, n_val_queries=10, n_test_queries=10,
                              n_log_sessions=100))
    golds = [q.gold for q in world.queries["train"]]
    got = rule_rewards(golds, [""] * len(golds), ("one-category",), world.lexicon.category_names, set())
    assert got.tolist() == [1.0] * len(golds)


def test_dropped_attribute_values_are_split_by_what_the_rules_dictionary_reads():
    from qrw.scorecard import dropped_attribute_values
    from qrw.shop.judge import render_canonical

    world = World(WorldConfig(seed=1, n_products=300, n_train_queries=60, n_val_queries=10, n_test_queries=40,
                              n_log_sessions=200))
    lex = world.lexicon
    queries = [q for q in world.queries["test"] if len(q.intent.attrs) >= 2][:3]
    assert len(queries) == 3
    # drop exactly the first attribute of each intent: the canonical text of the rest
    dropped = [q.intent.attrs[0][1] for q in queries]
    rewrites = [render_canonical(lex, type(q.intent)(q.intent.category, q.intent.brand, q.intent.attrs[1:]))
                for q in queries]
    assert all(world.perturbation_kind(q.intent, r) == "attribute dropped" for q, r in zip(queries, rewrites))
    # the reading of query 0 names its dropped value, the others' do not
    readings = [f"{dropped[0]} {queries[0].intent.category}", queries[1].intent.category, ""]
    got = dropped_attribute_values(world, queries, rewrites, readings)
    assert got == {"values dropped, read": 1, "values dropped, unread": 2}
    # the gold rewrite drops nothing
    gold = [render_canonical(lex, q.intent) for q in queries]
    assert dropped_attribute_values(world, queries, gold, readings) == {"values dropped, read": 0,
                                                                       "values dropped, unread": 0}


def test_format_rule_max_repeats_counts_stems_at_2():
    """--max-repeats 2: a word twice fails, possessives stripped first (the degenerate rewrites GRPO wrote behind the
    wall: 'power charger charger', "headphones headphones headphones's's"); 3 keeps the old rule (words as written)."""
    rewrites = ["power charger charger", "headphones headphones's", "smartwatch alu's's's's smartwatch",
                "levi's jeans", "samsung charger black", "a a a"]
    ok = [True] * len(rewrites)
    assert format_reward(["q"] * 6, rewrites, ok, set(), 16, max_repeats=2).tolist() == [0, 0, 0, 1, 1, 0]
    assert format_reward(["q"] * 6, rewrites, ok, set(), 16, max_repeats=3).tolist() == [1, 1, 1, 1, 1, 0]
    assert format_reward(["q"] * 6, rewrites, ok, set(), 16).tolist() == [1, 1, 1, 1, 1, 0]  # the default: 3
    assert stem("headphones's's") == "headphones" and stem("'s") == "'s"
    with pytest.raises(UserError, match="--max-repeats"):
        RewardConfig(max_repeats=1)


def test_conversion_gate_multiplies_conversion_by_relevance():
    world = World(WorldConfig(seed=1, n_products=300, n_train_queries=60, n_val_queries=10, n_test_queries=20,
                              n_log_sessions=200))
    shop = Shop(world)
    queries = world.queries["test"][:10]
    rewrites = [" ".join(q.intent.category.split()) for q in queries[:5]] + [q.text for q in queries[5:]]
    plain = RewardFunction(shop.observed, RewardConfig(relevance_judge="oracle"), oracle=OracleView(shop))
    gated = RewardFunction(shop.observed, RewardConfig(relevance_judge="oracle", conversion_gate="relevance"),
                           oracle=OracleView(shop))
    a, b = plain(queries, rewrites), gated(queries, rewrites)
    assert len(set(a["relevance"].tolist())) > 1 and a["conversion"].any()  # grades and pages differ: a real check
    np.testing.assert_allclose(b["conversion"], a["conversion"] * a["relevance"])
    assert not np.allclose(b["conversion"], a["conversion"])  # the gate bites on these pairs
    np.testing.assert_allclose(b["relevance"], a["relevance"])
    np.testing.assert_allclose(b["fused"], b["relevance"] + b["conversion"] + 0.5 * b["format"] + 0.5 * b["rules"])
    with pytest.raises(UserError, match="conversion"):
        RewardConfig(conversion_gate="tagger")
