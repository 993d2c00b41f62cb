"""Simulated shoppers: examination, clicks and purchases on a results page; UCVR.

The paper measures user conversion (UCVR: purchases per user) in an online A/B
test at JD.com. Here a shopper who holds the query's true intent looks at the
page (B, k) produced by ``SearchEngine.pages`` and, independently at each
position i (0-based):

    P(examine i)            = (1 + i) ** -examination_power            position bias
    P(click | examined)     = click_prob[grade]                        grade from Judge.grade_products
    P(buy | clicked)        = min(1, buy_prob[grade] * appeal(product))
    appeal(product)         = relative_popularity ** popularity_power * relative_price ** -price_power

with ``relative_popularity = popularity / best-seller popularity of its
category`` (1 for the best-seller) and ``relative_price = price / median price
of its category``. The shopper leaves after the first purchase, so purchases
per user are 0 or 1 and the expected value has a closed form:

    q_i = P(examine i) * P(click | examined) * P(buy | clicked)
    E[purchases] = 1 - prod_i (1 - q_i)

This is the low-variance conversion reward; ``sample_sessions`` draws the same
model by Monte Carlo for a simulated A/B test (its mean converges to the
closed form: a test checks it).

Why conversion alone can drift from relevance (the paper's motivation): the
default parameters let substitutes and complements of popular products sell.
Per examination, a category best-seller that is only a SUBSTITUTE (wrong
colour, other brand) sells with probability ``0.3 * 0.5 * 1.0 = 0.15``, as
often as an EXACT product ranked about 16th in its category
(``0.5 * 0.8 * (1/16) ** 0.35 = 0.15`` under the default Zipf popularity). A
broadened rewrite (bare category) fills the page with best-sellers and so
converts nearly as well as the gold rewrite (about 0.94x on the default
world) while showing about half as many relevant products: see
``python -m qrw.world --stats``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qrw.config import arg, check


@dataclass
class UserConfig:
    """Parameters of the simulated shopper. Grades: 0 irrelevant, 1 complement, 2 substitute, 3 exact."""

    examination_power: float = arg(0.7, "position bias: P(examine position i) = (1 + i) ** -power")
    click_irrelevant: float = arg(0.02, "P(click | examined) for an irrelevant product")
    click_complement: float = arg(0.10, "P(click | examined) for a complement (a case for the phone wanted)")
    click_substitute: float = arg(0.30, "P(click | examined) for a substitute (same category, not exact)")
    click_exact: float = arg(0.50, "P(click | examined) for an exact match")
    buy_irrelevant: float = arg(0.0, "base P(buy | click) for an irrelevant product")
    buy_complement: float = arg(0.15, "base P(buy | click) for a complement")
    buy_substitute: float = arg(0.50, "base P(buy | click) for a substitute")
    buy_exact: float = arg(0.80, "base P(buy | click) for an exact match")
    popularity_power: float = arg(0.35, "purchase appeal grows as (popularity / category best-seller) ** power")
    price_power: float = arg(0.3, "purchase appeal shrinks as (price / category median price) ** power")

    def __post_init__(self) -> None:
        check(self.examination_power >= 0, "--examination-power must be >= 0")
        for name in ("click_irrelevant", "click_complement", "click_substitute", "click_exact",
                     "buy_irrelevant", "buy_complement", "buy_substitute", "buy_exact"):
            check(0.0 <= getattr(self, name) <= 1.0, f"--{name.replace('_', '-')} must be in [0, 1]")
        check(self.popularity_power >= 0, "--popularity-power must be >= 0")
        check(self.price_power >= 0, "--price-power must be >= 0")

    def click_probs(self) -> np.ndarray:
        """(4,) P(click | examined) indexed by grade."""
        return np.array([self.click_irrelevant, self.click_complement, self.click_substitute, self.click_exact])

    def buy_probs(self) -> np.ndarray:
        """(4,) base P(buy | click) indexed by grade."""
        return np.array([self.buy_irrelevant, self.buy_complement, self.buy_substitute, self.buy_exact])


class UserSimulator:
    """Shoppers on result pages (see the module docstring for the model).

    ``world`` supplies per-product popularity, price and category (any object
    with ``popularity``, ``prices`` and ``products[i].category`` works).
    """

    def __init__(self, world, config: UserConfig | None = None) -> None:
        self.config = config if config is not None else UserConfig()
        popularity = np.asarray(world.popularity, dtype=np.float64)  # (n,)
        prices = np.asarray(world.prices, dtype=np.float64)  # (n,)
        categories = np.array([p.category for p in world.products])
        relative_popularity = np.empty_like(popularity)
        relative_price = np.empty_like(prices)
        for category in np.unique(categories):
            members = categories == category
            relative_popularity[members] = popularity[members] / popularity[members].max()
            relative_price[members] = prices[members] / np.median(prices[members])
        cfg = self.config
        self.appeal = relative_popularity ** cfg.popularity_power * relative_price ** -cfg.price_power  # (n,)
        self._click = cfg.click_probs()
        self._buy = cfg.buy_probs()

    def examination(self, k: int) -> np.ndarray:
        """(k,) P(examine position i)."""
        return (1.0 + np.arange(k)) ** -self.config.examination_power

    def purchase_probs(self, page_ids: np.ndarray, grades: np.ndarray) -> np.ndarray:
        """(B, k) probability that the shopper buys at each position if still on the page (0 for empty slots)."""
        page_ids = np.asarray(page_ids)
        grades = np.asarray(grades, dtype=np.int64)
        check(page_ids.shape == grades.shape and page_ids.ndim == 2, "page_ids and grades must both be (B, k)")
        present = page_ids >= 0
        appeal = self.appeal[np.where(present, page_ids, 0)]  # (B, k)
        grades = np.clip(grades, 0, 3)
        buy = np.minimum(1.0, self._buy[grades] * appeal)  # (B, k)
        q = self.examination(page_ids.shape[1])[None, :] * self._click[grades] * buy  # (B, k)
        return np.where(present, q, 0.0)

    def expected_purchases(self, page_ids: np.ndarray, grades: np.ndarray) -> np.ndarray:
        """(B,) expected purchases per user (UCVR) = 1 - prod_i (1 - q_i); closed form, no sampling."""
        return 1.0 - np.prod(1.0 - self.purchase_probs(page_ids, grades), axis=1)

    def sample_sessions(self, page_ids: np.ndarray, grades: np.ndarray,
                        rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One simulated shopper per page: ``clicks`` (B, k) bool, ``purchases`` (B,) int in {0, 1}.

        Examination, click and purchase are drawn per position; the shopper
        stops after the first purchase (later positions get no click).
        """
        page_ids = np.asarray(page_ids)
        grades = np.clip(np.asarray(grades, dtype=np.int64), 0, 3)
        check(page_ids.shape == grades.shape and page_ids.ndim == 2, "page_ids and grades must both be (B, k)")
        B, k = page_ids.shape
        present = page_ids >= 0
        examined = rng.random((B, k)) < self.examination(k)[None, :]
        clicks = examined & (rng.random((B, k)) < self._click[grades]) & present  # (B, k)
        appeal = self.appeal[np.where(present, page_ids, 0)]
        buys = clicks & (rng.random((B, k)) < np.minimum(1.0, self._buy[grades] * appeal))  # (B, k)
        bought = buys.any(axis=1)  # (B,)
        first = np.where(bought, buys.argmax(axis=1), k)  # (B,) position of the first purchase
        clicks &= np.arange(k)[None, :] <= first[:, None]
        return clicks, bought.astype(np.int64)
