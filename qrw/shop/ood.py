"""Out-of-domain queries: shoppers asking the shop for products its catalog does not sell.

A rewriter trained on one catalog rewrites whatever it is given: asked for a
"dinosaur" it may answer "tripod aluminium", and the page it serves then holds
tripods. The serving gate of :mod:`qrw.rewriter` exists to stop that, and these
queries measure it: the share of them that still get a rewrite served.

``ood_queries(seed, n, split)`` composes a noun from :data:`OOD_NOUNS`
(furniture, decor, garden, pets, toys, groceries, beauty, tools, sports, baby,
stationery and household appliances the catalog lacks) with 0-3 modifiers.
Many modifiers are catalog vocabulary on purpose (colours, materials, sizes,
"for kids", "wireless", packs, litres, fillers such as "cheap", title
descriptors such as "pro"), so that the set is not separable by vocabulary
alone; no catalog brand and no catalog category word appears. Every noun was
checked against the judge: it names no catalog term, even after the judge's
one-typo correction ("table" is one edit from "cable", so no "coffee table";
"runner" from "runners", the sneakers). The queries therefore parse to no
intent, while every catalog query parses to its own (a test checks both, and
:meth:`qrw.shop.shop.Shop.ood_queries` asserts the first).

Splits: the nouns are split by the seed into ``train`` (half), ``val`` and
``test`` (a quarter each); the splits draw from disjoint nouns. The ``train``
nouns are what the shop's logs hold: the logged searches for products the shop
does not sell (:mod:`qrw.shop.logs`) come from them, and so whatever training
reads from the logs (stage 0, the vocabulary, labels bought for logged
searches). The ``val`` and ``test`` nouns are never logged: the serving gate
(:mod:`qrw.gate`) is measured both on them (products the shop has never been
asked for) and on the logged searches themselves, split in val and test halves
(:meth:`qrw.shop.shop.Shop.logged_ood_queries`: the out-of-domain traffic a
shop really sees, which repeats).
Deterministic: the same ``(seed, n, split)`` gives the same list, and a split's
queries do not depend on the other splits.

Departure from the issue's anecdote (480 real queries from a furniture shop):
these are generated, hand-written vocabulary; a real out-of-domain log would be
messier (typos, brands of other shops).
"""

from __future__ import annotations

import numpy as np

from qrw.config import check, invariant

OOD_SPLITS = ("train", "val", "test")
MAX_OOD_QUERIES = 5000  # per split; far below the distinct combinations the tables allow

# Products the catalog does not sell, by domain (each noun checked: the judge finds no catalog term in it).
OOD_NOUNS = {
    "furniture": ("sofa", "armchair", "bookshelf", "wardrobe", "bed frame", "mattress", "office chair", "bar stool",
                  "recliner", "dresser", "nightstand", "futon", "ottoman", "bunk bed", "shoe rack", "desk",
                  "salon chair", "bookcase", "hammock"),
    "decor": ("floor lamp", "curtains", "rug", "throw pillow", "vase", "picture frame", "wall clock", "candle",
              "mirror", "wall art", "doormat", "blanket", "duvet", "bed sheets", "pillowcase", "cushion",
              "chandelier", "wallpaper", "shower curtain", "towel"),
    "garden": ("lawn mower", "plant pot", "watering can", "hedge trimmer", "wheelbarrow", "patio umbrella",
               "bird feeder", "flower seeds", "fertilizer", "shovel", "rake", "potted plant", "cactus", "compost bin",
               "garden gnome", "bird bath", "barbecue grill", "trampoline", "swing set"),
    "pets": ("dog food", "cat litter", "dog leash", "cat tree", "pet bed", "fish tank", "bird cage", "dog collar",
             "chew toy", "cat food", "aquarium", "hamster cage", "dog bed", "scratching post", "cat toy"),
    "toys": ("lego set", "teddy bear", "jigsaw puzzle", "board game", "toy car", "kite", "building blocks",
             "action figure", "dinosaur"),
    "groceries": ("pasta", "bananas", "milk", "bread", "eggs", "cereal", "honey", "orange juice", "peanut butter",
                  "sugar", "flour"),
    "beauty": ("shampoo", "lipstick", "perfume", "nail polish", "hair dryer", "toothbrush", "sunscreen"),
    "tools": ("drill", "hammer", "screwdriver set", "ladder", "toolbox", "tape measure", "saw", "wrench",
              "fishing rod"),
    "sports": ("yoga mat", "dumbbells", "tennis racket", "bicycle", "football", "treadmill", "skateboard", "tent",
               "sleeping bag"),
    "baby": ("stroller", "crib", "diapers", "high chair", "baby bottle", "car seat"),
    "stationery": ("pen", "pencils", "stapler", "printer paper", "envelopes"),
    "appliances": ("vacuum cleaner", "microwave", "toaster", "blender", "air fryer", "steam iron", "ceiling fan",
                   "space heater", "dishwasher", "cooler box", "lunch box", "cutting board", "frying pan",
                   "wine glasses", "dinner plates", "cookware set"),
}

# Modifiers, by kind. The first five kinds are catalog vocabulary (they parse to attributes or are fillers and
# title descriptors); the last is not.
OOD_MODIFIERS = {
    "colour": ("black", "white", "grey", "blue", "red", "pink", "green", "beige", "brown", "silver", "gold"),
    "material": ("leather", "cotton", "wool", "plastic", "stainless steel", "canvas", "aluminium", "nylon"),
    "size": ("small", "medium", "large", "xl", "2 pack", "3 pack", "20 litre"),
    "audience": ("for kids", "mens", "womens", "wireless"),
    "filler": ("cheap", "best", "new", "sale", "discount", "pro", "mini", "classic", "plus"),
    "other": ("outdoor", "foldable", "waterproof", "organic", "electric", "vintage", "modern", "round",
              "heavy duty", "portable", "smart", "velvet", "bamboo", "glass", "ceramic", "rattan", "scented",
              "soft", "king size", "handmade", "rechargeable", "oak"),
}
_N_MODIFIERS_WEIGHTS = (0.15, 0.4, 0.3, 0.15)  # P(0, 1, 2, 3 modifiers)
_P_NOUN_FIRST = 0.3  # "sofa grey leather" (catalog title order) rather than "grey leather sofa"
_SPLIT_STREAM = {"train": 1, "val": 2, "test": 3}


def ood_nouns(seed: int, split: str) -> tuple[str, ...]:
    """The nouns of ``split``: a seeded half (``train``) or quarter (``val``, ``test``) of :data:`OOD_NOUNS`.

    >>> set(ood_nouns(0, "val")).isdisjoint(ood_nouns(0, "test"))
    True
    """
    check(split in OOD_SPLITS, f"out-of-domain split must be one of {', '.join(OOD_SPLITS)} (got {split!r})")
    nouns = [noun for domain in OOD_NOUNS.values() for noun in domain]
    order = np.random.default_rng([seed, 0]).permutation(len(nouns))
    bounds = {"train": (0, len(nouns) // 2), "val": (len(nouns) // 2, 3 * len(nouns) // 4),
              "test": (3 * len(nouns) // 4, len(nouns))}[split]
    chosen = order[bounds[0]:bounds[1]]
    return tuple(nouns[i] for i in sorted(chosen))


def ood_queries(seed: int, n: int, split: str) -> list[str]:
    """``n`` distinct out-of-domain queries of ``split`` (:data:`OOD_SPLITS`), deterministic in ``(seed, n, split)``.

    Each query: a noun of :func:`ood_nouns` with 0-3 modifiers of distinct kinds
    (:data:`OOD_MODIFIERS`), before the noun, or after it ("sofa grey leather").
    The first ``m`` queries of ``ood_queries(seed, n, split)`` are those of ``ood_queries(seed, m, split)``.
    """
    check(seed >= 0, f"seed must be >= 0 (got {seed})")
    check(1 <= n <= MAX_OOD_QUERIES, f"n must be between 1 and {MAX_OOD_QUERIES} (got {n})")
    nouns = ood_nouns(seed, split)
    kinds = list(OOD_MODIFIERS)
    rng = np.random.default_rng([seed, _SPLIT_STREAM[split]])
    out: dict[str, None] = {}  # insertion-ordered set
    while len(out) < n:
        noun = nouns[rng.integers(len(nouns))]
        n_mods = int(rng.choice(len(_N_MODIFIERS_WEIGHTS), p=_N_MODIFIERS_WEIGHTS))
        chosen = rng.choice(len(kinds), size=n_mods, replace=False)
        mods = [OOD_MODIFIERS[kinds[k]][rng.integers(len(OOD_MODIFIERS[kinds[k]]))] for k in sorted(chosen)]
        fillers = [m for m in mods if m in OOD_MODIFIERS["filler"]]  # a filler leads: "cheap sofa grey"
        after = [m for m in mods if m.startswith("for ")]  # "sofa for kids"
        rest = [m for m in mods if m not in fillers and m not in after]
        words = fillers + ([noun] + rest if rng.random() < _P_NOUN_FIRST else rest + [noun]) + after
        out.setdefault(" ".join(words), None)
    return list(out)


def checked_ood_queries(world, n: int, split: str) -> list[str]:
    """:func:`ood_queries` of ``world``'s seed, each checked: ``world.judge`` reads no intent in it."""
    texts = ood_queries(world.config.seed, n, split)
    for text in texts:
        invariant(world.judge.parse(text) is None, f"out-of-domain query {text!r} names a catalog product")
    return texts
