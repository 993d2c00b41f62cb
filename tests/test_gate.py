"""The serving gate: out-of-domain queries (qrw.shop.ood), the gate (qrw.rewriter), its threshold and its
evaluation (qrw.scorecard), and ``python -m qrw.evaluate --gate``.

The gate's logic is checked with stub rewriters whose relevance probabilities are
hand-made, so which rewrite is served is known exactly; the command runs on the
suite's shared smoke run.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from qrw.evaluate import main
from qrw.rewriter import EMPTY_REWRITE_TAG, Rewriter, apply_gate
from qrw.scorecard import choose_gate_threshold, evaluate_gate, evaluate_run, format_gate
from qrw.shop import ood as ood_module
from qrw.shop.metrics import rewrite_metrics
from qrw.shop.ood import OOD_NOUNS, OOD_SPLITS, ood_nouns, ood_queries
from qrw.shop.shop import Shop
from qrw.shop.world import World, WorldConfig


@pytest.fixture(scope="module")
def world() -> World:
    return World(WorldConfig(seed=2, n_products=300, n_train_queries=200, n_val_queries=40, n_test_queries=60,
                             n_log_sessions=300, mining_sessions_per_query=0))


# ---- the out-of-domain queries -------------------------------------------------------------------

def test_ood_queries_are_deterministic_distinct_and_split_by_noun():
    assert ood_queries(0, 200, "val") == ood_queries(0, 200, "val")
    assert ood_queries(0, 50, "val") == ood_queries(0, 200, "val")[:50]  # a prefix: n does not reshuffle
    assert ood_queries(1, 50, "val") != ood_queries(0, 50, "val")
    every_noun = [n for nouns in OOD_NOUNS.values() for n in nouns]
    halves = {split: set(ood_nouns(0, split)) for split in OOD_SPLITS}
    assert sorted(n for nouns in halves.values() for n in nouns) == sorted(every_noun)  # a partition
    assert len(halves["train"]) == len(every_noun) // 2
    for split in OOD_SPLITS:
        texts = ood_queries(0, 1000, split)
        assert len(set(texts)) == 1000
        others = set(every_noun) - halves[split]
        for text in texts:  # the noun is the split's; no other split's noun appears
            assert any(noun in text for noun in halves[split]), text
            assert not any(f" {noun} " in f" {text} " for noun in others), text


def test_ood_queries_name_nothing_the_catalog_sells(world):
    judge = world.judge
    for nouns in OOD_NOUNS.values():
        for noun in nouns:
            assert judge.terms(noun) == [], noun  # even after the judge's one-typo correction
    catalog = {q.text for split in world.queries.values() for q in split} | {q.text for q in world.log_queries}
    shared_words = set()
    for seed in (0, 1, 2):
        for split in OOD_SPLITS:
            for text in ood_queries(seed, 1000, split):
                assert judge.parse(text) is None, text
                assert text not in catalog, text
                shared_words |= {w for w in text.split() if w in judge.known_words}
    # not separable by vocabulary alone: colours, materials, sizes, fillers are catalog words
    assert {"black", "white", "leather", "wireless", "small", "cheap"} <= shared_words


def test_logged_ood_queries_are_the_logs_out_of_domain_searches_in_two_halves(world):
    """``Shop.logged_ood_queries``: the distinct logged searches that are no in-domain traffic, from the ``train``
    nouns, split val / test without overlap; the gate's never-logged sets share no query with them."""
    shop = Shop(world)
    in_domain = {text for text, _, _ in world.logs}
    expected = {s.query for s in shop.observed.sessions if s.query not in in_domain}
    val, test = shop.logged_ood_queries("val"), shop.logged_ood_queries("test")
    assert len(expected) >= 10 and set(val) | set(test) == expected and not set(val) & set(test)
    assert len(val) - len(test) in (0, 1) and len(val) + len(test) == len(expected)
    assert expected <= set(ood_queries(world.config.seed, 5000, "train"))
    assert shop.logged_ood_queries("val", 3) == val[:3] and Shop(world).logged_ood_queries("test") == test
    never = set(shop.ood_queries("val", 200) + shop.ood_queries("test", 200))
    assert not never & {s.query for s in shop.observed.sessions}
    texts = [s.query for s in shop.observed.sessions]
    assert shop.logged_counts(test[:2] + ["never searched"]).tolist() == [texts.count(test[0]), texts.count(test[1]), 0]


def test_shop_checks_its_ood_queries(world, monkeypatch):
    shop = Shop(world)
    assert shop.ood_queries("test", 30) == ood_queries(world.config.seed, 30, "test")
    catalog_query = world.queries["test"][0].text
    monkeypatch.setattr("qrw.shop.ood.ood_queries", lambda seed, n, split: [catalog_query])
    with pytest.raises(ValueError, match="names a catalog product"):
        shop.ood_queries("test", 1)


def test_ood_query_count_is_checked():
    with pytest.raises(ValueError, match="n must be between 1"):
        ood_queries(0, 0, "val")
    with pytest.raises(ValueError, match="split must be one of"):
        ood_nouns(0, "dev")
    assert ood_module.MAX_OOD_QUERIES >= 1000


# ---- the gate ----------------------------------------------------------------------------------

def test_apply_gate_serves_exactly_the_scores_above_the_threshold():
    rewrites = ["a", "b", "c", "d"]
    assert apply_gate(rewrites, [0.9, 0.5, 0.49, 1.0], 0.5) == ["a", None, None, "d"]  # strict: 0.5 is not served
    assert apply_gate(rewrites, [0.9, 0.5, 0.49, 1.0], None) == rewrites  # gate off
    assert apply_gate(rewrites, [0.9, 0.5, 0.49, 1.0], 1.0) == [None] * 4
    assert apply_gate(rewrites, [0.9, 0.5, 0.49, 1e-9], 0.0) == rewrites
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        apply_gate(rewrites, [0.1] * 4, 1.5)
    with pytest.raises(ValueError, match="4 rewrites but 3"):
        apply_gate(rewrites, [0.1] * 3, 0.5)


def stub_rewriter(rewrites: dict[str, str], probs: dict[tuple[str, str], list[float]], seen: list | None = None):
    """A Rewriter whose greedy rewrites and tagger probabilities are the given tables (no model)."""
    rw = object.__new__(Rewriter)

    def rewrite(queries, return_well_formed=False):
        texts = [rewrites[q] for q in queries]
        return (texts, [True] * len(texts)) if return_well_formed else texts
    rw.rewrite = rewrite

    def relevance_probs(queries, texts):
        if seen is not None:
            seen.extend(zip(queries, texts))
        return torch.tensor([probs[(q, r)] for q, r in zip(queries, texts)], dtype=torch.float64)
    rw.relevance_probs = relevance_probs
    return rw


def test_serve_gates_on_the_probability_of_label_2():
    seen = []
    rw = stub_rewriter({"blk kicks": "sneakers black", "dinosaur": "tripod aluminium", "telly": "", "fridge": "kettle"},
                       {("blk kicks", "sneakers black"): [0.05, 0.15, 0.80],
                        ("dinosaur", "tripod aluminium"): [0.10, 0.55, 0.35],  # expected grade 1.25, P2 0.35
                        ("telly", EMPTY_REWRITE_TAG): [0.20, 0.20, 0.60],
                        ("fridge", "kettle"): [0.70, 0.00, 0.30]}, seen)
    served, rewrites, scores = rw.serve(["blk kicks", "dinosaur", "telly", "fridge"], threshold=0.5)
    assert rewrites == ["sneakers black", "tripod aluminium", "", "kettle"]
    assert scores == pytest.approx([0.80, 0.35, 0.60, 0.30])
    assert served == ["sneakers black", None, "", None]
    assert ("telly", EMPTY_REWRITE_TAG) in seen  # an empty rewrite is tagged as "-"
    assert rw.serve(["dinosaur"], threshold=None)[0] == ["tripod aluminium"]  # gate off: no tagger pass
    assert len(seen) == 4


# ---- the threshold -----------------------------------------------------------------------------

def naive_threshold(scores, target):
    """The smallest candidate t (0 or a score) with share(scores > t) <= target: the criterion, by brute force."""
    scores = np.asarray(scores)
    for t in sorted({0.0, *scores.tolist()}):
        if np.mean(scores > t) <= target + 1e-12:
            return t
    raise AssertionError("unreachable: t = max(scores) serves nothing")


def test_choose_gate_threshold_by_hand_and_against_brute_force():
    scores = [0.1, 0.95, 0.3, 0.9, 0.2, 0.9, 0.4, 0.7, 0.5, 0.6]  # n = 10
    assert choose_gate_threshold(scores, 0.10) == 0.9   # m = 1: only 0.95 is above
    assert choose_gate_threshold(scores, 0.15) == 0.9   # m = 1 still
    assert choose_gate_threshold(scores, 0.20) == 0.9   # m = 2 would cut a tie: 0.9 itself, serving 1 (<= 2)
    assert choose_gate_threshold(scores, 0.30) == 0.7   # m = 3: 0.95, 0.9, 0.9 above 0.7
    assert choose_gate_threshold(scores, 0.0) == 0.95   # nothing served
    assert choose_gate_threshold([0.2] * 300, 0.05) == 0.2
    assert choose_gate_threshold(np.arange(300) / 300, 0.05) == pytest.approx(284 / 300)  # m = 15, no float slip
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 40))
        s = np.round(rng.random(n), 1)  # ties on purpose
        target = float(rng.choice([0.0, 0.05, 0.1, 0.25, 0.5, 0.9]))
        t = choose_gate_threshold(s, target)
        assert t == naive_threshold(s, target)
        assert np.mean(s > t) <= target + 1e-12
    with pytest.raises(ValueError, match="target share must be in"):
        choose_gate_threshold(scores, 1.0)


# ---- the evaluation ----------------------------------------------------------------------------

def ood_texts(shop, split: str) -> list[str]:
    """Both out-of-domain sets of ``split`` (20 each at most): the nouns never logged, the logged searches."""
    return shop.ood_queries(split, 20) + shop.logged_ood_queries(split, 20)


def gate_stub(world, shop):
    """Gold rewrites in-domain, a fixed catalog rewrite out of domain; P2 0.9 for every third query, else 0.1."""
    rewrites, probs = {}, {}
    texts = [q.text for s in ("val", "test") for q in world.queries[s]]
    golds = {q.text: q.gold for s in ("val", "test") for q in world.queries[s]}
    texts += [t for split in ("val", "test") for t in ood_texts(shop, split)]
    for i, text in enumerate(texts):
        rewrites[text] = golds.get(text, "tripod aluminium")
        p2 = 0.9 if i % 3 == 0 else 0.1
        probs[(text, rewrites[text])] = [1 - p2, 0.0, p2]
    return stub_rewriter(rewrites, probs), probs


def test_evaluate_gate_serves_what_the_stub_vouches_for_and_searches_the_rest_alone(world):
    shop = Shop(world)
    rw, probs = gate_stub(world, shop)
    results = evaluate_run(shop, rw, name="stub", baselines=True, tagging=False)
    gate = evaluate_gate(shop, rw, results, threshold=0.5, n_ood=20)
    queries = world.queries["test"]
    vouched = np.array([probs[(q.text, q.gold)][2] > 0.5 for q in queries])
    assert gate["threshold"] == 0.5 and gate["chosen"] is None
    assert gate["in_domain"]["served"]["all"] == pytest.approx(vouched.mean())
    ood_test = shop.ood_queries("test", 20)
    assert gate["ood"]["served_off"] == 1.0
    assert gate["ood"]["served_on"] == pytest.approx(np.mean([probs[(q, "tripod aluminium")][2] > 0.5
                                                              for q in ood_test]))
    logged = shop.logged_ood_queries("test", 20)
    logged_on = np.array([probs[(q, "tripod aluminium")][2] > 0.5 for q in logged])
    counts = Counter(s.query for s in shop.observed.sessions)
    weights = np.array([counts[q] for q in logged], dtype=float)
    assert gate["ood_logged"]["n"] == len(logged) and gate["ood_logged"]["served_off"] == 1.0
    assert gate["ood_logged"]["served_on"] == pytest.approx(logged_on.mean())
    assert gate["ood_logged"]["served_on_traffic"] == pytest.approx((weights * logged_on).sum() / weights.sum())
    # gated queries go through the no-rewrite path: the same page, the same metrics as "no rewrite"
    served = apply_gate([q.gold for q in queries], [probs[(q.text, q.gold)][2] for q in queries], 0.5)
    texts = [q.text for q in queries]
    gated_pages = shop.engine.pages(texts, served)
    np.testing.assert_array_equal(gated_pages[~vouched], shop.engine.pages(texts, None)[~vouched])
    np.testing.assert_array_equal(gated_pages[vouched], shop.engine.pages(texts, [q.gold for q in queries])[vouched])
    on = rewrite_metrics(world, shop.engine, shop.users, queries, served)
    none = rewrite_metrics(world, shop.engine, shop.users, queries, None)
    gold = rewrite_metrics(world, shop.engine, shop.users, queries, [q.gold for q in queries])
    for m in ("relevance", "recall", "ucvr"):
        np.testing.assert_allclose(on[m][~vouched], none[m][~vouched])
        assert gate["in_domain"]["diff"][m]["lift"] == pytest.approx(np.nanmean(on[m] - gold[m]))
    row = results["rows"]["stub + gate"]["all"]
    assert row["relevance"] == pytest.approx(on["relevance"].mean())
    assert row["accuracy"] == 1.0  # gold rewrites: every served one is graded 2; gated ones have none
    assert row["diversity"] == pytest.approx(len({q.gold for q, v in zip(queries, vouched) if v}) / vouched.sum())
    assert gate["in_domain"]["irrelevant_served"] == {"off": 0.0, "on": 0.0}
    assert gate["in_domain"]["by_grade"] == {"2": {"n": len(queries), "served": pytest.approx(vouched.mean())}}


def test_gate_reports_the_served_share_per_judge_grade(world):
    """Half the in-domain rewrites gold (grade 2), half an unrelated catalog phrase; the tagger vouches for
    every gold one and every fourth other one: served by grade follows, counted by hand."""
    shop = Shop(world)
    queries = world.queries["test"]
    rewrites, probs = {}, {}
    for i, q in enumerate(queries):
        rewrites[q.text] = q.gold if i % 2 == 0 else "tripod aluminium"
        p2 = 0.9 if i % 2 == 0 or i % 4 == 1 else 0.1
        probs[(q.text, rewrites[q.text])] = [1 - p2, 0.0, p2]
    for q in ood_texts(shop, "test"):
        rewrites[q] = "tripod aluminium"
        probs[(q, "tripod aluminium")] = [1.0, 0.0, 0.0]
    rw = stub_rewriter(rewrites, probs)
    results = evaluate_run(shop, rw, name="stub", baselines=False, tagging=False)
    gate = evaluate_gate(shop, rw, results, threshold=0.5, n_ood=20)
    texts = [rewrites[q.text] for q in queries]
    grades = np.array([world.judge.grade_rewrite(q.intent, r) for q, r in zip(queries, texts)])  # the judge, not the gate
    vouched = np.array([probs[(q.text, r)][2] > 0.5 for q, r in zip(queries, texts)])
    expected = {str(g): {"n": int((grades == g).sum()), "served": pytest.approx(vouched[grades == g].mean())}
                for g in (0, 1, 2) if (grades == g).any()}
    assert gate["in_domain"]["by_grade"] == expected
    assert expected["2"]["n"] >= len(queries) // 2 and expected["0"]["n"] > 0  # both kinds present
    assert "served by the judge's grade of the rewrite: " in format_gate(gate)


def test_relevant_gate_score_vouches_for_partial_rewrites(world):
    """``score="relevant"`` thresholds 1 - P(0): a rewrite the tagger calls partial (label 1) is served too."""
    shop = Shop(world)
    queries = world.queries["test"]
    rewrites, probs = {}, {}
    for i, q in enumerate(queries):
        rewrites[q.text] = q.gold
        probs[(q.text, q.gold)] = [[0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.8, 0.1, 0.1]][i % 3]
    for q in ood_texts(shop, "test"):
        rewrites[q] = "tripod aluminium"
        probs[(q, "tripod aluminium")] = [0.3, 0.7, 0.0]
    rw = stub_rewriter(rewrites, probs)
    texts = [q.text for q in queries]
    assert rw.gate_scores(texts[:3], [q.gold for q in queries[:3]], "relevant") == pytest.approx([0.9, 0.9, 0.2])
    assert rw.gate_scores(texts[:3], [q.gold for q in queries[:3]]) == pytest.approx([0.1, 0.8, 0.1])
    with pytest.raises(ValueError, match="the gate score must be one of"):
        rw.gate_scores(texts[:1], [queries[0].gold], "p2")
    for score, share in (("equivalent", np.mean([i % 3 == 1 for i in range(len(queries))])),
                         ("relevant", np.mean([i % 3 != 2 for i in range(len(queries))]))):
        gate = evaluate_gate(shop, rw, evaluate_run(shop, rw, name="stub", baselines=False, tagging=False),
                             threshold=0.5, n_ood=20, score=score)
        assert gate["in_domain"]["served"]["all"] == pytest.approx(share)
        assert gate["ood"]["served_on"] == (1.0 if score == "relevant" else 0.0)  # 0.7 > 0.5 only as 1 - P(0)
    assert gate["score"].startswith("1 - P(label 0 | query, rewrite)")


def test_auto_threshold_is_chosen_on_val_out_of_domain_queries(world):
    shop = Shop(world)
    rw, probs = gate_stub(world, shop)
    results = evaluate_run(shop, rw, name="stub", baselines=False, tagging=False)
    gate = evaluate_gate(shop, rw, results, threshold="auto", target=0.05, n_ood=20)
    val_ood = [probs[(q, "tripod aluminium")][2] for q in shop.ood_queries("val", 20)]
    val_logged = [probs[(q, "tripod aluminium")][2] for q in shop.logged_ood_queries("val", 20)]
    assert gate["threshold"] == choose_gate_threshold(val_ood, 0.05) == 0.9  # m = 1, and at least two score 0.9
    assert gate["chosen"]["thresholds"] == {"logged": choose_gate_threshold(val_logged, 0.05), "unseen": 0.9}
    assert gate["chosen"]["ood_served"] == 0.0 and gate["chosen"]["n_ood"] == 20
    assert gate["chosen"]["n_ood_logged"] == len(val_logged) > 0
    assert gate["in_domain"]["served"]["all"] == 0.0  # nothing scores above 0.9
    with pytest.raises(ValueError, match="evaluate it on the test split"):
        evaluate_gate(shop, rw, evaluate_run(shop, rw, name="stub", split="val", baselines=False, tagging=False),
                      threshold="auto", n_ood=20)


def test_shop_reads_a_product_only_in_queries_naming_a_catalog_category_or_brand(world):
    """``Shop.reads_product``: the dictionary's reading of the query names a category or brand; hand-made cases."""
    shop = Shop(world)
    phrases = shop.dictionary.catalog_phrases
    category = next(c for c in world.lexicon.category_names if c in phrases)
    brand = next(b for b in world.lexicon.brands if b in phrases)
    colour = next(w for w in ("black", "white", "blue", "red", "grey")
                  if w in phrases and w not in world.lexicon.brands)
    texts = [category, f"cheap {colour} {category}", brand, colour, f"{colour} sofa", "dinosaur", category.upper()]
    assert shop.reads_product(texts) == [True, True, True, False, False, False, True]
    assert shop.dictionary.rewrite([f"{colour} sofa"]) == [colour]  # read, but a colour is no product


def test_shop_knows_a_word_of_its_text_or_one_typo_from_a_long_one(world):
    """``Shop.knows_word``: hand-made cases, and parity with a brute-force scan of the shop's words."""
    from qrw.shop.lexicon import one_edit
    from qrw.shop.shop import TYPO_MIN_LETTERS

    shop = Shop(world)
    words = {w for text in shop.observed.corpus_texts() for w in text.lower().split()}  # the observed side's text
    long_word = next(w for w in sorted(words) if len(w) >= 7 and w.isalpha())
    short_word = next(w for w in sorted(words) if len(w) == 4 and w.isalpha())
    assert shop.knows_word(long_word) and shop.knows_word(short_word)
    assert shop.knows_word(long_word[:3] + long_word[4:])  # a letter dropped
    assert shop.knows_word(long_word[:2] + long_word[3] + long_word[2] + long_word[4:])  # two letters swapped
    assert shop.knows_word(long_word + "x") or long_word + "x" in words  # a letter added
    never_logged = [n for n in ood_nouns(world.config.seed, "val") if " " not in n and n not in words][:3]
    assert len(never_logged) == 3 and shop.knows_word("12345xyz")
    assert not any(shop.knows_word(n) for n in never_logged)
    assert all(shop.knows_query(shop.logged_ood_queries("test")))  # a logged search's words are the shop's own
    typo = short_word[:1] + "q" + short_word[2:]  # one edit, but the word is short: not forgiven
    assert shop.knows_word(typo) == (typo in words)
    assert shop.knows_query([long_word, f"{short_word} {long_word}", f"{long_word} {never_logged[0]}", ""]) == \
        [True, True, False, True]
    rng = np.random.default_rng(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    pool = sorted(w for w in words if len(w) >= TYPO_MIN_LETTERS)
    probes = []
    for _ in range(300):  # random edits of shop words, and random strings
        w = pool[rng.integers(len(pool))]
        i = int(rng.integers(len(w)))
        probes += [w[:i] + letters[rng.integers(26)] + w[i + 1:], w[:i] + w[i + 1:],
                   "".join(letters[j] for j in rng.integers(26, size=int(rng.integers(3, 9))))]
    for p in probes:
        naive = p in words or any(c.isdigit() for c in p) or (
            len(p) >= TYPO_MIN_LETTERS and any(one_edit(p, w) for w in pool))
        assert shop.knows_word(p) == naive, p
    assert sum(shop.knows_word(p) for p in probes) > 200  # both outcomes are exercised


def test_query_check_serves_only_where_the_shop_reads_a_product(world):
    """``query_check="dictionary"``: served iff the tagger vouches and the shop reads a product in the query."""
    shop = Shop(world)
    rw, probs = gate_stub(world, shop)
    queries, ood = world.queries["test"], shop.ood_queries("test", 20)
    read, ood_read = np.array(shop.reads_product([q.text for q in queries])), np.array(shop.reads_product(ood))
    assert 0 < read.sum() < len(queries)  # both kinds present
    vouched = np.array([probs[(q.text, q.gold)][2] > 0.5 for q in queries])
    ood_vouched = np.array([probs[(q, "tripod aluminium")][2] > 0.5 for q in ood])
    gate = evaluate_gate(shop, rw, evaluate_run(shop, rw, name="stub", baselines=False, tagging=False),
                         threshold=0.5, n_ood=20, query_check="dictionary")
    assert gate["query_check"] == "dictionary"
    assert gate["in_domain"]["served"]["all"] == pytest.approx((vouched & read).mean())
    assert gate["ood"]["served_on"] == pytest.approx((ood_vouched & ood_read).mean())
    assert gate["in_domain"]["query_passed"] == pytest.approx(read.mean())
    assert gate["ood"]["query_passed"] == pytest.approx(ood_read.mean())
    assert "query check (dictionary)" in format_gate(gate) and "reads a catalog category or brand" in format_gate(gate)
    # a judge that vouches for everything: the query check alone decides
    judge = SimpleNamespace(gate_scores=lambda qs, rs, kind: [1.0] * len(qs))
    gate = evaluate_gate(shop, rw, evaluate_run(shop, rw, name="stub", baselines=False, tagging=False),
                         threshold="auto", target=0.0, n_ood=20, judge=judge, query_check="dictionary")
    any_val_read = bool(np.any(shop.reads_product(shop.ood_queries("val", 20))))
    assert gate["threshold"] == (1.0 if any_val_read else 0.0)  # the largest val score: 1 (read) or 0 (unread)
    assert gate["in_domain"]["served"]["all"] == pytest.approx(0.0 if any_val_read else read.mean())
    assert gate["ood"]["served_on"] == pytest.approx(0.0 if any_val_read else ood_read.mean())
    known, ood_known = np.array(shop.knows_query([q.text for q in queries])), np.array(shop.knows_query(ood))
    gate = evaluate_gate(shop, rw, evaluate_run(shop, rw, name="stub", baselines=False, tagging=False),
                         threshold=0.5, n_ood=20, query_check="vocabulary")
    assert gate["in_domain"]["served"]["all"] == pytest.approx((vouched & known).mean())
    assert gate["ood"]["served_on"] == pytest.approx((ood_vouched & ood_known).mean())
    assert gate["ood"]["query_passed"] == pytest.approx(ood_known.mean()) and ood_known.mean() < 0.5
    assert "the shop knows every word of the query" in format_gate(gate)
    with pytest.raises(ValueError, match="query check must be one of"):
        evaluate_gate(shop, rw, evaluate_run(shop, rw, name="stub", baselines=False, tagging=False),
                      threshold=0.5, n_ood=20, query_check="spelling")


# ---- the command -------------------------------------------------------------------------------

def test_gate_flags_bad_input_is_one_line(smoke_sft_run, tmp_path, cli_error):
    run = str(smoke_sft_run)
    for bad in ("1.5", "-0.1", "nan", "high"):
        assert "--gate must be a threshold in [0, 1] or 'auto'" in cli_error(main, "--ckpt", run, "--gate", bad)
    assert "use it with --split test" in cli_error(main, "--ckpt", run, "--gate", "auto", "--split", "val")
    assert "--gate-target must be in [0, 1)" in cli_error(main, "--ckpt", run, "--gate", "auto",
                                                          "--gate-target", "1")
    assert "--ood-queries must be between 2" in cli_error(main, "--ckpt", run, "--gate", "0.5",
                                                          "--ood-queries", "1")
    assert "--gate and --gate-judge apply to the offline evaluation" in cli_error(main, "--ab", "none", "gold",
                                                                                 "--gate", "0.5")
    assert "--gate-judge needs --gate" in cli_error(main, "--ckpt", run, "--gate-judge", run)
    assert "--gate-query needs --gate" in cli_error(main, "--ckpt", run, "--gate-query", "dictionary")
    single = tmp_path / "single-task"
    shutil.copytree(smoke_sft_run, single)
    config = json.loads((single / "config.json").read_text())
    config["run"]["tasks"] = "rewrite"
    (single / "config.json").write_text(json.dumps(config))
    assert "trained without the relevance task" in cli_error(main, "--ckpt", str(single), "--gate", "0.5")


def test_gate_command_reports_threshold_and_ood_share(smoke_sft_run, capsys):
    assert main(["--ckpt", str(smoke_sft_run), "--gate", "auto", "--ood-queries", "20", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    gate = results["gate"]
    assert 0.0 <= gate["threshold"] <= 1.0 and gate["chosen"]["split"] == "val"
    assert gate["chosen"]["ood_served"] <= 0.05 and gate["ood"]["n"] == 20
    assert gate["chosen"]["ood_logged_served"] <= 0.05 and 0 < gate["ood_logged"]["n"] <= 20
    assert gate["threshold"] == max(gate["chosen"]["thresholds"].values())
    assert gate["ood"]["served_off"] == 1.0 and gate["ood"]["served_on"] <= 1.0
    assert set(gate["in_domain"]["diff"]) == {"relevance", "recall", "ucvr", "irrelevant_served"}
    assert f"{results['model']} + gate" in results["rows"]
    assert main(["--ckpt", str(smoke_sft_run), "--gate", "0.25", "--ood-queries", "20"]) == 0
    text = capsys.readouterr().out
    assert "serving gate: a rewrite is served iff" in text and "> 0.2500" in text
    assert "out-of-domain test queries, nouns never logged (20): rewrite served, gate off 100.0%" in text
    assert f"out-of-domain test searches the logs hold ({results['gate']['ood_logged']['n']}): " in text


def test_docstring_examples_run():
    import doctest

    import qrw.rewriter
    import qrw.shop.ood

    for module in (qrw.shop.ood, qrw.rewriter):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_a_judge_other_than_the_rewriter_scores_the_gate(world):
    """``judge=``: the rewrites are the rewriter's, the scores the judge's (a GRPO run's frozen SFT tagger)."""
    shop = Shop(world)
    rw, _ = gate_stub(world, shop)
    for score, served in ((1.0, 1.0), (0.0, 0.0)):
        judge = SimpleNamespace(gate_scores=lambda qs, rs, kind, value=score: [value] * len(qs))
        results = evaluate_run(shop, rw, name="stub", baselines=False, tagging=False)
        gate = evaluate_gate(shop, rw, results, threshold=0.5, n_ood=20, judge=judge)
        assert gate["in_domain"]["served"]["all"] == served and gate["ood"]["served_on"] == served
        assert "frozen SFT init's tagger" in gate["score"]
    assert "model's own tagger" in evaluate_gate(shop, rw, evaluate_run(shop, rw, name="stub", baselines=False,
                                                                        tagging=False), threshold=0.5, n_ood=20)["score"]


def test_gate_on_a_grpo_run_uses_its_sft_init(smoke_sft_run, tmp_path, capsys, cli_error):
    """A GRPO run is gated by the tagger of its --init (the reward's relevance model); a missing init is one line."""
    import train_grpo

    init, grpo = tmp_path / "sft", tmp_path / "grpo"
    shutil.copytree(smoke_sft_run, init)
    assert train_grpo.main(["--smoke", "--init", str(init), "--out", str(grpo), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["--ckpt", str(grpo), "--gate", "0.25", "--ood-queries", "20", "--json"]) == 0
    assert "frozen SFT init's tagger" in json.loads(capsys.readouterr().out)["gate"]["score"]
    shutil.rmtree(init)
    assert "scores rewrites with its SFT init's tagger, and its init" in cli_error(
        main, "--ckpt", str(grpo), "--gate", "0.25", "--ood-queries", "20")


def test_gate_judge_scores_with_another_runs_tagger(smoke_sft_run, tmp_path, capsys, cli_error):
    """``--gate-judge RUN``: the rewrites are the run's, the scores RUN's tagger's; RUN of another world is one line."""
    import train_sft

    assert main(["--ckpt", str(smoke_sft_run), "--gate", "0.25", "--ood-queries", "20", "--json"]) == 0
    own = json.loads(capsys.readouterr().out)["gate"]
    other = tmp_path / "other"  # the same world, other weights (fewer steps)
    config = json.loads((smoke_sft_run / "config.json").read_text())
    assert train_sft.main(["--smoke", "--quiet", "--out", str(other), "--sft-steps", "3", "--pretrain-steps", "1",
                           "--seed", str(config["world"]["seed"])]) == 0
    capsys.readouterr()
    assert main(["--ckpt", str(smoke_sft_run), "--gate", "0.25", "--ood-queries", "20", "--json",
                 "--gate-judge", str(other)]) == 0
    judged = json.loads(capsys.readouterr().out)["gate"]
    assert f"tagger of {other} (--gate-judge)" in judged["score"]
    assert [s["rewrite"] for s in judged["ood"]["samples"]] == [s["rewrite"] for s in own["ood"]["samples"]]
    assert [s["score"] for s in judged["ood"]["samples"]] != [s["score"] for s in own["ood"]["samples"]]
    elsewhere = tmp_path / "elsewhere"
    assert train_sft.main(["--smoke", "--quiet", "--out", str(elsewhere), "--sft-steps", "1", "--pretrain-steps", "1",
                           "--seed", str(config["world"]["seed"] + 1)]) == 0
    assert "was trained on another world" in cli_error(main, "--ckpt", str(smoke_sft_run), "--gate", "0.25",
                                                       "--gate-judge", str(elsewhere))
