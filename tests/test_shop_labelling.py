"""Stage 1's production relevance pairs (qrw.shop.labelling): built behind the wall, bought through the door.

Pinned here: the catalog-word augmentations by hand; the stratified buying
order by hand; on a tiny world, the whole build runs sealed (and a planted read
of a query's gold fails it), the budget is spent exactly and never passed,
every label is the service's (and, with no disagreement, the judge's grade of
the query's recorded intent), no val/test text is a query, every query is
observed text, all three labels occur, the build is deterministic and budgets
nest.
"""

import numpy as np
import pytest

from qrw.config import UserError
from qrw.shop import labelling, wall
from qrw.shop.annotation import AnnotationService
from qrw.shop.labelling import CatalogWords, buy_order, build, candidates, production_pairs
from qrw.shop.observation import observe_world
from qrw.shop.observed import ObservedShop
from qrw.shop.world import World, WorldConfig

TABLES = (["smartphone", "protective case"],
          {"smartphone": ["apple", "samsung"], "protective case": ["apple", "otterbox"]},
          {"smartphone": [("colour", ["black", "gold"]), ("storage", ["64gb", "128gb"])],
           "protective case": [("colour", ["black", "red"])]})


def test_catalog_phrases_and_augmentations_by_hand():
    words = CatalogWords(*TABLES)
    assert words.phrases("cheap apple smartphone in black 64gb".split()) == [
        (1, 2, "brand"), (2, 3, "category"), (4, 5, "value"), (5, 6, "value")]
    assert words.phrases("protective case".split()) == [(0, 2, "category")]  # the longest match wins
    for seed in range(20):
        out = words.augment("apple smartphone black 64gb", np.random.default_rng(seed))
        assert out["brand swapped"] == "samsung smartphone black 64gb"  # the category's only other brand
        assert out["category swapped"] == "apple protective case black 64gb"
        assert out["category only"] == "smartphone"
        assert out["value swapped"] in {"apple smartphone gold 64gb", "apple smartphone black 128gb"}
        assert out["drop phrase"] in {"smartphone black 64gb", "apple black 64gb", "apple smartphone 64gb",
                                      "apple smartphone black"}
        # no category: a value is swapped within a category that has it, the brand within one that sells it
        bare = words.augment("otterbox red", np.random.default_rng(seed))
        assert bare["brand swapped"] == "apple red" and bare["value swapped"] == "otterbox black"
        assert set(bare) == {"brand swapped", "value swapped", "drop phrase"}
    assert words.augment("smartphone", np.random.default_rng(0)) == {"category swapped": "protective case"}
    assert words.augment("nothing we sell", np.random.default_rng(0)) == {}


def test_buy_order_is_stratified_by_hand():
    pools = {"a": [("q", f"a{i}") for i in range(6)], "b": [("q", f"b{i}") for i in range(6)]}
    order = buy_order(pools, 0, {"a": 0.75, "b": 0.25})
    # keys (drawn + 1) / share: a 1.33 2.67 4 5.33 6.67 8, b 4 8 12 ...; a tie goes to the first source
    assert [s for s, _ in order] == list("aaabaaabbbbb")
    assert sorted(p for _, p in order) == sorted(pools["a"] + pools["b"])  # every pair once
    assert buy_order(pools, 0, {"a": 1.0, "b": 0.0}) == [(s, p) for s, p in order if s == "a"]  # share 0: never
    assert [p for _, p in buy_order(pools, 1, {"a": 0.75, "b": 0.25})] != [p for _, p in order]  # seeded


@pytest.fixture(scope="module")
def world() -> World:
    return World(WorldConfig(n_products=200, n_train_queries=400, n_val_queries=60, n_test_queries=80,
                             n_log_sessions=600))


def observed(world, budget: int, disagreement: float = 0.1, annotators: int = 1) -> ObservedShop:
    """A fresh observed shop whose annotation service has sold nothing."""
    return observe_world(world, label_budget=budget, disagreement=disagreement, annotators=annotators)


def sealed_build(shop: ObservedShop, budget: int, seed: int = 0):
    with wall.sealed():  # the key property: the builder reads nothing hidden
        return build(shop, budget, seed)


def test_the_build_runs_sealed_and_a_planted_gold_read_fails_it(world, monkeypatch):
    query = world.queries["train"][0]
    sealed_build(observed(world, 500), 500)
    skipped = labelling._skipped_titles

    def leaky(sessions, titles, rng):
        return skipped(sessions, titles, rng) + [(query.text, query.gold)]
    monkeypatch.setattr(labelling, "_skipped_titles", leaky)
    with pytest.raises(wall.WallError, match="Query.gold"):
        sealed_build(observed(world, 500), 500)


def test_budget_spent_exactly_and_never_passed(world):
    shop = observed(world, 10_000)
    lab = sealed_build(shop, 700)
    assert shop.annotations.bought == lab.labels_bought == 700 == len(lab.pairs)
    total = sum(lab.candidates.values())
    shop = observed(world, total + 50)
    lab = sealed_build(shop, total + 50)  # more budget than candidates: every candidate once
    assert shop.annotations.bought == lab.labels_bought == total == len(lab.pairs) == len(set(lab.pairs))
    shop = observed(world, 10_000, annotators=3)
    lab = sealed_build(shop, 700)  # 3 labels a pair: 233 pairs, 699 labels
    assert shop.annotations.bought == lab.labels_bought == 699 and len(lab.pairs) == 233
    shop.annotations.label([lab.pairs[0][:2]])  # a pair already sold is free
    assert shop.annotations.bought == 699
    with pytest.raises(UserError, match="exceeds"):
        build(observed(world, 100), 101, 0)
    with pytest.raises(UserError, match=">= 0"):
        build(observed(world, 100), -1, 0)


def test_labels_are_the_services_and_with_no_disagreement_the_judges(world):
    shop = observed(world, 3000)
    lab = sealed_build(shop, 3000)
    assert shop.annotations.label([(q, r) for q, r, _ in lab.pairs]) == [label for _, _, label in lab.pairs]
    assert shop.annotations.bought == 3000  # the second ask bought nothing
    exact = sealed_build(observed(world, 3000, disagreement=0.0), 3000)
    intents = {q.text: q.intent for q in world.queries["train"] + list(world.log_queries)}
    for q, r, label in exact.pairs:
        intent = intents[q] if q in intents else world.judge.parse(q)
        assert label == (0 if intent is None else world.judge.grade_rewrite(intent, r)), (q, r)
    noisy = {(q, r): label for q, r, label in lab.pairs}
    differ = np.mean([noisy[(q, r)] != label for q, r, label in exact.pairs])
    assert 0.05 < differ < 0.15  # the service's 10% disagreement, over 3,000 pairs


def test_queries_are_observed_text_and_never_val_or_test(world):
    shop = observed(world, 1)
    with wall.sealed():
        pools = candidates(shop, 0)
    held_out = {q.text for split in ("val", "test") for q in world.queries[split]}
    observed_texts = (set(shop.train_texts) | {s.query for s in shop.sessions}
                      | {q for q, _ in shop.mined_pairs})
    assert set(pools) == set(labelling.SOURCES) and all(pools.values())  # every source has candidates
    pairs = [p for pool in pools.values() for p in pool]
    assert len(pairs) == len(set(pairs))  # each pair under one source
    assert all(r and r == r.strip() for _, r in pairs)
    queries = {q for q, _ in pairs}
    assert queries <= observed_texts and not queries & held_out
    titles = set(shop.titles)
    assert all(r in titles for _, r in pools["clicked"]) and all(q == r for q, r in pools["copy"])
    assert {q for q, _ in pools["null"]} <= set(shop.null_texts)
    passed_over: dict[str, set[str]] = {}  # query -> titles shown to it and not clicked
    for s in shop.sessions:
        passed_over.setdefault(s.query, set()).update(shop.titles[pid] for i, pid in enumerate(s.shown)
                                                      if i not in s.clicked)
    assert all(r in passed_over[q] for q, r in pools["skipped"])
    dictionary = dict(pools["dictionary"])
    assert list(dictionary.values()) == shop.dictionary.rewrite(list(dictionary))


def test_summary_all_labels_determinism_and_nesting(world):
    lab = sealed_build(observed(world, 2000), 2000)
    summary = lab.summary()
    assert summary["pairs"] == 2000 and sum(s["bought"] for s in summary["sources"].values()) == 2000
    assert all(share > 0.05 for share in summary["labels"])  # all three labels, none rare
    for source, row in summary["sources"].items():
        labels = [label for s, (_, _, label) in zip(lab.sources, lab.pairs) if s == source]
        assert row["bought"] == len(labels) <= row["candidates"]
        assert row["labels"] == [round(labels.count(g) / len(labels), 3) for g in (0, 1, 2)]
    assert summary["sources"]["category swapped"]["labels"][0] > 0.8  # another product: irrelevant
    assert summary["sources"]["copy"]["labels"][2] > 0.8  # the query itself: equivalent
    again = sealed_build(observed(world, 2000), 2000)
    assert again.pairs == lab.pairs and again.sources == lab.sources
    assert sealed_build(observed(world, 2000), 2000, seed=1).pairs != lab.pairs
    shop = observed(world, 500)
    with wall.sealed():
        smaller = production_pairs(shop, 500, 0)
    assert smaller == lab.pairs[:500]  # budgets nest
