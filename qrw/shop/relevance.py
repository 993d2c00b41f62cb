"""The relevance-task data: labelled (query, rewrite) pairs, and the kind of any rewrite.

The paper's relevance task tags a (query, rewrite) pair as 2 (equivalent), 1
(partial) or 0 (irrelevant); its labels come from human raters, here from the
oracle judge. Two sources of pairs:

**Perturbations** (:func:`relevance_examples`; the evaluation set of every
split, and stage 1's ``--relevance-data perturbed``): rewrites of the gold
rewrite, in catalog vocabulary: label 2 (gold, reordered), 1 (brand or an
attribute dropped, broadened to the category, or narrowed by an added
attribute/brand) and 0 (category swapped, attribute contradicted, brand
swapped, a complement such as "protective case" for a smartphone).
:meth:`qrw.shop.world.World.relevance_examples` draws them per split with a
fixed seed and caches them.

**What production would send to annotators** (:func:`training_pairs`, stage
1's ``--relevance-data hard|production``): the perturbations, plus hard cases
(:func:`hard_cases`: every attribute contradicted with several wrong values,
every brand swap, contradictions hidden inside partial rewrites, every phrase
order for every label) against the training queries and against the same
intents typed again by other users (noisy surface forms); with
``production``, also the mined rewrite pairs of the search logs
(:mod:`qrw.shop.mining`) and perturbations of the mined rewrites. Why hard
cases: with perturbations alone, label-0 and label-1 rewrites are always in
title order and the only reordered rewrites are label 2, and an attribute is
contradicted once per query: a tagger trained on them reads the phrase order
and the shape of the rewrite, not its values (it called 70% of contradicted
attributes equivalent, and a gold rewrite in title order irrelevant for 13%
of noisy queries).

**A model's own rewrites** (:func:`label_rewrites`, stage 1b of
``train_sft.py --label-rewrites N``): once a model exists, production sends a
sample of its rewrites to the annotators and trains on the labels (the
paper's relevance data includes its models' rewrites). Stage 1's data cannot
hold them (no model exists when it is built): there the perturbations and hard
cases stand in for what a rewriter of this world produces (catalog words, one
slot off).

Every label equals the judge's grade (tests check it).
"""

from __future__ import annotations

import numpy as np

from qrw.config import check
from qrw.shop import mining
from qrw.shop.judge import Judge, canonical_phrases, render_canonical
from qrw.shop.lexicon import Draws, Intent, Lexicon, Query
from qrw.shop.ood import checked_ood_queries

PERTURBATION_KINDS = ("gold", "reordered", "brand dropped", "attribute dropped", "broadened", "narrowed",
                      "partial, mixed", "category swapped", "complement", "brand swapped",
                      "attribute contradicted", "unparsable")


def perturbations(lexicon: Lexicon, intent: Intent, draws: Draws) -> dict[int, list[str]]:
    """Candidate rewrites of ``intent`` by intended label, in catalog vocabulary.

    2: gold; gold with its phrases reordered.
    1: brand dropped; one attribute dropped; bare category (broadened); an
       attribute value (or, with all attributes named, a brand) added (narrowed).
    0: category swapped (brand and values kept); one attribute contradicted;
       brand swapped; a complement category ("protective case" for a smartphone).
    """
    phrases = canonical_phrases(lexicon, intent)
    gold = " ".join(phrases)
    out: dict[int, list[str]] = {2: [gold], 1: [], 0: []}
    if len(phrases) > 1:
        for _ in range(4):
            shuffled = " ".join(phrases[i] for i in draws.permutation(len(phrases)))
            if shuffled != gold:
                out[2].append(shuffled)
                break
    out[1] = _partial_rewrites(lexicon, intent, draws)
    out[0] = _irrelevant_rewrites(lexicon, intent, phrases, draws)
    return out


def _partial_rewrites(lexicon: Lexicon, intent: Intent, draws: Draws) -> list[str]:
    """Label-1 candidates: brand dropped, one attribute dropped, bare category, an attribute or brand added."""
    out = []
    attrs = list(intent.attrs)
    category_attrs = dict(lexicon.category_attrs[intent.category])
    if intent.brand is not None:
        out.append(render_canonical(lexicon, Intent(intent.category, None, intent.attrs)))
    if attrs:
        i = draws.below(len(attrs))
        out.append(render_canonical(lexicon, Intent(intent.category, intent.brand, tuple(attrs[:i] + attrs[i + 1:]))))
    if intent.brand is not None or attrs:
        out.append(intent.category)
    missing = [a for a in category_attrs if a not in intent.attr_dict()]
    if missing:
        attr = draws.pick(missing)
        added = tuple(sorted(attrs + [(attr, draws.pick(category_attrs[attr]))]))
        out.append(render_canonical(lexicon, Intent(intent.category, intent.brand, added)))
    elif intent.brand is None:
        brands = lexicon.category_brands[intent.category]
        out.append(render_canonical(lexicon, Intent(intent.category, draws.pick(brands), intent.attrs)))
    return out


def _irrelevant_rewrites(lexicon: Lexicon, intent: Intent, phrases: list[str], draws: Draws) -> list[str]:
    """Label-0 candidates: category swapped, an attribute contradicted, brand swapped, a complement category."""
    out = []
    attrs = list(intent.attrs)
    category_attrs = dict(lexicon.category_attrs[intent.category])
    swapped = draws.pick([c for c in lexicon.category_names if c != intent.category])
    out.append(" ".join(swapped if p == intent.category else p for p in phrases))
    if attrs:
        attr, value = draws.pick(attrs)
        alternatives = [v for v in category_attrs[attr] if v != value]
        if alternatives:
            other = draws.pick(alternatives)
            contradicted = tuple((a, other if a == attr else v) for a, v in attrs)
            out.append(render_canonical(lexicon, Intent(intent.category, intent.brand, contradicted)))
    if intent.brand is not None:
        alternatives = [b for b in lexicon.category_brands[intent.category] if b != intent.brand]
        if alternatives:
            out.append(render_canonical(lexicon, Intent(intent.category, draws.pick(alternatives), intent.attrs)))
    complements = lexicon.complements[intent.category]
    if complements:
        out.append(" ".join(([intent.brand] if intent.brand else []) + [draws.pick(complements)]))
    return out


def perturbation_kind(judge: Judge, intent: Intent, text: str) -> str:
    """Which kind of rewrite ``text`` is for ``intent`` (one of ``PERTURBATION_KINDS``), from its parse.

    The families of :func:`perturbations`, read back from any rewrite: grade 2
    is ``gold`` (the canonical text) or ``reordered``; grade 1 names what was
    dropped or added (``partial, mixed`` when both); grade 0 names the first
    conflict in the judge's order (category, brand, attribute). A diagnostic for
    the tagger (accuracy per kind), not a second judge.
    """
    r = judge.parse(text)
    if r is None:
        return "unparsable"
    if r.category != intent.category:
        return "complement" if r.category in judge.lexicon.complements[intent.category] else "category swapped"
    if intent.brand is not None and r.brand is not None and r.brand != intent.brand:
        return "brand swapped"
    wanted, got = intent.attr_dict(), r.attr_dict()
    if any(a in wanted and wanted[a] != v for a, v in got.items()):
        return "attribute contradicted"
    if r == intent:
        return "gold" if text == render_canonical(judge.lexicon, intent) else "reordered"
    added = (r.brand is not None and intent.brand is None) or any(a not in wanted for a in got)
    dropped_brand = intent.brand is not None and r.brand is None
    dropped_attrs = any(a not in got for a in wanted)
    if added:
        return "partial, mixed" if (dropped_brand or dropped_attrs) else "narrowed"
    if r.brand is None and not r.attrs:
        return "broadened"
    if dropped_brand and dropped_attrs:
        return "partial, mixed"
    return "brand dropped" if dropped_brand else "attribute dropped"


def relevance_examples(judge: Judge, queries: list[Query], draws: Draws,
                       per_label: int = 1) -> list[tuple[str, str, int]]:
    """Relevance-tagging examples ``(query text, rewrite, label)`` for ``queries``.

    For every query: ``per_label`` distinct rewrites per label in (2, 1, 0)
    (fewer when a query has fewer candidates), drawn from :func:`perturbations`
    (label 1 always exists: a bare-category intent can be narrowed). Every label
    equals ``judge.grade_rewrite(query.intent, rewrite)`` (candidates that would
    not are skipped; a test checks that none are).
    """
    examples = []
    for query in queries:
        candidates = perturbations(judge.lexicon, query.intent, draws)
        for label in (2, 1, 0):
            options = [t for t in candidates[label] if judge.grade_rewrite(query.intent, t) == label]
            if not options:
                continue
            if per_label == 1:
                examples.append((query.text, draws.pick(options), label))
            else:
                options = list(dict.fromkeys(options))  # distinct rewrites
                order = draws.permutation(len(options))[:per_label]
                examples += [(query.text, options[i], label) for i in order]
    return examples


# ----------------------------------------------------------------------------------------------
# What production would label: hard cases, re-typed queries, mined pairs
# ----------------------------------------------------------------------------------------------

RELEVANCE_DATA = ("perturbed", "hard", "production")
OOD_TRAINING_QUERIES = 2000  # out-of-domain queries (the ood "train" split) among the production pairs, 2 rewrites each
TRAINING_PAIRS_STREAM = 15   # seed stream of training_pairs' extra pairs (the world's own streams are 1-5)
HELD_OUT_MINING_STREAM = 16  # seed stream of held_out_mined_pairs
P_SHUFFLED = 0.5  # share of hard-case rewrites whose phrases are shuffled: order then says nothing about the label


def _render(lexicon: Lexicon, intent: Intent, draws: Draws, p_shuffled: float = P_SHUFFLED) -> str:
    """The intent in catalog words: title order, or (with ``p_shuffled``) its phrases in a random order."""
    phrases = canonical_phrases(lexicon, intent)
    if len(phrases) > 1 and draws.random() < p_shuffled:
        phrases = [phrases[i] for i in draws.permutation(len(phrases))]
    return " ".join(phrases)


def _with_attr(intent: Intent, attr: str, value: str | None) -> Intent:
    """``intent`` with attribute ``attr`` set to ``value`` (added or replaced), or removed when ``value`` is None."""
    attrs = {**intent.attr_dict(), attr: value}
    return Intent(intent.category, intent.brand, tuple(sorted((a, v) for a, v in attrs.items() if v is not None)))


def hard_cases(lexicon: Lexicon, intent: Intent, draws: Draws, wrong_values: int = 2) -> list[str]:
    """Near-miss rewrites of ``intent``: right only for a tagger that reads every value.

    - the gold rewrite reordered (up to 2 distinct orders; intended label 2);
    - each attribute contradicted, with up to ``wrong_values`` other values of it;
      the brand swapped for up to ``wrong_values`` other brands (0);
    - each slot (brand, one attribute) dropped; one attribute added (1);
    - a contradiction inside a partial rewrite: one attribute contradicted while
      another slot is dropped, or while an attribute is added (0).

    Every rewrite but the reorderings is in title order or shuffled, half and
    half. Distinct texts, none the gold rewrite itself. Labels are not returned:
    the judge grades each pair (:func:`training_pairs`).
    """
    gold_phrases = canonical_phrases(lexicon, intent)
    gold = " ".join(gold_phrases)
    out: list[str] = []
    for _ in range(6 if len(gold_phrases) > 1 else 0):  # up to 2 distinct reorderings
        shuffled = " ".join(gold_phrases[i] for i in draws.permutation(len(gold_phrases)))
        if shuffled != gold and shuffled not in out:
            out.append(shuffled)
        if len(out) == 2:
            break
    category_attrs = dict(lexicon.category_attrs[intent.category])
    wanted = intent.attr_dict()
    per_slot: list[list[Intent]] = []  # the contradictions of each attribute, then of the brand
    for attr, value in intent.attrs:
        others = [v for v in category_attrs.get(attr, ()) if v != value]
        per_slot.append([_with_attr(intent, attr, others[i]) for i in draws.permutation(len(others))[:wrong_values]])
    if intent.brand is not None:
        brands = [b for b in lexicon.category_brands[intent.category] if b != intent.brand]
        per_slot.append([Intent(intent.category, brands[i], intent.attrs)
                         for i in draws.permutation(len(brands))[:wrong_values]])
    contradicted = [wrong for slot in per_slot for wrong in slot]
    dropped = [Intent(intent.category, None, intent.attrs)] if intent.brand is not None else []
    dropped += [_with_attr(intent, attr, None) for attr in wanted]
    missing = [a for a in category_attrs if a not in wanted]
    added = []
    if missing:
        attr = draws.pick(missing)
        added.append(_with_attr(intent, attr, draws.pick(category_attrs[attr])))
    near_misses = []  # one contradiction per slot, with another slot dropped or an attribute added
    for wrong in (slot[0] for slot in per_slot if slot):
        changed = [a for a, v in wrong.attrs if wanted.get(a) != v]  # [] when the brand was swapped
        droppable = [a for a in wanted if a not in changed]
        if droppable:
            near_misses.append(_with_attr(wrong, draws.pick(droppable), None))
        elif changed and wrong.brand is not None:
            near_misses.append(Intent(wrong.category, None, wrong.attrs))
        if missing:
            attr = draws.pick(missing)
            near_misses.append(_with_attr(wrong, attr, draws.pick(category_attrs[attr])))
    out += [_render(lexicon, i, draws) for i in contradicted + dropped + added + near_misses]
    return [t for t in dict.fromkeys(out) if t != gold]


def training_pairs(world, data: str = "production", per_label: int = 1,
                   wrong_values: int = 2) -> list[tuple[str, str, int]]:
    """Stage 1's relevance pairs ``(query text, rewrite, judge grade)`` from the world's training queries.

    ``data`` (one of :data:`RELEVANCE_DATA`):

    - ``perturbed``: ``world.relevance_examples("train", per_label)`` (``per_label``
      perturbed rewrites per label and query);
    - ``hard``: those, plus every :func:`hard_cases` rewrite of each query's
      intent, plus each intent typed again as another user would (a noisy text
      of the world's training-query rendering) paired with its gold rewrite, one
      hard case, and one perturbation of label 1 and of label 0;
    - ``production``: those, plus every mined pair of ``world.mined_pairs``
      (graded against the first query's intent) and two perturbations of each
      mined rewrite's own intent, graded against the first query's intent (a
      mined "smartphone" for "phone 256 gig", narrowed to "smartphone 128gb",
      is a contradiction); plus :data:`OOD_TRAINING_QUERIES` logged queries for
      products the shop does not sell (:mod:`qrw.shop.ood`'s ``train`` split,
      whose nouns the val/test splits never use), each with two catalog rewrites
      a rewriter might give it (a random training intent in catalog words; the
      query's own catalog words with a random category), label 0: nothing the
      query asks for is sold.

    Every label is ``world.judge.grade_rewrite`` for the query's intent (0 for the
    out-of-domain queries, which name no intent); a
    ``(query, rewrite)`` pair is kept once. No val/test query text is a query;
    user-typed rewrites (mined) are never one either (:mod:`qrw.shop.mining`);
    a rewrite in catalog words may equal one (a user may type "charger"), as in
    the perturbed set. Deterministic: the extra pairs come from their own seeded
    stream.
    """
    check_data(data)
    check(per_label >= 1 and wrong_values >= 1, "per_label and wrong_values must be >= 1")
    if data == "perturbed":
        return list(world.relevance_examples("train", per_label))
    held_out = {q.text for split in ("val", "test") for q in world.queries[split]}
    pairs = list(world.relevance_examples("train", per_label))
    judge, lexicon, queries = world.judge, world.lexicon, world.queries["train"]
    draws = Draws(np.random.default_rng([world.config.seed, TRAINING_PAIRS_STREAM, per_label, wrong_values]))
    extra: list[tuple[str, Intent | None, str]] = []  # (query text, its intent or None: out-of-domain, rewrite)
    for query in queries:
        extra += [(query.text, query.intent, r) for r in hard_cases(lexicon, query.intent, draws, wrong_values)]
        rendered = world.render_training_query(query.intent, draws)
        if rendered is None or rendered[0] == query.text or rendered[0] in held_out:
            continue
        retyped = rendered[0]
        candidates = perturbations(lexicon, query.intent, draws)
        hard = hard_cases(lexicon, query.intent, draws, wrong_values)
        extra.append((retyped, query.intent, render_canonical(lexicon, query.intent)))
        if hard:
            extra.append((retyped, query.intent, draws.pick(hard)))
        extra += [(retyped, query.intent, draws.pick(candidates[label])) for label in (1, 0) if candidates[label]]
    if data == "production":
        for pair in world.mined_pairs:
            extra.append((pair.query, pair.intent, pair.rewrite))
            mined_intent = judge.parse(pair.rewrite)
            if mined_intent is None:
                continue
            candidates = [r for rs in perturbations(lexicon, mined_intent, draws).values() for r in rs]
            extra += [(pair.query, pair.intent, candidates[i]) for i in draws.permutation(len(candidates))[:2]]
    if data == "production":
        known = {w for title in world.titles for w in title.split()}
        for text in checked_ood_queries(world, OOD_TRAINING_QUERIES, "train"):
            other = queries[int(draws.rng.integers(len(queries)))].intent
            own_words = [w for w in text.split() if w in known]
            category = lexicon.category_names[int(draws.rng.integers(len(lexicon.category_names)))]
            extra += [(text, None, render_canonical(lexicon, other)), (text, None, " ".join([category, *own_words]))]
    seen = {(q, r) for q, r, _ in pairs}
    for text, intent, rewrite in extra:
        if (text, rewrite) not in seen:
            seen.add((text, rewrite))
            pairs.append((text, rewrite, 0 if intent is None else judge.grade_rewrite(intent, rewrite)))
    return pairs


def check_data(data: str) -> None:
    """A one-line error unless ``data`` is one of :data:`RELEVANCE_DATA`."""
    check(data in RELEVANCE_DATA, f"relevance data must be one of {', '.join(RELEVANCE_DATA)} (got {data!r})")


def held_out_mined_pairs(world, split: str) -> list[mining.MinedPair]:
    """Mined pairs whose first queries are the ``split``'s (val or test): for evaluating a tagger only.

    The sessions and mining of :func:`qrw.shop.mining.mine_rewrite_pairs`, started
    from the split's queries instead of the training queries, from a generator of
    their own (so nothing else the world produces changes). Never trained on.
    """
    check(split in ("val", "test"), f"held-out mined pairs are for 'val' or 'test' (got {split!r})")
    rng = np.random.default_rng([world.config.seed, HELD_OUT_MINING_STREAM, ("val", "test").index(split)])
    return mining.mine_rewrite_pairs(world, rng, queries=world.queries[split])


def label_rewrites(world, queries: list[Query], rewrites: list[str]) -> list[tuple[str, str, int]]:
    """The annotators' labels for a model's rewrites: ``(query text, rewrite, judge grade)``, each pair once.

    ``rewrites[i]`` is a rewrite of ``queries[i]`` (a rewriter's output; the
    caller writes an empty one as the tagger reads it). In query order; a
    repeated ``(query, rewrite)`` pair is kept at its first place.
    """
    check(len(queries) == len(rewrites), f"{len(queries)} queries but {len(rewrites)} rewrites to label")
    seen: set[tuple[str, str]] = set()
    out = []
    for query, rewrite in zip(queries, rewrites):
        if (query.text, rewrite) not in seen:
            seen.add((query.text, rewrite))
            out.append((query.text, rewrite, world.judge.grade_rewrite(query.intent, rewrite)))
    return out
