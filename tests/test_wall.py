"""The wall: training reads the hidden truth only through the annotation door (qrw/shop/wall.py).

Pinned here: every accessor of the HIDDEN table raises inside ``sealed()`` and
works outside it (and the originals come back); the door and the named crossings
open it; the annotation service labels while sealed and counts what it sold;
``train_sft.py --smoke`` and ``train_grpo.py --smoke`` (default flags) train
sealed and finish, and record the labels bought and the crossings; a planted leak
(the rules reading a query's gold, stage 0 reading the world's idealised logs)
makes the run fail.
"""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest

import train_grpo
import train_sft
from qrw.shop import wall
from qrw.shop.lexicon import Draws
from qrw.shop.observation import observe_world
from qrw.shop.world import World, WorldConfig

SMALL = WorldConfig(seed=1, n_products=200, n_train_queries=150, n_val_queries=20, n_test_queries=20,
                    n_log_sessions=300)


@pytest.fixture(scope="module")
def world() -> World:
    return World(SMALL)


def _instances(world: World) -> dict[str, object]:
    query = world.queries["train"][0]
    return {"Query": query, "Lexicon": world.lexicon, "Judge": world.judge, "World": world,
            "UserSimulator": importlib.import_module("qrw.shop.users").UserSimulator(world),
            "MinedPair": world.mined_pairs[0]}


def _touch(obj, name: str, kind: str, calls: dict):
    """Read (a field, a property) or call (a method, with ``calls[name]``) one hidden accessor as training would."""
    value = getattr(obj, name)
    if kind == "field" or not callable(value):
        return value
    return value(*calls.get(name, ()))


def _calls(world: World) -> dict[str, tuple]:
    """Arguments for each hidden method (read before the seal)."""
    query = world.queries["train"][0]
    draws = Draws(np.random.default_rng(0))
    pages = np.arange(20).reshape(2, 10)
    grades = np.zeros((2, 10), dtype=np.int64)
    calls = {"correct": ("televsion",), "terms": (query.text,), "parse": (query.text,),
             "grade_rewrite": (query.intent, query.gold), "grade_products": (query.intent,),
             "exact_count": (query.intent,), "variants": ("rare",), "relevance_examples": ("train",),
             "perturbations": (query.intent, draws), "perturbation_kind": (query.intent, query.gold),
             "render_training_query": (query.intent, draws), "uses_log_only": (query,),
             "purchase_probs": (pages, grades), "expected_purchases": (pages, grades),
             "sample_sessions": (pages, grades, np.random.default_rng(0))}
    return calls


def test_every_hidden_accessor_raises_inside_the_seal_and_works_outside(world):
    instances, calls = _instances(world), _calls(world)
    owners = {(module, cls): getattr(importlib.import_module(module), cls) for module, cls, _, _ in wall.HIDDEN}
    originals = {(module, cls, name): owners[module, cls].__dict__.get(name) for module, cls, name, _ in wall.HIDDEN}
    before = {(cls, name): _touch(instances[cls], name, kind, calls) for _, cls, name, kind in wall.HIDDEN
              if kind == "field"}
    with wall.sealed():
        assert wall.is_sealed()
        for _, cls, name, kind in wall.HIDDEN:
            with pytest.raises(wall.WallError, match=f"{cls}.{name}"):
                _touch(instances[cls], name, kind, calls)
        assert world.titles and world.products  # the catalog is observed: readable
        assert instances["Query"].text  # a query's text too
    assert not wall.is_sealed()
    for (module, cls, name), original in originals.items():  # the classes are as they were
        assert owners[module, cls].__dict__.get(name) is original
    for _, cls, name, kind in wall.HIDDEN:  # and every accessor works, fields unchanged
        value = _touch(instances[cls], name, kind, calls)
        if kind == "field":
            assert value is before[(cls, name)]


def test_the_door_and_named_crossings_open_the_wall_and_crossings_are_counted(world):
    observed = observe_world(world, label_budget=10)
    query = world.queries["train"][0]
    wall.reset_crossings()
    with wall.sealed():
        labels = observed.annotations.label([(observed.train_texts[0], "x"), (observed.train_texts[0], "x")])
        with wall.crossing("evaluation: a test"):
            gold = query.gold
        with pytest.raises(wall.WallError):
            query.gold  # noqa: B018  (closed again)
    assert labels[0] == labels[1] and observed.annotations.bought == 1  # one pair, bought once
    assert gold == world.queries["train"][0].gold
    assert wall.crossings() == {"evaluation: a test": 1}


def test_queries_can_still_be_built_while_sealed(world):
    """A constructor writes the guarded fields (frozen dataclasses included); only reading them is refused."""
    query = world.queries["train"][0]
    with wall.sealed():
        copy = type(query)(query.text, "intent", "gold", "head", "train")
        with pytest.raises(wall.WallError):
            copy.gold  # noqa: B018
    assert copy.gold == "gold"


def _run_smoke(tmp_path) -> tuple[dict, dict]:
    sft, grpo = tmp_path / "sft", tmp_path / "grpo"
    assert train_sft.main(["--smoke", "--out", str(sft), "--quiet"]) == 0
    assert train_grpo.main(["--smoke", "--init", str(sft), "--out", str(grpo), "--quiet"]) == 0
    return (json.loads((sft / "metrics.json").read_text()), json.loads((grpo / "metrics.json").read_text()))


def test_smoke_runs_train_behind_the_wall_and_record_the_labels_bought(tmp_path, monkeypatch):
    seen = []
    rules = train_grpo.RewardFunction.rules
    monkeypatch.setattr(train_grpo.RewardFunction, "rules",
                        lambda self, *a: seen.append(wall.is_sealed()) or rules(self, *a))
    sft, grpo = _run_smoke(tmp_path)
    assert seen.count(True) == train_grpo.SMOKE_GRPO["steps"]  # every training step's rules ran sealed
    assert seen.count(False) == 2  # the test evaluation's reward column (SFT init, GRPO), after the seal
    assert sft["wall"]["labels_bought"] > 0 and sft["wall"]["labels_bought"] <= sft["wall"]["budget"]
    assert sft["wall"]["disagreement"] == 0.1
    assert set(sft["wall"]["crossings"]) == {"evaluation: the validation loss on held-out gold rewrites and judge grades"}
    assert grpo["wall"]["crossings"] == {} and grpo["wall"]["labels_bought"] == 0


def test_a_planted_leak_in_the_rules_fails_the_run(tmp_path, monkeypatch):
    """The rules reading the gold rewrite of a query (held from before the seal, as a cache would) fail."""
    sft = tmp_path / "sft"
    assert train_sft.main(["--smoke", "--out", str(sft), "--quiet"]) == 0
    leaked = World(WorldConfig(**{**json.loads((sft / "config.json").read_text())["world"]}))
    gold_of = {q.text: q for q in leaked.queries["train"]}
    rules = train_grpo.RewardFunction.rules

    def leaky(self, queries, rewrites):
        out = rules(self, queries, rewrites)
        return out + np.array([float(gold_of[q].gold == r) if q in gold_of else 0.0 for q, r in zip(queries, rewrites)])
    monkeypatch.setattr(train_grpo.RewardFunction, "rules", leaky)
    # the leak only bites where a query is a training query: make GRPO sample those
    with pytest.raises(wall.WallError, match="Query.gold"):
        train_grpo.main(["--smoke", "--init", str(sft), "--out", str(tmp_path / "grpo"), "--quiet",
                         "--queries", "train"])
    assert not wall.is_sealed()  # the seal came off with the exception


def test_a_planted_leak_in_stage_0_fails_the_run(tmp_path, monkeypatch):
    """Stage 0 reading the world's idealised logs (World.log_texts) instead of the shop's fails."""
    import qrw.sft
    real = qrw.sft.pretrain_mixture
    worlds = []
    monkeypatch.setattr(train_sft, "World", lambda cfg: worlds.append(World(cfg)) or worlds[-1])
    monkeypatch.setattr(train_sft, "pretrain_mixture",
                        lambda observed, *a: (worlds[-1].log_texts(), real(observed, *a))[1])
    with pytest.raises(wall.WallError, match="World.log_texts"):
        train_sft.main(["--smoke", "--out", str(tmp_path / "sft"), "--quiet"])
    assert not wall.is_sealed()


# The static side: the modules of the training path import no module of the hidden truth. What a run reads of
# the truth on purpose (the upper-bound arms, the validation loss, the oracle monitor) lives in qrw/oracle.py,
# inside named crossings; the observed side is built once from the world by qrw/shop/observed.py (through
# qrw/shop/logs.py's simulation of what the shop records) before the seal.
HIDDEN_MODULES = {"qrw.shop.judge", "qrw.shop.users", "qrw.shop.relevance", "qrw.shop.metrics", "qrw.shop.world",
                  "qrw.shop.mining", "qrw.shop.shop", "qrw.shop.ood", "qrw.shop.logs", "qrw.shop.observation",
                  "qrw.oracle"}
TRAINING_MODULES = ("qrw.data", "qrw.sft", "qrw.rewards", "qrw.rollout", "qrw.update", "qrw.grpo",
                    "qrw.shop.labelling", "qrw.shop.conversion", "qrw.shop.annotation", "qrw.shop.wall",
                    "qrw.shop.config", "qrw.shop.search", "qrw.shop.baselines", "qrw.shop.observed",
                    "qrw.shop.sessions")


def test_training_modules_import_no_hidden_module():
    from test_layering import import_graph
    graph = import_graph()
    reach = {m: set() for m in TRAINING_MODULES}
    for module in TRAINING_MODULES:  # everything a training module imports, transitively, within qrw
        todo = [module]
        while todo:
            for target in graph.get(todo.pop(), ()):
                if target not in reach[module]:
                    reach[module].add(target)
                    if target not in HIDDEN_MODULES:
                        todo.append(target)
    found = {(m, t) for m, targets in reach.items() for t in targets if t in HIDDEN_MODULES}
    assert not found, f"the training path reaches the hidden truth: {sorted(found)}"
    assert {"qrw.shop.relevance", "qrw.shop.metrics"} <= {t for t in graph["qrw.oracle"]}  # the crossings do
