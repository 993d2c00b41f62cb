"""The shop's vocabulary and records: Intent, Product, Query, the Lexicon, random draws and typos.

- **Lexicon**: every canonical term (category, brand, attribute value) has user
  variants in tiers ``common`` / ``rare`` / ``log_only`` ("tv", "telly",
  "flatscreen" for television; "blk" for black; "128 gb", "128g" for 128gb;
  "mens", "for men" for men), read from the tables of :mod:`qrw.shop.tables`.
  No variant phrase ever appears in a title, so a query typed in user
  vocabulary does not reach its products by word match. ``log_only`` variants
  occur in search logs and val/test queries but never in training queries: a
  rewriter can only learn them from stage-0 pretraining.
- **Intent**: category + optional brand + a subset of attribute values.
- **Product**: one catalog item, its title in catalog vocabulary.
- **Query**: a user query with its intent, gold rewrite, split and difficulty.
- **Draws** and **typos**: fast scalar random draws from a numpy Generator (the
  world's one source of randomness), one-letter typos and the one-edit test
  the judge corrects them with.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from qrw.shop.tables import (BRAND_VARIANTS, CATEGORIES, COMPLEMENT_PAIRS, NUMBER_WORDS, TERABYTE_VARIANTS, TIERS,
                             UNIT_VARIANTS, VALUE_VARIANTS, CategorySpec)


# ----------------------------------------------------------------------------------------------
# Records
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Intent:
    """What a shopper wants: a category, optionally a brand, and attribute values.

    All terms canonical. ``attrs`` is a tuple of ``(attribute, value)`` sorted by
    attribute name, so equal intents compare and hash equal.
    """

    category: str
    brand: str | None = None
    attrs: tuple[tuple[str, str], ...] = ()

    def attr_dict(self) -> dict[str, str]:
        return dict(self.attrs)


@dataclass(frozen=True)
class Product:
    """One catalog item. ``attrs`` sorted by attribute name; ``title`` in catalog vocabulary."""

    id: int
    category: str
    brand: str
    attrs: tuple[tuple[str, str], ...]
    price: float
    popularity: float
    title: str

    @property
    def attribute_text(self) -> str:
        """``"<title> | category: ... | brand: ... | colour: black | price: 699"`` (stage-0 text)."""
        parts = [self.title, f"category: {self.category}", f"brand: {self.brand}"]
        parts += [f"{attr}: {value}" for attr, value in self.attrs]
        parts.append(f"price: {self.price:.0f}")
        return " | ".join(parts)


@dataclass(frozen=True)
class Query:
    """A user query with its ground truth.

    ``forms`` is the variant combination: the surface form used for each slot of
    the intent (brand, category, attributes in title order), before noise; the
    split key is ``(intent, forms)``. ``difficulty`` = rare variants + log-only
    variants + typos; ``segment`` is ``head`` (0), ``torso`` (1) or ``tail`` (>= 2).
    """

    text: str
    intent: Intent
    gold: str
    segment: str
    split: str
    forms: tuple[str, ...] = ()
    difficulty: int = 0


# ----------------------------------------------------------------------------------------------
# Lexicon
# ----------------------------------------------------------------------------------------------

def _split_tiers(spec: str) -> dict[str, tuple[str, ...]]:
    """``"a, b | c | d"`` -> {"common": (a, b), "rare": (c,), "log_only": (d,)}; empty parts allowed."""
    parts = [p.strip() for p in spec.split("|")]
    parts += [""] * (3 - len(parts))
    out = {}
    for tier, part in zip(TIERS[1:], parts):
        out[tier] = tuple(" ".join(v.split()) for v in part.split(",") if v.strip())
    return out


def _parse_attrs(spec: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``"colour: black, white; storage: 64gb"`` -> (("colour", ("black", "white")), ("storage", ("64gb",)))."""
    out = []
    for chunk in spec.split(";"):
        if chunk.strip():
            name, values = chunk.split(":")
            out.append((name.strip(), tuple(v.strip() for v in values.split(","))))
    return tuple(out)


def _brand_variants(brand: str) -> dict[str, tuple[str, ...]]:
    """Brand variants: hand-written (BRAND_VARIANTS) or generic ("x's"; "xy"/"x y" initials for two words)."""
    if brand in BRAND_VARIANTS:
        return _split_tiers(BRAND_VARIANTS[brand])
    words = brand.split()
    if len(words) > 1:
        return _split_tiers(f"{''.join(words)} | {''.join(w[0] for w in words)} |")
    return _split_tiers(f"{brand}'s | {brand} brand |")


def _value_variants(attr: str, value: str) -> dict[str, tuple[str, ...]]:
    """User variants of one attribute value (hand table, or unit templates for numeric values)."""
    if attr in VALUE_VARIANTS:
        return _split_tiers(VALUE_VARIANTS[attr][value])
    if value == "1tb":
        return _split_tiers(TERABYTE_VARIANTS)
    template, spec = UNIT_VARIANTS[attr]
    number = int("".join(c for c in value if c.isdigit()))
    filled = spec.format(n=number, k=number // 1000, w=NUMBER_WORDS.get(number, str(number)))
    return _split_tiers(filled)


class Lexicon:
    """Canonical terms and their user variants.

    A *term* is ``(slot, canonical value)`` with slot ``"category"``, ``"brand"``
    or an attribute name. ``forms[term][tier]`` lists its surface forms per tier
    (``canonical`` is the term itself). ``form_term`` maps every surface form
    (canonical or variant, a phrase of one or more words) to its term; forms
    are globally unique, so a form has exactly one meaning.
    """

    def __init__(self, categories: tuple[CategorySpec, ...] = CATEGORIES) -> None:
        self.categories = categories
        self.category_names = tuple(c.name for c in categories)
        self.category_attrs: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {}
        self.category_brands: dict[str, tuple[str, ...]] = {}
        self.forms: dict[tuple[str, str], dict[str, tuple[str, ...]]] = {}
        self.form_term: dict[str, tuple[str, str]] = {}
        self.form_tier: dict[str, str] = {}
        attribute_names: list[str] = []
        brands: list[str] = []
        for spec in categories:
            self._add(("category", spec.name), _split_tiers(spec.variants))
            attrs = _parse_attrs(spec.attrs)
            self.category_attrs[spec.name] = attrs
            self.category_brands[spec.name] = tuple(b.strip() for b in spec.brands.split(","))
            for brand in self.category_brands[spec.name]:
                if brand not in brands:
                    brands.append(brand)
                    self._add(("brand", brand), _brand_variants(brand))
            for attr, values in attrs:
                if attr not in attribute_names:
                    attribute_names.append(attr)
                for value in values:
                    if (attr, value) not in self.forms:
                        self._add((attr, value), _value_variants(attr, value))
        self.attribute_names = tuple(attribute_names)
        self.brands = tuple(brands)
        complements: dict[str, list[str]] = {c: [] for c in self.category_names}
        for a, b in COMPLEMENT_PAIRS:
            complements[a].append(b)
            complements[b].append(a)
        self.complements = {c: tuple(v) for c, v in complements.items()}
        self.max_form_words = max(len(f.split()) for f in self.form_term)

    def _add(self, term: tuple[str, str], tiers: dict[str, tuple[str, ...]]) -> None:
        entry = {"canonical": (term[1],), **tiers}
        self.forms[term] = entry
        for tier in TIERS:
            for form in entry[tier]:
                owner = self.form_term.get(form)
                assert owner is None or owner == term, f"form {form!r} means both {owner} and {term}"
                if owner is None:
                    self.form_term[form] = term
                    self.form_tier[form] = tier

    def variants(self, tier: str) -> list[str]:
        """All forms of one tier, in table order."""
        return [f for f, t in self.form_tier.items() if t == tier]


# ----------------------------------------------------------------------------------------------
# Random draws and typos
# ----------------------------------------------------------------------------------------------

def deletes(word: str) -> list[str]:
    """Every string one deletion away from ``word``."""
    return [word[:i] + word[i + 1:] for i in range(len(word))]


def one_edit(a: str, b: str) -> bool:
    """True iff a and b differ by exactly one deletion, insertion, substitution or adjacent transposition."""
    la, lb = len(a), len(b)
    if a == b or abs(la - lb) > 1:
        return False
    if la == lb:
        diff = [i for i in range(la) if a[i] != b[i]]
        if len(diff) == 1:
            return True
        return len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]
    if la > lb:
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    return a[i:] == b[i + 1:]


class Draws:
    """Fast scalar random draws from a numpy Generator (uniforms fetched in blocks of 4096).

    Scalar ``Generator`` calls cost about a microsecond each; the world makes
    millions of them. Deterministic: the same generator state gives the same draws.
    """

    def __init__(self, rng: np.random.Generator, block: int = 4096) -> None:
        self.rng = rng
        self._block = block
        self._buffer: list[float] = []
        self._next = 0

    def random(self) -> float:
        """A uniform float in [0, 1)."""
        if self._next >= len(self._buffer):
            self._buffer = self.rng.random(self._block).tolist()
            self._next = 0
        self._next += 1
        return self._buffer[self._next - 1]

    def below(self, n: int) -> int:
        """A uniform integer in [0, n)."""
        return min(int(self.random() * n), n - 1)

    def pick(self, options):
        """A uniform element of a non-empty sequence."""
        return options[self.below(len(options))]

    def weighted(self, cumulative: list[float]) -> int:
        """Index i with probability proportional to weight i, given the running sums of the weights."""
        return min(bisect.bisect_right(cumulative, self.random() * cumulative[-1]), len(cumulative) - 1)

    def permutation(self, n: int) -> list[int]:
        """A uniform permutation of range(n) (Fisher-Yates)."""
        order = list(range(n))
        for i in range(n - 1, 0, -1):
            j = self.below(i + 1)
            order[i], order[j] = order[j], order[i]
        return order


def make_typo(word: str, draws: Draws) -> str:
    """One random edit (delete, insert, substitute, transpose) of a word of >= 2 letters, not on the first letter."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    kind = draws.below(4)
    i = 1 + draws.below(len(word) - 1)
    if kind == 0:
        return word[:i] + word[i + 1:]
    if kind == 1:
        return word[:i] + draws.pick(letters) + word[i:]
    if kind == 2:
        c = draws.pick(letters)
        return word[:i] + (c if c != word[i] else letters[(letters.index(c) + 1) % 26]) + word[i + 1:]
    i = min(i, len(word) - 2)
    if word[i] == word[i + 1]:
        return word[:i] + word[i + 1:]
    return word[:i] + word[i + 1] + word[i] + word[i + 2:]

