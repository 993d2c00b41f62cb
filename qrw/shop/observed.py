"""What a shop observes of its world: the type training receives (the observed side of the wall).

A search team has its catalog (titles, categories, brands, attribute values,
prices, popularity), its search engine, its logged sessions (the query typed,
the page shown, clicks, the purchase: :mod:`qrw.shop.logs`), the query texts of
its traffic, rewrite pairs mined from reformulation sessions, and whatever it
fits on those: a conversion model (:mod:`qrw.shop.conversion`) and a synonym
dictionary (:class:`~qrw.shop.baselines.DictionaryRewriter` fit on the logged
(query, clicked title) pairs). It does not have intents, gold rewrites, the
judge or the shoppers' purchase probabilities: :class:`ObservedShop` holds none
of them. Relevance labels come through one door, :attr:`ObservedShop.annotations`
(:class:`~qrw.shop.annotation.AnnotationService`: the judge as annotators,
counted against a label budget, with annotator disagreement).

Built once from a :class:`~qrw.shop.world.World` by
:func:`qrw.shop.observation.observe_world` (before the wall is sealed:
:mod:`qrw.shop.wall`); everything it holds is plain text, ids and numbers, and
this module imports nothing of the hidden truth, so training code that holds it
reads nothing hidden.

The serving gate's query checks live here too (:meth:`ObservedShop.knows_query`,
:meth:`ObservedShop.reads_product`): serving is production, and production has
the observed side only.
"""

from __future__ import annotations

import numpy as np

from qrw.shop.annotation import AnnotationService
from qrw.shop.baselines import DictionaryRewriter
from qrw.shop.conversion import ConversionModel
from qrw.shop.lexicon import deletes, one_edit
from qrw.shop.sessions import LoggedSession, click_pairs, session_texts
from qrw.shop.search import SearchEngine

# Shop.knows_query forgives one typo only in words this long: among shorter words one edit reaches too many
# others ("cat" -> "car"). Chosen on data the gate is not measured on (seeds 0-2 of the default world, 2,000
# out-of-domain *train* queries and 500 in-domain val queries each): from 4 letters 6.9-12.4% of those
# out-of-domain queries pass; from 5, 4.2-5.1%, with 1 val query of 1,500 failing; from 6, 1.7-3.1%, with 21 failing.
TYPO_MIN_LETTERS = 5
DEFAULT_LABEL_BUDGET = 60_000  # labels a default SFT run may buy (qrw.shop.labelling; README "The wall")


class ObservedShop:
    """The observed side of a world (see the module docstring). Attributes:

    ``products`` (the catalog records), ``titles``, ``category_names``, ``brands``,
    ``category_brands`` (category -> its brands), ``category_attrs`` (category ->
    ``((attribute, catalog values), ...)``): the catalog's own tables;
    ``engine`` (:class:`~qrw.shop.search.SearchEngine`); ``sessions``
    (list[:class:`~qrw.shop.logs.LoggedSession`]); ``train_texts`` (the texts of
    the SFT training queries: logged traffic the shop keeps); ``mined_pairs``
    (``(query, rewrite)`` texts); ``grpo_texts`` (the distinct logged searches with
    at least one click, in first-logged order: GRPO's training queries);
    ``null_texts`` (the distinct logged searches no session ever clicked on: the
    searches for products the shop does not sell are among them, but on the default
    world only about one in eight of them is one: most are in-domain searches
    whose single session clicked nothing); ``annotations`` (the door).
    """

    def __init__(self, *, products, engine: SearchEngine, category_names, brands, category_brands, category_attrs,
                 sessions: list[LoggedSession], train_texts: list[str], mined_pairs: list[tuple[str, str]],
                 annotations: AnnotationService) -> None:
        self.products = list(products)
        self.titles = [p.title for p in self.products]
        self.engine = engine
        self.category_names, self.brands = tuple(category_names), tuple(brands)
        self.category_brands, self.category_attrs = dict(category_brands), dict(category_attrs)
        self.sessions = sessions
        self.train_texts = list(train_texts)
        self.mined_pairs = list(mined_pairs)
        self.annotations = annotations
        clicked: dict[str, bool] = {}
        for s in sessions:
            clicked[s.query] = clicked.get(s.query, False) or bool(s.clicked)
        self.grpo_texts = [t for t, c in clicked.items() if c]
        self.null_texts = [t for t, c in clicked.items() if not c]
        self._dictionary: DictionaryRewriter | None = None
        self._conversion: ConversionModel | None = None
        self._vocabulary: tuple[frozenset[str], dict[str, list[str]]] | None = None

    # -- what the shop fits on its logs ----------------------------------------------------------

    @property
    def dictionary(self) -> DictionaryRewriter:
        """The synonym dictionary mined from the logs' (query, clicked title) pairs (built on first use)."""
        if self._dictionary is None:
            self._dictionary = DictionaryRewriter().fit_pairs(click_pairs(self.sessions, self.titles))
        return self._dictionary

    @property
    def conversion(self) -> ConversionModel:
        """P(purchase | query, product, position) fit on the logged sessions (built on first use)."""
        if self._conversion is None:
            self._conversion = ConversionModel(self.products, self.engine).fit(self.sessions)
        return self._conversion

    # -- text ------------------------------------------------------------------------------------

    @staticmethod
    def attribute_text(product) -> str:
        """``"<title> | category: ... | brand: ... | colour: black | price: 699"``: :attr:`Product.attribute_text`."""
        return product.attribute_text

    def log_texts(self) -> list[str]:
        """The logged sessions as stage-0 text (:func:`qrw.shop.logs.session_texts`)."""
        return session_texts(self.sessions, self.titles)

    def pretrain_texts(self) -> list[str]:
        """Stage-0 corpus: titles, attribute texts, logged sessions (in that order)."""
        return self.titles + [self.attribute_text(p) for p in self.products] + self.log_texts()

    def corpus_texts(self) -> list[str]:
        """Everything the tokenizer and the gate's vocabulary see: the stage-0 corpus, the training query texts
        and the mined pairs' texts. No val/test query text, no gold rewrite."""
        return (self.pretrain_texts() + self.train_texts
                + [t for pair in self.mined_pairs for t in pair])

    # -- the serving gate's query checks ---------------------------------------------------------

    def reads_product(self, texts: list[str]) -> list[bool]:
        """Per query: the :attr:`dictionary` reads a catalog category or brand in it (``--gate-query dictionary``).

        Query understanding as a search team has it: the dictionary is mined from the logs' clicks, and a
        query in which it reads neither a product type nor a brand asks for nothing the shop knows it sells.
        """
        products = self.category_names + self.brands
        padded = [f" {reading} " for reading in self.dictionary.rewrite([t.lower() for t in texts])]
        return [any(f" {p} " in r for p in products) for r in padded]

    def knows_word(self, word: str) -> bool:
        """``word`` is a word of :meth:`corpus_texts`, or one typo from one (:func:`~qrw.shop.lexicon.one_edit`,
        for words of :data:`TYPO_MIN_LETTERS` letters or more); a word with a digit always is."""
        if self._vocabulary is None:
            words = frozenset(w for text in self.corpus_texts() for w in text.lower().split())
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
        """Per query: every word is known (:meth:`knows_word`): ``--gate-query vocabulary``."""
        return [all(self.knows_word(w) for w in text.lower().split()) for text in texts]

    def page_conversion(self, queries: list[str], rewrites: list[str | None], k: int = 10) -> np.ndarray:
        """The conversion model's expected purchases per search on ``page(q, r)`` as the engine serves it."""
        pages = self.engine.pages(queries, rewrites, k)  # (B, k)
        return self.conversion.page_conversion(queries, pages)
