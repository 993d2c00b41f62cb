"""Rule-based rewriter baselines: a dictionary mined from training pairs, and oracle-style rewrites.

``DictionaryRewriter`` stands in for the rule/dictionary rewriting systems that
the paper's LLM approach replaces: it learns, from training (query, gold
rewrite) pairs only, which user word or phrase stands for which catalog words,
and rewrites by table lookup. It knows no typos and no variant it never saw in
training (for instance the world's log-only variants): such words are dropped.

``gold_rewrites``, ``broadened_rewrites`` and ``complement_rewrites`` give
reference rewrites that bracket what a learned rewriter can do: the intent in
catalog vocabulary; the bare category (all brand and attribute constraints
dropped: relevance falls, conversion barely, since the page fills with
best-sellers); and a complementary category ("protective case" for a
smartphone), which pollutes the page.
"""

from __future__ import annotations

from collections import defaultdict

from qrw.shop.lexicon import Query
from qrw.shop.tables import COMPLEMENT_PAIRS


class DictionaryRewriter:
    """Word/phrase -> catalog words, mined from training pairs.

    Mining (``fit``). For each training pair the *missing* words are the gold
    words the query lacks, and the *units* are the query's 1- to 3-word
    n-grams; a single catalog word (one that occurs in some gold rewrite) is
    never a unit: it stands for itself. A unit's *support* is the pairs in
    which it occurs outside every already-mapped unit.

    Phase 1 visits units most frequent first (a *cohesive* phrase, seen in >=
    ``cohesion`` of the occurrences of its rarest word, just before that word:
    "camera stand" before "stand"), in repeated sweeps until nothing changes. A
    unit with support >= ``min_support`` (single words) or
    ``min_support_phrase`` (phrases) maps to the missing words found in at
    least ``min_precision`` of its support. A phrase with no such word but with
    a non-catalog word, whose catalog words are in the gold rewrite in
    ``min_precision`` of its support, maps to those catalog words ("phone
    charger" -> "charger", "tv wall mount" -> "wall mount"). Sweeps matter:
    "phone" is ambiguous until "phone case", "phone charger" and "cell phone"
    have claimed their occurrences; then it maps to "smartphone". Frequent
    single words left unmapped are fillers ("cheap", "with").

    Phase 2: a rarer unit maps to the still unexplained missing words of its
    pair (not produced by a mapped unit of the pair) only when it covers every
    query word of the pair that is still unresolved (not a catalog word,
    filler or part of a mapped unit): in "sammy telly" neither word is guessed
    alone. A mapped unit's output is its targets plus its own catalog words
    that occur in the gold rewrite, in gold order ("sd card" -> "memory card",
    "55 in" -> "55 inch").

    Rewriting (``rewrite``): greedy longest match, left to right, over the
    mapped units and the catalog phrases (n-grams of gold rewrites; a mapped
    unit wins a tie). A mapped unit emits its output, a catalog phrase itself;
    any other word (fillers, typos, variants never seen in training such as the
    world's log-only ones) is dropped. Emitted words are de-duplicated, in
    order; a query with nothing recognised gives an empty rewrite.
    """

    def __init__(self, max_ngram: int = 3, min_support: int = 2, min_support_phrase: int = 3,
                 min_precision: float = 0.8, cohesion: float = 0.5, max_sweeps: int = 4) -> None:
        self.max_ngram = max_ngram
        self.min_support = min_support
        self.min_support_phrase = min_support_phrase
        self.max_sweeps = max_sweeps
        self.cohesion = cohesion
        self.min_precision = min_precision
        self.mapping: dict[str, tuple[str, ...]] = {}
        self.catalog_words: frozenset[str] = frozenset()
        self.catalog_phrases: frozenset[str] = frozenset()

    def _ngrams(self, tokens: list[str]) -> list[tuple[str, int, int]]:
        """(phrase, start, end) for every n-gram, n <= max_ngram."""
        return [(" ".join(tokens[i:i + n]), i, i + n) for n in range(1, self.max_ngram + 1)
                for i in range(len(tokens) - n + 1)]

    def fit(self, train_queries: list[Query]) -> DictionaryRewriter:
        """Mine the dictionary from the training queries' (text, gold) pairs (an upper bound: gold is hidden
        from a shop); returns self."""
        return self.fit_pairs([(q.text, q.gold) for q in train_queries])

    def fit_pairs(self, pairs: list[tuple[str, str]]) -> DictionaryRewriter:
        """Mine the dictionary from ``(query, target)`` text pairs, the target in catalog words (a gold
        rewrite, or what a shop has: the title clicked for a logged query); returns self."""
        golds = [target.split() for _, target in pairs]
        miner = _Miner(self, [query.split() for query, _ in pairs], golds)
        order = miner.visit_order()
        miner.map_frequent_units(order)
        miner.map_rare_units(order)
        self.mapping = miner.mapping
        self.catalog_words = frozenset(miner.catalog_words)
        self.catalog_phrases = frozenset(unit for gold in golds for unit, _, _ in self._ngrams(gold))
        return self

    def rewrite_one(self, text: str) -> str:
        """Rewrite one query (see the class doc)."""
        tokens = text.lower().split()
        out: list[str] = []
        i = 0
        while i < len(tokens):
            for n in range(min(self.max_ngram, len(tokens) - i), 0, -1):
                unit = " ".join(tokens[i:i + n])
                if unit in self.mapping:
                    out += self.mapping[unit]
                elif unit in self.catalog_phrases:
                    out += tokens[i:i + n]
                else:
                    continue
                i += n
                break
            else:
                i += 1
        return " ".join(dict.fromkeys(out))

    def rewrite(self, texts: list[str]) -> list[str]:
        """Rewrite a batch of queries."""
        return [self.rewrite_one(t) for t in texts]


class _Miner:
    """The state of one :meth:`DictionaryRewriter.fit`: the training pairs, where each unit occurs, and
    what the units mapped so far explain (missing words) and cover (token positions)."""

    def __init__(self, params: DictionaryRewriter, queries: list[list[str]], golds: list[list[str]]) -> None:
        self.params = params
        self.catalog_words = {w for gold in golds for w in gold}
        self.pairs = []  # (tokens, gold words, missing words, {unit: [(start, end), ...]})
        self.occurs_in: dict[str, list[int]] = defaultdict(list)
        for p, (tokens, gold) in enumerate(zip(queries, golds)):
            present = set(tokens)
            missing = tuple(dict.fromkeys(w for w in gold if w not in present))
            spans: dict[str, list[tuple[int, int]]] = defaultdict(list)
            for unit, start, end in params._ngrams(tokens):
                spans[unit].append((start, end))
            self.pairs.append((tokens, gold, missing, spans))
            for unit in spans:
                self.occurs_in[unit].append(p)
        self.explained: list[set[str]] = [set() for _ in self.pairs]  # missing words produced by mapped units
        self.covered: list[set[int]] = [set() for _ in self.pairs]    # token positions inside mapped units
        self.mapping: dict[str, tuple[str, ...]] = {}

    def commit(self, unit: str, targets: tuple[str, ...], support: list[int]) -> None:
        """Map ``unit`` to ``targets`` plus its own catalog words (in gold order), for the pairs of ``support``."""
        words = set(targets) | {w for w in unit.split() if w in self.catalog_words}
        gold = next((self.pairs[p][1] for p in support if set(targets) <= set(self.pairs[p][1])), list(targets))
        self.mapping[unit] = tuple(dict.fromkeys(w for w in gold if w in words))
        for p in support:
            self.explained[p].update(targets)
            for start, end in self.pairs[p][3][unit]:
                self.covered[p].update(range(start, end))

    def support_of(self, unit: str) -> list[int]:
        """Pairs where the unit occurs outside every already-mapped unit."""
        return [p for p in self.occurs_in[unit]
                if any(not self.covered[p].issuperset(range(s, e)) for s, e in self.pairs[p][3][unit])]

    def priority(self, unit: str) -> float:
        """Visit order: frequency; a cohesive phrase goes just before its rarest word."""
        count = len(self.occurs_in[unit])
        if " " in unit:
            rarest = min(len(self.occurs_in[w]) for w in unit.split())
            if count >= self.params.cohesion * rarest:
                return rarest + 0.5
        return count

    def visit_order(self) -> list[str]:
        """Every unit but single catalog words (they stay themselves), most frequent first."""
        order = sorted(self.occurs_in, key=lambda u: (-self.priority(u), u.count(" "), u))
        return [u for u in order if " " in u or u not in self.catalog_words]

    def drops_words(self, unit: str, support: list[int]) -> bool:
        """A phrase with a non-catalog word whose catalog words are in the gold of >= min_precision of its
        pairs ("phone charger" -> "charger", "tv wall mount" -> "wall mount"): it maps to its catalog words."""
        words = unit.split()
        own = [w for w in words if w in self.catalog_words]
        if len(own) == len(words):
            return False
        agree = sum(all(w in self.pairs[p][1] for w in own) for p in support)
        return agree >= self.params.min_precision * len(support)

    def map_frequent_units(self, order: list[str]) -> None:
        """Phase 1: frequent units, in sweeps over ``order`` until nothing changes."""
        params = self.params
        for _ in range(params.max_sweeps):
            changed = False
            for unit in order:
                if unit in self.mapping:
                    continue
                support = self.support_of(unit)
                if len(support) < (params.min_support if " " not in unit else params.min_support_phrase):
                    continue
                hits: dict[str, int] = defaultdict(int)
                for p in support:
                    for w in self.pairs[p][2]:
                        hits[w] += 1
                targets = tuple(w for w, n in hits.items() if n >= params.min_precision * len(support))
                if targets or (" " in unit and self.drops_words(unit, support)):
                    self.commit(unit, targets, support)
                    changed = True
            if not changed:
                break

    def map_rare_units(self, order: list[str]) -> None:
        """Phase 2: a rare unit maps where it accounts for everything still unresolved in its pair."""
        fillers = {u for u in order if " " not in u and u not in self.mapping and u not in self.catalog_words
                   and len(self.support_of(u)) >= self.params.min_support}
        for unit in order:
            if unit in self.mapping:
                continue
            for p in self.support_of(unit):
                tokens, _, missing, spans = self.pairs[p]
                residual = tuple(w for w in missing if w not in self.explained[p])
                unresolved = {i for i, t in enumerate(tokens)
                              if i not in self.covered[p] and t not in self.catalog_words and t not in fillers}
                inside = {i for start, end in spans[unit] for i in range(start, end)}
                if residual and unresolved and unresolved <= inside:
                    self.commit(unit, residual, [p])
                    break


def gold_rewrites(queries: list[Query]) -> list[str]:
    """The intent in catalog vocabulary (``Query.gold``)."""
    return [q.gold for q in queries]


def broadened_rewrites(queries: list[Query]) -> list[str]:
    """The bare category: brand and every attribute dropped (judge grade 1, or 2 for bare-category intents)."""
    return [q.intent.category for q in queries]


def _first_complements() -> dict[str, str]:
    first: dict[str, str] = {}
    for a, b in COMPLEMENT_PAIRS:
        first.setdefault(a, b)
        first.setdefault(b, a)
    return first


_FIRST_COMPLEMENT = _first_complements()


def complement_rewrites(queries: list[Query]) -> list[str]:
    """A complementary category instead of the wanted one (the first listed in COMPLEMENT_PAIRS), e.g.
    "protective case" for a smartphone query: judge grade 0."""
    return [_FIRST_COMPLEMENT[q.intent.category] for q in queries]
