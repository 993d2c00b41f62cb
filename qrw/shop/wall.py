"""The wall between what a shop observes and the world's hidden truth, enforced while training runs.

The synthetic world knows what no shop knows: each query's intent and gold
rewrite, the judge's grades, the shoppers' purchase probabilities, the user
vocabulary the queries were rendered from, the idealised click stream behind the
logs. Evaluation reads all of it. Training may not: it sees the shop's observed
side (:class:`qrw.shop.observed.ObservedShop`: the catalog, the engine, the
logged sessions, query texts, mined pairs, a conversion model and a dictionary
fit on those logs) and reaches the truth through **one door**, the annotation
service (:class:`qrw.shop.annotation.AnnotationService`), which sells labels
against a budget.

The wall is enforced at run time, not only by convention. Inside
:func:`sealed` (both training scripts hold it from the moment their observed
shop is built until training ends) every accessor listed in :data:`HIDDEN`
raises :class:`WallError`, unless

- the annotation service is labelling (:func:`door`, used by the service only), or
- the code says, in a named block, that it crosses the wall on purpose
  (:func:`crossing`): the upper-bound arms (``--relevance-judge oracle``,
  ``--conversion-judge oracle``, ``--rewrite-data gold``), the validation loss
  on held-out gold rewrites, the opt-in oracle monitor of GRPO. Every crossing
  is counted by name (:func:`crossings`) and a run records them, so a run's
  ``metrics.json["wall"]`` says whether it trained behind the wall.

How: entering the seal replaces each hidden accessor on its class by a guard
(a method by a wrapper, an instance attribute by a data descriptor that reads
the instance's ``__dict__``); leaving it puts the originals back. The table is
the specification of what is hidden; ``tests/test_wall.py`` runs both scripts'
smoke runs sealed and checks that a planted leak fails.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from collections import Counter

# (module, class, attribute, kind): "method" (a function or property on the class) or "field" (an instance
# attribute). What each reveals: the intent / gold / grades / purchase probabilities / user vocabulary.
HIDDEN: tuple[tuple[str, str, str, str], ...] = (
    # a query's ground truth (its text and split are observed)
    *(("qrw.shop.lexicon", "Query", name, "field") for name in ("intent", "gold", "segment", "forms", "difficulty")),
    # the user vocabulary behind the queries (the catalog's own tables are observed)
    *(("qrw.shop.lexicon", "Lexicon", name, "field") for name in ("forms", "form_term", "form_tier")),
    ("qrw.shop.lexicon", "Lexicon", "variants", "method"),
    # the judge: every grade and every parse
    *(("qrw.shop.judge", "Judge", name, "method")
      for name in ("correct", "terms", "parse", "grade_rewrite", "grade_products", "exact_count")),
    # the shopper simulator: purchase probabilities and sampled sessions
    *(("qrw.shop.users", "UserSimulator", name, "method")
      for name in ("purchase_probs", "expected_purchases", "sample_sessions")),
    # the world's records of its own truth, and its idealised logs (the shop's logs: qrw.shop.logs)
    *(("qrw.shop.world", "World", name, "field") for name in ("judge", "queries", "logs", "log_queries")),
    *(("qrw.shop.world", "World", name, "method")
      for name in ("mined_pairs", "relevance_examples", "perturbations", "perturbation_kind", "render_training_query",
                   "corpus_texts", "log_texts", "pretrain_texts", "uses_log_only")),
    # mined pairs carry the first query's intent and the judge's grade (their texts are observed)
    *(("qrw.shop.mining", "MinedPair", name, "field") for name in ("intent", "grade", "kind")),
)


class WallError(RuntimeError):
    """Training read the hidden truth outside the annotation door."""


_state = {"sealed": 0, "open": 0}
_crossings: Counter = Counter()
_originals: list[tuple[type, str, object, bool]] = []  # (class, attribute, original, was in the class dict)


def is_sealed() -> bool:
    """True inside :func:`sealed`."""
    return _state["sealed"] > 0


def _check(what: str) -> None:
    if _state["sealed"] and not _state["open"]:
        raise WallError(f"training read the hidden truth outside the annotation door: {what} (training sees the "
                        f"shop's observed side only; cross on purpose with qrw.shop.wall.crossing(reason))")


def _guard_method(owner: type, name: str, original):
    what = f"{owner.__name__}.{name}"
    if isinstance(original, property):
        def fget(self):
            _check(what)
            return original.fget(self)
        return property(fget, original.fset, original.fdel, original.__doc__)

    @functools.wraps(original)
    def guarded(*args, **kwargs):
        _check(what)
        return original(*args, **kwargs)
    return guarded


def _guard_field(owner: type, name: str):
    what = f"{owner.__name__}.{name}"

    def fget(self):
        _check(what)
        try:
            return self.__dict__[name]
        except KeyError:
            raise AttributeError(name) from None

    def fset(self, value):  # constructors (frozen dataclasses too) keep working
        self.__dict__[name] = value
    return property(fget, fset)


@contextlib.contextmanager
def sealed():
    """Training's side of the wall: every :data:`HIDDEN` accessor raises outside a door or a crossing.

    Re-entrant (an inner seal is a no-op). Leaving it restores every accessor.
    """
    if _state["sealed"]:
        _state["sealed"] += 1
        try:
            yield
        finally:
            _state["sealed"] -= 1
        return
    try:
        for module, cls, name, kind in HIDDEN:
            owner = getattr(importlib.import_module(module), cls)
            present = name in owner.__dict__
            original = owner.__dict__.get(name)
            _originals.append((owner, name, original, present))
            setattr(owner, name, _guard_method(owner, name, original) if kind == "method" else _guard_field(owner, name))
        _state["sealed"] = 1
        yield
    finally:
        _state["sealed"] = 0
        while _originals:
            owner, name, original, present = _originals.pop()
            if present:
                setattr(owner, name, original)
            else:
                delattr(owner, name)


@contextlib.contextmanager
def door():
    """The annotation service's door: the hidden truth is readable while it labels (no count: it counts labels)."""
    _state["open"] += 1
    try:
        yield
    finally:
        _state["open"] -= 1


@contextlib.contextmanager
def crossing(reason: str):
    """Cross the wall on purpose, for ``reason`` (an upper-bound arm, an evaluation monitor); counted by name."""
    _crossings[reason] += 1
    _state["open"] += 1
    try:
        yield
    finally:
        _state["open"] -= 1


def crossings() -> dict[str, int]:
    """How many times each named crossing was taken in this process (a run records it)."""
    return dict(sorted(_crossings.items()))


def reset_crossings() -> None:
    """Forget the counted crossings (a run starts its own count)."""
    _crossings.clear()
