"""Stage 1's relevance labels from what production produces, bought through the annotation door.

A search team that wants a relevance tagger (query, rewrite) -> {0, 1, 2} has
no gold rewrites and no intents. It has the observed side of its shop
(:class:`~qrw.shop.observed.ObservedShop`): the catalog and its tables
(categories, brands per category, attribute values per category), the engine,
the logged sessions (query typed, page shown, clicks, purchase), the training
query texts, rewrite pairs mined from reformulations, and a synonym dictionary
fit on the logs. It sends (query, rewrite) pairs that its systems produce to
annotators (:class:`~qrw.shop.annotation.AnnotationService`, the one door to the
hidden truth) and pays per label. This module builds those pairs and buys them.

**Candidates** (:func:`candidates`): (query text, rewrite text), from observed
text only (never an intent, a gold rewrite, the judge or the user vocabulary):

- ``mined``: every mined pair (a shopper's own reformulation; mixed labels: a
  reformulation may broaden, narrow or change the product);
- ``dictionary``: the log-fit dictionary's rewrite of every training and logged
  search (the rewriter a shop already runs; empty readings are skipped);
- ``copy``: every training and logged search as its own rewrite (the identity
  rewrite a policy can fall back to);
- ``clicked``: every distinct (query, clicked title) of the logs;
- ``skipped``: per logged session, one shown-but-not-clicked title: one ranked
  above the last click (examined and passed over), or the top title of a page
  nobody clicked (titles the engine thought relevant that shoppers did not);
- ``null``: each logged search nobody ever clicked (about one in eight is for a
  product the shop does not sell; the rest are in-domain searches left unclicked) with its dictionary reading, a random title and a random
  mined rewrite (the catalog-worded answers a rewriter gives such a query);
- augmentations of the mined rewrites, the dictionary rewrites and the clicked
  titles, on their catalog words only (:class:`CatalogWords`, read from the
  catalog's tables), each paired with the base pair's query: ``drop phrase``
  (one catalog phrase removed), ``value swapped`` (an attribute value replaced
  by another value of the same attribute), ``brand swapped`` (another brand of
  the category), ``category swapped`` (another category, the rest kept),
  ``category only`` (the bare category). These are the near misses the
  production sources rarely hold: contradictions (label 0) and broadening
  (label 1) that a tagger must read values to get right.

Each pair is kept once, under the first source of :data:`SOURCES` that
produced it. No val/test query text is ever a query: the sources are the
training texts and the logs, which hold none (the service refuses such a
query with a ``ValueError``; a test checks the candidates against the world).

**Buying** (:func:`build`): the candidates are put in one seeded order,
stratified by source: each source is shuffled, then the sources are merged
by a weighted round robin with :data:`SHARES` (the next pair comes from the
source with the fewest pairs drawn per unit of share; an exhausted source
drops out and the others fill its place), so every prefix of the order holds
the sources in those shares. The pairs are sent in chunks of
:data:`CHUNK_PAIRS` in that order until ``budget`` labels are spent: a new pair
costs ``annotators`` labels (1 by default: 60,000 labels buy 60,000 pairs),
a pair the service already sold costs nothing. Budgets nest: the pairs bought
with a smaller budget are a prefix of those bought with a larger one.
Deterministic in (observed shop, budget, seed).

What a run records: :meth:`Labelling.summary` (per source: candidates,
pairs bought, label shares; the labels bought in all).

**What it costs** (the default world, seed 0, one annotator): 221,215
candidates; the default budget (``DEFAULT_LABEL_BUDGET``, 60,000 labels) buys
60,000 pairs, 27% of them, labelled 46% / 37% / 17% (0 / 1 / 2), against
the 173,202 gold-built pairs stage 1 used before the wall. The mined pairs
(6,525) are all bought from about 36,000 labels on; past that the other
sources fill their share.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass

import numpy as np

from qrw.config import check
from qrw.shop.sessions import click_pairs

LABELLING_STREAM = 17  # seed stream of this module (the world's own streams are 1-5, the logs' 11, stage 1's 15-16)
CHUNK_PAIRS = 5000  # pairs per call to the annotation service

# Sources in priority order (a pair produced by two sources is kept under the first) and the share of the bought
# pairs each gets while it has candidates left. Shares sum to 1.
SHARES: dict[str, float] = {
    "mined": 0.18,             # users' own reformulations: the pairs closest to what a rewriter produces, all labels
    "dictionary": 0.12,        # the deployed rewriter's outputs: what the tagger will most often be asked about
    "copy": 0.04,              # the identity rewrite: cheap to learn, a policy's fallback, so a small share
    "clicked": 0.12,           # clicked titles: the logs' positives, full catalog words (mostly label 1 or 2)
    "skipped": 0.06,           # shown, not clicked: the engine's near misses, a mix the clicks alone never show
    "null": 0.10,              # searches nobody clicked (the not-sold ones among them), at the logs' own out-of-domain share
    "drop phrase": 0.08,       # one slot dropped: broadening (label 1) next to its unbroken base
    "value swapped": 0.10,     # an attribute contradicted: the label-0 case a tagger misses unless it reads values
    "brand swapped": 0.08,     # a brand contradicted: the other label-0 slot
    "category swapped": 0.06,  # another product: an easy label 0, kept so the tagger still checks the category
    "category only": 0.06,     # the bare category: the broadening a policy drifts to (label 1)
}
SOURCES = tuple(SHARES)
AUGMENTATIONS = ("drop phrase", "value swapped", "brand swapped", "category swapped", "category only")


class CatalogWords:
    """The catalog phrases in a text, and the replacements an augmentation may use: the catalog's tables only.

    A *catalog phrase* is a category name, a brand or an attribute value of the
    catalog (``observed.category_names``, ``brands``, ``category_attrs``); a
    phrase that is two of these is read as a category before a brand before a
    value. :meth:`phrases` matches them greedily, longest first, left to right.
    """

    def __init__(self, category_names, category_brands: dict, category_attrs: dict) -> None:
        self.categories = tuple(category_names)
        self.category_brands = {c: tuple(b) for c, b in category_brands.items()}
        self.category_attrs = {c: tuple((a, tuple(vs)) for a, vs in attrs) for c, attrs in category_attrs.items()}
        self.kind: dict[str, str] = {}
        for attrs in self.category_attrs.values():
            for _, values in attrs:
                self.kind.update((v, "value") for v in values)
        for brands in self.category_brands.values():
            self.kind.update((b, "brand") for b in brands)
        self.kind.update((c, "category") for c in self.categories)
        self.max_words = max(len(p.split()) for p in self.kind)

    @classmethod
    def of(cls, observed) -> CatalogWords:
        """The catalog words of an :class:`~qrw.shop.observed.ObservedShop`."""
        return cls(observed.category_names, observed.category_brands, observed.category_attrs)

    def phrases(self, tokens: list[str]) -> list[tuple[int, int, str]]:
        """``(start, end, kind)`` of each catalog phrase in ``tokens`` (greedy longest match, left to right).

        >>> words = CatalogWords(["protective case"], {"protective case": ["apple"]},
        ...                      {"protective case": [("colour", ["black", "red"])]})
        >>> words.phrases("apple protective case in black".split())
        [(0, 1, 'brand'), (1, 3, 'category'), (4, 5, 'value')]
        """
        out, i = [], 0
        while i < len(tokens):
            for n in range(min(self.max_words, len(tokens) - i), 0, -1):
                kind = self.kind.get(" ".join(tokens[i:i + n]))
                if kind is not None:
                    out.append((i, i + n, kind))
                    i += n
                    break
            else:
                i += 1
        return out

    def _categories_with(self, phrase: str, kind: str) -> list[str]:
        """The categories that have ``phrase`` as a brand (``kind`` "brand") or an attribute value."""
        if kind == "brand":
            return [c for c in self.categories if phrase in self.category_brands[c]]
        return [c for c in self.categories if any(phrase in vs for _, vs in self.category_attrs[c])]

    def augment(self, text: str, rng: np.random.Generator) -> dict[str, str]:
        """The augmentations of ``text`` (:data:`AUGMENTATIONS` -> new text), those that apply and change it.

        The text's category is its first category phrase; a brand or value is
        replaced within that category's brands or attribute (or, in a text
        without a category, within a category that has it, drawn by ``rng``).
        """
        tokens = text.split()
        spans = self.phrases(tokens)
        if not spans:
            return {}

        def replaced(span: tuple[int, int, str], new: str) -> str:
            return " ".join(tokens[:span[0]] + new.split() + tokens[span[1]:])

        out: dict[str, str] = {}
        dropped = replaced(spans[int(rng.integers(len(spans)))], "")
        if dropped:
            out["drop phrase"] = dropped
        own = [" ".join(tokens[s:e]) for s, e, k in spans if k == "category"]
        category = own[0] if own else None
        values = []  # (span, the other values of its attribute)
        for s, e, kind in spans:
            phrase = " ".join(tokens[s:e])
            if kind == "category":
                continue
            holders = [category] if category is not None else self._categories_with(phrase, kind)
            holder = holders[int(rng.integers(len(holders)))] if holders else None
            if holder is None:
                continue
            if kind == "brand":
                others = [b for b in self.category_brands[holder] if b != phrase]
                if others and "brand swapped" not in out:
                    out["brand swapped"] = replaced((s, e, kind), others[int(rng.integers(len(others)))])
            else:
                for _, vs in self.category_attrs[holder]:
                    if phrase in vs and len(vs) > 1:
                        values.append(((s, e, kind), [v for v in vs if v != phrase]))
        if values:
            span, others = values[int(rng.integers(len(values)))]
            out["value swapped"] = replaced(span, others[int(rng.integers(len(others)))])
        if category is not None:
            span = next(sp for sp in spans if sp[2] == "category")
            others = [c for c in self.categories if c != category]
            out["category swapped"] = replaced(span, others[int(rng.integers(len(others)))])
            if text.strip() != category:
                out["category only"] = category
        return {k: v for k, v in out.items() if v and v != text}


def _skipped_titles(sessions, titles: list[str], rng: np.random.Generator) -> list[tuple[str, str]]:
    """Per session, one shown title nobody clicked: above the last click, or the top of a page with no click."""
    out = []
    for s in sessions:
        if not s.shown:
            continue
        if s.clicked:
            passed = [i for i in range(s.clicked[-1]) if i not in s.clicked]
            if not passed:
                continue
            pos = passed[int(rng.integers(len(passed)))]
        else:
            pos = 0
        out.append((s.query, titles[s.shown[pos]]))
    return out


def candidates(observed, seed: int) -> dict[str, list[tuple[str, str]]]:
    """The candidate ``(query, rewrite)`` pairs of each source of :data:`SOURCES` (see the module docstring).

    Every pair once, under its first source; no empty rewrite. Deterministic in
    (observed shop, seed).
    """
    rng = np.random.default_rng([seed, LABELLING_STREAM])
    searches = list(dict.fromkeys(observed.train_texts + observed.grpo_texts))
    readings = observed.dictionary.rewrite(searches)
    clicked = list(dict.fromkeys(click_pairs(observed.sessions, observed.titles)))
    raw: dict[str, list[tuple[str, str]]] = {s: [] for s in SOURCES}
    raw["mined"] = list(observed.mined_pairs)
    raw["dictionary"] = list(zip(searches, readings))
    raw["copy"] = [(t, t) for t in searches]
    raw["clicked"] = clicked
    raw["skipped"] = _skipped_titles(observed.sessions, observed.titles, rng)
    nulls = list(observed.null_texts)
    null_readings = observed.dictionary.rewrite(nulls)
    mined_rewrites = [r for _, r in observed.mined_pairs] or list(observed.titles)
    for text, reading in zip(nulls, null_readings):
        raw["null"] += [(text, reading), (text, observed.titles[int(rng.integers(len(observed.titles)))]),
                        (text, mined_rewrites[int(rng.integers(len(mined_rewrites)))])]
    words = CatalogWords.of(observed)
    for query, base in raw["mined"] + raw["dictionary"] + clicked:
        for kind, text in words.augment(base, rng).items():
            raw[kind].append((query, text))
    seen: set[tuple[str, str]] = set()
    out: dict[str, list[tuple[str, str]]] = {}
    for source in SOURCES:
        kept = []
        for query, rewrite in raw[source]:
            pair = (query, rewrite.strip())
            if pair[1] and pair not in seen:
                seen.add(pair)
                kept.append(pair)
        out[source] = kept
    return out


def buy_order(pools: dict[str, list[tuple[str, str]]], seed: int,
              shares: dict[str, float] | None = None) -> list[tuple[str, tuple[str, str]]]:
    """``(source, pair)`` for every candidate, in a seeded order stratified by source (module docstring).

    Each source's pairs are shuffled; then the next pair comes from the source
    with the smallest ``(drawn + 1) / share`` (ties: :data:`SOURCES` order), so
    any prefix holds the sources in ``shares`` (default :data:`SHARES`) until
    one runs out. A source with share 0 is never drawn.

    >>> [s for s, _ in buy_order({"a": [("q", "1"), ("q", "2"), ("q", "3")], "b": [("q", "4")]}, 0,
    ...                          {"a": 0.5, "b": 0.5})]
    ['a', 'b', 'a', 'a']
    """
    shares = SHARES if shares is None else shares
    rng = np.random.default_rng([seed, LABELLING_STREAM, 1])
    names = list(pools)
    shuffled = {s: [pools[s][i] for i in rng.permutation(len(pools[s]))] for s in names}
    heap = [(1.0 / shares[s], k, s) for k, s in enumerate(names) if shares.get(s, 0.0) > 0 and shuffled[s]]
    heapq.heapify(heap)
    drawn = Counter()
    order = []
    while heap:
        _, k, source = heapq.heappop(heap)
        order.append((source, shuffled[source][drawn[source]]))
        drawn[source] += 1
        if drawn[source] < len(shuffled[source]):
            heapq.heappush(heap, ((drawn[source] + 1) / shares[source], k, source))
    return order


@dataclass
class Labelling:
    """What :func:`build` bought: ``pairs`` ``(query, rewrite, label)`` in buying order, ``sources`` (the source of
    each pair), ``candidates`` (candidates per source), ``labels_bought`` (labels this build spent), ``budget``,
    ``annotators`` (labels per new pair), ``seed``."""

    pairs: list[tuple[str, str, int]]
    sources: list[str]
    candidates: dict[str, int]
    labels_bought: int
    budget: int
    annotators: int
    seed: int

    def summary(self) -> dict:
        """Per source: ``candidates``, ``bought`` (pairs), ``labels`` (shares of 0/1/2, rounded to 3 places);
        and the totals (what a run directory records)."""
        per: dict[str, dict] = {}
        counts = {s: Counter() for s in self.candidates}
        for source, (_, _, label) in zip(self.sources, self.pairs):
            counts[source][label] += 1
        for source, n in self.candidates.items():
            bought = sum(counts[source].values())
            per[source] = {"candidates": n, "bought": bought,
                           "labels": [round(counts[source][g] / bought, 3) if bought else 0.0 for g in (0, 1, 2)]}
        total = Counter(label for _, _, label in self.pairs)
        n = len(self.pairs)
        return {"sources": per, "candidates": sum(self.candidates.values()), "pairs": n,
                "labels": [round(total[g] / n, 3) if n else 0.0 for g in (0, 1, 2)],
                "labels_bought": self.labels_bought, "budget": self.budget, "annotators": self.annotators,
                "seed": self.seed, "shares": dict(SHARES)}


def build(observed, budget: int, seed: int) -> Labelling:
    """Buy at most ``budget`` labels for production's candidate pairs (module docstring), in stratified order.

    ``budget`` must be >= 0 and at most what the shop's annotation service has
    left (a one-line error otherwise). The service's count rises by the labels
    bought, never past ``budget``; with enough candidates it spends all but
    less than one pair's cost.
    """
    service = observed.annotations
    check(budget >= 0, f"the label budget must be >= 0 (got {budget})")
    check(budget <= service.remaining,
          f"the label budget {budget} exceeds what the annotation service has left ({service.remaining})")
    pools = candidates(observed, seed)
    order = buy_order(pools, seed)
    pairs: list[tuple[str, str, int]] = []
    sources: list[str] = []
    spent, pos, cost = 0, 0, service.annotators
    while pos < len(order):
        room = (budget - spent) // cost  # new pairs the budget still pays for
        if room == 0:
            break
        chunk = order[pos:pos + min(room, CHUNK_PAIRS)]
        before = service.bought
        labels = service.label([pair for _, pair in chunk])
        spent += service.bought - before
        pairs += [(q, r, int(label)) for (_, (q, r)), label in zip(chunk, labels)]
        sources += [source for source, _ in chunk]
        pos += len(chunk)
    return Labelling(pairs, sources, {s: len(p) for s, p in pools.items()}, spent, budget, cost, seed)


def production_pairs(observed, budget: int, seed: int) -> list[tuple[str, str, int]]:
    """Stage 1's relevance pairs ``(query, rewrite, label)``: :func:`build`'s pairs (see the module docstring)."""
    return build(observed, budget, seed).pairs
