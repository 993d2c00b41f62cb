"""The synthetic e-commerce world: catalog, queries, search logs, built from one seed.

Everything the paper learns from (JD.com search logs, product titles, human
relevance labels) is replaced here by a world generated from one seed, so that
every number qrw reports can be reproduced and every component unit-tested.
"Relevance Matters" (Dai et al., arXiv 2603.02555) rewrites queries to bridge the
*lexical gap* between how shoppers type and how products are described; this
module builds that gap on purpose, from the tables of :mod:`qrw.shop.tables`,
the vocabulary of :mod:`qrw.shop.lexicon` and the judge of :mod:`qrw.shop.judge`:

- **Catalog**: ``n_products`` products over the categories of the hand-written
  table ``CATEGORIES`` (38 categories: phones, laptops, sneakers, fridges, ...).
  A product has a category, a brand, one value for each attribute of its
  category (colour, storage, screen, gender, size, material, ...), a price and a
  popularity that is Zipf-like within its category. Titles use *catalog
  vocabulary* only (canonical terms, lowercase, whitespace tokens), e.g.
  ``"samsung ultra television 55 inch 4k"``.
- **Intent**: category + optional brand + a subset of attribute values. Query
  intents are drawn from real products, so every query has >= 1 exact product.
- **Query**: the intent rendered in user vocabulary with noise (variant
  substitution, typos, fillers such as "cheap", connectors such as "in"/"with"
  that may be dropped, reordering). The world never drops a content word: the
  intent must stay recoverable from the text (the judge parses it back, and a
  test checks ``judge.parse(query.text) == query.intent`` for every query).
  Splits are by *(intent, variant combination)*: train/val/test share none, and
  any combination that uses a log-only variant is kept out of train. Each query
  carries a difficulty segment by its number of rare variants, log-only
  variants and typos: ``head`` (0), ``torso`` (1), ``tail`` (>= 2).
- **Gold rewrite**: the intent in catalog vocabulary, ``brand category values``.
- **Relevance examples**: perturbed rewrites with labels 2 / 1 / 0, every label
  the judge's grade (built by :mod:`qrw.shop.relevance`).
- **Search logs**: simulated sessions ``(user query, clicked product, purchased)``
  whose queries favour rare and log-only variants; rendered as text they show
  user vocabulary next to catalog titles, the paper's "user data" for stage 0.
- **Mined rewrite pairs** (``mined_pairs``, built on first use by
  :mod:`qrw.shop.mining` from their own seeded stream): shoppers start from the
  training queries, reformulate and buy; pairs are mined from their sessions
  as production mines them, with the drift their changes of mind carry.

Departures from the paper: a hand-written world instead of JD's logs; the
"human" relevance labels come from the rule-based judge; the world is English.

Run ``python -m qrw.world --stats`` for counts and the lexical-gap table.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from qrw.config import UserError, check
from qrw.shop import mining, relevance
from qrw.shop.judge import EXACT, SUBSTITUTE, Judge, intent_slots, render_canonical
from qrw.shop.lexicon import Draws, Intent, Lexicon, Product, Query, make_typo
from qrw.shop.config import WorldConfig  # noqa: F401  (re-exported: the world's config lives apart from its truth)
from qrw.shop.tables import DESCRIPTORS, FILLERS, SEGMENTS, SPLITS, TIERS, UNIT_VARIANTS


# ----------------------------------------------------------------------------------------------
# The world
# ----------------------------------------------------------------------------------------------

_RNG_CATALOG, _RNG_QUERIES, _RNG_LOGS, _RNG_RELEVANCE, _RNG_MINING = 1, 2, 3, 4, 5
_ATTR_COUNT_WEIGHTS = (0.25, 0.4, 0.25, 0.1)  # P(intent has 0, 1, 2, 3 attributes)
_P_BRAND = 0.5             # P(intent names a brand)
_P_SHUFFLE = 0.4           # P(query phrases in random order) else brand-category-attributes
_P_CONNECTOR = 0.25        # P("in"/"with" before an attribute phrase)
_INTENT_POPULARITY = 0.5   # intents come from products drawn with P ~ popularity ** this
_LOG_TIER_WEIGHTS = (0.45, 0.25, 0.30)  # common / rare / log-only variants in search-log queries
_LOG_P_EXACT_CLICK = 0.85  # share of log clicks on an EXACT product (else a substitute)


class World:
    """The seeded synthetic world (see the module docstring).

    Attributes: ``config``, ``lexicon``, ``products`` (list[Product]), ``titles``,
    ``popularity`` (n,) float64, ``prices`` (n,) float64, ``judge``,
    ``queries[split]`` (list[Query]) for split in ``SPLITS``, ``logs`` (list of
    ``(query text, product id, purchased)``), ``log_queries`` (the distinct logged
    queries as ``Query`` objects with split ``"log"``; GRPO's training queries),
    ``mined_pairs`` (list of :class:`~qrw.shop.mining.MinedPair`, built on first use).
    """

    SEGMENTS = SEGMENTS
    SPLITS = SPLITS

    def __init__(self, config: WorldConfig | None = None) -> None:
        self.config = config if config is not None else WorldConfig()
        self.lexicon = Lexicon()
        self.products = self._build_catalog(np.random.default_rng([self.config.seed, _RNG_CATALOG]))
        self.titles = [p.title for p in self.products]
        self.popularity = np.array([p.popularity for p in self.products], dtype=np.float64)
        self.prices = np.array([p.price for p in self.products], dtype=np.float64)
        self.judge = Judge(self.lexicon, self.products)
        self._category_products = {c: np.array([p.id for p in self.products if p.category == c], dtype=np.int64)
                                   for c in self.lexicon.category_names}
        self._query_categories = [c for c in self.lexicon.category_names if len(self._category_products[c])]
        self._sampling_tables()
        self._pool_cache: dict[Intent, tuple] = {}
        self.queries = self._build_queries(Draws(np.random.default_rng([self.config.seed, _RNG_QUERIES])))
        self.logs = self._build_logs(Draws(np.random.default_rng([self.config.seed, _RNG_LOGS])))
        self._relevance_cache: dict[str, list[tuple[str, str, int]]] = {}
        self._mined_pairs: list[mining.MinedPair] | None = None

    # -- catalog ---------------------------------------------------------------------------------

    def _build_catalog(self, rng: np.random.Generator) -> list[Product]:
        """Products: brand ~ Zipf over the category's brands, uniform attribute values, price, popularity."""
        lexicon, cfg = self.lexicon, self.config
        n_cat = len(lexicon.category_names)
        demand = rng.lognormal(0.0, 0.3, size=n_cat)
        counts = np.floor(cfg.n_products * demand / demand.sum()).astype(int)
        for i in rng.permutation(n_cat)[: cfg.n_products - counts.sum()]:
            counts[i] += 1
        brand_premium = {b: float(rng.lognormal(0.0, 0.25)) for b in lexicon.brands}
        brand_appeal = {b: float(rng.lognormal(0.0, 0.5)) for b in lexicon.brands}
        products: list[Product] = []
        for c, spec in enumerate(lexicon.categories):
            n = int(counts[c])
            if n == 0:
                continue
            brands = lexicon.category_brands[spec.name]
            brand_weights = 1.0 / (1.0 + rng.permutation(len(brands))) ** 0.7
            brand_idx = rng.choice(len(brands), size=n, p=brand_weights / brand_weights.sum())
            attrs = lexicon.category_attrs[spec.name]
            value_idx = [rng.integers(len(values), size=n) for _, values in attrs]
            has_descriptor = rng.random(n) < 0.5
            descriptor_idx = rng.integers(len(DESCRIPTORS), size=n)
            noise = rng.lognormal(0.0, 0.15, size=n)
            # Popularity: Zipf over a within-category rank; appealing brands and low prices rank higher.
            appeal = np.array([math.log(brand_appeal[brands[b]]) for b in brand_idx]) + rng.gumbel(size=n)
            prices = np.empty(n)
            rows = []
            for i in range(n):
                brand = brands[brand_idx[i]]
                chosen = [(name, values[value_idx[j][i]]) for j, (name, values) in enumerate(attrs)]
                # Ordinal attributes (storage, screen, capacity, ...) cost 15% more per step.
                steps = sum(int(value_idx[j][i]) for j, (name, _) in enumerate(attrs) if name in UNIT_VARIANTS)
                prices[i] = spec.price * brand_premium[brand] * (1.15 ** steps) * noise[i]
                words = [brand] + ([DESCRIPTORS[descriptor_idx[i]]] if has_descriptor[i] else [])
                title = " ".join(words + [spec.name] + [v for _, v in chosen])
                rows.append((brand, tuple(sorted(chosen)), title))
            appeal -= 0.5 * np.log(prices / spec.price)
            rank = np.empty(n, dtype=np.int64)
            rank[np.argsort(-appeal, kind="stable")] = np.arange(n)
            popularity = 1000.0 * demand[c] * (1.0 + rank) ** (-cfg.popularity_zipf)
            for i, (brand, chosen, title) in enumerate(rows):
                products.append(Product(len(products), spec.name, brand, chosen, round(float(prices[i]), 2),
                                        round(float(popularity[i]), 4), title))
        return products

    # -- queries ---------------------------------------------------------------------------------

    def _sampling_tables(self) -> None:
        """Precomputed running sums for intent sampling: product popularity and attribute count, per category."""
        self._intent_cumulative = {
            c: list(itertools.accumulate((self.popularity[ids] ** _INTENT_POPULARITY).tolist()))
            for c, ids in self._category_products.items() if len(ids)}
        self._attr_count_cumulative = {
            c: list(itertools.accumulate(_ATTR_COUNT_WEIGHTS[: len(attrs) + 1]))
            for c, attrs in self.lexicon.category_attrs.items()}

    def _sample_intent(self, draws: Draws) -> Intent:
        """A shopper's intent: a product (P ~ popularity^0.5) -> its category, maybe its brand, some of its values."""
        category = draws.pick(self._query_categories)
        ids = self._category_products[category]
        product = self.products[int(ids[draws.weighted(self._intent_cumulative[category])])]
        brand = product.brand if draws.random() < _P_BRAND else None
        names = [a for a, _ in self.lexicon.category_attrs[category]]
        n_attrs = draws.weighted(self._attr_count_cumulative[category])
        values = dict(product.attrs)
        attrs = tuple(sorted((a, values[a]) for a in (names[i] for i in draws.permutation(len(names))[:n_attrs])))
        return Intent(category, brand, attrs)

    def _choose_form(self, term: tuple[str, str], draws: Draws, tier_weights: tuple[float, float, float],
                     p_canonical: float | None = None) -> tuple[str, str]:
        """(form, tier) for one term: canonical with p_canonical (the config's unless given), else a variant."""
        forms = self.lexicon.forms[term]
        if draws.random() < (self.config.p_canonical if p_canonical is None else p_canonical):
            return term[1], "canonical"
        tiers = [t for t, w in zip(TIERS[1:], tier_weights) if forms[t] and w > 0]
        if not tiers:
            return term[1], "canonical"
        tier = tiers[draws.weighted(list(itertools.accumulate(tier_weights[TIERS.index(t) - 1] for t in tiers)))]
        return draws.pick(forms[tier]), tier

    def _render(self, intent: Intent, draws: Draws, tier_weights: tuple[float, float, float],
                p_canonical: float | None = None) -> tuple[str, tuple[str, ...], int, bool] | None:
        """Render an intent in user vocabulary with noise.

        Per term: a surface form (``_choose_form``); attribute phrases may get a
        connector ("in black", "with 128 gb"); phrases in title order or shuffled;
        maybe a filler; each content word of >= 5 letters may get one typo (kept
        only if the judge still reads the same intent). ``p_canonical`` overrides
        the config's (reformulating shoppers: :mod:`qrw.shop.mining`). Returns
        ``(text, forms, difficulty, uses_log_only)``, or None when too long or ambiguous.
        """
        cfg = self.config
        forms, phrases, difficulty, log_only = [], [], 0, False
        for slot, value in intent_slots(self.lexicon, intent):
            form, tier = self._choose_form((slot, value), draws, tier_weights, p_canonical)
            forms.append(form)
            difficulty += tier in ("rare", "log_only")
            log_only |= tier == "log_only"
            words = form.split()
            if cfg.p_typo > 0:
                for i, word in enumerate(words):
                    if len(word) >= 5 and word.isalpha() and draws.random() < cfg.p_typo:
                        typo = make_typo(word, draws)
                        if typo not in self.judge.known_words and self.judge.correct(typo) == word:
                            words[i] = typo
                            difficulty += 1
            if slot not in ("brand", "category") and draws.random() < _P_CONNECTOR:
                words.insert(0, "in" if slot == "colour" else "with")
            phrases.append(words)
        if draws.random() < _P_SHUFFLE:
            phrases = [phrases[i] for i in draws.permutation(len(phrases))]
        if draws.random() < cfg.p_filler:
            filler = [draws.pick(FILLERS)]
            phrases = [filler] + phrases if draws.random() < 0.7 else phrases + [filler]
        words = [w for phrase in phrases for w in phrase]
        text = " ".join(words)
        if len(words) > cfg.max_query_words or self.judge.parse(text) != intent:
            return None
        return text, tuple(forms), difficulty, log_only

    def _build_queries(self, draws: Draws) -> dict[str, list[Query]]:
        """Queries split by (intent, variant combination).

        One i.i.d. stream of rendered intents; each combination is used once.
        The first ``n_test`` new combinations become test queries, the next
        ``n_val`` validation queries (so val/test follow the true query
        distribution), the rest training queries, skipping combinations that
        use a log-only variant (those never reach training).
        """
        cfg = self.config
        tier_weights = (1.0 - cfg.p_rare - cfg.p_log_only, cfg.p_rare, cfg.p_log_only)
        plan = (("test", cfg.n_test_queries), ("val", cfg.n_val_queries), ("train", cfg.n_train_queries))
        queries: dict[str, list[Query]] = {s: [] for s in SPLITS}
        used: set[tuple[Intent, tuple[str, ...]]] = set()
        total = sum(n for _, n in plan)
        attempts, found_before = 0, 0
        for split, wanted in plan:
            while len(queries[split]) < wanted:
                attempts += 1
                if attempts % 1000 == 0:  # a small world runs out: fail when < 1% of attempts find a new one
                    if len(used) - found_before < 10:
                        raise UserError(
                            f"could only generate {sum(map(len, queries.values()))} of {total} distinct queries: "
                            f"this world is too small; lower the query counts or raise --n-products")
                    found_before = len(used)
                intent = self._sample_intent(draws)
                rendered = self._render(intent, draws, tier_weights)
                if rendered is None:
                    continue
                text, forms, difficulty, log_only = rendered
                key = (intent, forms)
                if key in used or (split == "train" and log_only):
                    continue
                used.add(key)
                segment = SEGMENTS[min(difficulty, len(SEGMENTS) - 1)]
                queries[split].append(Query(text, intent, render_canonical(self.lexicon, intent), segment, split,
                                            forms, difficulty))
        self._split_keys = {s: {(q.intent, q.forms) for q in queries[s]} for s in SPLITS}
        return queries

    def uses_log_only(self, query: Query) -> bool:
        """Whether ``query`` uses a log-only variant: a user word of the search logs that no training query has."""
        return any(self.lexicon.form_tier[form] == "log_only" for form in query.forms)

    # -- search logs -----------------------------------------------------------------------------

    def _build_logs(self, draws: Draws) -> list[tuple[str, int, bool]]:
        """Search-log sessions ``(user query, clicked product id, purchased)``.

        Queries are rendered like user queries but favour rare and log-only
        variants (``_LOG_TIER_WEIGHTS``); combinations used by val/test queries
        are excluded. The clicked product is EXACT for the intent with
        probability 0.85 (else a same-category substitute), drawn in proportion
        to popularity: the logs of a production engine that already serves
        these users well. Purchased with probability 0.35 (exact) / 0.1.

        Also collects ``self.log_queries``: the distinct logged query texts as
        :class:`Query` objects (split ``"log"``). They carry no gold rewrite that
        any stage trains on: GRPO samples its training queries from them, since
        its rewards need no labelled rewrite (only the judge, the engine and the
        shoppers), as in production where RL runs on logged traffic.
        """
        held_out = self._split_keys["val"] | self._split_keys["test"]
        logs: list[tuple[str, int, bool]] = []
        self.log_queries: list[Query] = []
        self._log_query_texts: set[str] = set()
        attempts = 0
        while len(logs) < self.config.n_log_sessions and attempts < 20 * self.config.n_log_sessions:
            attempts += 1
            intent = self._sample_intent(draws)
            rendered = self._render(intent, draws, _LOG_TIER_WEIGHTS)
            if rendered is None or (intent, rendered[1]) in held_out:
                continue
            exact_ids, substitute_ids = self._exact_and_substitutes(intent)
            exact = draws.random() < _LOG_P_EXACT_CLICK or len(substitute_ids[0]) == 0
            ids, cumulative = exact_ids if exact else substitute_ids
            pick = int(ids[draws.weighted(cumulative)])
            purchased = draws.random() < (0.35 if exact else 0.1)
            logs.append((rendered[0], pick, purchased))
            if rendered[0] not in self._log_query_texts:
                self._log_query_texts.add(rendered[0])
                text, forms, difficulty, _ = rendered
                self.log_queries.append(Query(text, intent, render_canonical(self.lexicon, intent),
                                              SEGMENTS[min(difficulty, len(SEGMENTS) - 1)], "log", forms, difficulty))
        return logs

    def _exact_and_substitutes(self, intent: Intent) -> tuple[tuple[np.ndarray, list[float]], ...]:
        """(ids, running popularity sums) of the EXACT and the SUBSTITUTE products of an intent (cached)."""
        cached = self._pool_cache.get(intent)
        if cached is None:
            grades = self.judge.grade_products(intent)
            cached = tuple((ids, list(itertools.accumulate(self.popularity[ids].tolist())))
                           for ids in (np.flatnonzero(grades == EXACT), np.flatnonzero(grades == SUBSTITUTE)))
            self._pool_cache[intent] = cached
        return cached

    # -- text views ------------------------------------------------------------------------------

    def attribute_text(self, product: Product) -> str:
        """``"<title> | category: ... | brand: ... | colour: black | price: 699"``: :attr:`Product.attribute_text`."""
        return product.attribute_text

    def log_texts(self) -> list[str]:
        """Search-log sessions as text: ``"search: blk kicks mens | clicked: nike sneakers men black size 9"``."""
        return [f"search: {q} | {'purchased' if bought else 'clicked'}: {self.titles[pid]}"
                for q, pid, bought in self.logs]

    def pretrain_texts(self) -> list[str]:
        """Stage-0 corpus: titles, attribute texts, rendered search-log sessions (in that order)."""
        return self.titles + [self.attribute_text(p) for p in self.products] + self.log_texts()

    def corpus_texts(self) -> list[str]:
        """Everything a tokenizer should see: the pretraining corpus plus training queries and gold rewrites.

        Val/test queries are left out, so words only they contain stay unseen.
        """
        train = self.queries["train"]
        return self.pretrain_texts() + [q.text for q in train] + [q.gold for q in train]

    # -- relevance tagging data (built by qrw.shop.relevance) -------------------------------------

    PERTURBATION_KINDS = relevance.PERTURBATION_KINDS

    def perturbations(self, intent: Intent, draws: Draws) -> dict[int, list[str]]:
        """Candidate rewrites of ``intent`` by intended label (:func:`qrw.shop.relevance.perturbations`)."""
        return relevance.perturbations(self.lexicon, intent, draws)

    def perturbation_kind(self, intent: Intent, text: str) -> str:
        """Which kind of rewrite ``text`` is for ``intent`` (:func:`qrw.shop.relevance.perturbation_kind`)."""
        return relevance.perturbation_kind(self.judge, intent, text)

    def relevance_examples(self, split: str, per_label: int = 1) -> list[tuple[str, str, int]]:
        """Relevance-tagging examples ``(query text, rewrite, label)`` for one split (cached).

        ``per_label`` distinct rewrites per label and query, drawn with a fixed
        seed per (split, per_label) by :func:`qrw.shop.relevance.relevance_examples`;
        every label equals the judge's grade. ``per_label=1`` is the evaluation
        set; training uses more pairs per query for diversity.
        """
        check(split in SPLITS, f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        check(per_label >= 1, f"per_label must be >= 1 (got {per_label})")
        key = f"{split}/{per_label}"
        if key not in self._relevance_cache:
            seed = [self.config.seed, _RNG_RELEVANCE, SPLITS.index(split)] + ([per_label] if per_label > 1 else [])
            draws = Draws(np.random.default_rng(seed))
            self._relevance_cache[key] = relevance.relevance_examples(self.judge, self.queries[split], draws,
                                                                      per_label)
        return self._relevance_cache[key]

    # -- mined rewrite pairs (built by qrw.shop.mining) -------------------------------------------

    def render_training_query(self, intent: Intent, draws: Draws,
                              p_canonical: float | None = None) -> tuple[str, tuple[str, ...]] | None:
        """``(text, forms)``: ``intent`` typed as training queries are (no log-only variant), or None.

        The world's query rendering (``_render``) with its noise; ``p_canonical``
        overrides the share of catalog words. None when the text is too long or
        ambiguous, or its combination ``(intent, forms)`` is a val/test query's.
        """
        cfg = self.config
        rendered = self._render(intent, draws, (1.0 - cfg.p_rare - cfg.p_log_only, cfg.p_rare, 0.0), p_canonical)
        if rendered is None or any((intent, rendered[1]) in self._split_keys[s] for s in ("val", "test")):
            return None
        return rendered[0], rendered[1]

    @property
    def mined_pairs(self) -> list[mining.MinedPair]:
        """Rewrite pairs mined from simulated reformulation sessions (:func:`qrw.shop.mining.mine_rewrite_pairs`).

        Built on first use from their own seeded stream, so building them changes
        nothing else the world produces; cached.
        """
        if self._mined_pairs is None:
            rng = np.random.default_rng([self.config.seed, _RNG_MINING])
            self._mined_pairs = mining.mine_rewrite_pairs(self, rng)
        return self._mined_pairs
