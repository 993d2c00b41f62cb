"""The world, observed: build the shop's observed side from a world, once, before training seals the wall.

This is the membrane between the world (:mod:`qrw.shop.world`, with its hidden
truth) and what training receives (:class:`qrw.shop.observed.ObservedShop`): the
world's traffic is logged as a shop records it (:func:`qrw.shop.logs.simulate_logs`:
the world's shoppers click and buy), its mined rewrite pairs are kept as texts
(:mod:`qrw.shop.mining`), and an annotation service (the one door,
:class:`qrw.shop.annotation.AnnotationService`) is opened with a label budget.
Nothing of what it returns carries an intent, a gold rewrite or a grade.
"""

from __future__ import annotations

from qrw.shop.annotation import DEFAULT_DISAGREEMENT, AnnotationService
from qrw.shop.logs import LogConfig, simulate_logs
from qrw.shop.observed import DEFAULT_LABEL_BUDGET, ObservedShop
from qrw.shop.search import SearchEngine


def observe_world(world, label_budget: int = DEFAULT_LABEL_BUDGET, disagreement: float = DEFAULT_DISAGREEMENT,
                  annotators: int = 1, log_config: LogConfig | None = None,
                  engine: SearchEngine | None = None) -> ObservedShop:
    """The observed side of ``world``: its logs simulated as a shop records them, its mined pairs as texts,
    its training queries' texts, and an annotation service selling up to ``label_budget`` labels with
    annotator ``disagreement`` (call before :func:`qrw.shop.wall.sealed`). Deterministic in the world."""
    engine = engine if engine is not None else SearchEngine(world.titles, world.popularity)
    lexicon = world.lexicon
    return ObservedShop(products=world.products, engine=engine, category_names=lexicon.category_names,
                        brands=lexicon.brands, category_brands=lexicon.category_brands,
                        category_attrs=lexicon.category_attrs, sessions=simulate_logs(world, log_config, engine),
                        train_texts=[q.text for q in world.queries["train"]],
                        mined_pairs=[(p.query, p.rewrite) for p in world.mined_pairs],
                        annotations=AnnotationService(world, label_budget, disagreement, annotators,
                                                      seed=world.config.seed))
