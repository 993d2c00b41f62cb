"""The report's readings of the wall and of the production regime (docs/RESULTS.md's prose sections).

- :func:`wall_lines`: what of the hidden truth each run used, from its ``metrics.json["wall"]``
  record: the labels bought through the annotation door (stage 1, stage 1b), the budget,
  the annotators' disagreement, and every named crossing (:mod:`qrw.shop.wall`);
- :func:`vs_dictionary_table`: the trained arms minus the dictionary a shop fits on its logs,
  on all test queries, the tail and the unseen intents;
- :func:`conversion_lines`: GRPO's learned conversion reward (the conversion model fit on the
  logs) against the simulator's UCVR on each arm's test pages;
- :func:`grpo_lines`: GRPO against its SFT init and against the log-fit dictionary, and
  where it loses;
- :func:`regime_lines`: the production regime against its upper bounds.

Every reading is computed from the numbers it prints: a verdict is a rule on the pooled
intervals, stated beside it.
"""

from __future__ import annotations

import math

import numpy as np

from qrw.scorecard import DROPPED_VALUES, HACKING
from qrw.shop.metrics import METRICS
from qrw.shop.shop import UNSEEN
from qrw.reproduce.claims import ci_text
from qrw.shop.pooled import pooled_paired_diff
from qrw.reproduce.evaluation import DICTIONARY, GridEvaluation, nan_mean
from qrw.reproduce.grid import DEFAULT_ARMS, GRID, LABELS

METRIC_NAMES = {"accuracy": "accuracy", "relevance": "relevance@10", "recall": "recall@10", "ucvr": "UCVR"}
SUBSET_NAMES = {"all": "all test queries", "tail": "the tail", UNSEEN: "unseen intents"}
EVALUATION = "evaluation:"  # the prefix of the crossings that evaluate (a monitor, never a training signal)


# ---- the wall --------------------------------------------------------------------------------------

def labels_bought(record: dict) -> tuple[int, int]:
    """(stage 1's labels, stage 1b's labels) of a run's wall record: stage 1's from its ``stage1_labelling``
    summary (none when the run labelled nothing in stage 1), stage 1b's the rest of what the run bought."""
    stage1 = (record.get("stage1_labelling") or {}).get("labels_bought", 0)
    return stage1, record.get("labels_bought", 0) - stage1


def _count(n: int | float) -> str:
    return f"{n:,}" if isinstance(n, int) else f"{n:,.0f}"


def wall_lines(grid: GridEvaluation) -> list[str]:
    """The report's first section: what of the hidden truth training used, per arm and seed.

    From each run's ``metrics.json["wall"]`` (:attr:`SeedEvaluation.walls`): the labels its
    training bought through the annotation door (stage 1 and stage 1b), the pairs labelled, the
    budget, the annotators' disagreement rate and the labels per pair; every named crossing with
    its count per seed; and whether the default arms crossed the wall only to evaluate.
    """
    seeds = [s.seed for s in grid.seeds]
    lines = ["Training runs behind the wall (`qrw.shop.wall`): while it trains, every accessor of the world's hidden "
             "truth (intents, gold rewrites, the judge's grades, the shopper simulator, the idealised logs) raises. "
             "The truth comes in through one door, the annotation service (`qrw.shop.annotation`), where the judge "
             "plays annotators: each label is the judge's grade replaced by a neighbouring grade with the stated "
             "disagreement probability, and the labels are counted against a budget. The only other way in is a "
             "named crossing, which the run counts and records: the upper-bound arms take theirs to read what they "
             "are given (gold rewrites, gold-built pairs, the judge, the simulator), and every SFT run takes one to "
             "compute its validation loss on held-out gold rewrites (a monitor, never a training signal). "
             "Evaluation (everything after this section) runs outside the wall. Each run's `metrics.json` "
             "records its figures under `wall`.", ""]
    missing = [(s.seed, name) for s in grid.seeds for name in grid.names if s.walls.get(name) is None]
    if missing:
        lines += ["**Runs with no wall record** (trained before the wall; `--force` retrains them): "
                  + ", ".join(f"{LABELS[n]} (seed {s})" for s, n in missing) + ".", ""]
    sft = [n for n in grid.names if GRID[n].script == "train_sft.py"]
    if sft:
        lines += ["Labels bought through the annotation door, per SFT run (a GRPO run's relevance reward is its SFT "
                  "init's tagger, so it trains on its init's labels):", "",
                  "| arm | seed | labels bought | stage 1 | stage 1b | pairs labelled | budget | disagreement | "
                  "annotators per pair |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name in sft:
            for s in grid.seeds:
                r = s.walls.get(name)
                if r is None:
                    lines.append(f"| {LABELS[name]} | {s.seed} | not recorded | | | | | | |")
                    continue
                stage1, stage1b = labels_bought(r)
                lines.append(f"| {LABELS[name]} | {s.seed} | {_count(r.get('labels_bought', 0))} | {_count(stage1)} | "
                             f"{_count(stage1b)} | {_count(r.get('pairs_labelled', 0))} | {_count(r.get('budget', 0))} "
                             f"| {r.get('disagreement', float('nan')):.0%} | {r.get('annotators', '-')} |")
        lines.append("")
    grpo = [n for n in grid.names if GRID[n].script == "train_grpo.py"]
    bought = {(s.seed, n): s.walls[n].get("labels_bought", 0) for s in grid.seeds for n in grpo
              if s.walls.get(n) is not None}
    if bought:
        own = [f"{LABELS[n]} (seed {seed}) {k:,}" for (seed, n), k in bought.items() if k]
        lines += [f"The GRPO runs bought labels of their own: {', '.join(own)}." if own else
                  "The GRPO runs bought no labels of their own.", ""]
    default = [n for n in grid.names if n in DEFAULT_ARMS and GRID[n].script == "train_sft.py"]
    for name in default:
        sources = _source_table(grid, name)
        if sources:
            lines += [f"Where {LABELS[name]}'s stage-1 labels went, per source of pairs production produces "
                      "(`qrw.shop.labelling`; candidates and pairs bought, seed by seed, and the label shares "
                      "0 / 1 / 2 of the first seed's):", ""] + sources + [""]
    lines += crossing_lines(grid)
    return lines


def _source_table(grid: GridEvaluation, name: str) -> list[str]:
    """Per source of stage-1 pairs: candidates and pairs bought, seed by seed (``a / b / c``)."""
    per_seed = [((s.walls.get(name) or {}).get("stage1_labelling") or {}).get("sources", {}) for s in grid.seeds]
    if not any(per_seed):
        return []
    lines = ["| source | candidates | pairs bought | labels 0 / 1 / 2 |", "|---|---:|---:|---|"]
    first = next(p for p in per_seed if p)
    for source in dict.fromkeys(src for p in per_seed for src in p):
        cells = [" / ".join("-" if source not in p else _count(p[source][key]) for p in per_seed)
                 for key in ("candidates", "bought")]
        shares = " / ".join(f"{x:.0%}" for x in first[source]["labels"]) if source in first else "-"
        lines.append(f"| {source} | {cells[0]} | {cells[1]} | {shares} |")
    return lines


def crossing_lines(grid: GridEvaluation) -> list[str]:
    """Every named crossing per arm, its count seed by seed, and whether the default arms only evaluated."""
    lines = ["Named crossings of the wall per arm (count per run, seed by seed; `-`: not taken in that run):", "",
             "| arm | crossing | " + " | ".join(f"seed {s.seed}" for s in grid.seeds) + " |",
             "|---|---|" + "---:|" * len(grid.seeds)]
    for name in grid.names:
        records = [s.walls.get(name) for s in grid.seeds]
        reasons = list(dict.fromkeys(r for rec in records if rec for r in rec.get("crossings", {})))
        if not reasons:
            lines.append(f"| {LABELS[name]} | none | " + " | ".join("-" if rec is None else "0" for rec in records)
                         + " |")
        for reason in reasons:
            cells = ["-" if rec is None or reason not in rec.get("crossings", {}) else _count(rec["crossings"][reason])
                     for rec in records]
            lines.append(f"| {LABELS[name]} | {reason} | " + " | ".join(cells) + " |")
    default = [n for n in DEFAULT_ARMS if n in grid.names]
    if default:
        beyond = sorted({r for s in grid.seeds for n in default for r in (s.walls.get(n) or {}).get("crossings", {})
                         if not r.startswith(EVALUATION)})
        unrecorded = any(s.walls.get(n) is None for s in grid.seeds for n in default)
        verdict = ("**no**: " + "; ".join(beyond) if beyond else "**not known** (a run has no record)" if unrecorded
                   else "**yes**")
        lines += ["", f"The default arms ({', '.join(LABELS[n] for n in default)}) cross the wall only to evaluate: "
                      f"{verdict}."]
    return lines + [""]


# ---- against the log-fit dictionary -------------------------------------------------------------------

def vs_dictionary_table(grid: GridEvaluation) -> list[str]:
    """Each arm of :attr:`GridEvaluation.vs_dictionary` minus the log-fit dictionary, one row per subset: per metric
    the two sides' means over seeds and the pooled difference with its interval (``*``: it excludes 0)."""
    if not grid.vs_dictionary:
        return []
    lines = ["| arm minus log-fit dictionary | queries (n) | " + " | ".join(METRIC_NAMES[m] for m in METRICS) + " |",
             "|---|---|" + "---|" * len(METRICS)]
    for (arm, subset), c in grid.vs_dictionary.items():
        cells = [f"{c[m]['before']:.3f} -> {c[m]['after']:.3f}: {ci_text(c[m])}"
                 + (" *" if c[m]["low"] > 0 or c[m]["high"] < 0 else "") for m in METRICS]
        lines.append(f"| {LABELS[arm]} | {SUBSET_NAMES.get(subset, subset)} ({c['accuracy']['n']}) | "
                     + " | ".join(cells) + " |")
    return lines


# ---- the learned conversion reward against the simulator ------------------------------------------------

def _correlation(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.corrcoef(a, b)[0, 1]) if len(a) > 1 and a.std() > 0 and b.std() > 0 else math.nan


def conversion_lines(grid: GridEvaluation) -> list[str]:
    """The conversion model (GRPO's learned conversion reward, unscaled) against the simulator's UCVR on each arm's
    test pages: the means (calibration in the large), the correlation over queries, and for each GRPO arm the lift
    over its init that the model predicts beside the lift the simulator measures (pooled over seeds)."""
    seeds = [s for s in grid.seeds if s.conversion]
    if not seeds:
        return []
    lines = ["| rewriter | conversion model | simulator UCVR | model - simulator | correlation over queries |",
             "|---|---:|---:|---:|---:|"]
    for name in [DICTIONARY] + list(grid.names):
        model = nan_mean([np.mean(s.conversion[name]) for s in seeds])
        truth = nan_mean([np.mean(s.per_query[name]["ucvr"]) for s in seeds])
        r = nan_mean([_correlation(s.conversion[name], s.per_query[name]["ucvr"]) for s in seeds])
        label = "dictionary (fit on the logs)" if name == DICTIONARY else LABELS[name]
        lines.append(f"| {label} | {model:.4f} | {truth:.4f} | {model - truth:+.4f} | {r:.3f} |")
    lifts = []
    for name in grid.names:
        init = GRID[name].init
        if init is None or init not in grid.names:
            continue
        model = pooled_paired_diff([(s.conversion[init], s.conversion[name]) for s in seeds])
        truth = pooled_paired_diff([(s.per_query[init]["ucvr"], s.per_query[name]["ucvr"]) for s in seeds])
        lifts.append(f"| {LABELS[name]} minus {LABELS[init]} | {model.diff:+.4f} [{model.low:+.4f}, {model.high:+.4f}] "
                     f"| {truth.diff:+.4f} [{truth.low:+.4f}, {truth.high:+.4f}] |")
    if lifts:
        lines += ["", "The lift over the init, as the conversion model predicts it and as the simulator measures it "
                  "(pooled over seeds, 95% intervals); where the model predicts more lift than the simulator "
                  "measures, GRPO gained on the learned reward and not on the truth:", "",
                  "| GRPO arm minus its init | conversion model | simulator UCVR |", "|---|---|---|"] + lifts
    return lines


# ---- GRPO against its init and against the log-fit dictionary -----------------------------------------

def _excludes_zero(c: dict, sign: int) -> bool:
    return c["low"] > 0 if sign > 0 else c["high"] < 0


def mean_kinds(grid: GridEvaluation) -> dict:
    """arm -> rewrite kind (the HACKING sums and DROPPED_VALUES) -> mean count over seeds."""
    return {name: {h: nan_mean([s.kinds[name][h] for s in grid.seeds]) for h in tuple(HACKING) + DROPPED_VALUES}
            for name in grid.names}


def losses(comparisons: list[tuple[str, dict]]) -> tuple[list[str], list[str]]:
    """(losses whose pooled interval excludes 0, point losses within noise): one text per comparison,
    ``what: metric after vs before, diff [CI]; ...``.

    ``comparisons``: (what, metric -> pooled_comparison entry) pairs, after minus before.
    """
    sure, unsure = [], []
    for what, c in comparisons:
        for into, sign in ((sure, True), (unsure, False)):
            found = [f"{METRIC_NAMES[m]} {c[m]['after']:.3f} vs {c[m]['before']:.3f}, {ci_text(c[m])}"
                     for m in METRICS if c[m]["diff"] < 0 and (c[m]["high"] < 0) == sign]
            if found:
                into.append(f"{what}: " + ", ".join(found))
    return sure, unsure


def grpo_lines(grid: GridEvaluation, arm: str = "grpo-fusion") -> list[str]:
    """GRPO (``arm``) minus its SFT init (the four metrics and the drift counts) and minus the log-fit dictionary
    overall, on the tail and on the unseen intents; then every comparison it loses, with the numbers."""
    init = GRID[arm].init
    lines, comparisons = [], []
    if (init, arm) in grid.cmp:
        c = grid.cmp[(init, arm)]
        kinds = mean_kinds(grid)
        up = _excludes_zero(c["accuracy"], 1) and _excludes_zero(c["relevance"], 1)
        risen = [h for h in HACKING if kinds[arm][h] > kinds[init][h]]
        counts = "; ".join(f"{h} {kinds[init][h]:.1f} -> {kinds[arm][h]:.1f}" for h in HACKING)
        lines.append(f"- *{LABELS[arm]} minus its SFT init ({LABELS[init]}).* Its rewards are learned from what a shop "
                     f"has: the relevance reward is the frozen init's tagger (trained on the labels bought above) plus "
                     f"rules that read the log-fit dictionary, the conversion reward a model fit on the logged "
                     f"sessions; no reward reads the judge or the simulator. accuracy {ci_text(c['accuracy'])}, "
                     f"relevance@10 {ci_text(c['relevance'])}, recall@10 {ci_text(c['recall'])}, UCVR "
                     f"{ci_text(c['ucvr'])}; drift counts (rewrites of each hacking kind, mean per seed), init -> "
                     f"GRPO: {counts}. Accuracy and relevance@10 up with intervals excluding 0: "
                     f"**{'yes' if up else 'no'}**; no drift count above the init's: "
                     f"**{'yes' if not risen else 'no (' + ', '.join(risen) + ')'}**. Where the attribute drops "
                     f"are: {dropped_values_text(kinds, init, arm)}.")
        comparisons.append(("against its SFT init", c))
    for subset in ("all", "tail", UNSEEN):
        c = grid.vs_dictionary.get((arm, subset))
        if c is None:
            continue
        n = c["accuracy"]["n"]
        lines.append(f"- *{LABELS[arm]} minus the log-fit dictionary, {SUBSET_NAMES[subset]}* ({n} queries over the "
                     f"seeds): " + ", ".join(f"{METRIC_NAMES[m]} {c[m]['after']:.3f} vs {c[m]['before']:.3f}, "
                                             f"{ci_text(c[m])}" for m in METRICS) + ".")
        comparisons.append((f"against the log-fit dictionary on {SUBSET_NAMES[subset]}", c))
    if not comparisons:
        return []
    sure, unsure = losses(comparisons)
    lines.append(f"- *Where {LABELS[arm]} loses* (a pooled interval below 0; {LABELS[arm]} vs the other side): "
                 + ("; ".join(sure) if sure else "nowhere") + ".")
    if unsure:
        lines.append("- *Where it is behind within noise* (a negative difference whose interval includes 0): "
                     + "; ".join(unsure) + ".")
    return lines


def dropped_values_text(kinds: dict, before: str, after: str) -> str:
    """Dropped attribute values read / unread by the rules' dictionary, mean over seeds, ``before -> after``."""
    read, unread = DROPPED_VALUES
    return (f"values the rules' log-fit dictionary reads in the query (the anchors rule sees them dropped) "
            f"{kinds[before][read]:.1f} -> {kinds[after][read]:.1f}, values it does not read (no rule sees "
            f"them) {kinds[before][unread]:.1f} -> {kinds[after][unread]:.1f}")


# ---- the production regime against its upper bounds ------------------------------------------------

def regime_lines(grid: GridEvaluation) -> list[str]:
    """The production regime against its upper bounds: what each piece of the hidden truth would add.

    Each reading is judged on the pooled intervals; a pair whose arms were not trained is left out.
    """
    cmp, lines = grid.cmp, []
    kinds = mean_kinds(grid)
    if ("sft-single-gold", "sft-single") in cmp:
        c = cmp[("sft-single-gold", "sft-single")]
        drift = _excludes_zero(c["accuracy"], -1) and _excludes_zero(c["relevance"], -1)
        lines.append(f"- *Mined pairs drift, and the drift costs.* Single-task SFT on mined pairs minus the same on gold "
                     f"pairs: accuracy {ci_text(c['accuracy'])}, relevance@10 {ci_text(c['relevance'])}, recall@10 "
                     f"{ci_text(c['recall'])}, UCVR {ci_text(c['ucvr'])}. Lower accuracy and relevance@10, both "
                     f"intervals excluding 0: **{'yes' if drift else 'no'}**.")
    if ("sft-gold-relevance", "sft-multi") in cmp:
        c = cmp[("sft-gold-relevance", "sft-multi")]
        f1 = [grid.tagging.get(LABELS[n], math.nan) for n in ("sft-multi", "sft-gold-relevance")]
        worse = _excludes_zero(c["accuracy"], -1) or _excludes_zero(c["relevance"], -1)
        lines.append(f"- *What the label budget costs.* Multi-task SFT with the relevance labels bought through the "
                     f"door minus the same with the judge-labelled pairs built from gold (the tagger's pre-wall "
                     f"training set, an upper bound): tagger macro-F1 {f1[0]:.3f} vs {f1[1]:.3f}; accuracy "
                     f"{ci_text(c['accuracy'])}, relevance@10 {ci_text(c['relevance'])}, recall@10 "
                     f"{ci_text(c['recall'])}, UCVR {ci_text(c['ucvr'])}. Accuracy or relevance@10 lower with an "
                     f"interval excluding 0: **{'yes' if worse else 'no'}**.")
    if ("grpo-norules", "grpo-fusion") in cmp:
        c = cmp[("grpo-norules", "grpo-fusion")]
        counts = "; ".join(f"{h} {kinds['grpo-norules'][h]:.1f} -> {kinds['grpo-fusion'][h]:.1f}" for h in HACKING)
        lines.append(f"- *What the rules do.* GRPO fusion with the rules minus without: accuracy {ci_text(c['accuracy'])}, "
                     f"relevance@10 {ci_text(c['relevance'])}, UCVR {ci_text(c['ucvr'])}; drift counts per seed, "
                     f"without -> with: {counts}; {dropped_values_text(kinds, 'grpo-norules', 'grpo-fusion')}.")
    for bound, what, reward in (("grpo-oracle", "relevance", "the judge's grade of the rewrite (the evaluation's "
                                 "own accuracy)"),
                                ("grpo-oracle-conversion", "conversion", "the shopper simulator's expected purchases "
                                 "on the page (the evaluation's own UCVR)")):
        if (bound, "grpo-fusion") not in cmp:
            continue
        c = cmp[(bound, "grpo-fusion")]
        learned = ("the frozen SFT tagger plus rules" if what == "relevance" else
                   "the conversion model fit on the logged sessions")
        below = [METRIC_NAMES[m] for m in METRICS if _excludes_zero(c[m], -1)]
        lines.append(f"- *Oracle {what} as an upper bound.* GRPO fusion with the learned {what} reward ({learned}) "
                     f"minus with {reward}: accuracy {ci_text(c['accuracy'])}, relevance@10 {ci_text(c['relevance'])}, "
                     f"recall@10 {ci_text(c['recall'])}, UCVR {ci_text(c['ucvr'])}: a negative difference is what a "
                     f"perfect {what} model would add (the oracle arm's reward reads the test metric itself, so its "
                     f"gain there is not a held-out measure). The learned reward below the oracle's with an interval "
                     f"excluding 0 in: **{', '.join(below) if below else 'none'}**.")
    return lines
