"""A logged search as a shop stores it, and what a search team derives from its logs.

:class:`LoggedSession` is the record: the text typed, the page shown, the clicks,
the purchase. It carries no intent, no gold rewrite and no grade, so a module that
trains on these records reads nothing hidden. How the records are simulated over
the world's traffic is :mod:`qrw.shop.logs` (world side: it plays the shoppers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qrw.config import check

LOG_STREAM = 11  # the logs' random stream, apart from the world's (1-5) and mining's own


@dataclass(frozen=True)
class LoggedSession:
    """One logged search, as a shop stores it.

    ``query``: the text typed. ``shown``: the product ids the engine showed, best
    first (empty for a null result). ``clicked``: the positions clicked
    (0-based, ascending). ``purchased``: the position bought (-1: nothing;
    always a clicked position: the session ends with the purchase).
    """

    query: str
    shown: tuple[int, ...]
    clicked: tuple[int, ...]
    purchased: int

    @property
    def clicked_ids(self) -> tuple[int, ...]:
        """The product ids clicked, in page order."""
        return tuple(self.shown[i] for i in self.clicked)

    @property
    def purchased_id(self) -> int:
        """The product id bought, -1 for none."""
        return self.shown[self.purchased] if self.purchased >= 0 else -1


def split_by_query(sessions: list[LoggedSession], held_out_share: float,
                   seed: int) -> tuple[list[LoggedSession], list[LoggedSession]]:
    """``(fit, held_out)``: the sessions split by distinct query text, a seeded ``held_out_share`` of the texts held out.

    Every session of a text lands on the same side, so a model fit on ``fit`` is
    measured on searches it never saw. Order within each side is kept.
    """
    check(0.0 < held_out_share < 1.0, f"held_out_share must be in (0, 1) (got {held_out_share})")
    texts = sorted({s.query for s in sessions})
    order = np.random.default_rng([seed, LOG_STREAM, 1]).permutation(len(texts))
    held = {texts[i] for i in order[:int(round(held_out_share * len(texts)))]}
    return [s for s in sessions if s.query not in held], [s for s in sessions if s.query in held]


def session_texts(sessions: list[LoggedSession], titles: list[str]) -> list[str]:
    """Sessions as stage-0 text: ``"search: blk kicks | clicked: nike sneakers black | purchased: ..."``.

    Each clicked product once (``purchased:`` for the one bought); a session
    without a click reads ``"search: <query> | no click"``.
    """
    out = []
    for s in sessions:
        parts = [f"search: {s.query}"]
        parts += [f"{'purchased' if pos == s.purchased else 'clicked'}: {titles[s.shown[pos]]}" for pos in s.clicked]
        out.append(" | ".join(parts if s.clicked else parts + ["no click"]))
    return out


def click_pairs(sessions: list[LoggedSession], titles: list[str],
                purchases_only: bool = False) -> list[tuple[str, str]]:
    """``(query, title)`` for every click (or only every purchase): what a log-fit dictionary learns from."""
    pairs = []
    for s in sessions:
        ids = ((s.purchased_id,) if s.purchased >= 0 else ()) if purchases_only else s.clicked_ids
        pairs += [(s.query, titles[pid]) for pid in ids]
    return pairs
