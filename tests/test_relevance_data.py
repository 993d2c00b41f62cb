"""Relevance-task training data (qrw.shop.relevance): hard cases, what production would label, held-out mined pairs."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

import train_sft
from qrw.config import UserError
from qrw.oracle import relevance_dataset, stage1_pairs
from qrw.lm.tokenizer import Tokenizer
from qrw.shop import relevance
from qrw.shop.judge import canonical_phrases
from qrw.shop.lexicon import Draws, Intent
from qrw.shop.ood import ood_nouns, ood_queries
from qrw.shop.world import World, WorldConfig
from qrw.sft import SFTRunConfig, TrainConfig, sft_mixture
from qrw.shop.observation import observe_world

SMALL = dict(seed=3, n_products=300, n_train_queries=600, n_val_queries=50, n_test_queries=80, n_log_sessions=100)
OOD_TRAIN = set(ood_queries(SMALL["seed"], relevance.OOD_TRAINING_QUERIES, "train"))
KETTLE = ("breville", "russell hobbs", "smeg", "cuisinart", "philips")  # the kettle's brands in the tables


@pytest.fixture(scope="module")
def world() -> World:
    return World(WorldConfig(**SMALL))


@pytest.fixture(scope="module")
def pairs(world) -> dict[str, list]:
    return {data: relevance.training_pairs(world, data, per_label=2) for data in relevance.RELEVANCE_DATA}


def parsed(world, texts):
    return [world.judge.parse(t) for t in texts]


# -- hard cases --------------------------------------------------------------------------------------

def test_hard_cases_of_a_branded_kettle_by_hand(world):
    """philips kettle black plastic: colour has 3 other values, material 1, the brand 4 others; nothing to add."""
    assert dict(world.lexicon.category_attrs["kettle"]) == {"colour": ("black", "white", "silver", "red"),
                                                            "material": ("stainless steel", "plastic")}
    assert world.lexicon.category_brands["kettle"] == KETTLE
    intent = Intent("kettle", "philips", (("colour", "black"), ("material", "plastic")))
    texts = relevance.hard_cases(world.lexicon, intent, Draws(np.random.default_rng(0)), wrong_values=2)
    grades = Counter(world.judge.grade_rewrite(intent, t) for t in texts)
    intents = parsed(world, texts)
    reordered = [t for t, i in zip(texts, intents) if i == intent]
    assert 1 <= len(reordered) <= 2 and "philips kettle black plastic" not in texts  # the gold text itself is not one
    # 2 colours + 1 material + 2 brands contradicted, 3 near-misses (one per slot, another slot dropped): label 0;
    # brand, colour, material dropped one at a time: label 1; no attribute is missing, so none added
    assert grades == {0: 8, 1: 3, 2: len(reordered)}
    wrong_colours = {i.attr_dict()["colour"] for i in intents if i.brand == "philips" and len(i.attrs) == 2
                     and i.attr_dict()["material"] == "plastic" and i != intent}
    assert len(wrong_colours) == 2 and "black" not in wrong_colours
    swapped = {i.brand for i in intents if i.brand not in (None, "philips") and i.attrs == intent.attrs}
    assert len(swapped) == 2
    assert {i for i in intents if i.brand is None or len(i.attrs) < 2} >= {
        Intent("kettle", None, intent.attrs), Intent("kettle", "philips", (("material", "plastic"),)),
        Intent("kettle", "philips", (("colour", "black"),))}
    more = relevance.hard_cases(world.lexicon, intent, Draws(np.random.default_rng(0)), wrong_values=9)
    assert Counter(world.judge.grade_rewrite(intent, t) for t in more)[0] == 3 + 1 + 4 + 3  # every wrong value


def test_hard_cases_of_a_one_attribute_kettle_by_hand(world):
    """kettle black: 2 colours contradicted, a contradiction with material added (0); bare kettle, material added (1)."""
    intent = Intent("kettle", None, (("colour", "black"),))
    texts = relevance.hard_cases(world.lexicon, intent, Draws(np.random.default_rng(1)), wrong_values=2)
    by_grade: dict[int, list] = {0: [], 1: [], 2: []}
    for text, i in zip(texts, parsed(world, texts)):
        by_grade[world.judge.grade_rewrite(intent, text)].append(i)
    assert texts.count("black kettle") == 1 and by_grade[2] == [intent]
    assert len(by_grade[0]) == 3 and sum(len(i.attrs) == 2 for i in by_grade[0]) == 1
    assert Intent("kettle") in by_grade[1] and len(by_grade[1]) == 2


def test_phrase_order_says_nothing_about_the_label(world):
    """Perturbations keep labels 0 and 1 in title order; about half of the hard cases are shuffled, whatever the label."""
    draws = Draws(np.random.default_rng(2))
    in_title_order: dict[int, list[bool]] = {0: [], 1: []}
    for query in world.queries["train"][:300]:
        for text in relevance.hard_cases(world.lexicon, query.intent, draws):
            label = world.judge.grade_rewrite(query.intent, text)
            phrases = canonical_phrases(world.lexicon, world.judge.parse(text))
            if label in in_title_order and len(phrases) > 1:
                in_title_order[label].append(text == " ".join(phrases))
    for label, flags in in_title_order.items():
        assert len(flags) > 200 and 0.35 < np.mean(flags) < 0.75, (label, np.mean(flags))


# -- training pairs ------------------------------------------------------------------------------------

def test_every_label_is_the_judges_grade(world, pairs):
    for data, examples in pairs.items():
        assert {label for _, _, label in examples} == {0, 1, 2}
        for query, rewrite, label in examples:
            intent = world.judge.parse(query)  # every query text (training, re-typed) parses to its intent
            if intent is None:  # ... but the out-of-domain ones, which name nothing the shop sells
                assert data == "production" and query in OOD_TRAIN and label == 0, (data, query, rewrite)
                continue
            assert world.judge.grade_rewrite(intent, rewrite) == label, (data, query, rewrite)


def test_production_pairs_hold_out_of_domain_queries_of_the_train_split_only(world, pairs):
    ood_pairs = [(q, r, label) for q, r, label in pairs["production"] if q in OOD_TRAIN]
    assert {q for q, _, _ in ood_pairs} == OOD_TRAIN and {label for *_, label in ood_pairs} == {0}
    assert 1.9 * len(OOD_TRAIN) <= len(ood_pairs) <= 2 * len(OOD_TRAIN)  # 2 rewrites each, a pair kept once
    assert not any(q in OOD_TRAIN for data in ("perturbed", "hard") for q, _, _ in pairs[data])
    held_out_nouns = set(ood_nouns(world.config.seed, "val")) | set(ood_nouns(world.config.seed, "test"))
    for query, rewrite, _ in ood_pairs:
        assert not any(noun in query for noun in held_out_nouns if f" {noun} " in f" {query} ")
        assert world.judge.parse(rewrite) is not None  # a catalog rewrite, as a rewriter would give


def test_perturbed_is_the_worlds_set_and_each_source_adds_to_the_last(world, pairs):
    assert pairs["perturbed"] == world.relevance_examples("train", per_label=2)
    hard, production = pairs["hard"], pairs["production"]
    assert production[:len(hard)] == hard  # production = hard + the mined pairs and their perturbations
    assert set(pairs["perturbed"]) <= set(hard)  # every perturbed pair is kept
    keys = [(q, r) for q, r, _ in production]
    assert len(keys) == len(set(keys))  # a pair once
    mined = {(p.query, p.rewrite): p.grade for p in world.mined_pairs}
    assert mined and set(mined) <= set(keys)
    assert all(mined[(q, r)] == label for q, r, label in production if (q, r) in mined)
    contradicted = Counter(world.perturbation_kind(world.judge.parse(q), r) for q, r, _ in hard)
    assert contradicted["attribute contradicted"] > 3 * Counter(
        world.perturbation_kind(world.judge.parse(q), r) for q, r, _ in pairs["perturbed"])["attribute contradicted"]


def test_retyped_queries_are_new_noisy_texts_of_training_intents(world, pairs):
    train = {q.text: q.intent for q in world.queries["train"]}
    retyped = {q for q, _, _ in pairs["hard"] if q not in train}
    assert len(retyped) > len(train) / 2
    train_intents = set(train.values())
    assert all(world.judge.parse(q) in train_intents for q in retyped)


def test_no_val_or_test_query_text_in_training_pairs(world, pairs):
    """Never as the query; as the rewrite only in catalog words (a user typed "charger"; a rewrite says it too)."""
    held_out = {q.text for split in ("val", "test") for q in world.queries[split]}
    for data in ("hard", "production"):
        assert not held_out & {q for q, _, _ in pairs[data]}
        shared = [r for _, r, _ in pairs[data] if r in held_out]
        assert shared  # the check below has work to do
        for rewrite in shared:
            assert sorted(rewrite.split()) == sorted(" ".join(canonical_phrases(
                world.lexicon, world.judge.parse(rewrite))).split()), rewrite


def test_same_seed_same_pairs_other_seed_other_pairs(world, pairs):
    again = World(WorldConfig(**SMALL))
    assert relevance.training_pairs(again, "production", per_label=2) == pairs["production"]
    assert relevance.training_pairs(world, "production", per_label=2, wrong_values=3) != pairs["production"]
    other = World(WorldConfig(**{**SMALL, "seed": 4}))
    assert relevance.training_pairs(other, "hard", per_label=2) != pairs["hard"]
    with pytest.raises(UserError):
        relevance.training_pairs(world, "mined")


# -- held-out mined pairs (evaluation only) ---------------------------------------------------------------

def test_held_out_mined_pairs_start_from_the_split_and_change_nothing(world):
    training_pairs = list(world.mined_pairs)
    test_pairs = relevance.held_out_mined_pairs(world, "test")
    test_intents = {q.text: q.intent for q in world.queries["test"]}
    assert test_pairs and all(p.query in test_intents and p.intent == test_intents[p.query] for p in test_pairs)
    assert all(p.grade == world.judge.grade_rewrite(p.intent, p.rewrite) for p in test_pairs)
    assert relevance.held_out_mined_pairs(world, "test") == test_pairs  # deterministic
    assert world.mined_pairs == training_pairs and World(WorldConfig(**SMALL)).mined_pairs == training_pairs
    with pytest.raises(UserError):
        relevance.held_out_mined_pairs(world, "train")


# -- stage 1 --------------------------------------------------------------------------------------------

def test_relevance_dataset_balances_the_production_pairs(world):
    tok = Tokenizer.train(world.corpus_texts(), 400)
    examples = relevance_dataset(world, "train", tok, 64, per_label=2, balance="over", data="production")
    labels = Counter(ids[-2] for ids, _ in examples)  # ... label <|eos|>
    counts = Counter(label for _, _, label in relevance.training_pairs(world, "production", per_label=2))
    assert sorted(labels.values()) == [max(counts.values())] * 3
    with pytest.raises(UserError):
        relevance_dataset(world, "val", tok, 64, data="production")  # evaluation stays on perturbed pairs
    run = SFTRunConfig(vocab_size=400, relevance_data="hard", relevance_per_label=2)
    assert SFTRunConfig().relevance_data == "labelled"  # the default: production's pairs, bought through the door
    observed = observe_world(world, run.label_budget, run.label_disagreement)
    rewrites, pairs, bought = stage1_pairs(observed, world, run, 0)  # an upper bound: built from gold, none bought
    assert bought is None and observed.annotations.bought == 0
    assert sft_mixture(rewrites, pairs, tok, run, TrainConfig(), 64).datasets["relevance"] == \
        relevance_dataset(world, "train", tok, 64, per_label=2, balance="over", data="hard")
    with pytest.raises(UserError):
        SFTRunConfig(relevance_wrong_values=0)
    with pytest.raises(UserError):
        SFTRunConfig(relevance_data="mined")


def test_sft_smoke_on_production_relevance_data(tmp_path):
    out = tmp_path / "run"
    assert train_sft.main(["--smoke", "--quiet", "--relevance-data", "production", "--out", str(out),
                           "--device", "cpu"]) == 0
    assert json.loads((out / "config.json").read_text())["run"]["relevance_data"] == "production"
