"""The one door to the hidden truth: an annotation service in which the judge plays human annotators.

A shop that wants relevance labels sends (query, rewrite) pairs to annotators
and pays per label. :class:`AnnotationService` is that service over the world's
judge: ``label(pairs)`` takes **texts only** (the query as typed, the rewrite),
returns one label per pair in {0, 1, 2} (the scale of
:meth:`~qrw.shop.judge.Judge.grade_rewrite`: irrelevant, partial, equivalent),
and counts what it sold against a budget. Training code that holds a service
and no world reaches intents, gold rewrites and the judge only through it.

**Where the query's meaning comes from.** Inside the service only: for a text
the world generated (a train/val/test query, a logged query) the intent the
world rendered it from, from the world's own record; any other text is parsed
by the judge (an out-of-domain search parses to nothing: every rewrite of it is
labelled 0, nothing it asks for is sold, as :mod:`qrw.shop.relevance` labels
them). Validation and test queries are refused (``ValueError``): production
sends its annotators the traffic it trains on, and the held-out queries are for
the report.

**Annotators disagree.** Each annotator gives the judge's grade, replaced with
probability ``disagreement`` by a neighbouring grade (0 -> 1, 2 -> 1, 1 -> 0 or
2 with equal odds); with ``annotators`` = n (odd) the label is the median of n
such opinions. The default, one annotator who disagrees with the judge on 10% of
the pairs, is an assumption: graded relevance judgments are not unanimous, and
10% is a stated round figure, not a measurement of any shop. With n = 3 the
label differs from the judge's grade for a grade-0 or grade-2 pair with
probability ``3 p^2 (1 - p) + p^3`` (2.8% at p = 0.1).

**Determinism.** A pair's noise is a function of ``(seed, query, rewrite)``
(a hash), not of the order in which pairs are asked; a pair already bought is
returned from the shop's store at no cost (a label is bought once).

**The budget.** Each new pair costs ``annotators`` labels. A call that would go
over budget buys nothing and raises a one-line :class:`~qrw.config.UserError`.
"""

from __future__ import annotations

import hashlib

from qrw.config import check, invariant
from qrw.shop import wall

DEFAULT_DISAGREEMENT = 0.10  # an assumption (see the module docstring)


def _uniforms(seed: int, annotator: int, query: str, rewrite: str) -> tuple[float, float]:
    """Two uniforms in [0, 1) for one annotator's opinion of one pair, from a hash (order-independent)."""
    digest = hashlib.blake2b(f"{seed}\x1f{annotator}\x1f{query}\x1f{rewrite}".encode(), digest_size=16).digest()
    return int.from_bytes(digest[:8], "little") / 2.0 ** 64, int.from_bytes(digest[8:], "little") / 2.0 ** 64


def noisy_grade(grade: int, flip: float, side: float, disagreement: float) -> int:
    """One annotator's label: ``grade``, or with probability ``disagreement`` (``flip`` < it) a neighbouring one.

    >>> [noisy_grade(g, 0.05, 0.7, 0.1) for g in (0, 1, 2)], noisy_grade(1, 0.05, 0.2, 0.1)
    ([1, 2, 1], 0)
    """
    if flip >= disagreement:
        return grade
    if grade != 1:
        return 1
    return 0 if side < 0.5 else 2


class AnnotationService:
    """Relevance labels for (query text, rewrite text) pairs, from the judge acting as annotators.

    Args:
        world: the :class:`~qrw.shop.world.World` (only the service reads it).
        budget: the labels the shop can buy (one per annotator per pair).
        disagreement: probability that an annotator's label is a neighbour of the judge's grade.
        annotators: opinions per pair (odd); the label is their median.
        seed: the annotators' noise.
    """

    def __init__(self, world, budget: int, disagreement: float = DEFAULT_DISAGREEMENT, annotators: int = 1,
                 seed: int = 0) -> None:
        check(budget >= 0, f"the label budget must be >= 0 (got {budget})")
        check(0.0 <= disagreement <= 1.0, f"the annotators' disagreement must be in [0, 1] (got {disagreement})")
        check(annotators >= 1 and annotators % 2 == 1, f"annotators per pair must be odd and >= 1 (got {annotators})")
        self._judge = world.judge
        training = [q for q in world.queries["train"]] + list(world.log_queries)
        self._intents = {q.text: q.intent for q in training}  # the world's record of its texts' intents
        self._held_out = {q.text for s in ("val", "test") for q in world.queries[s]} - set(self._intents)
        self.budget, self.disagreement, self.annotators, self.seed = budget, disagreement, annotators, seed
        self._store: dict[tuple[str, str], int] = {}
        self.bought = 0  # labels bought (pairs x annotators)
        self.asked = 0  # pairs asked for, repeats included

    @property
    def pairs_labelled(self) -> int:
        """Distinct pairs bought so far."""
        return len(self._store)

    @property
    def remaining(self) -> int:
        """Labels left in the budget."""
        return self.budget - self.bought

    def _grade(self, query: str, rewrite: str) -> int:
        """The judge's grade of the pair (the query's intent looked up, or parsed; 0 when it names nothing sold)."""
        intent = self._intents[query] if query in self._intents else self._judge.parse(query)
        return 0 if intent is None else self._judge.grade_rewrite(intent, rewrite)

    def label(self, pairs: list[tuple[str, str]]) -> list[int]:
        """Labels in {0, 1, 2} for ``(query, rewrite)`` texts, in order; new pairs are bought (see the module doc)."""
        pairs = [(str(q), "" if r is None else str(r)) for q, r in pairs]
        for query, _ in pairs:
            invariant(query not in self._held_out, f"the annotation service labels no val/test query ({query!r})")
        new = list(dict.fromkeys(p for p in pairs if p not in self._store))
        cost = len(new) * self.annotators
        check(cost <= self.remaining, f"label budget exceeded: {len(new)} new pairs need {cost} labels, "
                                      f"{self.remaining} of {self.budget} left")
        for query, rewrite in new:
            with wall.door():  # the one place training's labels read the hidden truth
                grade = self._grade(query, rewrite)
            opinions = sorted(noisy_grade(grade, *_uniforms(self.seed, a, query, rewrite), self.disagreement)
                              for a in range(self.annotators))
            self._store[(query, rewrite)] = opinions[self.annotators // 2]
        self.bought += cost
        self.asked += len(pairs)
        return [self._store[p] for p in pairs]

    def summary(self) -> dict:
        """What a run records: labels bought, pairs, budget, disagreement, annotators per pair."""
        return {"labels_bought": self.bought, "pairs_labelled": self.pairs_labelled, "pairs_asked": self.asked,
                "budget": self.budget, "disagreement": self.disagreement, "annotators": self.annotators}

