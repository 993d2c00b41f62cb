"""Crossing the wall on purpose: everything that reads the hidden truth for training runs, by name.

Training reads the shop's observed side (:class:`qrw.shop.observed.ObservedShop`) and
buys relevance labels through one door (:class:`qrw.shop.annotation.AnnotationService`);
the training modules (:mod:`qrw.sft`, :mod:`qrw.data`, :mod:`qrw.rewards`, ...) import
no module of the hidden truth (``tests/test_wall.py`` pins it). What a run may still
read of the truth lives here, each inside a named :func:`qrw.shop.wall.crossing` that
the run records:

- the upper-bound arms: gold rewrite targets and gold-built relevance pairs
  (:func:`stage1_pairs`), the judge as relevance reward and the shoppers' expected
  purchases as conversion reward (:class:`OracleView`);
- evaluation during training: the validation loss on held-out gold rewrites and
  judge-graded pairs (:func:`validation_sets`, :func:`val_rewrite_pairs`), and GRPO's
  opt-in oracle monitor (``--oracle-monitor``, :class:`OracleView`).

The default dispatch in :func:`stage1_pairs` sits here too, beside the upper bounds
it chooses between; its default path reads nothing hidden.
"""

from __future__ import annotations

import numpy as np
import torch

from qrw.config import check
from qrw.data import Example, balanced_relevance_examples, rewrite_dataset
from qrw.lm.tokenizer import Tokenizer
from qrw.sft import SFTRunConfig, sample_rewrites
from qrw.shop import wall
from qrw.shop.labelling import build as build_labelling
from qrw.shop.lexicon import Query
from qrw.shop.metrics import rewrite_metrics
from qrw.shop.observed import ObservedShop
from qrw.shop.relevance import label_rewrites, training_pairs


def stage1_pairs(observed: ObservedShop, world, run: SFTRunConfig, budget: int
                 ) -> tuple[list[tuple[str, str]], list[tuple[str, str, int]] | None, dict | None]:
    """Stage 1's ``(rewrite pairs, relevance pairs, what was bought)`` per ``run.rewrite_data`` and
    ``run.relevance_data``.

    The defaults read the observed side and the door only: the shop's mined pairs, and relevance pairs
    bought through the annotation service within ``budget`` labels (:func:`qrw.shop.labelling.build`; the
    third value is its summary: per source, candidates, labels bought, label shares). The upper bounds cross
    the wall, by name: ``--rewrite-data gold`` (each training query with its gold rewrite) and
    ``--relevance-data production|hard|perturbed`` (pairs built from the intents and graded by the judge:
    :func:`qrw.shop.relevance.training_pairs`; nothing bought, summary None). Relevance pairs are None for
    a single-task run.
    """
    if run.rewrite_data == "mined":
        rewrites = list(observed.mined_pairs)
    else:
        with wall.crossing("upper-bound arm: --rewrite-data gold"):
            rewrites = [(q.text, q.gold) for q in world.queries["train"]]
    if "relevance" not in run.task_list:
        return rewrites, None, None
    if run.relevance_data == "labelled":
        labelling = build_labelling(observed, budget, run.seed)
        return rewrites, labelling.pairs, labelling.summary()
    with wall.crossing(f"upper-bound arm: --relevance-data {run.relevance_data} (pairs built from gold)"):
        return rewrites, training_pairs(world, run.relevance_data, run.relevance_per_label,
                                        run.relevance_wrong_values), None


def relevance_dataset(world, split: str, tok: Tokenizer, max_len: int, seed: int = 0,
                      per_label: int = 1, balance: str = "under", data: str = "perturbed",
                      wrong_values: int = 2) -> list[Example]:
    """Relevance-task examples, balanced across the three labels, in a seeded random order.

    ``data``: where the pairs come from (:func:`qrw.shop.relevance.training_pairs`):
    ``"perturbed"`` (perturbations of each query's gold rewrite, any split), or, for
    the training split only, ``"hard"`` (those plus hard cases: every attribute
    contradicted with ``wrong_values`` wrong values, near-misses, every phrase
    order, re-typed queries) or ``"production"`` (those plus the mined rewrite
    pairs and perturbations of them). Every label is the judge's grade.
    ``per_label``: distinct perturbed rewrites per label and query (more gives the
    tagger more varied pairs for the same queries; see ``World.relevance_examples``).
    ``balance``: ``"under"`` keeps as many pairs per label as the rarest label has
    (a random subset of the others); ``"over"`` keeps every pair and repeats the
    rarer labels' pairs (whole copies, then a random subset) up to the commonest
    label's count, so no labelled pair is thrown away.
    """
    check(balance in ("under", "over"), f"balance must be 'under' or 'over' (got {balance!r})")
    check(data == "perturbed" or split == "train",
          f"relevance data {data!r} exists for the training split only (got {split!r})")
    pairs = (world.relevance_examples(split, per_label=per_label) if data == "perturbed" else
             training_pairs(world, data, per_label, wrong_values))
    return balanced_relevance_examples(pairs, tok, max_len, seed, balance)


def validation_sets(world, tok: Tokenizer, run: SFTRunConfig, max_len: int) -> dict[str, list]:
    """Fixed validation examples per stage-1 task (the periodic validation loss: a monitor, never a signal).

    The rewrite task validates on gold val rewrites whatever ``run.rewrite_data``
    is (the meaning the evaluation asks for), the relevance task on judge-graded
    perturbations of them: evaluation, so it crosses the wall by name.
    """
    with wall.crossing("evaluation: the validation loss on held-out gold rewrites and judge grades"):
        val = {"rewrite": rewrite_dataset(world.queries["val"][:run.val_examples], tok, max_len)}
        if "relevance" in run.task_list:
            val["relevance"] = relevance_dataset(world, "val", tok, max_len, seed=run.seed)[:run.val_examples]
    return val


def val_rewrite_pairs(model: torch.nn.Module, tok: Tokenizer, world, seed: int, n: int,
                      device: torch.device) -> list[tuple[str, str, int]]:
    """Stage 1b's validation set: ``n`` rewrites of validation queries, graded by the judge (evaluation: the
    tagger's validation loss on the rewrites it will score; it crosses the wall by name)."""
    with wall.crossing("evaluation: stage 1b's validation pairs"):
        queries = {q.text: q for q in world.queries["val"]}
        pairs = sample_rewrites(model, tok, list(queries), seed, n, 1, device)
        return label_rewrites(world, [queries[q] for q, _ in pairs], [r for _, r in pairs])


class OracleView:
    """The hidden truth's view of (query, rewrite) pairs: the judge's grades and the shoppers' expected purchases.

    Used only across the wall, by name (:func:`qrw.shop.wall.crossing`): the upper-bound arms
    ``--relevance-judge oracle``, ``--conversion-judge oracle``, the ``recall`` reward, and the opt-in
    oracle monitor of GRPO (``--oracle-monitor``). ``shop`` is a :class:`qrw.shop.shop.Shop`; a query text is
    read as the world's query of that text (a training, logged or held-out query), else parsed by the judge.
    """

    def __init__(self, shop):
        self.shop = shop
        world = shop.world
        with wall.crossing("oracle: index the world's queries"):
            self._queries = {q.text: q for q in list(world.queries["train"]) + list(world.log_queries)
                             + list(world.queries["val"]) + list(world.queries["test"])}

    def metrics(self, texts: list[str], rewrites: list[str], reason: str) -> dict[str, np.ndarray]:
        """:func:`qrw.shop.metrics.rewrite_metrics` of the pairs, crossing the wall for ``reason``.

        A text the judge reads no intent in (a search for something the shop does not sell) scores 0 on
        every metric: nothing it asks for is sold.
        """
        with wall.crossing(reason):
            world = self.shop.world
            queries, known = [], []
            for text in texts:
                query = self._queries.get(text)
                if query is None:
                    intent = world.judge.parse(text)
                    query = None if intent is None else Query(text, intent, "", "tail", "log")
                queries.append(query)
                known.append(query is not None)
            out = {name: np.zeros(len(texts)) for name in ("accuracy", "grade", "relevance", "recall", "ucvr")}
            rows = [i for i, ok in enumerate(known) if ok]
            if rows:
                part = rewrite_metrics(world, self.shop.engine, self.shop.users, [queries[i] for i in rows],
                                       [rewrites[i] for i in rows], k=self.shop.k)
                for name, values in part.items():
                    out[name][rows] = np.nan_to_num(values)
            return out
