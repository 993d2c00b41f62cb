"""The relevance-task data: perturbed rewrites with labels, and the kind of any rewrite.

The paper's relevance task tags a (query, rewrite) pair as 2 (equivalent), 1
(partial) or 0 (irrelevant); its labels come from human raters, here from the
oracle judge. Candidate rewrites are perturbations of the gold rewrite, in
catalog vocabulary: label 2 (gold, reordered), 1 (brand or an attribute
dropped, broadened to the category, or narrowed by an added attribute/brand)
and 0 (category swapped, attribute contradicted, brand swapped, a complement
such as "protective case" for a smartphone). Every label equals the judge's
grade. :meth:`qrw.shop.world.World.relevance_examples` draws them per split
with a fixed seed and caches them; the code that builds them lives here.
"""

from __future__ import annotations

from qrw.shop.judge import Judge, canonical_phrases, render_canonical
from qrw.shop.lexicon import Draws, Intent, Lexicon, Query

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
