"""Search logs as a shop records them: the query, the page the engine showed, clicks and the purchase.

A search team does not know what its shoppers wanted. It stores, per search, the
text typed, the products its engine showed (in order), which of them were
clicked and which (if any) was bought. :class:`LoggedSession` is that record and
nothing more: it carries no intent, no gold rewrite and no grade, so a module
that trains on these records cannot read the hidden truth through them (a test
checks the fields).

**How the sessions are simulated** (:func:`simulate_logs`):

1. *The traffic.* The in-domain searches are the world's own logged traffic,
   the query texts of ``world.logs`` in their order (rendered in user
   vocabulary with a preference for rare and log-only variants; every
   ``(intent, variant combination)`` of a val/test query left out, as
   :meth:`~qrw.shop.world.World._build_logs` does). Among them, at a share
   ``LogConfig.ood_share`` of all sessions, searches for products the shop
   does not sell (:mod:`qrw.shop.ood`, its ``train`` nouns only, so the gate's
   val/test out-of-domain queries never occur in the logs), drawn with
   repetition from a pool as popular searches repeat.
2. *The page.* The engine (:class:`~qrw.shop.search.SearchEngine`, BM25 plus a
   popularity prior) shows ``topk(query)``; an out-of-domain search whose words
   no title has gets an empty page (a null result).
3. *The shopper.* A shopper holding the query's intent (for the world's texts,
   the intent the world rendered them from; an out-of-domain shopper wants
   nothing the catalog has, so every product is IRRELEVANT to them) scans the
   page as :meth:`~qrw.shop.users.UserSimulator.sample_sessions` does:
   position-decaying examination, clicks by the judge's grade of each shown
   product, at most one purchase, after which the session ends. Position bias
   in the logged clicks follows from the examination model; nothing else
   favours the top.

Only what a shop stores is kept. Deterministic in the world's seed: one
generator of its own (``[seed, LOG_STREAM]``), so simulating the logs changes
nothing else the world produces.

**The out-of-domain share.** ``DEFAULT_OOD_SHARE = 0.10`` is an assumption,
anchored on published null-result rates of e-commerce site search: Luigi's Box
("Why 13% of searches return no results", 2021) measured 13% of searches with
no results on average across its shops, from products not sold but also from
synonyms, slang and typos; vendors' benchmarks call under 5% healthy and over
10% a problem. Our world already produces the vocabulary part of that (log-only
variants, typos), so the not-sold part is set below 13%, at 10%.

Departures: one query per session (reformulations are :mod:`qrw.shop.mining`'s);
the in-domain traffic reuses the world's logged query texts rather than a
stream of its own; no dwell time, add-to-cart or revenue.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qrw.config import arg, check
from qrw.shop.ood import MAX_OOD_QUERIES, checked_ood_queries
from qrw.shop.sessions import (LOG_STREAM, LoggedSession, click_pairs, session_texts,  # noqa: F401  (re-exported)
                               split_by_query)
from qrw.shop.search import SearchEngine
from qrw.shop.users import UserSimulator

DEFAULT_OOD_SHARE = 0.10  # share of logged searches for products the shop does not sell (see the module doc)


@dataclass
class LogConfig:
    """How the shop's logs are simulated on top of a world's traffic."""

    ood_share: float = arg(DEFAULT_OOD_SHARE, "share of logged searches for products the shop does not sell "
                                              "(an assumption below published null-result rates, ~13%)")
    page_size: int = arg(10, "products on a results page (the rest of qrw uses 10)")

    def __post_init__(self) -> None:
        check(0.0 <= self.ood_share < 1.0, "--ood-share must be in [0, 1)")
        check(self.page_size >= 1, "--page-size must be >= 1")


def simulate_logs(world, config: LogConfig | None = None, engine: SearchEngine | None = None,
                  users: UserSimulator | None = None) -> list[LoggedSession]:
    """The shop's logged sessions over ``world``'s traffic (see the module docstring).

    ``world``: a :class:`~qrw.shop.world.World` (its ``logs``, ``log_queries``,
    ``judge``, ``titles``, ``popularity``, seed). ``engine`` and ``users`` default
    to the world's engine and shoppers as :class:`~qrw.shop.shop.Shop` builds
    them. Returns ``n_in + n_ood`` sessions with ``n_in = len(world.logs)`` and
    ``n_ood = round(n_in * share / (1 - share))``, out-of-domain ones at seeded
    random places. Deterministic in the world and ``config``.
    """
    config = config if config is not None else LogConfig()
    engine = engine if engine is not None else SearchEngine(world.titles, world.popularity)
    users = users if users is not None else UserSimulator(world)
    rng = np.random.default_rng([world.config.seed, LOG_STREAM])
    ood_rng, shop_rng = rng.spawn(2)
    texts_in = [text for text, _, _ in world.logs]
    intent_of = {q.text: q.intent for q in world.log_queries}  # the world's record of what each text meant
    n_in = len(texts_in)
    share = config.ood_share
    n_ood = int(round(n_in * share / (1.0 - share))) if n_in else 0
    is_ood = np.zeros(n_in + n_ood, dtype=bool)  # (N,)
    if n_ood:
        is_ood[ood_rng.choice(n_in + n_ood, size=n_ood, replace=False)] = True
        pool = checked_ood_queries(world, min(n_ood, MAX_OOD_QUERIES), "train")
        picks = ood_rng.integers(len(pool), size=n_ood)  # repeated searches, as popular ones repeat
        texts_ood = [pool[i] for i in picks]
    else:
        texts_ood = []
    texts, intents = [], []
    it_in, it_ood = iter(texts_in), iter(texts_ood)
    for ood in is_ood:
        text = next(it_ood) if ood else next(it_in)
        texts.append(text)
        intents.append(None if ood else intent_of.get(text, world.judge.parse(text)))
    if not texts:
        return []
    pages, _ = engine.search(texts, config.page_size)  # (N, k), -1 past the matching products
    grades = np.zeros(pages.shape, dtype=np.int64)  # (N, k): IRRELEVANT for out-of-domain shoppers
    for row, intent in enumerate(intents):
        if intent is not None:
            grades[row] = world.judge.grade_products(intent)[np.maximum(pages[row], 0)]
    clicks, bought = users.sample_sessions(pages, grades, shop_rng)  # (N, k) bool, (N,)
    k = pages.shape[1]
    last_click = k - 1 - np.argmax(clicks[:, ::-1], axis=1)  # (N,): the purchase is the last click
    sessions = []
    for row, text in enumerate(texts):
        shown = pages[row][pages[row] >= 0]
        sessions.append(LoggedSession(text, tuple(shown.tolist()), tuple(np.flatnonzero(clicks[row]).tolist()),
                                      int(last_click[row]) if bought[row] else -1))
    return sessions
