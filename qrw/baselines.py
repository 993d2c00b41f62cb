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

from qrw.world import COMPLEMENT_PAIRS, Query


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

    def _drops_words(self, unit: str, support: list[int], pairs: list, catalog_words: set[str]) -> bool:
        """A phrase with a non-catalog word whose catalog words are in the gold of >= min_precision of its
        pairs ("phone charger" -> "charger", "tv wall mount" -> "wall mount"): it maps to its catalog words."""
        words = unit.split()
        own = [w for w in words if w in catalog_words]
        if len(own) == len(words):
            return False
        agree = sum(all(w in pairs[p][1] for w in own) for p in support)
        return agree >= self.min_precision * len(support)

    def fit(self, train_queries: list[Query]) -> DictionaryRewriter:
        """Mine the dictionary from the training queries' (text, gold) pairs; returns self."""
        golds = [q.gold.split() for q in train_queries]
        catalog_words = {w for gold in golds for w in gold}
        pairs = []  # (tokens, gold words, missing words, {unit: [(start, end), ...]})
        occurs_in: dict[str, list[int]] = defaultdict(list)
        for p, (q, gold) in enumerate(zip(train_queries, golds)):
            tokens = q.text.split()
            present = set(tokens)
            missing = tuple(dict.fromkeys(w for w in gold if w not in present))
            spans: dict[str, list[tuple[int, int]]] = defaultdict(list)
            for unit, start, end in self._ngrams(tokens):
                spans[unit].append((start, end))
            pairs.append((tokens, gold, missing, spans))
            for unit in spans:
                occurs_in[unit].append(p)
        explained: list[set[str]] = [set() for _ in pairs]  # missing words produced by mapped units
        covered: list[set[int]] = [set() for _ in pairs]    # token positions inside mapped units
        mapping: dict[str, tuple[str, ...]] = {}

        def commit(unit: str, targets: tuple[str, ...], support: list[int]) -> None:
            words = set(targets) | {w for w in unit.split() if w in catalog_words}
            gold = next((pairs[p][1] for p in support if set(targets) <= set(pairs[p][1])), list(targets))
            mapping[unit] = tuple(dict.fromkeys(w for w in gold if w in words))
            for p in support:
                explained[p].update(targets)
                for start, end in pairs[p][3][unit]:
                    covered[p].update(range(start, end))

        def support_of(unit: str) -> list[int]:
            """Pairs where the unit occurs outside every already-mapped unit."""
            return [p for p in occurs_in[unit]
                    if any(not covered[p].issuperset(range(s, e)) for s, e in pairs[p][3][unit])]

        def priority(unit: str) -> float:
            """Visit order: frequency; a cohesive phrase goes just before its rarest word."""
            count = len(occurs_in[unit])
            if " " in unit:
                rarest = min(len(occurs_in[w]) for w in unit.split())
                if count >= self.cohesion * rarest:
                    return rarest + 0.5
            return count

        order = sorted(occurs_in, key=lambda u: (-priority(u), u.count(" "), u))
        order = [u for u in order if " " in u or u not in catalog_words]  # catalog words stay themselves
        for _ in range(self.max_sweeps):  # phase 1: frequent units, until nothing changes
            changed = False
            for unit in order:
                if unit in mapping:
                    continue
                support = support_of(unit)
                if len(support) < (self.min_support if " " not in unit else self.min_support_phrase):
                    continue
                hits: dict[str, int] = defaultdict(int)
                for p in support:
                    for w in pairs[p][2]:
                        hits[w] += 1
                targets = tuple(w for w, n in hits.items() if n >= self.min_precision * len(support))
                if targets or (" " in unit and self._drops_words(unit, support, pairs, catalog_words)):
                    commit(unit, targets, support)
                    changed = True
            if not changed:
                break
        fillers = {u for u in order if " " not in u and u not in mapping and u not in catalog_words
                   and len(support_of(u)) >= self.min_support}
        for unit in order:  # phase 2: rare units, only where they account for everything unresolved
            if unit in mapping:
                continue
            for p in support_of(unit):
                tokens, _, missing, spans = pairs[p]
                residual = tuple(w for w in missing if w not in explained[p])
                unresolved = {i for i, t in enumerate(tokens)
                              if i not in covered[p] and t not in catalog_words and t not in fillers}
                inside = {i for start, end in spans[unit] for i in range(start, end)}
                if residual and unresolved and unresolved <= inside:
                    commit(unit, residual, [p])
                    break
        self.mapping = mapping
        self.catalog_words = frozenset(catalog_words)
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
