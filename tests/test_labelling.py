"""Stage 1b: a labelling round of the SFT model's own rewrites (``train_sft.py --label-rewrites N``).

Pinned here: the labels are the annotation service's (the door), each pair once
and counted against the budget; the sampled pairs are a deterministic function
of model and seed; the stage's
mixture gives the labelled pairs their share of the relevance slots with the
relevance loss weight; end to end, the run logs the stage (the tagger on the
labelled val rewrites before and after), saves the pairs, loads as a finished
run, and resumes bitwise within and at the start of the stage.
"""

import json

import pytest
import torch

import train_sft
from qrw.data import TASKS
from qrw.lm.model import ModelConfig, Transformer
from qrw.lm.tokenizer import Tokenizer
from qrw.runs import final_stage, load_run
from qrw.oracle import stage1_pairs, val_rewrite_pairs
from qrw.sft import SFTRunConfig, TrainConfig, label_mixture, model_rewrite_pairs, ood_rewrite_pairs, sft_mixture
from qrw.shop.observation import observe_world
from qrw.shop.relevance import label_rewrites
from qrw.shop.world import World, WorldConfig
from test_scripts import TINY, assert_bitwise_equal, training_records, weights


@pytest.fixture(scope="module")
def world() -> World:
    return World(WorldConfig(seed=3, n_products=200, n_train_queries=120, n_val_queries=20, n_test_queries=20,
                             n_log_sessions=200, mining_sessions_per_query=2))


@pytest.fixture(scope="module")
def model_and_tok(world):
    tok = Tokenizer.train(world.corpus_texts(), 400)
    torch.manual_seed(0)
    return Transformer(ModelConfig.preset("tiny", tok.vocab_size)), tok


def test_labels_are_the_judges_grades_each_pair_once(world):
    queries = world.queries["train"][:4]
    rewrites = [queries[0].gold, "protective case", queries[0].gold, queries[3].gold]
    chosen = [queries[0], queries[1], queries[0], queries[2]]  # the third repeats the first pair
    pairs = label_rewrites(world, chosen, rewrites)
    assert [(q, r) for q, r, _ in pairs] == [(queries[0].text, queries[0].gold), (queries[1].text, "protective case"),
                                             (queries[2].text, queries[3].gold)]
    assert pairs[0][2] == 2  # a query's own gold rewrite is equivalent
    for (q, r, label), query in zip(pairs, [queries[0], queries[1], queries[2]]):
        assert label == world.judge.grade_rewrite(query.intent, r)
    with pytest.raises(ValueError, match="2 queries but 1 rewrites"):
        label_rewrites(world, queries[:2], ["tv"])


def service_labels(world, pairs) -> list[int]:
    """What a fresh annotation service of the world sells for ``(query, rewrite)`` pairs (the noise is a hash)."""
    return observe_world(world, label_budget=len(pairs) + 1).annotations.label(pairs)


def test_sampled_pairs_are_deterministic_and_labelled_through_the_door(world, model_and_tok):
    model, tok = model_and_tok
    cpu = torch.device("cpu")
    n = len(world.queries["train"]) + 5  # more than the split has: it cycles through the queries
    observed = observe_world(world, label_budget=10_000, disagreement=0.0)
    a = model_rewrite_pairs(model, tok, observed, 0, n, cpu)
    assert observed.annotations.bought == len(a)  # one label per distinct pair, counted
    b = model_rewrite_pairs(model, tok, observe_world(world, label_budget=n, disagreement=0.0), 0, n, cpu)
    other_seed = model_rewrite_pairs(model, tok, observed, 1, n, cpu)
    assert a == b and a != other_seed
    assert 0 < len(a) <= n and len({(q, r) for q, r, _ in a}) == len(a)
    intents = {q.text: q.intent for q in world.queries["train"]}
    assert {q for q, _, _ in a} == set(intents)  # every training query, cycled, and nothing else
    for q, r, label in a:
        assert r  # an empty sample is written as the tagger reads it
        assert label == world.judge.grade_rewrite(intents[q], r)  # no disagreement: the judge's grade
    val = val_rewrite_pairs(model, tok, world, 0, len(world.queries["val"]) + 5, cpu)  # evaluation: the judge
    val_intents = {q.text: q.intent for q in world.queries["val"]}
    assert {q for q, _, _ in val} == set(val_intents)
    assert all(label == world.judge.grade_rewrite(val_intents[q], r) for q, r, label in val)
    with pytest.raises(ValueError, match="n >= 1"):
        model_rewrite_pairs(model, tok, observed, 0, 0, cpu)


def test_label_mixture_shares_the_relevance_slots(world, model_and_tok):
    _, tok = model_and_tok
    run = SFTRunConfig(preset="tiny", vocab_size=400, rewrite_fraction=0.25, label_share=0.5, relevance_weight=3.0,
                       relevance_data="perturbed")
    cfg = TrainConfig(steps=4, batch_size=16)
    observed = observe_world(world, run.label_budget, run.label_disagreement)
    rewrites, relevance, _ = stage1_pairs(observed, world, run, 0)
    pairs = [(q.text, q.gold, 2) for q in world.queries["train"][:6]] + [(world.queries["train"][0].text, "tv", 0)]
    mix = label_mixture(rewrites, relevance, tok, run, cfg, 64, pairs)
    base = sft_mixture(rewrites, relevance, tok, run, cfg, 64)
    assert mix.counts == {"rewrite": 4, "relevance": 6, "labelled": 6} and base.counts["relevance"] == 12
    assert mix.weights["labelled"] == mix.weights["relevance"] == 3.0
    assert len(mix.datasets["labelled"]) == 12  # balanced by repetition: 6 of label 2, the one label 0 six times
    batch = mix.batch(2)
    assert sum(task == "labelled" for task, _ in batch) == 6 and len(batch) == 16
    # the rewrite and relevance draws of stage 1's streams are unchanged by the extra task
    assert [ex for t, ex in batch if t == "rewrite"] == [ex for t, ex in base.batch(2) if t == "rewrite"][:4]
    assert TASKS.index("labelled") == 3
    with pytest.raises(ValueError, match="--label-share must be in"):
        SFTRunConfig(label_share=1.0)
    with pytest.raises(ValueError, match="needs the relevance task"):
        SFTRunConfig(tasks="rewrite", label_rewrites=10)


def test_final_stage_of_a_run_config():
    assert final_stage({"kind": "sft", "sft": {"steps": 3}}) == "sft"  # runs before stage 1b have no "label"
    assert final_stage({"kind": "sft", "label": {"steps": 0}}) == "sft"
    assert final_stage({"kind": "sft", "label": {"steps": 5}}) == "label"
    assert final_stage({"kind": "grpo", "grpo": {"steps": 5}}) == "grpo"


def test_out_of_domain_pairs_are_the_models_samples_of_searches_nobody_clicked(world, model_and_tok):
    """``--label-ood N``: one sample for each of the first N logged searches nobody clicked on, labelled through
    the door (most are for products the shop does not sell), deterministic."""
    model, tok = model_and_tok
    cpu = torch.device("cpu")
    observed = observe_world(world, label_budget=1000, disagreement=0.0)
    a = ood_rewrite_pairs(model, tok, observed, 0, 30, cpu)
    assert a == ood_rewrite_pairs(model, tok, observed, 0, 30, cpu) and a != ood_rewrite_pairs(model, tok, observed, 1, 30, cpu)
    texts = observed.null_texts[:30]
    assert sorted(q for q, _, _ in a) == sorted(texts)  # one rewrite each, every one of them
    assert all(not s.clicked for s in observed.sessions if s.query in texts)
    for q, r, label in a:
        intent = world.judge.parse(q)
        assert r and label == (0 if intent is None else world.judge.grade_rewrite(intent, r))
    assert any(world.judge.parse(q) is None for q in texts)  # among them, searches for what the shop does not sell
    with pytest.raises(ValueError, match="between 1 and"):
        ood_rewrite_pairs(model, tok, observed, 0, 0, cpu)


LABEL = TINY + ["--label-rewrites", "40", "--label-steps", "4"]  # 8 pretrain + 12 SFT + 4 stage-1b steps


@pytest.fixture(scope="module")
def label_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("label") / "sft"
    assert train_sft.main(LABEL + ["--out", str(out)]) == 0
    return out


def test_stage_1b_end_to_end(label_run):
    records = training_records(label_run)
    assert {r["stage"] for r in records} == {"pretrain", "sft", "label"}
    label = [r for r in records if r["stage"] == "label"]
    assert [r["step"] for r in label if "loss" in r] == [1, 2, 3, 4]
    assert all("labelled_loss" in r for r in label if "loss" in r)  # the labelled task is in every batch
    evals = [r for r in label if "val_labelled_loss" in r]
    assert [r["step"] for r in evals] == [0, 4]  # the tagger on the model's own val rewrites, before and after
    saved = json.loads((label_run / "label_pairs.json").read_text())
    assert 0 < len(saved["train"]) <= 40 and len(saved["val"]) > 0
    run = load_run(label_run)
    assert [label for *_, label in saved["train"]] == service_labels(run.world, [(q, r) for q, r, _ in saved["train"]])
    config = json.loads((label_run / "config.json").read_text())
    assert config["run"]["label_rewrites"] == 40 and config["label"]["steps"] == 4
    metrics = json.loads((label_run / "metrics.json").read_text())
    assert "tagging" in metrics
    bought = metrics["wall"]
    assert bought["labels_bought"] == bought["stage1_labelling"]["labels_bought"] + len(saved["train"])
    assert bought["stage1_labelling"]["budget"] == config["run"]["label_budget"] - 40  # stage 1b's share kept back


def test_stage_1b_off_by_default(tmp_path):
    out = tmp_path / "plain"
    assert train_sft.main(TINY + ["--out", str(out), "--sft-steps", "2", "--pretrain-steps", "1"]) == 0
    assert json.loads((out / "config.json").read_text())["label"]["steps"] == 0
    assert not (out / "label_pairs.json").exists()
    assert {r["stage"] for r in training_records(out)} == {"pretrain", "sft"}


@pytest.mark.parametrize("cut", [20, 22])  # at the end of stage 1 (the pairs not drawn yet); within stage 1b
def test_stage_1b_resumes_bitwise(label_run, tmp_path, cut):
    out = tmp_path / "cut"
    assert train_sft.main(LABEL + ["--out", str(out), "--stop-after", str(cut)]) == 0
    state = torch.load(out / "ckpt.pt", weights_only=True)
    assert (state["stage"], state["step"]) == (("sft", 12) if cut == 20 else ("label", 2))
    assert train_sft.main(["--resume", "--quiet", "--out", str(out)]) == 0
    assert_bitwise_equal(weights(out), weights(label_run))
    assert training_records(out) == training_records(label_run)
    assert json.loads((out / "label_pairs.json").read_text()) == json.loads((label_run / "label_pairs.json").read_text())


def test_label_from_samples_another_runs_model(label_run, tmp_path, cli_error):
    """``--label-from RUN``: stage 1b labels RUN's rewrites (a GRPO policy's own drift), not its own model's."""
    out = tmp_path / "refresh"
    assert train_sft.main(LABEL + ["--out", str(out), "--label-from", str(label_run)]) == 0
    source = load_run(label_run)
    expected = model_rewrite_pairs(source.model, source.tok, observe_world(source.world), 0, 40, torch.device("cpu"))
    saved = json.loads((out / "label_pairs.json").read_text())
    assert [tuple(p) for p in saved["train"]] == expected
    # label_run's own pairs came from its model at the end of stage 1, four steps earlier: other samples
    assert saved["train"] != json.loads((label_run / "label_pairs.json").read_text())["train"]
    assert json.loads((out / "config.json").read_text())["run"]["label_from"] == str(label_run)
    # another world (seed) or no stage 1b: one line each, before anything is trained or written
    assert "trained on another world" in cli_error(train_sft.main, *LABEL, "--seed", "1", "--out", str(tmp_path / "x"),
                                                  "--label-from", str(label_run))
    assert not (tmp_path / "x").exists()
    assert "--label-from needs --label-rewrites" in cli_error(train_sft.main, *TINY, "--out", str(tmp_path / "y"),
                                                            "--label-from", str(label_run))


def test_label_ood_adds_out_of_domain_samples_to_the_labels(label_run, tmp_path, cli_error):
    """``--label-ood N`` adds the model's rewrites of N out-of-domain train queries, label 0, to stage 1b's pairs."""
    out = tmp_path / "ood"
    assert train_sft.main(LABEL + ["--out", str(out), "--label-ood", "12"]) == 0
    saved = json.loads((out / "label_pairs.json").read_text())
    plain = json.loads((label_run / "label_pairs.json").read_text())
    assert saved["train"][:len(plain["train"])] == plain["train"] and saved["val"] == plain["val"]
    extra = saved["train"][len(plain["train"]):]
    run = load_run(out)
    observed = observe_world(run.world)
    assert sorted(q for q, _, _ in extra) == sorted(observed.null_texts[:12])
    assert [label for *_, label in extra] == service_labels(run.world, [(q, r) for q, r, _ in extra])
    assert json.loads((out / "config.json").read_text())["run"]["label_ood"] == 12
    assert "--label-ood needs --label-rewrites" in cli_error(train_sft.main, *TINY, "--out", str(tmp_path / "y"),
                                                           "--label-ood", "5")
    assert "--label-ood must be between 0 and" in cli_error(train_sft.main, *LABEL, "--out", str(tmp_path / "z"),
                                                          "--label-ood", "-1")
