"""The shop: a world with its search engine, shoppers and dictionary baseline, built once.

Rewards (GRPO) and evaluation score rewrites through a :class:`Shop`: the page
of a (query, rewrite) pair from the BM25 engine, graded by the world's judge,
bought from by the simulated shoppers (:func:`qrw.shop.metrics.rewrite_metrics`).
"""

from __future__ import annotations

import numpy as np

from qrw.config import UserError
from qrw.shop.baselines import DictionaryRewriter, gold_rewrites
from qrw.shop.lexicon import deletes, one_edit
from qrw.shop.metrics import rewrite_metrics, summarize
from qrw.shop.ood import checked_ood_queries
from qrw.shop.search import SearchEngine
from qrw.shop.users import UserSimulator
from qrw.shop.world import World

BASELINES = ("none", "dictionary", "gold")  # the rewriters --ab accepts by name (besides run directories)
# Shop.knows_query forgives one typo only in words this long: among shorter words one edit reaches too many
# others ("cat" -> "car"). Chosen on data the gate is not measured on (seeds 0-2 of the default world, 2,000
# out-of-domain *train* queries and 500 in-domain val queries each): from 4 letters 6.9-12.4% of those
# out-of-domain queries pass; from 5, 4.2-5.1%, with 1 val query of 1,500 failing; from 6, 1.7-3.1%, with 21 failing.
TYPO_MIN_LETTERS = 5


class Shop:
    """The world's search engine, shoppers and dictionary baseline, built once per evaluation or training run."""

    def __init__(self, world: World, k: int = 10):
        self.world = world
        self.k = k
        self.engine = SearchEngine(world.titles, world.popularity)
        self.users = UserSimulator(world)
        self._dictionary: DictionaryRewriter | None = None
        self._vocabulary: tuple[frozenset[str], dict[str, list[str]]] | None = None

    @property
    def dictionary(self) -> DictionaryRewriter:
        if self._dictionary is None:
            self._dictionary = DictionaryRewriter().fit(self.world.queries["train"])
        return self._dictionary

    def baseline_rewrites(self, name: str, queries) -> list[str | None]:
        """The rewrites of baseline ``name`` (one of :data:`BASELINES`) for ``queries`` (list[Query])."""
        if name == "none":
            return [None] * len(queries)
        if name == "dictionary":
            return self.dictionary.rewrite([q.text for q in queries])
        if name == "gold":
            return gold_rewrites(queries)
        raise UserError(f"unknown baseline {name!r}; expected one of {', '.join(BASELINES)}")

    def reads_product(self, texts: list[str]) -> list[bool]:
        """Per query: the shop reads a product in it, i.e. its :attr:`dictionary` reading names a catalog category
        or brand (the query check of the serving gate, ``--gate-query dictionary``).

        Query understanding as a production search team has it without a relevance oracle: the dictionary is
        mined from training pairs (:class:`~qrw.shop.baselines.DictionaryRewriter`), and a query in which it
        reads neither a product type nor a brand asks for nothing the shop knows it sells ("dinosaur",
        "grey leather sofa": only the colour and material are read). It misses what the dictionary never
        mined: typos ("wahing machine"), log-only variants ("outerwear") and phrases it cannot split.
        """
        lexicon = self.world.lexicon
        products = tuple(lexicon.category_names) + tuple(lexicon.brands)
        padded = [f" {reading} " for reading in self.dictionary.rewrite([t.lower() for t in texts])]
        return [any(f" {p} " in r for p in products) for r in padded]

    def knows_word(self, word: str) -> bool:
        """``word`` is a word of the shop's own text, :meth:`~qrw.shop.world.World.corpus_texts` (titles,
        attribute texts, search logs, training queries and their rewrites), or one typo from one
        (:func:`~qrw.shop.lexicon.one_edit`, for words of :data:`TYPO_MIN_LETTERS` letters or more);
        a word with a digit always is (sizes and model numbers combine freely).
        """
        if self._vocabulary is None:
            words = frozenset(w for text in self.world.corpus_texts() for w in text.lower().split())
            index: dict[str, list[str]] = {}  # a long word and each of its deletions -> the long words
            for w in words:
                if len(w) >= TYPO_MIN_LETTERS:
                    for key in (w, *deletes(w)):
                        index.setdefault(key, []).append(w)
            self._vocabulary = words, index
        words, index = self._vocabulary
        if word in words or any(c.isdigit() for c in word):
            return True
        if len(word) < TYPO_MIN_LETTERS:
            return False
        candidates = {c for key in (word, *deletes(word)) for c in index.get(key, ())}
        return any(one_edit(word, c) for c in candidates)

    def knows_query(self, texts: list[str]) -> list[bool]:
        """Per query: the shop knows every word of it (:meth:`knows_word`): the query check
        ``--gate-query vocabulary`` of the serving gate.

        A shop knows the words of what it sells from its catalog and its search logs; a query with a word it
        has never seen, even allowing one typo, most likely asks for something else ("grey leather sofa":
        "sofa"). It errs both ways: an out-of-domain query made only of shop words passes ("space heater",
        "board game"), and an in-domain query with a typo in a short word or two typos in one fails.
        """
        return [all(self.knows_word(w) for w in text.lower().split()) for text in texts]

    def ood_queries(self, split: str, n: int) -> list[str]:
        """``n`` out-of-domain queries of ``split`` (:mod:`qrw.shop.ood`, seeded by the world's seed).

        Checked: the judge reads no intent in any of them (every catalog query parses to its own).
        """
        return checked_ood_queries(self.world, n, split)

    def score(self, queries, rewrites: list[str | None]) -> dict[str, dict[str, float]]:
        """Per-segment and overall means of the page metrics, plus rewrite length and diversity.

        Length (words) and diversity (share of distinct rewrites) are over the rewrites given, not the
        None ones (no rewrite: a gated query); NaN for a segment without any.
        """
        per_example = rewrite_metrics(self.world, self.engine, self.users, queries, rewrites, k=self.k)
        summary = summarize(per_example, [q.segment for q in queries])
        if any(r is not None for r in rewrites):
            segments = np.array([q.segment for q in queries])
            given = np.array([r is not None for r in rewrites])
            lengths = np.array([len(r.split()) if r else 0 for r in rewrites], dtype=float)
            for seg, row in summary.items():
                idx = np.flatnonzero(given if seg == "all" else given & (segments == seg))
                chosen = [rewrites[i] for i in idx]
                row["length"] = float(lengths[idx].mean()) if len(idx) else float("nan")
                row["diversity"] = len(set(chosen)) / len(chosen) if chosen else float("nan")
        return summary
