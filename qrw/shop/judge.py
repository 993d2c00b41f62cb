"""The oracle judge: parses free text into an Intent and grades rewrites and products.

The judge parses free text into an :class:`~qrw.shop.lexicon.Intent` (full
lexicon, single-typo tolerant) and grades (intent, rewrite) in {0, 1, 2} and
(intent, product) as EXACT / SUBSTITUTE / COMPLEMENT / IRRELEVANT. The judge
measures *meaning*; BM25 (:mod:`qrw.shop.search`) measures whether the *words*
reach the catalog. In the paper these labels come from human raters; here they
come from these rules. Also the canonical rendering of an intent, the gold
rewrite ``brand category values`` in catalog vocabulary.
"""

from __future__ import annotations

import numpy as np

from qrw.shop.lexicon import Intent, Lexicon, Product, deletes, one_edit
from qrw.shop.tables import CONNECTORS, DESCRIPTORS, FILLERS

# Grades of a product for an intent (Judge.grade_products).
EXACT, SUBSTITUTE, COMPLEMENT, IRRELEVANT = 3, 2, 1, 0
# Grades of a rewrite for an intent (Judge.grade_rewrite).
REWRITE_EQUIVALENT, REWRITE_PARTIAL, REWRITE_IRRELEVANT = 2, 1, 0


# ----------------------------------------------------------------------------------------------
# The judge
# ----------------------------------------------------------------------------------------------

class Judge:
    """The oracle: parses text into an Intent and grades rewrites and products.

    Parsing (``parse``): lowercase whitespace tokens; each unknown token of >= 4
    characters that is one edit (deletion, insertion, substitution, adjacent
    transposition) away from a known word is corrected to it (the
    lexicographically first such word when several are; precomputed
    single-deletion neighbourhoods make this a few dict lookups). Then greedy
    longest-match over all surface forms (canonical and every variant tier), so
    "phone case" is a protective case, not a phone. Fillers, connectors, title
    words and unknown tokens are ignored. The text parses to ``None`` when it
    names no category, or names two different values for one slot (two
    categories, two brands, "black white"): such a text does not state one
    intent.

    Rewrite grades (``grade_rewrite(intent, text)``), comparing ``r = parse(text)``
    with the query intent ``q``:

    - 0 (irrelevant): ``r`` is None; another category (a complement such as
      "protective case" for a smartphone included); a different brand; an
      attribute with a different value (contradiction).
    - 2 (equivalent): ``r == q`` (word order, fillers, variants and single typos
      do not matter).
    - 1 (partial): otherwise: same category, nothing contradicted, but the brand
      or some attributes were dropped (broadened, down to the bare category), or
      a brand or attribute the query did not ask for was added (narrowed; this
      holds even for an attribute the category does not have).

    Product grades (``grade_products(intent)``), vectorised over the catalog:
    EXACT (3) = same category, brand (if the intent names one) and every
    attribute value of the intent; SUBSTITUTE (2) = same category otherwise;
    COMPLEMENT (1) = a complementary category (``COMPLEMENT_PAIRS``);
    IRRELEVANT (0) = everything else.

    Caches: corrected words, parses (both bounded by ``max_cache``), product
    grades per intent (read-only arrays).
    """

    def __init__(self, lexicon: Lexicon, products: list[Product], max_cache: int = 500_000) -> None:
        self.lexicon = lexicon
        self._form_term = lexicon.form_term
        self._max_form_words = lexicon.max_form_words
        self._max_cache = max_cache
        known = set(FILLERS) | set(CONNECTORS) | set(DESCRIPTORS)
        for form in lexicon.form_term:
            known.update(form.split())
        for product in products:
            known.update(product.title.split())
        self.known_words = frozenset(known)
        neighbours: dict[str, set[str]] = {}
        for word in sorted(known):
            if len(word) >= 3:
                for key in [word, *deletes(word)]:
                    neighbours.setdefault(key, set()).add(word)
        self._neighbours = {k: tuple(sorted(v)) for k, v in neighbours.items()}
        self._correct_cache: dict[str, str] = {}
        self._parse_cache: dict[str, Intent | None] = {}
        # Product code arrays: (n,) category/brand codes, (n, A) attribute value codes (-1 = none).
        self._category_code = {c: i for i, c in enumerate(lexicon.category_names)}
        self._brand_code = {b: i for i, b in enumerate(lexicon.brands)}
        self._attr_index = {a: i for i, a in enumerate(lexicon.attribute_names)}
        self._value_code: dict[tuple[str, str], int] = {}
        for term in lexicon.forms:
            if term[0] in self._attr_index:
                self._value_code[term] = len(self._value_code)
        n = len(products)
        self.product_category = np.array([self._category_code[p.category] for p in products], dtype=np.int64)
        self.product_brand = np.array([self._brand_code[p.brand] for p in products], dtype=np.int64)
        self.product_attrs = np.full((n, len(self._attr_index)), -1, dtype=np.int64)  # (n, A)
        for p in products:
            for attr, value in p.attrs:
                self.product_attrs[p.id, self._attr_index[attr]] = self._value_code[(attr, value)]
        n_cat = len(lexicon.category_names)
        self._complement_matrix = np.zeros((n_cat, n_cat), dtype=bool)  # (C, C)
        for a, partners in lexicon.complements.items():
            for b in partners:
                self._complement_matrix[self._category_code[a], self._category_code[b]] = True
        self._grade_cache: dict[Intent, np.ndarray] = {}
        self._exact_count_cache: dict[Intent, int] = {}

    # -- parsing ---------------------------------------------------------------------------------

    def correct(self, word: str) -> str:
        """The known word ``word`` is a single typo of (or ``word`` itself)."""
        if word in self.known_words or len(word) < 4:
            return word
        cached = self._correct_cache.get(word)
        if cached is not None:
            return cached
        candidates = set(self._neighbours.get(word, ()))
        for key in deletes(word):
            candidates.update(self._neighbours.get(key, ()))
        matches = sorted(c for c in candidates if one_edit(word, c))
        result = matches[0] if matches else word
        if len(self._correct_cache) >= self._max_cache:
            self._correct_cache.clear()
        self._correct_cache[word] = result
        return result

    def terms(self, text: str) -> list[tuple[str, str]]:
        """The ``(slot, value)`` terms the text mentions, in order (longest match, typos corrected)."""
        tokens = [self.correct(t) for t in text.lower().split()]
        found = []
        i, n = 0, len(tokens)
        while i < n:
            for length in range(min(self._max_form_words, n - i), 0, -1):
                term = self._form_term.get(" ".join(tokens[i:i + length]))
                if term is not None:
                    found.append(term)
                    i += length
                    break
            else:
                i += 1
        return found

    def parse(self, text: str) -> Intent | None:
        """Free text -> Intent (canonical terms), or None (no category, or a slot with two values)."""
        if text in self._parse_cache:
            return self._parse_cache[text]
        slots: dict[str, str] = {}
        result: Intent | None = None
        for slot, value in self.terms(text):
            if slots.setdefault(slot, value) != value:
                break
        else:
            category = slots.pop("category", None)
            if category is not None:
                brand = slots.pop("brand", None)
                result = Intent(category, brand, tuple(sorted(slots.items())))
        if len(self._parse_cache) >= self._max_cache:
            self._parse_cache.clear()
        self._parse_cache[text] = result
        return result

    # -- grading ---------------------------------------------------------------------------------

    def grade_rewrite(self, intent: Intent, text: str | None) -> int:
        """Grade of rewrite ``text`` for the query intent: 2 equivalent, 1 partial, 0 irrelevant (see class doc)."""
        if text is None:
            return REWRITE_IRRELEVANT
        r = self.parse(text)
        if r is None or r.category != intent.category:
            return REWRITE_IRRELEVANT
        if intent.brand is not None and r.brand is not None and r.brand != intent.brand:
            return REWRITE_IRRELEVANT
        wanted = intent.attr_dict()
        for attr, value in r.attrs:
            if attr in wanted and wanted[attr] != value:
                return REWRITE_IRRELEVANT
        return REWRITE_EQUIVALENT if r == intent else REWRITE_PARTIAL

    def grade_products(self, intent: Intent) -> np.ndarray:
        """(n_products,) int8 grades of every product for ``intent`` (EXACT/SUBSTITUTE/COMPLEMENT/IRRELEVANT).

        Cached per intent; the returned array is read-only.
        """
        cached = self._grade_cache.get(intent)
        if cached is not None:
            return cached
        code = self._category_code.get(intent.category)
        n = len(self.product_category)
        if code is None:
            grades = np.zeros(n, dtype=np.int8)
        else:
            same = self.product_category == code  # (n,)
            exact = same.copy()
            if intent.brand is not None:
                exact &= self.product_brand == self._brand_code.get(intent.brand, -2)
            for attr, value in intent.attrs:
                column = self._attr_index.get(attr)
                value_code = self._value_code.get((attr, value), -2)
                exact &= False if column is None else self.product_attrs[:, column] == value_code
            complement = self._complement_matrix[code][self.product_category]  # (n,)
            grades = np.where(exact, EXACT, np.where(same, SUBSTITUTE, np.where(complement, COMPLEMENT,
                                                                                   IRRELEVANT))).astype(np.int8)
        grades.flags.writeable = False
        if len(self._grade_cache) >= self._max_cache // 10:
            self._grade_cache.clear()
            self._exact_count_cache.clear()
        self._grade_cache[intent] = grades
        return grades

    def exact_count(self, intent: Intent) -> int:
        """Number of catalog products that are EXACT for ``intent``."""
        count = self._exact_count_cache.get(intent)
        if count is None:
            count = int((self.grade_products(intent) == EXACT).sum())
            self._exact_count_cache[intent] = count
        return count


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------

def render_canonical(lexicon: Lexicon, intent: Intent) -> str:
    """The intent in catalog vocabulary: ``brand category values`` (values in title order)."""
    return " ".join(canonical_phrases(lexicon, intent))


def canonical_phrases(lexicon: Lexicon, intent: Intent) -> list[str]:
    """The phrases of :func:`render_canonical`: brand, category, values (title order, then foreign ones)."""
    wanted = intent.attr_dict()
    phrases = [intent.brand] if intent.brand else []
    phrases.append(intent.category)
    order = [a for a, _ in lexicon.category_attrs.get(intent.category, ())]
    phrases += [wanted[a] for a in order if a in wanted]
    phrases += [v for a, v in intent.attrs if a not in order]  # attributes foreign to the category
    return phrases


def intent_slots(lexicon: Lexicon, intent: Intent) -> list[tuple[str, str]]:
    """The intent's terms in title order: brand, category, attributes."""
    slots = [("brand", intent.brand)] if intent.brand else []
    slots.append(("category", intent.category))
    wanted = intent.attr_dict()
    slots += [(a, wanted[a]) for a, _ in lexicon.category_attrs[intent.category] if a in wanted]
    return slots
