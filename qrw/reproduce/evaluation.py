"""Evaluation of the grid's runs: each seed's runs scored on its own world's test queries, pooled over seeds.

:func:`evaluate_seed` scores one seed's runs (rows, rewrite kinds, tagger detail,
the serving gate); :func:`evaluate_grid` pools the seeds: mean rows and every
comparison's paired difference with its 95% interval (:mod:`qrw.shop.pooled`),
and each of :data:`VS_DICTIONARY_ARMS` against the dictionary a shop can fit on
its logs, over all test queries, the tail and the unseen intents
(:attr:`GridEvaluation.vs_dictionary`).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qrw.config import check
from qrw.runs import load_run
from qrw.gate import GATE_QUERY_CHECKS, evaluate_gate
from qrw.scorecard import dropped_attribute_values, evaluate_run, rewrite_kinds, tagger_source
from qrw.shop.metrics import METRICS, rewrite_metrics
from qrw.shop.pooled import pooled_paired_diff
from qrw.shop.shop import UNSEEN, Shop
from qrw.shop.world import World
from qrw.reproduce.grid import BOUND_PAIRS, CLAIM_PAIRS, GRID, LABELS


@dataclass
class SeedEvaluation:
    """One seed's runs scored on its own world's test queries."""

    seed: int
    world: World
    shop: Shop
    queries: list  # list[Query]: the seed's test queries
    rows: dict  # rewriter label -> segment -> metric (qrw.scorecard.evaluate_run's rows, the baselines included)
    rewrites: dict  # arm -> the run's greedy rewrites, in query order
    per_query: dict  # arm -> metric -> (Q,) per-query values (qrw.shop.metrics.rewrite_metrics)
    tagging: dict  # rewriter label -> the tagger's macro-F1 (runs that trained one)
    log_only: np.ndarray  # (Q,) bool: the query uses a log-only variant
    kinds: dict  # arm -> rewrite kind (and HACKING sum, and DROPPED_VALUES) -> count over the test queries
    tag_detail: dict  # rewriter label -> qrw.scorecard.tagging_metrics (runs that trained a tagger)
    gates: dict  # arm -> the serving gate on it (qrw.scorecard.evaluate_gate), for the GATE_ARMS trained
    query_gates: dict  # query check ("dictionary", "vocabulary") -> arm -> the same gate with that query check
    unseen: np.ndarray | None = None  # (Q,) bool: the query's intent is in no training query, log or mined pair
    # arm -> its run's record of the wall (metrics.json["wall"]: crossings, labels bought, budget, disagreement...;
    # None for a run that has none)
    walls: dict = field(default_factory=dict)
    # arm (and DICTIONARY) -> (Q,) the conversion model's expected purchases on its pages (ObservedShop.page_conversion:
    # GRPO's learned conversion reward before scaling), beside per_query[arm]["ucvr"], the simulator's
    conversion: dict = field(default_factory=dict)


@dataclass
class GridEvaluation:
    """What the report is written from: every seed's evaluation and the pooled rows and comparisons."""

    names: list[str]  # the arms evaluated, in GRID order
    seeds: list[SeedEvaluation]
    rows: dict  # rewriter label -> segment -> metric: the mean over seeds
    tagging: dict  # rewriter label -> the tagger's macro-F1, mean over seeds
    cmp: dict  # (before, after[, "log-only"]) -> metric -> pooled_comparison's entry
    n_log_only: int  # test queries that use a log-only variant, all seeds together
    # (arm, subset) -> metric -> pooled_comparison's entry: the arm minus the log-fit dictionary (DICTIONARY) over
    # the SUBSETS of the test queries, for the VS_DICTIONARY_ARMS trained
    vs_dictionary: dict = field(default_factory=dict)
    n_unseen: int = 0  # unseen-intent test queries, all seeds together


DICTIONARY = "dictionary"  # per_query's key of the dictionary a shop fits on its logs (a baseline, not an arm)
VS_DICTIONARY_ARMS = ("sft-multi", "grpo-fusion")
SUBSETS = ("all", "tail", UNSEEN, "log-only")  # the test queries a comparison can be restricted to


GATE_ARMS = ("sft-multi", "grpo-fusion")  # the serving gate is measured on each of these that was trained


def evaluate_seed(out: Path, names: list[str], seed: int) -> SeedEvaluation:
    """Load the arms' runs from the seed's directory ``out`` and score them (the baselines with the first).

    Besides the rows: what kinds of rewrites each arm writes (the reward-hacking
    counts), the tagger's accuracy per kind of pair, what each run recorded of the
    wall (:func:`wall_records`), the conversion model's estimate of each arm's
    pages (GRPO's learned conversion reward, to hold against the simulator's UCVR),
    and the serving gate (threshold chosen on the seed's val queries) on each of
    :data:`GATE_ARMS` trained, by the tagger alone and with each query check
    (:data:`qrw.scorecard.GATE_QUERY_CHECKS`).
    """
    runs = {name: load_run(out / name) for name in names}
    world = runs[names[0]].world
    for name in names[1:]:
        check(runs[name].config["world"] == runs[names[0]].config["world"],
              f"{out / name} and {out / names[0]} come from different worlds; retrain with --force")
    ctx = Shop(world)
    queries = world.queries["test"]
    texts = [q.text for q in queries]
    readings = ctx.dictionary.rewrite(texts)  # what the rules' anchors read in each query
    rows, rewrites, per_query, tagging, kinds, tag_detail, gates, query_gates = {}, {}, {}, {}, {}, {}, {}, {}
    conversion = {}
    for i, name in enumerate(names):
        rewriter = runs[name].rewriter()
        res = evaluate_run(ctx, rewriter, name=LABELS[name], baselines=(i == 0),
                           tagging=tagger_source(runs[name].config) == "sft")
        if name in GATE_ARMS:  # a GRPO arm is gated by its frozen SFT init's tagger (qrw.scorecard.evaluate_gate)
            init = GRID[name].init
            judge = None if init is None else runs[init].rewriter()
            for check_ in GATE_QUERY_CHECKS:
                into = gates if check_ == "none" else query_gates.setdefault(check_, {})
                into[name] = evaluate_gate(ctx, rewriter, res, threshold="auto", judge=judge, query_check=check_)
                del res["rows"][f"{LABELS[name]} + gate"]
        if i == 0:
            dictionary = ctx.baseline_rewrites(DICTIONARY, queries)
            per_query[DICTIONARY] = rewrite_metrics(world, ctx.engine, ctx.users, queries, dictionary, k=ctx.k)
            conversion[DICTIONARY] = ctx.observed.page_conversion(texts, dictionary, ctx.k)
        rows.update(res["rows"])
        rewrites[name] = res["rewrites"]
        per_query[name] = rewrite_metrics(world, ctx.engine, ctx.users, queries, res["rewrites"], k=ctx.k)
        conversion[name] = ctx.observed.page_conversion(texts, res["rewrites"], ctx.k)
        kinds[name] = (rewrite_kinds(world, queries, res["rewrites"])
                       | dropped_attribute_values(world, queries, res["rewrites"], readings))
        if "tagging" in res:
            tagging[LABELS[name]] = res["tagging"]["tag_macro_f1"]
            tag_detail[LABELS[name]] = res["tagging"]
    log_only = np.array([world.uses_log_only(q) for q in queries], dtype=bool)
    return SeedEvaluation(seed, world, ctx, queries, rows, rewrites, per_query, tagging, log_only, kinds, tag_detail,
                          gates, query_gates, ctx.unseen(queries), wall_records(out, names), conversion)


def wall_records(out: Path, names: list[str]) -> dict:
    """arm -> what its run recorded of the hidden truth it used (``metrics.json["wall"]``; None when absent)."""
    return {name: json.loads((out / name / "metrics.json").read_text()).get("wall") for name in names}


def nan_mean(values) -> float:
    """Mean ignoring NaN (NaN when every value is)."""
    values = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(values))


def mean_rows(rows_by_seed: list[dict]) -> dict:
    """rewriter label -> segment -> metric: the mean over seeds of each seed's row."""
    return {label: {seg: {m: nan_mean([rows[label][seg].get(m) for rows in rows_by_seed]) for m in metrics}
                    for seg, metrics in segments.items()}
            for label, segments in rows_by_seed[0].items()}


def subset_mask(s: SeedEvaluation, subset: str) -> np.ndarray:
    """(Q,) bool: the seed's test queries in ``subset`` (:data:`SUBSETS`)."""
    check(subset in SUBSETS, f"subset must be one of {', '.join(SUBSETS)} (got {subset!r})")
    if subset == "log-only":
        return s.log_only
    if subset == UNSEEN:
        return s.unseen
    if subset == "tail":
        return np.array([q.segment == "tail" for q in s.queries], dtype=bool)
    return np.ones(len(s.queries), dtype=bool)


def pooled_comparison(seeds: list[SeedEvaluation], before: str, after: str, log_only: bool = False,
                      subset: str = "all") -> dict:
    """metric -> after minus before, paired within each seed and pooled over seeds (:mod:`qrw.shop.pooled`).

    Each entry: ``before`` / ``after`` (means over seeds), ``diff``, ``low``, ``high``
    (the pooled 95% interval), ``se``, ``seeds`` and ``per_seed`` (each seed's mean
    paired difference), ``n`` (the queries compared, all seeds together). ``subset``
    (:data:`SUBSETS`): only those test queries (a seed with fewer than 2 of them is
    left out); ``log_only=True`` is ``subset="log-only"``.
    """
    subset = "log-only" if log_only else subset
    used = [(s, subset_mask(s, subset)) for s in seeds]
    used = [(s, rows) for s, rows in used if rows.sum() >= 2]
    out = {}
    for metric in METRICS:
        pairs = [(s.per_query[before][metric][rows], s.per_query[after][metric][rows]) for s, rows in used]
        pooled = pooled_paired_diff(pairs)
        out[metric] = {"before": nan_mean([nan_mean(b) for b, _ in pairs]), "after": nan_mean([nan_mean(a) for _, a in pairs]),
                       "diff": pooled.diff, "low": pooled.low, "high": pooled.high, "se": pooled.se,
                       "seeds": [s.seed for s, _ in used], "per_seed": [c.lift for c in pooled.per_seed],
                       "n": int(sum(rows.sum() for _, rows in used))}
    return out


def evaluate_grid(out: Path, names: list[str], seeds: list[int]) -> GridEvaluation:
    """Every seed's evaluation (``out/seed-S``), the rows' means over seeds and the pooled comparisons."""
    per_seed = [evaluate_seed(out / f"seed-{seed}", names, seed) for seed in seeds]
    rows = mean_rows([s.rows for s in per_seed])
    tagging = {label: nan_mean([s.tagging.get(label) for s in per_seed]) for label in per_seed[0].tagging}
    cmp = {(a, b): pooled_comparison(per_seed, a, b) for a, b in CLAIM_PAIRS + BOUND_PAIRS if a in names and b in names}
    n_log_only = sum(int(s.log_only.sum()) for s in per_seed)
    if ("sft-nopretrain", "sft-multi") in cmp and any(s.log_only.sum() >= 2 for s in per_seed):
        cmp[("sft-nopretrain", "sft-multi", "log-only")] = pooled_comparison(per_seed, "sft-nopretrain", "sft-multi",
                                                                            log_only=True)
    vs_dictionary = {(arm, subset): pooled_comparison(per_seed, DICTIONARY, arm, subset=subset)
                     for arm in VS_DICTIONARY_ARMS if arm in names for subset in ("all", "tail", UNSEEN)
                     if any(subset_mask(s, subset).sum() >= 2 for s in per_seed)}
    n_unseen = sum(int(s.unseen.sum()) for s in per_seed)
    return GridEvaluation(names, per_seed, rows, tagging, cmp, n_log_only, vs_dictionary, n_unseen)

