"""The shop: a world with its search engine, shoppers, observed side and baselines, built once per evaluation.

Evaluation scores rewrites through a :class:`Shop`: the page of a (query,
rewrite) pair from the BM25 engine, graded by the world's judge, bought from
by the simulated shoppers (:func:`qrw.shop.metrics.rewrite_metrics`). A Shop
holds the hidden truth (it runs outside :mod:`qrw.shop.wall`); what a shop
observes is its :attr:`Shop.observed` (:class:`~qrw.shop.observed.ObservedShop`),
and the serving gate's query checks (:meth:`Shop.reads_product`,
:meth:`Shop.knows_query`) read only that side, as production would.

Baselines (:data:`BASELINES`): ``none`` (no rewrite), ``dictionary`` (the
:class:`~qrw.shop.baselines.DictionaryRewriter` a shop can fit: on its logs'
(query, clicked title) pairs, :attr:`ObservedShop.dictionary`), and two upper
bounds that read the hidden gold: ``gold-dictionary`` (the same rewriter fit
on the training queries' (text, gold rewrite) pairs) and ``gold``.

The unseen-intent segment (:meth:`Shop.unseen`): queries whose intent occurs in
no training query, no logged query and no mined pair; it overlaps the
difficulty segments, so tables show it as a row group of its own (``unseen``).
"""

from __future__ import annotations

import numpy as np

from qrw.config import UserError, invariant
from qrw.shop.baselines import DictionaryRewriter, gold_rewrites
from qrw.shop.metrics import rewrite_metrics, summarize
from qrw.shop.observation import observe_world
from qrw.shop.observed import TYPO_MIN_LETTERS, ObservedShop  # noqa: F401  (TYPO_MIN_LETTERS: re-exported)
from qrw.shop.ood import checked_ood_queries
from qrw.shop.search import SearchEngine
from qrw.shop.users import UserSimulator
from qrw.shop.world import World

BASELINES = ("none", "dictionary", "gold-dictionary", "gold")  # the rewriters --ab / --paired accept by name
UPPER_BOUNDS = ("gold-dictionary", "gold")  # baselines that read the hidden gold rewrites: no shop has them
BASELINE_LABELS = {"none": "no rewrite", "dictionary": "dictionary",
                   "gold-dictionary": "gold-dictionary (upper bound)", "gold": "gold"}  # their rows in the tables
UNSEEN = "unseen"  # the row group of the unseen-intent queries (Shop.unseen)
LOGGED_OOD_STREAM = 17  # the seeded val/test split of the logged out-of-domain searches (Shop.logged_ood_queries)


class Shop:
    """The world's search engine, shoppers, observed side and baselines, built once per evaluation.

    ``observed``: the shop's :class:`~qrw.shop.observed.ObservedShop` (default: built from ``world`` on first
    use, sharing this shop's engine; pass the one a training run built to evaluate with the same logs).
    """

    def __init__(self, world: World, k: int = 10, observed: ObservedShop | None = None):
        self.world = world
        self.k = k
        self.engine = observed.engine if observed is not None else SearchEngine(world.titles, world.popularity)
        self.users = UserSimulator(world)
        self._observed = observed
        self._gold_dictionary: DictionaryRewriter | None = None
        self._seen_intents: frozenset | None = None
        self._logged_ood: list[str] | None = None

    @property
    def observed(self) -> ObservedShop:
        """What the shop observes of its world (:meth:`ObservedShop.from_world`, built on first use)."""
        if self._observed is None:
            self._observed = observe_world(self.world, engine=self.engine)
        return self._observed

    @property
    def dictionary(self) -> DictionaryRewriter:
        """The dictionary a shop has: fit on its logs' (query, clicked title) pairs (``observed.dictionary``)."""
        return self.observed.dictionary

    @property
    def gold_dictionary(self) -> DictionaryRewriter:
        """The upper bound: the same rewriter fit on the training queries' (text, gold rewrite) pairs."""
        if self._gold_dictionary is None:
            self._gold_dictionary = DictionaryRewriter().fit(self.world.queries["train"])
        return self._gold_dictionary

    def baseline_rewrites(self, name: str, queries) -> list[str | None]:
        """The rewrites of baseline ``name`` (one of :data:`BASELINES`) for ``queries`` (list[Query])."""
        if name == "none":
            return [None] * len(queries)
        if name == "dictionary":
            return self.dictionary.rewrite([q.text for q in queries])
        if name == "gold-dictionary":
            return self.gold_dictionary.rewrite([q.text for q in queries])
        if name == "gold":
            return gold_rewrites(queries)
        raise UserError(f"unknown baseline {name!r}; expected one of {', '.join(BASELINES)}")

    # -- the serving gate's query checks: the observed side only (serving is production) ----------

    def reads_product(self, texts: list[str]) -> list[bool]:
        """Per query: the log-fit :attr:`dictionary` reads a catalog category or brand in it (the query check
        ``--gate-query dictionary``; :meth:`ObservedShop.reads_product`).

        A query in which the dictionary reads neither a product type nor a brand asks for nothing the shop knows
        it sells ("dinosaur", "grey leather sofa": only the colour and material are read). It misses what the
        logs' clicks never taught it (typos, rare variants, phrases it cannot split), and it reads a product
        in an out-of-domain search whose shoppers clicked something anyway.
        """
        return self.observed.reads_product(texts)

    def knows_word(self, word: str) -> bool:
        """``word`` is a word of the shop's own text (:meth:`ObservedShop.corpus_texts`: titles, attribute texts,
        logged sessions, training queries, mined pairs), or one typo from one (words of :data:`TYPO_MIN_LETTERS`
        letters or more); a word with a digit always is (:meth:`ObservedShop.knows_word`)."""
        return self.observed.knows_word(word)

    def knows_query(self, texts: list[str]) -> list[bool]:
        """Per query: the shop knows every word of it (:meth:`knows_word`): the query check
        ``--gate-query vocabulary``.

        It errs both ways: an out-of-domain query made only of shop words passes ("space heater", and every
        out-of-domain search the logs hold: its words are in the logged sessions), and an in-domain query with
        a typo in a short word or two typos in one fails.
        """
        return self.observed.knows_query(texts)

    # -- evaluation's query sets ---------------------------------------------------------------

    def ood_queries(self, split: str, n: int) -> list[str]:
        """``n`` out-of-domain queries of ``split`` (:mod:`qrw.shop.ood`, seeded by the world's seed): nouns the
        logs never hold (their searches use the ``train`` nouns), so a product the shop has never been asked for.

        Checked: the judge reads no intent in any of them (every catalog query parses to its own).
        """
        return checked_ood_queries(self.world, n, split)

    def logged_ood_queries(self, split: str, n: int | None = None) -> list[str]:
        """Out-of-domain searches the shop's logs hold (:attr:`observed`'s sessions), distinct, in halves.

        Evaluation knows which logged searches are out of domain: those whose text is none of the world's
        in-domain traffic (``World.logs``; the judge reads no intent in any, checked). Their distinct texts,
        in an order seeded by the world's seed, split in two: ``val`` the first half (the gate's threshold is
        chosen there), ``test`` the rest; the first ``n`` of the half (all when None). Both halves draw on the
        same nouns (:mod:`qrw.shop.ood`'s ``train`` ones): tomorrow's out-of-domain traffic repeats yesterday's.
        """
        invariant(split in ("val", "test"), f"logged out-of-domain searches come in val and test (got {split!r})")
        if self._logged_ood is None:
            in_domain = {text for text, _, _ in self.world.logs}
            texts = list(dict.fromkeys(s.query for s in self.observed.sessions if s.query not in in_domain))
            for text in texts:
                invariant(self.world.judge.parse(text) is None, f"logged search {text!r} is in the catalog's domain")
            order = np.random.default_rng([self.world.config.seed, LOGGED_OOD_STREAM]).permutation(len(texts))
            self._logged_ood = [texts[i] for i in order]
        half = (len(self._logged_ood) + 1) // 2
        chosen = self._logged_ood[:half] if split == "val" else self._logged_ood[half:]
        return chosen if n is None else chosen[:n]

    def logged_counts(self, texts: list[str]) -> np.ndarray:
        """(N,) how many logged sessions searched each of ``texts`` (the traffic weight of a search)."""
        counts: dict[str, int] = {}
        for s in self.observed.sessions:
            counts[s.query] = counts.get(s.query, 0) + 1
        return np.array([counts.get(t, 0) for t in texts], dtype=np.int64)

    def unseen(self, queries) -> np.ndarray:
        """(Q,) bool: the query's intent occurs in no training query, no logged query (``World.log_queries``) and
        no mined pair (``MinedPair.intent``): the :data:`UNSEEN` segment.

        Intents compare exactly (category, brand and every attribute value): a test intent that adds one
        attribute to a training intent is unseen.
        """
        if self._seen_intents is None:
            world = self.world
            self._seen_intents = frozenset([q.intent for q in world.queries["train"]]
                                           + [q.intent for q in world.log_queries]
                                           + [p.intent for p in world.mined_pairs])
        return np.array([q.intent not in self._seen_intents for q in queries], dtype=bool)

    # -- scoring ---------------------------------------------------------------------------------

    def score(self, queries, rewrites: list[str | None],
              groups: dict[str, np.ndarray] | None = None) -> dict[str, dict[str, float]]:
        """Per-segment and overall means of the page metrics, plus rewrite length and diversity.

        ``groups``: extra row groups, name -> (Q,) bool mask (e.g. ``{UNSEEN: self.unseen(queries)}``), after
        ``all``; they may overlap the segments. Length (words) and diversity (share of distinct rewrites) are
        over the rewrites given, not the None ones (no rewrite: a gated query); NaN for a group without any.
        """
        per_example = rewrite_metrics(self.world, self.engine, self.users, queries, rewrites, k=self.k)
        segments = np.array([q.segment for q in queries])
        summary = summarize(per_example, segments.tolist())
        masks = {seg: (segments == seg) if seg != "all" else np.ones(len(queries), dtype=bool) for seg in summary}
        for name, mask in (groups or {}).items():
            mask = np.asarray(mask, dtype=bool)
            invariant(mask.shape == (len(queries),), f"group {name!r}: {mask.shape} mask for {len(queries)} queries")
            summary[name] = summarize({m: v[mask] for m, v in per_example.items()}, [name] * int(mask.sum()))["all"]
            masks[name] = mask
        if any(r is not None for r in rewrites):
            given = np.array([r is not None for r in rewrites])
            lengths = np.array([len(r.split()) if r else 0 for r in rewrites], dtype=float)
            for name, row in summary.items():
                idx = np.flatnonzero(given & masks[name])
                chosen = [rewrites[i] for i in idx]
                row["length"] = float(lengths[idx].mean()) if len(idx) else float("nan")
                row["diversity"] = len(set(chosen)) / len(chosen) if chosen else float("nan")
        return summary
