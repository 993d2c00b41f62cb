"""The synthetic world: lexicon invariants, splits, judge, relevance labels, determinism, CLI errors."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qrw.config import UserError
from qrw.oracle import relevance_dataset
from qrw.lm.tokenizer import Tokenizer, render_relevance
from qrw.shop.judge import COMPLEMENT, EXACT, IRRELEVANT, SUBSTITUTE, render_canonical
from qrw.shop.lexicon import Draws, Intent, Lexicon, make_typo, one_edit
from qrw.shop.tables import SEGMENTS, SPLITS
from qrw.shop.world import World, WorldConfig

SMALL = dict(n_products=400, n_train_queries=600, n_val_queries=100, n_test_queries=200, n_log_sessions=500)
CLI_SMALL = ["--n-products", "300", "--n-train-queries", "300", "--n-val-queries", "50", "--n-test-queries", "100",
             "--n-log-sessions", "100"]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world() -> World:
    return World(WorldConfig(seed=3, **SMALL))


@pytest.fixture(scope="module")
def full_catalog() -> World:
    """The default catalog (3,000 products) with few queries: for catalog-wide invariants."""
    return World(WorldConfig(n_train_queries=50, n_val_queries=10, n_test_queries=10, n_log_sessions=10))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "qrw.world", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=120)


# -- config ------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value, message", [
    ("n_products", 0, "--n-products must be >= 1"),
    ("seed", -1, "--seed must be >= 0"),
    ("p_typo", 1.5, "--p-typo must be in [0, 1]"),
    ("n_test_queries", 0, "--n-test-queries must be >= 1"),
])
def test_config_validation(field, value, message):
    with pytest.raises(UserError, match=re.escape(message)):
        WorldConfig(**{field: value})


def test_too_many_queries_for_a_tiny_world_is_a_user_error():
    with pytest.raises(UserError, match="too small"):
        World(WorldConfig(n_products=1, p_canonical=1.0, n_train_queries=1000, n_val_queries=1, n_test_queries=1,
                          n_log_sessions=0))


# -- lexicon and catalog -----------------------------------------------------------------------

def test_every_form_has_one_meaning_and_every_term_has_variants():
    lexicon = Lexicon()
    for term, tiers in lexicon.forms.items():
        assert tiers["canonical"] == (term[1],)
        assert tiers["common"] or tiers["rare"], f"{term} has no user variant"
        for tier, forms in tiers.items():
            for form in forms:
                assert lexicon.form_term[form] == term
                assert form == " ".join(form.lower().split())
    assert len(lexicon.variants("log_only")) > 100


def test_no_variant_appears_in_any_title(full_catalog):
    title_ngrams = set()
    for title in full_catalog.titles:
        words = title.split()
        for n in range(1, full_catalog.lexicon.max_form_words + 1):
            title_ngrams.update(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))
    leaked = [f for f, tier in full_catalog.lexicon.form_tier.items() if tier != "canonical" and f in title_ngrams]
    assert leaked == []


def test_catalog_shape(full_catalog):
    w = full_catalog
    assert len(w.products) == 3000
    assert 20 <= len({p.category for p in w.products}) <= 40
    assert max(len(t.split()) for t in w.titles) <= 12
    assert all(t == t.lower() for t in w.titles)
    assert w.popularity.shape == w.prices.shape == (3000,)
    assert (w.popularity > 0).all() and (w.prices > 0).all()
    # Zipf-like: within each category the best-seller is far above the median product.
    for category in {p.category for p in w.products}:
        pop = np.sort(w.popularity[[p.id for p in w.products if p.category == category]])[::-1]
        assert pop[0] >= 10 * np.median(pop)


def test_one_edit():
    assert one_edit("black", "blak") and one_edit("blak", "black")        # deletion / insertion
    assert one_edit("black", "blsck") and one_edit("black", "balck")      # substitution / transposition
    assert not one_edit("black", "black") and not one_edit("black", "bkacl")
    assert not one_edit("black", "bl")
    draws = Draws(np.random.default_rng(0))
    for word in ("television", "samsung", "wireless", "sneakers"):
        for _ in range(50):
            assert one_edit(word, make_typo(word, draws))


# -- queries and splits ------------------------------------------------------------------------

def test_split_sizes_and_segments(world):
    cfg = world.config
    assert [len(world.queries[s]) for s in SPLITS] == [cfg.n_train_queries, cfg.n_val_queries, cfg.n_test_queries]
    for split in SPLITS:
        for q in world.queries[split]:
            assert q.split == split
            assert q.segment == SEGMENTS[min(q.difficulty, len(SEGMENTS) - 1)]
            assert len(q.text.split()) <= cfg.max_query_words
    assert {q.segment for q in world.queries["test"]} == set(SEGMENTS)


def test_every_query_parses_back_to_its_intent_and_gold_is_canonical(world):
    lexicon, judge = world.lexicon, world.judge
    for split in SPLITS:
        for q in world.queries[split]:
            assert judge.parse(q.text) == q.intent, q.text
            assert q.gold == render_canonical(lexicon, q.intent)
            assert judge.parse(q.gold) == q.intent
            assert judge.exact_count(q.intent) >= 1
            assert all(lexicon.form_tier[f] in ("canonical", "common", "rare", "log_only") for f in q.forms)


def test_splits_share_no_intent_and_variant_combination(world):
    keys = {s: [(q.intent, q.forms) for q in world.queries[s]] for s in SPLITS}
    for s in SPLITS:
        assert len(set(keys[s])) == len(keys[s])
    assert not set(keys["train"]) & set(keys["val"])
    assert not set(keys["train"]) & set(keys["test"])
    assert not set(keys["val"]) & set(keys["test"])
    assert not {q.text for q in world.queries["train"]} & {q.text for q in world.queries["test"]}
    # Search logs exclude the val/test combinations, so no test query text is in the logs.
    assert not {text for text, _, _ in world.logs} & {q.text for q in world.queries["test"]}


def test_log_only_variants_reach_logs_and_test_but_never_train(world):
    tiers = world.lexicon.form_tier
    uses_log_only = [any(tiers[f] == "log_only" for f in q.forms) for q in world.queries["train"]]
    assert not any(uses_log_only)
    assert any(any(tiers[f] == "log_only" for f in q.forms) for q in world.queries["test"])
    assert not any(world.uses_log_only(q) for q in world.queries["train"])
    assert 0 < sum(world.uses_log_only(q) for q in world.queries["test"]) < len(world.queries["test"])
    log_only = {f for f, t in tiers.items() if t == "log_only"}
    train_text = " ".join(f" {q.text} " for q in world.queries["train"])
    log_text = " ".join(f" {q} " for q, _, _ in world.logs)
    seen_in_logs = {f for f in log_only if f" {f} " in log_text}
    assert len(seen_in_logs) > 50
    # Not even as a phrase of a training query text (beyond the forms bookkeeping).
    assert not [f for f in log_only if f" {f} " in train_text]


def test_text_views(world):
    pretrain = world.pretrain_texts()
    assert pretrain[: len(world.products)] == world.titles
    assert len(pretrain) == 2 * len(world.products) + len(world.logs)
    assert all(text.startswith("search: ") for text in pretrain[2 * len(world.products):])
    train = world.queries["train"]
    assert world.corpus_texts() == pretrain + [q.text for q in train] + [q.gold for q in train]
    # Test queries typed with some user variant are nowhere in the tokenizer corpus.
    tiers = world.lexicon.form_tier
    corpus = set(world.corpus_texts())
    assert not {q.text for q in world.queries["test"] if any(tiers[f] != "canonical" for f in q.forms)} & corpus
    for _, product_id, _ in world.logs:
        assert 0 <= product_id < len(world.products)


# -- the judge ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text, intent", [
    ("fridge", Intent("refrigerator")),
    ("blk kicks for men", Intent("sneakers", None, (("colour", "black"), ("gender", "men")))),
    ("cheap samsnug telly 55in", Intent("television", "samsung", (("screen", "55 inch"),))),  # typo + variants
    ("apple smartphone 128 gb black", Intent("smartphone", "apple", (("colour", "black"), ("storage", "128gb")))),
    ("smartphnoe", Intent("smartphone")),                      # transposition typo
    ("phone case", Intent("protective case")),                 # longest match: not a phone
    ("laptop bag 15 inch", Intent("computer bag", None, (("screen", "15 inch"),))),
    ("in ear headphones with cable", Intent("headphones", None, (("connectivity", "wired"), ("style", "in-ear")))),
    ("black white sneakers", None),                            # two colours: contradictory
    ("television smartphone", None),                           # two categories
    ("cheap best buy", None),                                  # no category
    ("", None),
])
def test_judge_parse(world, text, intent):
    assert world.judge.parse(text) == intent


@pytest.mark.parametrize("rewrite, grade", [
    ("samsung television 55 inch 4k", 2),          # gold
    ("4k 55 inch television samsung", 2),          # reordered
    ("best samsung tv 55in uhd", 2),               # variants and fillers mean the same
    ("samsung television 55 inch", 1),             # attribute dropped
    ("television 55 inch 4k", 1),                  # brand dropped
    ("television", 1),                             # broadened to the category
    ("samsung television 55 inch 4k black", 1),    # narrowed: an attribute the query did not ask for
    ("samsung television 65 inch 4k", 0),          # attribute contradicted
    ("lg television 55 inch 4k", 0),               # brand swapped
    ("samsung soundbar", 0),                       # complement
    ("samsung smartphone 55 inch 4k", 0),          # category swapped
    ("samsung", 0),                                # no category
    ("", 0),
])
def test_judge_grade_rewrite(world, rewrite, grade):
    intent = Intent("television", "samsung", (("resolution", "4k"), ("screen", "55 inch")))
    assert world.judge.grade_rewrite(intent, rewrite) == grade
    assert world.judge.grade_rewrite(intent, None) == 0


def test_grade_products_matches_a_per_product_loop(world):
    judge, lexicon = world.judge, world.lexicon
    intents = [q.intent for q in world.queries["test"][:40]] + [Intent("smartphone", "apple"), Intent("nothing")]
    for intent in intents:
        grades = judge.grade_products(intent)
        assert grades.dtype == np.int8 and grades.shape == (len(world.products),)
        assert not grades.flags.writeable
        complements = lexicon.complements.get(intent.category, ())
        for p in world.products:
            attrs = dict(p.attrs)
            if p.category == intent.category:
                exact = (intent.brand in (None, p.brand)) and all(attrs.get(a) == v for a, v in intent.attrs)
                expected = EXACT if exact else SUBSTITUTE
            else:
                expected = COMPLEMENT if p.category in complements else IRRELEVANT
            assert grades[p.id] == expected
        assert judge.exact_count(intent) == int((grades == EXACT).sum())
        assert judge.grade_products(intent) is grades  # cached


# -- relevance examples ------------------------------------------------------------------------

def test_every_relevance_label_equals_the_judge_grade(world):
    for split in ("train", "test"):
        examples = world.relevance_examples(split)
        by_text = {q.text: q.intent for q in world.queries[split]}
        assert len(examples) == 3 * len(world.queries[split])  # one per label per query
        for query_text, rewrite, label in examples:
            assert world.judge.grade_rewrite(by_text[query_text], rewrite) == label, (query_text, rewrite)
        assert {label for _, _, label in examples} == {0, 1, 2}
    assert world.relevance_examples("train") is world.relevance_examples("train")
    with pytest.raises(UserError):
        world.relevance_examples("dev")


def test_several_relevance_pairs_per_label_are_distinct_and_correctly_labelled(world):
    """per_label=3 (the training set): up to 3 distinct rewrites per (query, label), every label the judge's."""
    examples = world.relevance_examples("train", per_label=3)
    by_text = {q.text: q.intent for q in world.queries["train"]}
    groups: dict = {}
    for query_text, rewrite, label in examples:
        assert world.judge.grade_rewrite(by_text[query_text], rewrite) == label
        groups.setdefault((query_text, label), []).append(rewrite)
    assert all(1 <= len(v) <= 3 and len(set(v)) == len(v) for v in groups.values())
    assert sum(len(v) == 3 for v in groups.values()) > len(groups) // 3  # label 2 has few reorderings
    assert len(examples) > 2 * len(world.relevance_examples("train"))
    with pytest.raises(UserError):
        world.relevance_examples("train", per_label=0)


def test_log_queries_are_distinct_logged_texts_with_their_intents(world):
    """GRPO's training queries: each logged text once, its intent the judge's parse, never a val/test combination."""
    texts = [q.text for q in world.log_queries]
    assert len(texts) == len(set(texts)) and set(texts) == {q for q, _, _ in world.logs}
    held_out = {(q.intent, q.forms) for split in ("val", "test") for q in world.queries[split]}
    for q in world.log_queries:
        assert q.split == "log" and world.judge.parse(q.text) == q.intent
        assert (q.intent, q.forms) not in held_out


def test_all_perturbations_have_the_intended_label(world):
    draws = Draws(np.random.default_rng(0))
    for q in world.queries["val"]:
        for label, rewrites in world.perturbations(q.intent, draws).items():
            for rewrite in rewrites:
                assert world.judge.grade_rewrite(q.intent, rewrite) == label, (q.intent, rewrite)


# -- determinism -------------------------------------------------------------------------------

def test_same_seed_same_world_other_seed_other_world(world):
    again = World(WorldConfig(seed=3, **SMALL))
    assert again.products == world.products
    assert again.queries == world.queries
    assert again.logs == world.logs
    assert again.relevance_examples("val") == world.relevance_examples("val")
    other = World(WorldConfig(seed=4, **SMALL))
    assert other.titles != world.titles
    assert [q.text for q in other.queries["test"]] != [q.text for q in world.queries["test"]]


def test_cli_json_is_deterministic_and_seed_dependent():
    first = run_cli("--stats", "--json", "--seed", "5", *CLI_SMALL)
    second = run_cli("--stats", "--json", "--seed", "5", *CLI_SMALL)
    other = run_cli("--stats", "--json", "--seed", "6", *CLI_SMALL)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert other.stdout != first.stdout
    stats = json.loads(first.stdout)
    assert stats["counts"]["products"] == 300
    assert set(stats["lexical_gap_test"]) == {*SEGMENTS, "all"}
    assert "queries/s" not in first.stdout


@pytest.mark.parametrize("args, needle", [
    (["--n-products", "0"], "--n-products must be >= 1"),
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--no-such-option"], "unrecognized arguments: --no-such-option"),
])
def test_cli_bad_arguments_give_one_line(args, needle):
    result = run_cli(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert needle in result.stderr


def test_config_dataclass_roundtrip():
    config = WorldConfig(seed=7, n_products=10)
    assert WorldConfig(**dataclasses.asdict(config)) == config


@pytest.mark.parametrize("balance", ["under", "over"])
def test_relevance_dataset_balances_labels(world, balance):
    """Every label gets the same number of pairs: 'under' drops pairs of the commoner labels,
    'over' keeps every distinct pair and repeats the rarer labels'; any prefix mixes the labels."""
    tok = Tokenizer.train(world.corpus_texts()[:3000], 600)
    pairs = world.relevance_examples("train", per_label=4)
    by_label = {k: {(q, r) for q, r, label in pairs if label == k} for k in (0, 1, 2)}
    data = relevance_dataset(world, "train", tok, 128, seed=0, per_label=4, balance=balance)
    labels = [ids[-2] for ids, _ in data]  # <|rel_k|> precedes <|eos|>
    counts = [labels.count(tok.rel_ids[k]) for k in (0, 1, 2)]
    sizes = [sum(label == k for _, _, label in pairs) for k in (0, 1, 2)]
    assert counts == [(min if balance == "under" else max)(sizes)] * 3
    if balance == "over":  # every distinct perturbed pair of every label is kept
        rendered = {tuple(ids) for ids, _ in data}
        for k in (0, 1, 2):
            assert all(tuple(render_relevance(tok, q, r, k)[0]) in rendered for q, r in by_label[k])
    assert set(labels[:60]) == set(tok.rel_ids)
    with pytest.raises(UserError, match="balance"):
        relevance_dataset(world, "train", tok, 128, balance="both")


KIND_GRADE = {"gold": 2, "reordered": 2, "brand dropped": 1, "attribute dropped": 1, "broadened": 1, "narrowed": 1,
              "partial, mixed": 1, "category swapped": 0, "complement": 0, "brand swapped": 0,
              "attribute contradicted": 0, "unparsable": 0}


def test_perturbation_kind_agrees_with_the_judge_and_covers_every_family(world):
    assert set(KIND_GRADE) == set(World.PERTURBATION_KINDS)
    intents = {q.text: q.intent for q in world.queries["train"]}
    seen = set()
    for q, r, label in world.relevance_examples("train", per_label=4):
        kind = world.perturbation_kind(intents[q], r)
        assert KIND_GRADE[kind] == label, (q, r, kind, label)
        seen.add(kind)
    # every family that World.perturbations generates shows up (mixed partials and unparsable text do not)
    assert seen == set(KIND_GRADE) - {"partial, mixed", "unparsable"}


def test_perturbation_kind_by_hand(world):
    q = next(q for q in world.queries["train"] if q.intent.brand is not None and len(q.intent.attrs) >= 2)
    intent, lex = q.intent, world.lexicon
    (attr, value), rest = q.intent.attrs[0], q.intent.attrs[1:]
    other = next(v for v in dict(lex.category_attrs[intent.category])[attr] if v != value)
    kind = lambda i: world.perturbation_kind(intent, render_canonical(lex, i))  # noqa: E731
    assert world.perturbation_kind(intent, q.gold) == "gold"
    assert kind(Intent(intent.category, None, intent.attrs)) == "brand dropped"
    assert kind(Intent(intent.category, intent.brand, rest)) == "attribute dropped"
    assert kind(Intent(intent.category, None, rest)) == "partial, mixed"
    assert world.perturbation_kind(intent, intent.category) == "broadened"
    assert kind(Intent(intent.category, intent.brand, ((attr, other),) + rest)) == "attribute contradicted"
    assert world.perturbation_kind(intent, "zzqx") == "unparsable"
