"""Mined rewrite pairs: shoppers who reformulate, and the pairs production mines from their sessions.

Production rewriters (JD.com's in "Relevance Matters", Dai et al., arXiv
2603.02555; Taobao's BEQUE) learn from rewrite pairs *mined from search logs*,
not from clean labels: a query, and the reformulation after which the same user
bought something. Such pairs drift from the query's meaning, because users
change their minds: someone who typed "blk samsung phone" and bought after
typing "phone" gives a broadened pair; after "iphone", a brand-switched one;
after "phone case", a complement. That drift is the problem the paper's
relevance task and relevance reward exist to fix. This module builds it from
the behaviour of simulated shoppers, never by flipping labels.

**The sessions** (:func:`simulate_sessions`). Every training query starts
``WorldConfig.mining_sessions_per_query`` sessions; its user holds the query's
intent and has typed its text (the world's rendering, user vocabulary and
noise). Then:

1. the user sees ``topk(query)`` (:class:`~qrw.shop.search.SearchEngine`) and
   shops it as :class:`~qrw.shop.users.UserSimulator` does (examination, clicks,
   purchases graded for the intent held); a purchase ends the session;
2. a user who did not buy reformulates with probability ``P_REFORMULATE``
   (else leaves), choosing how by ``REFORMULATION_WEIGHTS`` among the kinds the
   intent allows (:func:`reformulated_intent`):

   - ``rephrased``: the same intent in other words, typed with more catalog
     words (``P_CANONICAL_REFORMULATION``);
   - ``broadened``: the bare category (brand and attributes given up);
   - ``attribute dropped``: one attribute given up;
   - ``narrowed``: an attribute value added (or a brand, when every attribute
     is named);
   - ``brand switched``: another brand of the category;
   - ``complement``: a complementary category (``COMPLEMENT_PAIRS``: a case
     for the phone), with the brand kept when that category sells it;

   the new intent is typed with the world's rendering (training-query
   vocabulary: no log-only variant) and is the intent the user *now holds*;
3. the user shops ``topk(reformulation)`` with the purchase probabilities of
   that held intent.

**The mining** (:func:`mine_pairs`), as production does it, seeing only texts
and purchases: ``(first query -> reformulation)`` for every session that
ended with a purchase after the reformulation (kind: how the user
reformulated); and ``shared purchase`` pairs: a query whose user bought on the
first page, paired with the commonest *other* query text whose users bought
the same product, when enough sessions did (``SHARED_SUPPORT`` per session of
traffic per training query: at least 8 sessions for the default 6). Identical
(query, rewrite) pairs are kept once. Each pair is graded by the judge against
the *first* query's intent (2 / 1 / 0). The kind is recorded for statistics
only: nothing downstream reads it, and the grade is the judge's.

What survives mining is the users' doing: only users whose first page sold
them nothing reformulate, and a reformulation is mined only if its page sells
(on the default world about 34% of rephrasings convert, 18% of broadenings,
whose bare category is often typed in a user word no title has). There, 48,000
sessions give 6,525 pairs from 4,603 of the 8,000 training queries, 30% of
them graded below 2 (seeds 1 and 2: 33%, 38%); ``python -m qrw.world --stats``
prints the shares per kind.

No leakage: first queries are training queries; a reformulation whose
``(intent, forms)`` is a val/test query's, or whose text is a val/test query's
text, is typed again (:meth:`~qrw.shop.world.World.render_training_query`), so
no val/test query text appears on either side of a mined pair.

Randomness: one generator seeded by ``(world seed, 5)``, separate from the
world's other streams, so mining changes nothing else the world produces.

Departures: one reformulation per session at most; a reformulation is typed
afresh from its intent, not edited word by word from the first query; the
sessions start from the training queries (each the same number of times)
rather than from a stream of logged traffic; the "shared purchase" rule pairs
texts, not a click graph with weights.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from qrw.shop.judge import Judge
from qrw.shop.lexicon import Draws, Intent, Lexicon, Query
from qrw.shop.search import SearchEngine
from qrw.shop.users import UserSimulator

REFORMULATION_KINDS = ("rephrased", "broadened", "attribute dropped", "narrowed", "brand switched", "complement")
KINDS = REFORMULATION_KINDS + ("shared purchase",)

# The shoppers' behaviour. Each constant with its one-line reason.
PAGE_SIZE = 10                   # the results page of the rest of qrw (evaluation and rewards use k = 10)
P_REFORMULATE = 0.6              # most users who find nothing to buy try again, a large minority leaves
P_CANONICAL_REFORMULATION = 0.6  # a second query borrows title words from the page just seen (0.3 for first queries)
REFORMULATION_WEIGHTS = (        # how a user who retypes changes the query (renormalised over the kinds allowed)
    0.60,                        # rephrased: most users keep what they want and try other words
    0.10,                        # broadened: give up on the specifics, browse the category
    0.08,                        # attribute dropped: relax one constraint
    0.08,                        # narrowed: add a detail after seeing too broad a page
    0.07,                        # brand switched: settle for another brand
    0.07,                        # complement: shop for the accessory instead (a case, a charger)
)
SHARED_SUPPORT = 4 / 3           # minimum support per session of traffic per query (8 at the default 6): scaled with
                                 # the log volume as production scales it, so one-off coincidences stay out
RETYPE_TRIES = 4                 # a reformulation equal to the first query (or a held-out one) is typed again


@dataclass(frozen=True)
class MinedPair:
    """One mined rewrite pair: ``query -> rewrite``, how it arose (``kind``), and its judge ``grade``.

    ``intent`` is the first query's intent (what ``grade`` is measured against).
    """

    query: str
    rewrite: str
    kind: str
    grade: int
    intent: Intent


@dataclass(frozen=True)
class Session:
    """One simulated shopping session.

    ``query``: the first query (a training query). ``reformulation``, ``kind``:
    the second query and how the user changed it (None when the user bought on
    the first page, left, or could not retype). ``purchased``: the product
    bought (-1: none); ``after_reformulating``: bought on the second page.
    """

    query: Query
    reformulation: str | None
    kind: str | None
    purchased: int
    after_reformulating: bool


# ----------------------------------------------------------------------------------------------
# The shoppers
# ----------------------------------------------------------------------------------------------

def applicable_kinds(lexicon: Lexicon, intent: Intent) -> list[str]:
    """The reformulation kinds an intent allows (``rephrased`` always)."""
    missing = [a for a, _ in lexicon.category_attrs[intent.category] if a not in intent.attr_dict()]
    allowed = {
        "rephrased": True,
        "broadened": intent.brand is not None or bool(intent.attrs),
        "attribute dropped": bool(intent.attrs),
        "narrowed": bool(missing) or intent.brand is None,
        "brand switched": intent.brand is not None and len(lexicon.category_brands[intent.category]) > 1,
        "complement": bool(lexicon.complements[intent.category]),
    }
    return [kind for kind in REFORMULATION_KINDS if allowed[kind]]


def reformulated_intent(lexicon: Lexicon, intent: Intent, kind: str, draws: Draws) -> Intent:
    """The intent a user holding ``intent`` holds after reformulating by ``kind`` (one of ``applicable_kinds``)."""
    attrs = list(intent.attrs)
    if kind == "rephrased":
        return intent
    if kind == "broadened":
        return Intent(intent.category)
    if kind == "attribute dropped":
        del attrs[draws.below(len(attrs))]
        return Intent(intent.category, intent.brand, tuple(attrs))
    if kind == "narrowed":
        category_attrs = dict(lexicon.category_attrs[intent.category])
        missing = [a for a in category_attrs if a not in intent.attr_dict()]
        if not missing:
            return Intent(intent.category, draws.pick(lexicon.category_brands[intent.category]), intent.attrs)
        attr = draws.pick(missing)
        return Intent(intent.category, intent.brand, tuple(sorted(attrs + [(attr, draws.pick(category_attrs[attr]))])))
    if kind == "brand switched":
        return Intent(intent.category, draws.pick([b for b in lexicon.category_brands[intent.category]
                                                   if b != intent.brand]), intent.attrs)
    if kind == "complement":
        partner = draws.pick(lexicon.complements[intent.category])
        keeps_brand = intent.brand in lexicon.category_brands[partner]
        return Intent(partner, intent.brand if keeps_brand else None)
    raise ValueError(f"unknown reformulation kind {kind!r}")


def _shop(judge: Judge, users: UserSimulator, pages: np.ndarray, intents: list[Intent],
          rng: np.random.Generator) -> np.ndarray:
    """(B,) the product each user bought on their page (B, k) for the intent they hold, -1 for none."""
    grades = np.stack([judge.grade_products(intent)[np.maximum(page, 0)]
                       for intent, page in zip(intents, pages)]) if len(intents) else np.zeros_like(pages)  # (B, k)
    clicks, bought = users.sample_sessions(pages, grades, rng)  # (B, k), (B,)
    last_click = pages.shape[1] - 1 - np.argmax(clicks[:, ::-1], axis=1)  # (B,) the purchase ends the clicks
    return np.where(bought == 1, pages[np.arange(len(pages)), last_click], -1)


def _retype(world, intent: Intent, first_text: str, held_out_texts: set[str], draws: Draws) -> str | None:
    """The reformulation's text: ``intent`` typed anew, not the first query, not a val/test query (or None)."""
    for _ in range(RETYPE_TRIES):
        rendered = world.render_training_query(intent, draws, P_CANONICAL_REFORMULATION)
        if rendered is not None and rendered[0] != first_text and rendered[0] not in held_out_texts:
            return rendered[0]
    return None


def simulate_sessions(world, rng: np.random.Generator, queries: list[Query] | None = None) -> list[Session]:
    """Shopping sessions with reformulations, started from every training query (see the module docstring).

    ``world`` is a :class:`~qrw.shop.world.World`; ``queries``: start from these
    instead (evaluation only: :func:`qrw.shop.relevance.held_out_mined_pairs`).
    Deterministic given ``rng``'s seed.
    """
    draws_rng, shop_rng = rng.spawn(2)
    draws = Draws(draws_rng)
    lexicon, judge = world.lexicon, world.judge
    engine = SearchEngine(world.titles, world.popularity)
    users = UserSimulator(world)
    held_out_texts = {q.text for split in ("val", "test") for q in world.queries[split]}
    queries = world.queries["train"] if queries is None else queries
    starts = [q for q in queries for _ in range(world.config.mining_sessions_per_query)]
    first_pages, _ = engine.search([q.text for q in starts], PAGE_SIZE)  # (S, k)
    first_purchase = _shop(judge, users, first_pages, [q.intent for q in starts], shop_rng)  # (S,)
    retyped: list[tuple[int, str, str, Intent]] = []  # (session, reformulation, kind, intent now held)
    for i, query in enumerate(starts):
        if first_purchase[i] >= 0 or draws.random() >= P_REFORMULATE:
            continue
        kinds = applicable_kinds(lexicon, query.intent)
        weights = [REFORMULATION_WEIGHTS[REFORMULATION_KINDS.index(kind)] for kind in kinds]
        kind = kinds[draws.weighted(list(itertools.accumulate(weights)))]
        intent = reformulated_intent(lexicon, query.intent, kind, draws)
        text = _retype(world, intent, query.text, held_out_texts, draws)
        if text is not None:
            retyped.append((i, text, kind, intent))
    second_pages, _ = engine.search([text for _, text, _, _ in retyped], PAGE_SIZE)  # (R, k)
    second_purchase = _shop(judge, users, second_pages, [intent for *_, intent in retyped], shop_rng)  # (R,)
    second = {i: (text, kind, int(bought)) for (i, text, kind, _), bought in zip(retyped, second_purchase)}
    sessions = []
    for i, query in enumerate(starts):
        text, kind, bought = second.get(i, (None, None, -1))
        if first_purchase[i] >= 0:
            sessions.append(Session(query, None, None, int(first_purchase[i]), False))
        else:
            sessions.append(Session(query, text, kind, bought, bought >= 0))
    return sessions


# ----------------------------------------------------------------------------------------------
# The mining
# ----------------------------------------------------------------------------------------------

def mine_pairs(judge: Judge, sessions: list[Session], min_support: int) -> list[MinedPair]:
    """Rewrite pairs from sessions, by the two rules of the module docstring, each graded by the judge.

    Reformulation pairs first (in session order), then shared-purchase pairs
    (the rewrite bought the same product in ``min_support`` sessions or more);
    a (query, rewrite) pair already mined is not added again.
    """
    pairs: list[MinedPair] = []
    seen: set[tuple[str, str]] = set()

    def add(query: Query, rewrite: str, kind: str) -> None:
        if (query.text, rewrite) not in seen:
            seen.add((query.text, rewrite))
            pairs.append(MinedPair(query.text, rewrite, kind, judge.grade_rewrite(query.intent, rewrite),
                                   query.intent))

    buyers: dict[int, Counter] = {}  # product -> how many sessions bought it after each text
    for s in sessions:
        if s.after_reformulating:
            add(s.query, s.reformulation, s.kind)
        if s.purchased >= 0:
            text = s.reformulation if s.after_reformulating else s.query.text
            buyers.setdefault(s.purchased, Counter())[text] += 1
    for s in sessions:
        if s.purchased >= 0 and not s.after_reformulating:
            others = [(n, text) for text, n in buyers[s.purchased].items()
                      if text != s.query.text and n >= min_support]
            if others:
                add(s.query, min(others, key=lambda o: (-o[0], o[1]))[1], "shared purchase")
    return pairs


def mine_rewrite_pairs(world, rng: np.random.Generator, queries: list[Query] | None = None) -> list[MinedPair]:
    """The world's mined rewrite pairs: :func:`simulate_sessions` (from the training queries, or ``queries``),
    then :func:`mine_pairs`."""
    min_support = max(2, math.ceil(SHARED_SUPPORT * world.config.mining_sessions_per_query))
    return mine_pairs(world.judge, simulate_sessions(world, rng, queries), min_support)
