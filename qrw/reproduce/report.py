"""The report (docs/RESULTS.md): the wall, tables, readings, the serving gate, A/B tests and training curves.

:func:`report` assembles it; the prose readings (the wall, GRPO against its init and the
log-fit dictionary, the upper bounds) are :mod:`qrw.reproduce.readings`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
from pathlib import Path

import numpy as np
import torch

from qrw.curves import format_curves, loss_curves, read_records, verdict as curve_verdict
from qrw.scorecard import DROPPED_VALUES, HACKING
from qrw.shop.abtest import ab_test
from qrw.shop.metrics import METRICS, page_grades
from qrw.shop.shop import BASELINE_LABELS, BASELINES, UNSEEN, Shop
from qrw.reproduce.claims import check_claims, ci_text
from qrw.reproduce.evaluation import GATE_ARMS, GridEvaluation, nan_mean
from qrw.reproduce.grid import GRID, LABELS, command_of, grid_command
from qrw.reproduce.readings import conversion_lines, grpo_lines, regime_lines, vs_dictionary_table, wall_lines

AB_USERS = 100_000
OOD_SERVED_OK = 0.10  # the gate's reading: out-of-domain queries served under this share on test


def ab_lines(ctx: Shop, queries, rewrites: dict, pairs: list[tuple[str, str]], seed: int) -> list[str]:
    """Simulated online A/B tests (``python -m qrw.evaluate --ab``'s core) between grid rows."""
    texts = [q.text for q in queries]
    intents = [q.intent for q in queries]
    lines = [f"Each test: {AB_USERS:,} simulated shoppers, queries drawn uniformly from the test queries, "
             "split 50/50 at random; lift = treatment - control with its 95% interval (Welch).", "",
             "| control | treatment | UCVR control | UCVR treatment | UCVR lift [95% CI] | relevance lift [95% CI] |",
             "|---|---|---:|---:|---|---|"]
    for control, treatment in pairs:
        sides = []
        for name in (control, treatment):
            pages = ctx.engine.pages(texts, rewrites[name], ctx.k)  # (Q, k)
            sides += [pages, page_grades(ctx.world.judge, intents, pages)]
        res = ab_test(ctx.users, *sides, AB_USERS, np.random.default_rng(seed))
        u, r = res["lift"]["ucvr"], res["lift"]["relevance"]
        lines.append(f"| {LABELS.get(control, control)} | {LABELS.get(treatment, treatment)} | "
                     f"{res['control']['ucvr']:.4f} | {res['treatment']['ucvr']:.4f} | "
                     f"{u['absolute']:+.4f} [{u['ci_low']:+.4f}, {u['ci_high']:+.4f}] | "
                     f"{r['absolute']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] |")
    return lines


def table(rows: dict, segment: str, names: list[str], tagging: dict) -> list[str]:
    head = "| rewriter | accuracy | relevance@10 | recall@10 | UCVR | tagger macro-F1 |"
    lines = [head, "|---|---:|---:|---:|---:|---:|"]
    for name in names:
        r = rows[name][segment]
        cells = ["-" if (r.get(m) is None or np.isnan(r.get(m, np.nan))) else f"{r[m]:.3f}" for m in METRICS]
        f1 = tagging.get(name)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {'-' if f1 is None else f'{f1:.3f}'} |")
    return lines


def _save_figure(fig, axes, path: Path) -> str:
    """Legends, tight layout, PNG at ``path``; returns the file name."""
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:  # an axis with nothing drawn (no KL measured) gets no legend
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path.name


def trailing_mean(steps, values, window: int):
    """``(steps, means)`` of a trailing moving average: each point averages the ``window`` values ending there.

    Unlike ``np.convolve(..., mode="same")`` it does not pad with zeros, so the curve's ends are not dragged to 0.
    """
    window = max(1, min(window, len(values)))
    means = np.convolve(np.asarray(values, dtype=float), np.ones(window) / window, mode="valid")
    return list(steps)[window - 1:], means


def plot_curves(out: Path, docs: Path, suffix: str, names: list[str]) -> list[str]:
    """Training curves of one seed's runs in ``out`` (only when matplotlib is installed); returns the files written.

    Stage 1: each SFT arm's training loss per task (20-step trailing mean) and its
    validation loss (dots on the same colour); GRPO: the sampled rewrites' rewards and the KL.
    """
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    sft = [n for n in names if GRID[n].script == "train_sft.py"]
    grpo = [n for n in names if GRID[n].script == "train_grpo.py"]
    if sft:
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
        for name in sft:
            recs = read_records(out / name)
            for ax, task in zip(axes, ("rewrite", "relevance")):
                pts = [(r["step"], r[f"{task}_loss"]) for r in recs if r["stage"] == "sft" and f"{task}_loss" in r]
                val = [(r["step"], r[f"val_{task}_loss"]) for r in recs if f"val_{task}_loss" in r]
                if pts:
                    steps, vals = zip(*pts)
                    line, = ax.plot(*trailing_mean(steps, vals, 20), label=LABELS[name])
                    if val:
                        ax.plot(*zip(*val), "o--", color=line.get_color(), markersize=3, linewidth=0.8,
                                label=f"{LABELS[name]}, validation")
                    ax.set_title(f"stage 1 {task} loss: training (20-step mean), validation (dots)")
                    ax.set_xlabel("step")
                    ax.set_yscale("log")
        written.append(_save_figure(fig, axes, docs / f"sft_curves{suffix}.png"))
    if grpo:
        fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
        for name in grpo:
            recs = [json.loads(x) for x in (out / name / "metrics.jsonl").read_text().splitlines()]
            for ax, key, title in zip(axes, ("reward_page_relevance_mean", "reward_ucvr_mean", "kl"),
                                      ("training relevance@10 of samples", "training UCVR of samples",
                                       "KL to SFT (k3)")):
                pts = [(r["step"], r[key]) for r in recs if r.get(key) is not None]  # KL: the steps that measured it
                if pts:
                    ax.plot(*trailing_mean(*zip(*pts), 10), label=LABELS[name])
                ax.set_title(f"{title} (10-step mean)")
                ax.set_xlabel("GRPO step")
        written.append(_save_figure(fig, axes, docs / f"grpo_curves{suffix}.png"))
    plt.close("all")
    return written


def report_header(args: argparse.Namespace, grid: GridEvaluation, timing: dict) -> list[str]:
    """The report's title and the paragraphs on the command, the machine, the time, the world and the metrics."""
    first = grid.seeds[0]
    world, queries, observed = first.world, first.queries, first.shop.observed
    seeds = [s.seed for s in grid.seeds]
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}-{seeds[-1]} ({len(seeds)} seeds)"
    cpu = platform.processor() or platform.machine()
    mode = " (smoke settings)" if args.smoke else " (quick settings)" if args.quick else ""
    return [f"# qrw reproduction results{mode}", "",
            f"Produced by `{grid_command(args)}` on {datetime.date.today().isoformat()}: {os.cpu_count()} CPU cores "
            f"({cpu}), torch {torch.__version__}, Python {platform.python_version()}, device {args.device}; every arm "
            f"trained with {seed_text}, each seed's runs under `seed-S/` of the output directory. "
            f"Wall time of this call: {timing['total'] / 60:.1f} min (training {timing['training'] / 60:.1f} min, "
            f"evaluation {timing['evaluation'] / 60:.1f} min); the runs' own training times sum to "
            f"{timing['recorded'] / 60:.1f} min ({timing['reused']} of {timing['runs']} runs reused from an earlier "
            "call, their times as they recorded them). Everything below is measured, not edited.", "",
            f"World: each seed generates its own synthetic world (the training scripts' world config, "
            f"seed = the run's seed) and so its own test queries; seed {first.seed}'s has {len(world.products)} "
            f"products, {len(world.queries['train'])} train / {len(queries)} test queries, "
            f"{len(observed.sessions):,} logged sessions and {len(observed.grpo_texts):,} distinct logged searches "
            "with a click (GRPO's training queries). Metrics are on the held-out test queries (new intent and "
            "variant combinations); relevance@10 and recall@10 are on the results page "
            "`page(q, r) = dedupe(interleave(top10(r), top10(q)))[:10]`, UCVR is the simulated shoppers' expected "
            "purchases per user, accuracy is the share of rewrites the judge grades 2 (equivalent): the judge and "
            "the shoppers are the hidden truth, which no default arm's reward reads. Baselines: \"dictionary\" is "
            "the synonym dictionary a shop fits on its logs' (query, clicked title) pairs (the fair baseline, and "
            "the dictionary the rules and the gate read); \"gold-dictionary (upper bound)\" is the same rewriter "
            "fit on the training queries' gold rewrites, and \"gold\" the gold rewrites themselves: no shop has "
            "either. The unseen intents are the test queries whose intent occurs in no training query, logged "
            f"query or mined pair ({grid.n_unseen} over the seeds).", ""]


def per_seed_table(grid: GridEvaluation, labels: list[str]) -> list[str]:
    """One row per rewriter and seed (all test queries)."""
    lines = ["| rewriter | seed | accuracy | relevance@10 | recall@10 | UCVR |", "|---|---:|---:|---:|---:|---:|"]
    for label in labels:
        for s in grid.seeds:
            r = s.rows[label]["all"]
            cells = ["-" if np.isnan(nan_mean([r.get(m)])) else f"{r[m]:.3f}" for m in METRICS]
            lines.append(f"| {label} | {s.seed} | " + " | ".join(cells) + " |")
    return lines


def comparison_table(grid: GridEvaluation) -> list[str]:
    """Each comparison's pooled difference and interval per metric, each seed's difference beside it."""
    seeds = [s.seed for s in grid.seeds]
    lines = ["| after minus before | metric | " + " | ".join(f"seed {s}" for s in seeds) + " | pooled [95% CI] |",
             "|---|---|" + "---:|" * len(seeds) + "---|"]
    for key, c in grid.cmp.items():
        name = f"{LABELS[key[1]]} minus {LABELS[key[0]]}" + (" (log-only queries)" if len(key) > 2 else "")
        for metric, m in c.items():
            by_seed = dict(zip(m["seeds"], m["per_seed"]))
            cells = ["-" if s not in by_seed else f"{by_seed[s]:+.4f}" for s in seeds]
            star = " *" if m["low"] > 0 or m["high"] < 0 else ""
            lines.append(f"| {name} | {metric} | " + " | ".join(cells) + f" | {ci_text(m)}{star} |")
    return lines


def hacking_table(grid: GridEvaluation) -> list[str]:
    """Per arm: the rewrites of the reward-hacking kinds (:data:`qrw.scorecard.HACKING`), each seed's count."""
    n = len(grid.seeds[0].queries)
    columns = tuple(HACKING) + DROPPED_VALUES
    lines = [f"| rewriter | {' | '.join(columns)} |", "|---|" + "---:|" * len(columns)]
    for name in grid.names:
        cells = [" / ".join(str(s.kinds[name].get(h, "-")) for s in grid.seeds) for h in columns]
        lines.append(f"| {LABELS[name]} | " + " | ".join(cells) + " |")
    return [f"Counts among each seed's {n} test rewrites, seed by seed (`a / b / c`): a learned relevance reward "
            "lets these through where it misjudges them (README, \"GRPO\"). The last two columns count the attribute "
            "values that the \"attribute dropped\" rewrites give up: those the rules' dictionary (fit on the logs) "
            "reads in the query (the `anchors` rule sees them dropped) and those it does not (no rule sees them).",
            ""] + lines


def tagger_kind_table(grid: GridEvaluation) -> list[str]:
    """The trained taggers' accuracy against the judge per kind of held-out pair, mean over seeds (n per seed)."""
    labels = list(grid.seeds[0].tag_detail)
    if not labels:
        return []
    rows: dict[str, dict[str, list]] = {}
    for s in grid.seeds:
        for label in labels:
            t = s.tag_detail[label]
            for kind, v in t["tag_by_kind"].items():
                rows.setdefault(f"perturbed: {kind}", {}).setdefault(label, []).append((v["accuracy"], v["n"]))
            rows.setdefault("perturbed: all", {}).setdefault(label, []).append((t["tag_accuracy"], t["tag_pairs"]))
            mined = t.get("tag_mined") or {}
            for kind, v in mined.get("by_kind", {}).items():
                rows.setdefault(f"mined: {kind}", {}).setdefault(label, []).append((v["accuracy"], v["n"]))
            if mined.get("n"):
                rows.setdefault("mined: all", {}).setdefault(label, []).append((mined["accuracy"], mined["n"]))
    lines = ["| held-out pairs | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    for kind, by_label in rows.items():
        cells = []
        for label in labels:
            got = by_label.get(label, [])
            cells.append("-" if not got else f"{nan_mean([a for a, _ in got]):.3f} (n {round(nan_mean([n for _, n in got]))})")
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return ["Accuracy against the judge (mean over seeds; n = pairs per seed) on each seed's test queries: the "
            "perturbed rewrites of the world (`World.relevance_examples`) and mined pairs started from the test "
            "queries (`held_out_mined_pairs`), none of them trained on.", ""] + lines


def _share(value) -> str:
    """A share as a percentage, ``-`` when missing or NaN."""
    return "-" if value is None or not np.isfinite(value) else f"{value:.1%}"


def gate_lines(grid: GridEvaluation) -> list[str]:
    """The serving gate, per seed, gated arm and query check: threshold (and each val set's pick), the shares of
    out-of-domain queries served on val and on test (the logged searches, by query and by traffic; nouns never
    logged), the in-domain share served (by the judge's grade of the rewrite), the paired cost."""
    gated = [(s.seed, arm, check_, gates[arm]) for s in grid.seeds for arm in GATE_ARMS
             for check_, gates in (("none", s.gates), *s.query_gates.items()) if arm in gates]
    if not gated:
        return []
    target = next((g["chosen"]["target"] for *_, g in gated if g.get("chosen")), None)
    lines = ["A rewrite is served only when a tagger gives it P(equivalent) above a threshold chosen on each seed's "
             "validation queries; otherwise the query is searched alone. Two sets of out-of-domain queries (products "
             "this catalog does not sell): **logged**, the out-of-domain searches the shop's logs really contain "
             "(their distinct texts split in a val half and a test half; the same nouns recur in both, and the "
             "tagger and the shop's vocabulary may have seen them), and **never logged**, queries of nouns the logs "
             "never hold (`qrw.shop.ood`'s val / test nouns). On each set's val queries the smallest threshold that "
             f"serves at most {_share(target)} of them is picked; the threshold is the **largest of the two picks** "
             "(each set then at or below the target on val). The multi-task SFT run is scored by its own tagger, a "
             "GRPO run by its frozen SFT init's (the reward's relevance model). A query check (`--gate-query`) must "
             "pass besides: \"dictionary\": the dictionary fit on the shop's logs reads a catalog category or brand "
             "in the query (`qrw.shop.shop.Shop.reads_product`); \"vocabulary\": the shop knows every word of the "
             "query, one typo forgiven in words of 5+ letters (`qrw.shop.shop.Shop.knows_query`); \"passed\": the "
             "share of logged out-of-domain / never-logged out-of-domain / in-domain test queries that pass it. "
             "\"logged OOD served\" gives the share of the distinct logged searches and, in brackets, of their "
             "traffic (each weighted by how often the logs hold it). \"served by grade\": the share served among the "
             "in-domain rewrites the judge grades 0 / 1 / 2, how well the gate tells them apart. The last column "
             "reads the row: out-of-domain served under 10% on test (the never-logged queries, and the logged "
             "searches by traffic) / no in-domain page metric lower with the gate on (every on - off interval "
             "reaches 0 or above).", "",
             "| seed | arm | query check | threshold (val picks: logged / never logged) | OOD served (val): logged / "
             "never logged | logged OOD served (test), off -> on (traffic) | never-logged OOD served (test), off -> "
             "on | passed | in-domain served (test) | served by grade 0 / 1 / 2 | relevance@10 on - off | "
             "recall@10 on - off | UCVR on - off | OOD < 10% / in-domain within noise |",
             "|---:|---|---|---|---|---|---|---|---:|---|---|---|---|---|"]
    for seed, arm, check_, g in gated:
        d, o, lg, c = g["in_domain"], g["ood"], g.get("ood_logged") or {}, g.get("chosen") or {}
        diffs = " | ".join(ci_text({"diff": d["diff"][m]["lift"], "low": d["diff"][m]["low"],
                                    "high": d["diff"][m]["high"]}) for m in ("relevance", "recall", "ucvr"))
        grades = " / ".join(f"{d['by_grade'][g_]['served']:.0%}" if g_ in d.get("by_grade", {}) else "-"
                            for g_ in ("0", "1", "2"))
        picks = c.get("thresholds", {})
        each = " / ".join(f"{picks[k]:.4f}" if k in picks else "-" for k in ("logged", "unseen"))
        threshold = f"{g['threshold']:.4f} ({each})" if picks else f"{g['threshold']:.4f}"
        val = f"{_share(c.get('ood_logged_served'))} / {_share(c.get('ood_served'))}" if c else "-"
        logged = (f"{_share(lg.get('served_off'))} -> {_share(lg.get('served_on'))} "
                  f"({_share(lg.get('served_on_traffic'))})" if lg.get("n") else "none logged")
        read = ("-" if check_ == "none" else
                f"{_share(lg.get('query_passed'))} / {_share(o['query_passed'])} / {_share(d['query_passed'])}")
        ood_ok = o["served_on"] < OOD_SERVED_OK and (not lg.get("n") or lg["served_on_traffic"] < OOD_SERVED_OK)
        in_ok = all(d["diff"][m]["high"] >= 0 for m in ("relevance", "recall", "ucvr"))
        lines.append(f"| {seed} | {LABELS[arm]} | {check_} | {threshold} | {val} | {logged} | "
                     f"{_share(o['served_off'])} -> {_share(o['served_on'])} | {read} | {_share(d['served']['all'])} | "
                     f"{grades} | {diffs} | {'yes' if ood_ok else 'no'} / {'yes' if in_ok else 'no'} |")
    return lines


def curve_lines(out: Path, grid: GridEvaluation) -> list[str]:
    """Per SFT arm: training vs validation loss of the first seed (table) and every seed's verdicts."""
    lines = []
    for name in grid.names:
        if GRID[name].script != "train_sft.py":
            continue
        lines += [f"### {LABELS[name]}", ""]
        for i, s in enumerate(grid.seeds):
            curves = {"sft": loss_curves(read_records(out / f"seed-{s.seed}" / name)).get("sft", {})}
            if i == 0:
                lines += [f"Seed {s.seed} (train: mean loss since the previous evaluation; gap = val - train):", ""]
                lines += format_curves(curves, compact=True) + ["Every seed:", ""]
            lines += [f"- seed {s.seed}: {curve_verdict(task, points)}" for task, points in curves["sft"].items()]
        lines.append("")
    return lines


def report(args: argparse.Namespace, grid: GridEvaluation, trained: dict[tuple[int, str], tuple[float, bool]],
           timing: dict, plots: list[str], out: Path) -> list[str]:
    """The lines of docs/RESULTS.md: the wall, tables, per-seed rows and differences, the arms against the log-fit
    dictionary, the claims, GRPO's readings, the upper bounds, curves, runs."""
    n = len(grid.seeds)
    labels = [BASELINE_LABELS[b] for b in BASELINES] + [LABELS[name] for name in grid.names]
    over = "" if n == 1 else f" (mean over {n} seeds)"
    lines = report_header(args, grid, timing) + ["## The wall: what of the hidden truth training used", ""]
    lines += wall_lines(grid) + [f"## All queries{over}", ""]
    lines += table(grid.rows, "all", labels, grid.tagging)
    n_tail = sum(q.segment == "tail" for s in grid.seeds for q in s.queries)
    lines += ["", f"## Hardest segment: tail (rare or log-only variants, typos; {n_tail} queries over the seeds){over}", ""]
    lines += table(grid.rows, "tail", labels, grid.tagging)
    lines += ["", f"## Unseen intents (in no training query, logged query or mined pair; {grid.n_unseen} queries over "
              f"the seeds){over}", ""]
    lines += table(grid.rows, UNSEEN, labels, grid.tagging)
    lines += ["", "## Every seed", ""] + per_seed_table(grid, labels)
    lines += ["", "## Paired differences, pooled over seeds", "",
              "Within a seed both arms rewrite the same test queries: each seed's difference is the mean per-query "
              "difference. Pooled = the mean of the seeds' differences; its 95% interval (`qrw.shop.pooled`) is "
              "`pooled -/+ t(N-1) * sd(seed differences) / sqrt(N)` (each seed's difference carries both its "
              "training and its query noise; t with N - 1 degrees of freedom: 12.7 for 2 seeds, 4.30 for 3); with "
              "one seed it is the per-query paired interval. * = the interval excludes 0.", ""]
    lines += comparison_table(grid)
    vs_dictionary = vs_dictionary_table(grid)
    if vs_dictionary:
        lines += ["", "## Against the dictionary a shop fits on its logs", "",
                  "The trained arms minus the log-fit dictionary, paired per query within each seed and pooled as "
                  "above, on all test queries, the tail and the unseen intents; dictionary and arm: the two sides' "
                  "means over seeds. * = the interval excludes 0.", ""] + vs_dictionary
    lines += ["", "## The paper's claims, checked here", "",
              "Each claim is judged on the pooled intervals above, in this regime: every reward of the default arms "
              "is learned from what a shop has (The wall, above).", ""]
    lines += [c + "\n" for c in check_claims(grid.cmp, grid.rows, grid.n_log_only)]
    grpo = grpo_lines(grid)
    if grpo:
        lines += ["## GRPO against its SFT init and against the log-fit dictionary", ""] + grpo + [""]
    conversion = conversion_lines(grid)
    if conversion and any(GRID[n].script == "train_grpo.py" for n in grid.names):
        lines += ["## The learned conversion reward against the simulator", "",
                  "GRPO's conversion reward is the conversion model fit on the logged sessions "
                  "(`ObservedShop.page_conversion`: expected purchases per search on `page(q, r)`, before "
                  "`--conversion-scale`); the test metric UCVR is the shopper simulator's. Both on each arm's test "
                  "pages, means over seeds (the correlation: over each seed's queries, then averaged):", ""]
        lines += conversion + [""]
    regime = regime_lines(grid)
    if regime:
        lines += ["## The production regime against its upper bounds", "",
                  "The defaults learn from what a shop has: mined rewrite pairs, relevance labels bought through the "
                  "annotation door, a tagger trained on them, rules and a gate that read the log-fit dictionary, a "
                  "conversion model fit on the logged sessions. Each upper bound swaps one of them for the hidden "
                  "truth: gold rewrites, gold-built judge-labelled relevance pairs, the judge's grades as the "
                  "relevance reward, the simulator's expected purchases as the conversion reward.", ""] + regime + [""]
    lines += ["## Reward hacking: what the rewrites are", ""] + hacking_table(grid) + [""]
    tagger = tagger_kind_table(grid)
    if tagger:
        lines += ["## The relevance tagger, per kind of rewrite", ""] + tagger + [""]
    gate = gate_lines(grid)
    if gate:
        lines += ["## The serving gate", ""] + gate + [""]
    first = grid.seeds[0]
    ab_pairs = [(a, b) for a, b in (("none", "sft-multi"), ("sft-multi", "grpo-fusion"), ("sft-multi", "grpo-conversion"))
                if {a, b} - {"none"} <= set(grid.names)]
    if ab_pairs:
        lines += [f"## Simulated online A/B tests (seed {first.seed}'s world)", ""]
        lines += ab_lines(first.shop, first.queries, {**first.rewrites, "none": [None] * len(first.queries)},
                          ab_pairs, args.seed)
        lines += [""]
    lines += ["## Generalisation: training against validation loss (`python -m qrw.curves RUN_DIR`)", "",
              "Validation loss on fixed held-out examples per task (gold val rewrites for the rewrite task), every "
              "`--sft-eval-every` steps of stage 1.", ""]
    lines += curve_lines(out, grid)
    seeds = [s.seed for s in grid.seeds]
    lines += ["## Runs", "", "Training wall time as each run recorded it (a run trained while another was "
              "training on the same cores is slower than alone; r = finished run reused).", "",
              "| run | command | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---|---|" + "---:|" * n]
    for name in grid.names:
        cells = [f"{trained[(s, name)][0]:.0f} s{' (r)' if trained[(s, name)][1] else ''}" for s in seeds]
        lines.append(f"| {LABELS[name]} | `{command_of(name, args)}` | " + " | ".join(cells) + " |")
    if plots:
        lines += ["", f"## Training curves (seed {seeds[0]})", ""] + [f"![{p}]({p})" for p in plots]
    lines += ["", f"Regenerate: `{grid_command(args)}` (finished runs under the output directory are reused; "
              "`--force` retrains them)."]
    return lines
