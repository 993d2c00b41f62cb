"""A conversion model fit on logged sessions only: P(purchase | query, product shown at a position).

The shopper simulator's expected purchases (:mod:`qrw.shop.users`) grade each
shown product against the query's hidden intent: an oracle no shop has. A search
team estimates conversion from its logs instead (:mod:`qrw.shop.logs`): for each
product it showed for a query, at a position, was it bought? This module fits
that estimate and scores a results page with it, as the simulator's UCVR does:

    p_i = sigmoid(w . x(query, product_i, i))              one logistic regression
    page_conversion(q, page) = 1 - prod_i (1 - p_i)        expected purchases per user

**What it learns from** (the observed side only). The catalog as the shop
stores it (titles, categories, brands, attribute values in catalog words,
prices, popularity), its search engine's BM25 weights, and the logged
sessions. No intent, grade, judge or user variant lexicon: the features read
only catalog words in the query, and what the logs taught about the others.

**Features** (:data:`FEATURES`, standardised on the fitting data):

- ``position``: ``log(1 + i)``: the examination decay;
- ``bm25``, ``overlap``: the engine's BM25 score of the query on the title; the
  share of the query's distinct words the title contains;
- ``popularity``, ``price``: ``log`` of the product's popularity over its
  category's best-seller, of its price over its category's median;
- ``category named``, ``other category``, ``brand named``, ``other brand``,
  ``value conflict``: the query names (in catalog words) the product's
  category / another category / the product's brand / another brand / a value
  of an attribute the product has with another value;
- ``word-category max``, ``word-category mean``, ``word-brand max``: what the
  logs taught about user words. For each (query word, product category) pair,
  the smoothed click-through lift over all impressions in the fitting logs,
  ``log((clicks + a * ctr) / (impressions + a) / ctr)`` with ``ctr`` the overall
  click rate and ``a = smoothing``; max and mean over the query's words (0 for
  a word never logged). Likewise per (query word, brand); and ``word-title``:
  per (query word, title word) lift, the best title word of the product for
  each query word, averaged over the query's words (a dictionary learned from
  clicks). This is how "telly" comes to point at televisions without a lexicon.

**The fit.** Only impressions at risk count: the positions up to and including
the purchase (the shopper leaves after buying) or the whole page when nothing
was bought. On the simulator, whose draws per position are independent,
``P(buy at i | still on the page)`` is then exactly the per-position ``q_i`` of
the closed form, so ``1 - prod(1 - p_i)`` estimates expected purchases. The
logistic regression is L2-penalised (not the intercept) and fit by Newton's
method (:func:`fit_logistic`).

Departures: a shop would also log dwell time, add-to-cart and revenue, and fit
a larger model (gradient-boosted trees are common); a linear model keeps the
reading short. The click statistics ignore position bias (no inverse-propensity
weighting).
"""

from __future__ import annotations

import numpy as np

from qrw.config import check, invariant

FEATURES = ("position", "bm25", "overlap", "popularity", "price", "category named", "other category",
            "brand named", "other brand", "value conflict", "word-category max", "word-category mean",
            "word-brand max", "word-title")


# ----------------------------------------------------------------------------------------------
# Pure helpers
# ----------------------------------------------------------------------------------------------

def sigmoid(z: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def fit_logistic(X: np.ndarray, y: np.ndarray, l2: float = 1.0, max_iter: int = 50,
                 tol: float = 1e-10) -> np.ndarray:
    """Weights (F,) of ``P(y = 1 | x) = sigmoid(X @ w)`` by Newton's method (IRLS), L2 on all but column 0.

    ``X`` (N, F) with column 0 the intercept (all ones); ``y`` (N,) in {0, 1}.
    Minimises ``-sum log-likelihood + l2 / 2 * |w[1:]|^2``; stops when a Newton
    step changes no weight by more than ``tol``.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    invariant(X.ndim == 2 and y.shape == (X.shape[0],), "X must be (N, F) and y (N,)")
    penalty = np.full(X.shape[1], float(l2))
    penalty[0] = 0.0
    w = np.zeros(X.shape[1])
    for _ in range(max_iter):
        p = sigmoid(X @ w)  # (N,)
        gradient = X.T @ (p - y) + penalty * w  # (F,)
        hessian = (X * (p * (1 - p))[:, None]).T @ X + np.diag(penalty) + 1e-9 * np.eye(len(w))  # (F, F)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.max(np.abs(step)) < tol:
            break
    return w


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: P(a positive scores above a negative), ties counting 1/2 (Mann-Whitney U).

    >>> auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    0.75
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    check(n_pos > 0 and n_neg > 0, "AUC needs at least one positive and one negative")
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores))
    # average rank (1-based) over each run of tied scores
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], len(scores)]
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def at_risk_impressions(sessions) -> tuple[list[int], np.ndarray, np.ndarray]:
    """The impressions a conversion model is fit on: ``(session index, position, purchased)`` per impression.

    Positions up to and including the purchase, or the whole page when nothing
    was bought (see the module docstring). Returns ``rows`` (list, length M),
    ``positions`` (M,) int64 and ``labels`` (M,) int64.
    """
    rows, positions, labels = [], [], []
    for r, s in enumerate(sessions):
        last = s.purchased if s.purchased >= 0 else len(s.shown) - 1
        for i in range(last + 1):
            rows.append(r)
            positions.append(i)
            labels.append(int(i == s.purchased))
    return rows, np.array(positions, dtype=np.int64), np.array(labels, dtype=np.int64)


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------

class ConversionModel:
    """P(purchase | query, product, position) fit on logged sessions (see the module docstring).

    Args:
        products: the catalog (``Product`` records: id, category, brand, attrs,
            price, popularity, title), id = position.
        engine: the shop's :class:`~qrw.shop.search.SearchEngine` over those titles
            (its BM25 weights are a feature).
        l2: L2 penalty of the logistic regression (on standardised features).
        smoothing: pseudo-impressions ``a`` of the word statistics.
    """

    def __init__(self, products, engine, l2: float = 1.0, smoothing: float = 20.0) -> None:
        check(l2 >= 0 and smoothing > 0, "the conversion model needs l2 >= 0 and smoothing > 0")
        self.engine, self.l2, self.smoothing = engine, l2, smoothing
        categories = sorted({p.category for p in products})
        brands = sorted({p.brand for p in products})
        self.category_index = {c: i for i, c in enumerate(categories)}
        self.brand_index = {b: i for i, b in enumerate(brands)}
        self.product_category = np.array([self.category_index[p.category] for p in products])  # (n,)
        self.product_brand = np.array([self.brand_index[p.brand] for p in products])  # (n,)
        self.product_values = [frozenset(v for _, v in p.attrs) for p in products]
        self.product_attrs = [dict(p.attrs) for p in products]
        self.title_words = [frozenset(p.title.split()) for p in products]
        popularity = np.array([p.popularity for p in products], dtype=np.float64)
        prices = np.array([p.price for p in products], dtype=np.float64)
        self.log_popularity = np.empty(len(products))
        self.log_price = np.empty(len(products))
        for c in range(len(categories)):
            members = self.product_category == c
            self.log_popularity[members] = np.log(popularity[members] / popularity[members].max())
            self.log_price[members] = np.log(prices[members] / np.median(prices[members]))
        # catalog phrases a query may name, in catalog words: (phrase, slot, value)
        self.value_attrs: dict[str, set[str]] = {}
        for p in products:
            for attr, value in p.attrs:
                self.value_attrs.setdefault(value, set()).add(attr)
        self._phrases = [(c, "category") for c in categories] + [(b, "brand") for b in brands] + \
            [(v, "value") for v in sorted(self.value_attrs)]
        self.words: dict[str, int] = {}
        self.word_category = np.zeros((0, len(categories)))  # (W, C) log click lift
        self.word_brand = np.zeros((0, len(brands)))  # (W, Br)
        self.title_vocab = {w: i for i, w in enumerate(sorted({w for p in products for w in p.title.split()}))}
        self.title_ids = [np.array(sorted(self.title_vocab[w] for w in p.title.split()), dtype=np.int64)
                          for p in products]
        self.word_title = np.zeros((0, len(self.title_vocab)))  # (W, T)
        self.mean = self.std = self.weights = None

    # -- what the query names ----------------------------------------------------------------------

    def _named(self, text: str) -> tuple[set[int], set[int], set[str]]:
        """Categories, brands (indices) and attribute values the text names in catalog words."""
        padded = f" {text.lower()} "
        categories, brands, values = set(), set(), set()
        for phrase, slot in self._phrases:
            if f" {phrase} " in padded:
                if slot == "category":
                    categories.add(self.category_index[phrase])
                elif slot == "brand":
                    brands.add(self.brand_index[phrase])
                else:
                    values.add(phrase)
        return categories, brands, values

    # -- the word statistics -------------------------------------------------------------------------

    def _fit_word_statistics(self, sessions) -> None:
        """Smoothed click-through lifts per (query word, category) and (query word, brand) from every impression."""
        words: dict[str, int] = {}
        cells_w, cells_p, clicked = [], [], []
        for s in sessions:
            ids = [words.setdefault(w, len(words)) for w in set(s.query.lower().split())]
            clicks = set(s.clicked)
            for pos, pid in enumerate(s.shown):
                for w in ids:
                    cells_w.append(w)
                    cells_p.append(pid)
                    clicked.append(pos in clicks)
        self.words = words
        cells_w = np.array(cells_w, dtype=np.int64)
        cells_p = np.array(cells_p, dtype=np.int64)
        clicked = np.array(clicked, dtype=np.float64)
        ctr = max(float(clicked.mean()) if len(clicked) else 0.0, 1e-6)
        a = self.smoothing
        tables = []
        for keys, size in ((self.product_category, len(self.category_index)), (self.product_brand,
                                                                                len(self.brand_index))):
            impressions = np.zeros((len(words), size))
            clicks = np.zeros((len(words), size))
            if len(cells_w):
                np.add.at(impressions, (cells_w, keys[cells_p]), 1.0)
                np.add.at(clicks, (cells_w, keys[cells_p]), clicked)
            tables.append(np.log((clicks + a * ctr) / (impressions + a) / ctr))  # (W, K), 0 where never shown
        self.word_category, self.word_brand = tables
        # (query word, title word): every title word of every impression
        lengths = np.array([len(self.title_ids[p]) for p in cells_p], dtype=np.int64)
        flat_t = np.concatenate([self.title_ids[p] for p in cells_p]) if len(cells_p) else np.zeros(0, np.int64)
        flat_w = np.repeat(cells_w, lengths)
        impressions = np.zeros((len(words), len(self.title_vocab)))
        clicks = np.zeros_like(impressions)
        np.add.at(impressions, (flat_w, flat_t), 1.0)
        np.add.at(clicks, (flat_w, flat_t), np.repeat(clicked, lengths))
        self.word_title = np.log((clicks + a * ctr) / (impressions + a) / ctr)  # (W, T)

    # -- features ------------------------------------------------------------------------------------

    def features(self, query_texts: list[str], page_ids: np.ndarray) -> np.ndarray:
        """(B, k, F) raw features of every slot of every page (see :data:`FEATURES`); zeros for empty slots."""
        page_ids = np.asarray(page_ids, dtype=np.int64)
        invariant(page_ids.ndim == 2 and len(query_texts) == page_ids.shape[0], "need one (k,) page per query")
        B, k = page_ids.shape
        out = np.zeros((B, k, len(FEATURES)))
        positions = np.log1p(np.arange(k, dtype=np.float64))  # (k,)
        vocab, weights = self.engine.vocab, self.engine.weights
        for b, text in enumerate(query_texts):
            ids = page_ids[b]
            present = ids >= 0
            if not present.any():
                continue
            slots = np.flatnonzero(present)
            pids = ids[present]  # (m,)
            word_list = sorted(set(text.lower().split()))  # sorted: sums in one order whatever the hash seed
            query_words = set(word_list)
            terms = sorted({vocab[w] for w in query_words if w in vocab})
            bm25 = weights[terms][:, pids].sum(axis=0) if terms else np.zeros(len(pids))  # (m,)
            categories, brands, values = self._named(text)
            known = [self.words[w] for w in word_list if w in self.words]
            cat = self.product_category[pids]  # (m,)
            brand = self.product_brand[pids]
            if known:
                wc = self.word_category[known][:, cat]  # (words, m)
                wb = self.word_brand[known][:, brand]
                wc_max, wc_mean, wb_max = wc.max(axis=0), wc.sum(axis=0) / len(query_words), wb.max(axis=0)
                wt_rows = self.word_title[known]  # (words, T)
                wt = np.array([wt_rows[:, self.title_ids[p]].max(axis=1).sum() / len(query_words) for p in pids])
            else:
                wc_max = wc_mean = wb_max = wt = np.zeros(len(pids))
            rows = out[b, slots]  # (m, F) copy, written back below
            rows[:, 0] = positions[slots]
            rows[:, 1] = bm25
            rows[:, 2] = [len(query_words & self.title_words[p]) / max(len(query_words), 1) for p in pids]
            rows[:, 3] = self.log_popularity[pids]
            rows[:, 4] = self.log_price[pids]
            rows[:, 5] = [c in categories for c in cat]
            rows[:, 6] = [bool(categories - {c}) for c in cat]
            rows[:, 7] = [br in brands for br in brand]
            rows[:, 8] = [bool(brands - {br}) for br in brand]
            rows[:, 9] = [self._conflicts(values, p) for p in pids]
            rows[:, 10], rows[:, 11], rows[:, 12], rows[:, 13] = wc_max, wc_mean, wb_max, wt
            out[b, slots] = rows
        return out

    def _conflicts(self, values: set[str], pid: int) -> int:
        """How many named values the product contradicts: it has one of their attributes, with another value."""
        attrs = self.product_attrs[pid]
        return sum(1 for v in values if v not in self.product_values[pid]
                   and any(a in attrs for a in self.value_attrs[v]))

    def _design(self, raw: np.ndarray) -> np.ndarray:
        """(M, 1 + F): intercept and standardised features."""
        return np.concatenate([np.ones((len(raw), 1)), (raw - self.mean) / self.std], axis=1)

    # -- fit and predict -----------------------------------------------------------------------------

    def fit(self, sessions) -> "ConversionModel":
        """Fit the word statistics and the logistic regression on logged sessions (:class:`LoggedSession`)."""
        check(len(sessions) > 0, "the conversion model needs logged sessions to fit on")
        self._fit_word_statistics(sessions)
        rows, positions, labels = at_risk_impressions(sessions)
        check(0 < labels.sum() < len(labels), "the logs need both purchases and impressions without one")
        raw = self.session_features(sessions)[rows, positions]  # (M, F)
        self.mean = raw.mean(axis=0)
        self.std = np.where(raw.std(axis=0) > 1e-12, raw.std(axis=0), 1.0)
        self.weights = fit_logistic(self._design(raw), labels, self.l2)
        return self

    def session_features(self, sessions) -> np.ndarray:
        """(S, k, F) features of the logged pages (k = longest page)."""
        k = max((len(s.shown) for s in sessions), default=1) or 1
        pages = np.full((len(sessions), k), -1, dtype=np.int64)
        for r, s in enumerate(sessions):
            pages[r, :len(s.shown)] = s.shown
        return self.features([s.query for s in sessions], pages)

    def purchase_probs(self, query_texts: list[str], page_ids: np.ndarray) -> np.ndarray:
        """(B, k) the model's P(buy at slot i | still on the page); 0 for empty slots."""
        invariant(self.weights is not None, "fit the conversion model first")
        page_ids = np.asarray(page_ids, dtype=np.int64)
        raw = self.features(query_texts, page_ids)  # (B, k, F)
        B, k, F = raw.shape
        p = sigmoid(self._design(raw.reshape(B * k, F)) @ self.weights).reshape(B, k)
        return np.where(page_ids >= 0, p, 0.0)

    def page_conversion(self, query_texts: list[str], page_ids: np.ndarray) -> np.ndarray:
        """(B,) predicted expected purchases per user of each page, ``1 - prod_i (1 - p_i)``."""
        return 1.0 - np.prod(1.0 - self.purchase_probs(query_texts, page_ids), axis=1)

    def coefficients(self) -> dict[str, float]:
        """Feature name -> its weight (on the standardised feature), plus the intercept."""
        invariant(self.weights is not None, "fit the conversion model first")
        return dict(zip(("intercept",) + FEATURES, self.weights.tolist()))
