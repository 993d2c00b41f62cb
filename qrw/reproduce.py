"""Train and evaluate the grid of the paper's comparisons over seeds, then write docs/RESULTS.md.

    python -m qrw.reproduce --seeds 3           # every arm with seeds 0, 1, 2
    python -m qrw.reproduce                     # one seed (seed 0)
    python -m qrw.reproduce --quick             # shorter training everywhere: checks the pipeline, not the claims
    python -m qrw.reproduce --arms sft-multi,sft-single --seeds 2    # a subset of the arms (their inits added)

Arms (:data:`GRID`; one line each to add another), all on each seed's held-out test queries:

    no rewrite, dictionary, gold              baselines (no training)
    multi-task SFT                            train_sft.py                    (rewrite + relevance tagging)
    single-task SFT                           train_sft.py --tasks rewrite
    multi-task SFT, no pretraining            train_sft.py --no-pretrain
    single-task SFT, gold pairs               train_sft.py --tasks rewrite --rewrite-data gold    (upper bound)
    GRPO fusion / relevance / conversion      train_grpo.py --reward R        (from the multi-task SFT run)
    GRPO fusion, no rules                     train_grpo.py --rules none      (what the rule rewards do)
    GRPO fusion, oracle relevance             train_grpo.py --relevance-judge oracle              (upper bound)

The scripts' defaults are the production regime: SFT learns mined rewrite pairs (with their
drift) and relevance labels of what production would label; GRPO's relevance reward is the
frozen SFT model's tagger plus rule rewards, no oracle in the loop. The upper bounds swap in
what production does not have: gold rewrites, the evaluation's own judge as the reward.

Seeds: ``--seeds N`` trains every arm with seeds S .. S+N-1 (S = ``--seed``), each run
a subprocess writing ``OUT/seed-S/NAME`` (its output in ``OUT/seed-S/NAME.log``), one
seed included: the layout does not depend on N. A finished run is reused, so an
interrupted grid continues where it stopped (``--force`` retrains). The seed is the
run's whole seed: the world (``WorldConfig.seed``), hence its test queries, the model
initialisation, the data order and GRPO's sampling, so the seeds are independent
replicates of the experiment.

The report gives each seed's rows, and for every comparison the claims use the
paired difference pooled over seeds with its 95% interval (:mod:`qrw.shop.pooled`:
the mean over seeds of each seed's mean per-query difference, a t interval over the
seed means; one seed: the per-query paired interval), each seed's
difference beside it, the claims judged on the pooled intervals, the SFT arms'
training against validation loss (:mod:`qrw.curves`), and how long it all took;
``OUT/results.json`` holds the same numbers. Training curves are drawn to ``docs/``
when matplotlib is installed (the optional ``plot`` extra).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from qrw.config import Parser, UserError, check, run_main
from qrw.curves import format_curves, loss_curves, read_records, verdict as curve_verdict
from qrw.evaluate import to_json
from qrw.runs import load_run
from qrw.scorecard import (DROPPED_VALUES, GATE_QUERY_CHECKS, HACKING, dropped_attribute_values, evaluate_gate,
                            evaluate_run, rewrite_kinds, tagger_source)
from qrw.shop.abtest import ab_test
from qrw.shop.metrics import METRICS, page_grades, rewrite_metrics
from qrw.shop.pooled import pooled_paired_diff
from qrw.shop.shop import Shop
from qrw.shop.world import World


@dataclass(frozen=True)
class Arm:
    """One arm of the grid: a training command and, for GRPO, the arm whose run it starts from."""

    label: str  # its row in the report's tables
    script: str  # train_sft.py or train_grpo.py
    flags: tuple[str, ...] = ()  # on top of --out, --seed, --device, --quiet
    init: str | None = None  # the arm whose run is --init (GRPO)


# sft-multi and grpo-fusion are the scripts' defaults; an arm starts after the arm it starts from
GRID = {
    "sft-multi": Arm("multi-task SFT", "train_sft.py"),
    "sft-single": Arm("single-task SFT", "train_sft.py", ("--tasks", "rewrite")),
    "sft-nopretrain": Arm("multi-task SFT, no pretrain", "train_sft.py", ("--no-pretrain",)),
    "sft-single-gold": Arm("single-task SFT, gold pairs", "train_sft.py", ("--tasks", "rewrite", "--rewrite-data", "gold")),
    "grpo-fusion": Arm("GRPO fusion", "train_grpo.py", ("--reward", "fusion"), "sft-multi"),
    "grpo-relevance": Arm("GRPO relevance", "train_grpo.py", ("--reward", "relevance"), "sft-multi"),
    "grpo-conversion": Arm("GRPO conversion", "train_grpo.py", ("--reward", "conversion"), "sft-multi"),
    "grpo-norules": Arm("GRPO fusion, no rules", "train_grpo.py", ("--reward", "fusion", "--rules", "none"), "sft-multi"),
    "grpo-oracle": Arm("GRPO fusion, oracle relevance", "train_grpo.py",
                       ("--reward", "fusion", "--relevance-judge", "oracle"), "sft-multi"),
}
LABELS = {"none": "no rewrite", **{name: arm.label for name, arm in GRID.items()}}
# (before, after) pairs compared on the same queries: the claims' and the upper bounds' (after minus before)
CLAIM_PAIRS = [("sft-single", "sft-multi"), ("sft-nopretrain", "sft-multi"), ("sft-multi", "grpo-fusion"),
               ("sft-multi", "grpo-relevance"), ("sft-multi", "grpo-conversion"), ("grpo-fusion", "grpo-conversion")]
BOUND_PAIRS = [("sft-single-gold", "sft-single"), ("grpo-norules", "grpo-fusion"), ("grpo-oracle", "grpo-fusion")]
QUICK = {"train_sft.py": ["--pretrain-steps", "150", "--sft-steps", "500"], "train_grpo.py": ["--steps", "40"]}
SMOKE = {"train_sft.py": ["--smoke", "--sft-eval-every", "4"], "train_grpo.py": ["--smoke"]}  # tests: seconds a run
AB_USERS = 100_000


def parse_args(argv=None) -> argparse.Namespace:
    p = Parser(prog="python -m qrw.reproduce", description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=1, help="train every arm with this many seeds: --seed, --seed + 1, ...")
    p.add_argument("--seed", type=int, default=0, help="the first seed")
    p.add_argument("--arms", default=None, metavar="A,B,...",
                   help=f"train and report only these arms (and the arms they start from); of: {', '.join(GRID)}")
    p.add_argument("--quick", action="store_true", help="short training everywhere (a pipeline check, minutes)")
    p.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # tests: tiny world and runs, seconds each
    p.add_argument("--out", default=None, help="directory of the grid's runs (default runs/reproduce[-quick])")
    p.add_argument("--results", default=None, help="where to write the report (default docs/RESULTS[-quick].md)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--force", action="store_true", help="retrain runs that already finished")
    p.add_argument("--jobs", type=int, default=1,
                   help="train this many runs at once, the CPU threads split between them (default 1: on this "
                        "project's 2 cores a one-thread GRPO run beside another took about 12 s a step, one "
                        "two-thread run alone 4 s; for machines with more cores)")
    return p.parse_args(argv)


def selected_arms(spec: str | None) -> list[str]:
    """The arms of ``--arms`` plus the arms they start from, in :data:`GRID` order (all of them when None)."""
    if spec is None:
        return list(GRID)
    asked = [a.strip() for a in spec.split(",") if a.strip()]
    check(asked, "--arms needs at least one arm")
    unknown = [a for a in asked if a not in GRID]
    check(not unknown, f"--arms: unknown arm {', '.join(unknown)} (arms: {', '.join(GRID)})")
    needed = set(asked)
    for name in asked:
        while GRID[name].init is not None:
            name = GRID[name].init
            needed.add(name)
    return [name for name in GRID if name in needed]


def seed_list(args: argparse.Namespace) -> list[int]:
    return list(range(args.seed, args.seed + args.seeds))


def mode_flags(script: str, args: argparse.Namespace) -> list[str]:
    """The step-count flags of ``--quick`` or ``--smoke`` for a script (none for the full grid)."""
    return SMOKE[script] if args.smoke else QUICK[script] if args.quick else []


def train(name: str, seed: int, out: Path, args: argparse.Namespace, threads: int = 0) -> tuple[float, bool]:
    """Train one arm with one seed in a subprocess, into ``out/name`` (output to ``out/name.log``).

    ``out`` is the seed's directory (``OUT/seed-S``); ``threads`` > 0 sets the
    subprocess's CPU threads (``OMP_NUM_THREADS``). Returns (its training wall time,
    whether a finished run was reused).
    """
    arm = GRID[name]
    run_dir = out / name
    if (run_dir / "metrics.json").exists() and not args.force:
        print(f"  seed {seed} {name}: reusing {run_dir}")
        return json.loads((run_dir / "metrics.json").read_text()).get("train_seconds", 0.0), True
    if run_dir.exists():
        shutil.rmtree(run_dir)
    cmd = [sys.executable, arm.script, "--out", str(run_dir), "--seed", str(seed), "--device", args.device,
           "--quiet", *arm.flags, *mode_flags(arm.script, args)]
    if arm.init:
        cmd += ["--init", str(out / arm.init)]
    print(f"  seed {seed} {name}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    root = Path(__file__).resolve().parents[1]
    out.mkdir(parents=True, exist_ok=True)
    env = os.environ | ({"OMP_NUM_THREADS": str(threads)} if threads > 0 else {})
    with open(out / f"{name}.log", "w") as log:
        result = subprocess.run(cmd, cwd=root, stdout=log, stderr=subprocess.STDOUT, env=env)
    if result.returncode != 0:
        raise UserError(f"{name} (seed {seed}) failed (exit {result.returncode}); see {out / f'{name}.log'}")
    return time.perf_counter() - t0, False


def train_all(names: list[str], seeds: list[int], out: Path, args: argparse.Namespace) -> dict:
    """Train every (seed, arm), ``args.jobs`` at a time; (seed, arm) -> :func:`train`'s result.

    The runs go seed by seed, each seed's in :data:`GRID` order (so the first seed's
    arms are all done first, and an arm's init is queued before it). With more than
    one job, a run waits for its init's run before starting (never a deadlock: the
    queue is served in order, so the init is running or done by then), and each run
    gets ``cpu_count // jobs`` threads.
    """
    if args.jobs == 1:
        return {(seed, name): train(name, seed, out / f"seed-{seed}", args) for seed in seeds for name in names}
    from concurrent.futures import ThreadPoolExecutor

    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    futures: dict = {}

    def job(seed: int, name: str) -> tuple[float, bool]:
        init = GRID[name].init
        if init is not None:
            futures[(seed, init)].result()  # raises if the init failed
        return train(name, seed, out / f"seed-{seed}", args, threads=threads)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for seed in seeds:
            for name in names:
                futures[(seed, name)] = pool.submit(job, seed, name)
        try:
            return {(seed, name): futures[(seed, name)].result() for seed in seeds for name in names}
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # let the running runs finish; start no more
            raise


def command_of(name: str, args: argparse.Namespace) -> str:
    """The arm's training command as a reader would type it (S: each seed)."""
    arm = GRID[name]
    parts = ["python", arm.script, *arm.flags, "--seed", "S", *mode_flags(arm.script, args)]
    if arm.init:
        parts += ["--init", f"<{arm.init}, seed S>"]
    return " ".join(parts)


def grid_command(args: argparse.Namespace) -> str:
    """The ``python -m qrw.reproduce`` command that regenerates this report."""
    parts = ["python -m qrw.reproduce"]
    if args.seeds != 1:
        parts.append(f"--seeds {args.seeds}")
    if args.seed != 0:
        parts.append(f"--seed {args.seed}")
    if args.arms is not None:
        parts.append(f"--arms {args.arms}")
    if args.jobs != 1:
        parts.append(f"--jobs {args.jobs}")
    parts += ["--quick"] if args.quick else []
    parts += ["--smoke"] if args.smoke else []
    return " ".join(parts)


def verdict(ok: bool) -> str:
    return "**reproduces**" if ok else "**does not reproduce**"


def ci_text(c: dict) -> str:
    return f"{c['diff']:+.4f} [{c['low']:+.4f}, {c['high']:+.4f}]"


def check_claims(cmp: dict[tuple[str, ...], dict], rows: dict, n_log_only: int = 0) -> list[str]:
    """The paper's four claims, each judged from paired differences (pooled over seeds) on the test queries.

    ``cmp[(before, after)][metric]`` holds ``diff``, ``low``, ``high`` (the pooled interval),
    ``before`` and ``after``; ``rows`` the pooled rows by label. A claim whose arms were
    not trained (``--arms``) is reported as not checked.
    ``cmp[("sft-nopretrain", "sft-multi", "log-only")]``, when present, is the stage-0
    comparison on the ``n_log_only`` test queries that use a log-only variant: shown
    for claim 2, not part of its verdict.
    """
    claims = [(claim_multitask, (cmp,), CLAIM_PAIRS[:1]),
              (claim_pretraining, (cmp, rows, n_log_only), CLAIM_PAIRS[1:2]),
              (claim_fusion, (cmp, rows), CLAIM_PAIRS[2:5]),
              (claim_conversion_alone, (cmp,), [CLAIM_PAIRS[2], CLAIM_PAIRS[4], CLAIM_PAIRS[5]])]
    lines = []
    for i, (claim, inputs, pairs) in enumerate(claims, 1):
        missing = [f"{after} minus {before}" for before, after in pairs if (before, after) not in cmp]
        lines.append(claim(*inputs) if not missing else f"{i}. {claim.__doc__.split(' ', 1)[1].strip()} "
                     f"Not checked here: it needs {', '.join(missing)} (arms not trained).")
    return lines


def claim_multitask(cmp: dict) -> str:
    """1. Multi-task SFT raises relevance over single-task at similar recall."""
    c = cmp[("sft-single", "sft-multi")]
    rel_up = c["relevance"]["low"] > 0 or c["accuracy"]["low"] > 0
    recall_similar = abs(c["recall"]["diff"]) <= 0.01 or c["recall"]["low"] > 0
    return ("1. *Multi-task SFT (with relevance tagging) raises relevance over single-task SFT at similar recall.* "
            f"Multi-task minus single-task: relevance@10 {ci_text(c['relevance'])}, accuracy "
            f"{ci_text(c['accuracy'])}, recall@10 {ci_text(c['recall'])}, UCVR {ci_text(c['ucvr'])}. "
            f"Reading: a relevance or accuracy gain whose interval excludes 0, with recall within 0.01 or better: "
            f"{verdict(rel_up and recall_similar)}." + ("" if rel_up and recall_similar else
            " Likely reason: here the rewriter and the tagger share a 2M-parameter model, and the multi-task "
            "batch gives most of its rows to relevance pairs, so single-task SFT sees several times more "
            "rewrite examples per step; what the relevance task teaches (which words matter to the intent) "
            "is also taught by the gold rewrites themselves in this world."))


def claim_pretraining(cmp: dict, rows: dict, n_log_only: int) -> str:
    """2. Pretraining on logs helps (the log-only subset is reported, not judged)."""
    c = cmp[("sft-nopretrain", "sft-multi")]
    tail = (rows["multi-task SFT"]["tail"], rows["multi-task SFT, no pretrain"]["tail"])
    helps = c["accuracy"]["low"] > 0 or c["recall"]["low"] > 0
    sub = cmp.get(("sft-nopretrain", "sft-multi", "log-only"))
    log_only_text = "" if sub is None else (
        f"On the {n_log_only} test queries that use a log-only variant (a user word seen in search logs, never in a "
        f"training query), accuracy {sub['accuracy']['after']:.3f} with vs {sub['accuracy']['before']:.3f} without, "
        f"{ci_text(sub['accuracy'])}. ")
    return ("2. *Pretraining on search logs and product text helps.* With minus without stage 0: accuracy "
            f"{ci_text(c['accuracy'])}, recall@10 {ci_text(c['recall'])}, relevance@10 {ci_text(c['relevance'])}, "
            f"UCVR {ci_text(c['ucvr'])}; on the tail segment accuracy {tail[0]['accuracy']:.3f} vs "
            f"{tail[1]['accuracy']:.3f}, recall@10 {tail[0]['recall']:.3f} vs {tail[1]['recall']:.3f}. "
            + log_only_text
            + f"Reading: accuracy or recall up with an interval excluding 0: {verdict(helps)}."
            + ("" if helps else _seeds_agree_text(c["accuracy"].get("per_seed", [])) +
               " Likely reason: stage 0 teaches the log-only variants only weakly in its 600 steps on a "
               "2M-parameter model, and what remains of its effect is no larger than the variation between "
               "seeds (and between runs: float rounding alone moves accuracy by about 0.01 between runs of the "
               "same command on two CPUs)."))


def _seeds_agree_text(per_seed: list[float]) -> str:
    """When every seed's difference has one sign but the pooled interval includes 0: say so (direction, not proof)."""
    if len(per_seed) < 2 or not (all(d > 0 for d in per_seed) or all(d < 0 for d in per_seed)):
        return ""
    return (f" Every seed's accuracy difference has the same sign ({', '.join(f'{d:+.3f}' for d in per_seed)}): "
            "the direction agrees, the size varies too much between seeds for the interval to exclude 0.")


def claim_fusion(cmp: dict, rows: dict) -> str:
    """3. GRPO with the fused reward gives the best balance."""
    fusion, rel_only, conv_only = (rows[LABELS[n]]["all"] for n in ("grpo-fusion", "grpo-relevance", "grpo-conversion"))
    sft = rows["multi-task SFT"]["all"]
    c = cmp[("sft-multi", "grpo-fusion")]
    balance = (c["relevance"]["diff"] >= 0 and c["ucvr"]["diff"] >= 0 and fusion["relevance"] >= conv_only["relevance"]
               and fusion["ucvr"] >= rel_only["ucvr"] - 0.002)
    return ("3. *GRPO with the fused reward (relevance + conversion) gives the best balance.* "
            f"relevance@10 / UCVR: SFT init {sft['relevance']:.4f} / {sft['ucvr']:.4f}, relevance-only "
            f"{rel_only['relevance']:.4f} / {rel_only['ucvr']:.4f}, conversion-only {conv_only['relevance']:.4f} / "
            f"{conv_only['ucvr']:.4f}, fusion {fusion['relevance']:.4f} / {fusion['ucvr']:.4f}. Fusion minus SFT "
            f"init: relevance@10 {ci_text(c['relevance'])}, UCVR {ci_text(c['ucvr'])}. Reading: fusion improves "
            f"both over its init, keeps relevance at least at conversion-only's and UCVR at relevance-only's "
            f"(within 0.002): {verdict(balance)}.")


def claim_conversion_alone(cmp: dict) -> str:
    """4. A conversion-only reward costs relevance."""
    c = cmp[("grpo-fusion", "grpo-conversion")]
    c0 = cmp[("sft-multi", "grpo-conversion")]
    below_fusion = c["relevance"]["high"] < 0 or c["accuracy"]["high"] < 0
    below_init = c0["relevance"]["high"] < 0 or c0["accuracy"]["high"] < 0
    if below_fusion and below_init:
        reading = verdict(True)
    elif below_fusion:
        reading = ("**partly reproduces**: conversion-only ends below fusion in relevance, but does not fall below "
                   "its SFT init (no drift away from relevance within these steps; the KL to the SFT model and the "
                   "format rule hold it, and in this world a relevant rewrite also converts well)")
    else:
        reading = verdict(False)
    return ("4. *Optimising conversion alone costs relevance.* Conversion-only minus fusion: relevance@10 "
            f"{ci_text(c['relevance'])}, accuracy {ci_text(c['accuracy'])}, UCVR {ci_text(c['ucvr'])}; "
            f"conversion-only minus SFT init: relevance@10 {ci_text(c0['relevance'])}, accuracy "
            f"{ci_text(c0['accuracy'])}. Reading: a relevance or accuracy loss (interval excluding 0) against "
            f"fusion and against the SFT init: {reading}.")


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


@dataclass
class GridEvaluation:
    """What the report is written from: every seed's evaluation and the pooled rows and comparisons."""

    names: list[str]  # the arms evaluated, in GRID order
    seeds: list[SeedEvaluation]
    rows: dict  # rewriter label -> segment -> metric: the mean over seeds
    tagging: dict  # rewriter label -> the tagger's macro-F1, mean over seeds
    cmp: dict  # (before, after[, "log-only"]) -> metric -> pooled_comparison's entry
    n_log_only: int  # test queries that use a log-only variant, all seeds together


GATE_ARMS = ("sft-multi", "grpo-fusion")  # the serving gate is measured on each of these that was trained


def evaluate_seed(out: Path, names: list[str], seed: int) -> SeedEvaluation:
    """Load the arms' runs from the seed's directory ``out`` and score them (the baselines with the first).

    Besides the rows: what kinds of rewrites each arm writes (the reward-hacking
    counts), the tagger's accuracy per kind of pair, and the serving gate (threshold
    chosen on the seed's val queries) on each of :data:`GATE_ARMS` trained, by the
    tagger alone and with each query check (:data:`qrw.scorecard.GATE_QUERY_CHECKS`).
    """
    runs = {name: load_run(out / name) for name in names}
    world = runs[names[0]].world
    for name in names[1:]:
        check(runs[name].config["world"] == runs[names[0]].config["world"],
              f"{out / name} and {out / names[0]} come from different worlds; retrain with --force")
    ctx = Shop(world)
    queries = world.queries["test"]
    readings = ctx.dictionary.rewrite([q.text for q in queries])  # what the rules' anchors read in each query
    rows, rewrites, per_query, tagging, kinds, tag_detail, gates, query_gates = {}, {}, {}, {}, {}, {}, {}, {}
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
        rows.update(res["rows"])
        rewrites[name] = res["rewrites"]
        per_query[name] = rewrite_metrics(world, ctx.engine, ctx.users, queries, res["rewrites"], k=ctx.k)
        kinds[name] = (rewrite_kinds(world, queries, res["rewrites"])
                       | dropped_attribute_values(world, queries, res["rewrites"], readings))
        if "tagging" in res:
            tagging[LABELS[name]] = res["tagging"]["tag_macro_f1"]
            tag_detail[LABELS[name]] = res["tagging"]
    log_only = np.array([world.uses_log_only(q) for q in queries], dtype=bool)
    return SeedEvaluation(seed, world, ctx, queries, rows, rewrites, per_query, tagging, log_only, kinds, tag_detail,
                          gates, query_gates)


def _mean(values) -> float:
    """Mean ignoring NaN (NaN when every value is)."""
    values = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(values))


def mean_rows(rows_by_seed: list[dict]) -> dict:
    """rewriter label -> segment -> metric: the mean over seeds of each seed's row."""
    return {label: {seg: {m: _mean([rows[label][seg].get(m) for rows in rows_by_seed]) for m in metrics}
                    for seg, metrics in segments.items()}
            for label, segments in rows_by_seed[0].items()}


def pooled_comparison(seeds: list[SeedEvaluation], before: str, after: str, log_only: bool = False) -> dict:
    """metric -> after minus before, paired within each seed and pooled over seeds (:mod:`qrw.shop.pooled`).

    Each entry: ``before`` / ``after`` (means over seeds), ``diff``, ``low``, ``high``
    (the pooled 95% interval), ``se``, ``seeds`` and ``per_seed`` (each seed's mean
    paired difference). ``log_only``: only the test queries that use a log-only
    variant (a seed with fewer than 2 of them is left out).
    """
    used = [(s, s.log_only if log_only else np.ones(len(s.queries), dtype=bool)) for s in seeds]
    used = [(s, rows) for s, rows in used if rows.sum() >= 2]
    out = {}
    for metric in METRICS:
        pairs = [(s.per_query[before][metric][rows], s.per_query[after][metric][rows]) for s, rows in used]
        pooled = pooled_paired_diff(pairs)
        out[metric] = {"before": _mean([_mean(b) for b, _ in pairs]), "after": _mean([_mean(a) for _, a in pairs]),
                       "diff": pooled.diff, "low": pooled.low, "high": pooled.high, "se": pooled.se,
                       "seeds": [s.seed for s, _ in used], "per_seed": [c.lift for c in pooled.per_seed]}
    return out


def evaluate_grid(out: Path, names: list[str], seeds: list[int]) -> GridEvaluation:
    """Every seed's evaluation (``out/seed-S``), the rows' means over seeds and the pooled comparisons."""
    per_seed = [evaluate_seed(out / f"seed-{seed}", names, seed) for seed in seeds]
    rows = mean_rows([s.rows for s in per_seed])
    tagging = {label: _mean([s.tagging.get(label) for s in per_seed]) for label in per_seed[0].tagging}
    cmp = {(a, b): pooled_comparison(per_seed, a, b) for a, b in CLAIM_PAIRS + BOUND_PAIRS if a in names and b in names}
    n_log_only = sum(int(s.log_only.sum()) for s in per_seed)
    if ("sft-nopretrain", "sft-multi") in cmp and any(s.log_only.sum() >= 2 for s in per_seed):
        cmp[("sft-nopretrain", "sft-multi", "log-only")] = pooled_comparison(per_seed, "sft-nopretrain", "sft-multi",
                                                                            log_only=True)
    return GridEvaluation(names, per_seed, rows, tagging, cmp, n_log_only)


# ---- the report ------------------------------------------------------------------------------------

def report_header(args: argparse.Namespace, grid: GridEvaluation, timing: dict) -> list[str]:
    """The report's title and the paragraphs on the command, the machine, the time, the world and the metrics."""
    first = grid.seeds[0]
    world, queries = first.world, first.queries
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
            f"products, {len(world.queries['train'])} train / {len(queries)} test queries, {len(world.log_queries)} "
            "distinct logged queries (GRPO's training queries). Metrics are on the held-out test queries (new intent and "
            "variant combinations); relevance@10 and recall@10 are on the results page "
            "`page(q, r) = dedupe(interleave(top10(r), top10(q)))[:10]`, UCVR is the simulated shoppers' expected "
            "purchases per user, accuracy is the share of rewrites the judge grades 2 (equivalent).", ""]


def per_seed_table(grid: GridEvaluation, labels: list[str]) -> list[str]:
    """One row per rewriter and seed (all test queries)."""
    lines = ["| rewriter | seed | accuracy | relevance@10 | recall@10 | UCVR |", "|---|---:|---:|---:|---:|---:|"]
    for label in labels:
        for s in grid.seeds:
            r = s.rows[label]["all"]
            cells = ["-" if np.isnan(_mean([r.get(m)])) else f"{r[m]:.3f}" for m in METRICS]
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


def _excludes_zero(c: dict, sign: int) -> bool:
    return c["low"] > 0 if sign > 0 else c["high"] < 0


def regime_lines(grid: GridEvaluation) -> list[str]:
    """The production regime against its upper bounds: what mined pairs cost, whether the learned reward works.

    Each reading is judged on the pooled intervals; a pair whose arms were not trained is left out.
    """
    cmp, lines = grid.cmp, []
    mean_kinds = {name: {h: _mean([s.kinds[name][h] for s in grid.seeds]) for h in tuple(HACKING) + DROPPED_VALUES}
                  for name in grid.names}
    if ("sft-single-gold", "sft-single") in cmp:
        c = cmp[("sft-single-gold", "sft-single")]
        drift = _excludes_zero(c["accuracy"], -1) and _excludes_zero(c["relevance"], -1)
        lines.append(f"- *Mined pairs drift, and the drift costs.* Single-task SFT on mined pairs minus the same on gold "
                     f"pairs: accuracy {ci_text(c['accuracy'])}, relevance@10 {ci_text(c['relevance'])}, recall@10 "
                     f"{ci_text(c['recall'])}, UCVR {ci_text(c['ucvr'])}. Lower accuracy and relevance@10, both "
                     f"intervals excluding 0: **{'yes' if drift else 'no'}**.")
    if ("sft-multi", "grpo-fusion") in cmp:
        c = cmp[("sft-multi", "grpo-fusion")]
        up = _excludes_zero(c["accuracy"], 1) and _excludes_zero(c["relevance"], 1)
        risen = [h for h in HACKING if mean_kinds["grpo-fusion"][h] > mean_kinds["sft-multi"][h]]
        counts = "; ".join(f"{h} {mean_kinds['sft-multi'][h]:.1f} -> {mean_kinds['grpo-fusion'][h]:.1f}" for h in HACKING)
        lines.append(f"- *GRPO with the learned relevance reward (the SFT model's frozen tagger + rules; no oracle) "
                     f"against its SFT init.* accuracy {ci_text(c['accuracy'])}, relevance@10 {ci_text(c['relevance'])}, "
                     f"recall@10 {ci_text(c['recall'])}, UCVR {ci_text(c['ucvr'])}; hacking counts per seed, init -> "
                     f"GRPO: {counts}. Accuracy and relevance@10 up with intervals excluding 0: **{'yes' if up else 'no'}**; "
                     f"no hacking count above the init's: **{'yes' if not risen else 'no (' + ', '.join(risen) + ')'}**. "
                     f"Where the attribute drops are: {_dropped_values_text(mean_kinds, 'sft-multi', 'grpo-fusion')}.")
    if ("grpo-norules", "grpo-fusion") in cmp:
        c = cmp[("grpo-norules", "grpo-fusion")]
        counts = "; ".join(f"{h} {mean_kinds['grpo-norules'][h]:.1f} -> {mean_kinds['grpo-fusion'][h]:.1f}"
                           for h in HACKING)
        lines.append(f"- *What the rules do.* GRPO fusion with the rules minus without: accuracy {ci_text(c['accuracy'])}, "
                     f"relevance@10 {ci_text(c['relevance'])}, UCVR {ci_text(c['ucvr'])}; hacking counts per seed, "
                     f"without -> with: {counts}; {_dropped_values_text(mean_kinds, 'grpo-norules', 'grpo-fusion')}.")
    if ("grpo-oracle", "grpo-fusion") in cmp:
        c = cmp[("grpo-oracle", "grpo-fusion")]
        lines.append(f"- *The oracle reward as an upper bound.* GRPO fusion with the learned reward minus with the "
                     f"oracle judge's: accuracy {ci_text(c['accuracy'])}, relevance@10 {ci_text(c['relevance'])}, "
                     f"UCVR {ci_text(c['ucvr'])}: what a perfect relevance model would add.")
    return lines


def _dropped_values_text(mean_kinds: dict, before: str, after: str) -> str:
    """Dropped attribute values read / unread by the rules' dictionary, mean over seeds, ``before -> after``."""
    read, unread = DROPPED_VALUES
    return (f"values the rules' dictionary reads in the query (the anchors rule sees them dropped) "
            f"{mean_kinds[before][read]:.1f} -> {mean_kinds[after][read]:.1f}, values it does not read (no rule sees "
            f"them) {mean_kinds[before][unread]:.1f} -> {mean_kinds[after][unread]:.1f}")


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
            "values that the \"attribute dropped\" rewrites give up: those the rules' dictionary reads in the query "
            "(the `anchors` rule sees them dropped) and those it does not (no rule sees them).", ""] + lines


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
            cells.append("-" if not got else f"{_mean([a for a, _ in got]):.3f} (n {round(_mean([n for _, n in got]))})")
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return ["Accuracy against the judge (mean over seeds; n = pairs per seed) on each seed's test queries: the "
            "perturbed rewrites of the world (`World.relevance_examples`) and mined pairs started from the test "
            "queries (`held_out_mined_pairs`), none of them trained on.", ""] + lines


def gate_lines(grid: GridEvaluation) -> list[str]:
    """The serving gate, per seed, gated arm and query check: threshold, out-of-domain and in-domain shares served
    (by the judge's grade of the rewrite), the paired cost."""
    gated = [(s.seed, arm, check_, gates[arm]) for s in grid.seeds for arm in GATE_ARMS
             for check_, gates in (("none", s.gates), *s.query_gates.items()) if arm in gates]
    if not gated:
        return []
    lines = ["A rewrite is served only when a tagger gives it P(equivalent) above a threshold chosen on each seed's "
             "validation queries (the smallest that serves at most 5% of out-of-domain val queries); otherwise the "
             "query is searched alone. The multi-task SFT run is scored by its own tagger, a GRPO run by its frozen "
             "SFT init's (the reward's relevance model). A query check (`--gate-query`) must pass besides: "
             "\"dictionary\": the shop's mined dictionary reads a catalog category or brand in the query "
             "(`qrw.shop.shop.Shop.reads_product`); \"vocabulary\": the shop knows every word of the query, "
             "one typo forgiven in words of 5+ letters (`qrw.shop.shop.Shop.knows_query`); \"passed\": the share "
             "of out-of-domain / in-domain test queries that pass it. Out-of-domain queries name products this "
             "catalog does not sell (`qrw.shop.ood`). "
             "\"served by grade\": the share served among the in-domain rewrites the judge grades 0 / 1 / 2, how "
             "well the gate tells them apart.", "",
             "| seed | arm | query check | threshold | OOD served (val) | OOD served (test), off -> on | passed | "
             "in-domain served (test) | served by grade 0 / 1 / 2 | relevance@10 on - off | recall@10 on - off | "
             "UCVR on - off |",
             "|---:|---|---|---:|---:|---|---|---:|---|---|---|---|"]
    for seed, arm, check_, g in gated:
        d, o = g["in_domain"], g["ood"]
        diffs = " | ".join(ci_text({"diff": d["diff"][m]["lift"], "low": d["diff"][m]["low"],
                                    "high": d["diff"][m]["high"]}) for m in ("relevance", "recall", "ucvr"))
        grades = " / ".join(f"{d['by_grade'][g_]['served']:.0%}" if g_ in d.get("by_grade", {}) else "-"
                            for g_ in ("0", "1", "2"))
        read = "-" if check_ == "none" else f"{o['query_passed']:.1%} / {d['query_passed']:.1%}"
        lines.append(f"| {seed} | {LABELS[arm]} | {check_} | {g['threshold']:.4f} | {g['chosen']['ood_served']:.1%} | "
                     f"{o['served_off']:.1%} -> {o['served_on']:.1%} | {read} | {d['served']['all']:.1%} | {grades} | "
                     f"{diffs} |")
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
    """The lines of docs/RESULTS.md: tables, per-seed rows and differences, the claims, curves, runs."""
    n = len(grid.seeds)
    labels = ["no rewrite", "dictionary", "gold"] + [LABELS[name] for name in grid.names]
    over = "" if n == 1 else f" (mean over {n} seeds)"
    lines = report_header(args, grid, timing) + [f"## All queries{over}", ""]
    lines += table(grid.rows, "all", labels, grid.tagging)
    n_tail = sum(q.segment == "tail" for s in grid.seeds for q in s.queries)
    lines += ["", f"## Hardest segment: tail (rare or log-only variants, typos; {n_tail} queries over the seeds){over}", ""]
    lines += table(grid.rows, "tail", labels, grid.tagging)
    lines += ["", "## Every seed", ""] + per_seed_table(grid, labels)
    lines += ["", "## Paired differences, pooled over seeds", "",
              "Within a seed both arms rewrite the same test queries: each seed's difference is the mean per-query "
              "difference. Pooled = the mean of the seeds' differences; its 95% interval (`qrw.shop.pooled`) is "
              "`pooled -/+ t(N-1) * sd(seed differences) / sqrt(N)` (each seed's difference carries both its "
              "training and its query noise; t with N - 1 degrees of freedom: 12.7 for 2 seeds, 4.30 for 3); with "
              "one seed it is the per-query paired interval. * = the interval excludes 0.", ""]
    lines += comparison_table(grid)
    lines += ["", "## The paper's claims, checked here", "",
              "Each claim is judged on the pooled intervals above.", ""]
    lines += [c + "\n" for c in check_claims(grid.cmp, grid.rows, grid.n_log_only)]
    regime = regime_lines(grid)
    if regime:
        lines += ["## The production regime against its upper bounds", "",
                  "The defaults learn from what production has (mined pairs, a learned relevance model); the upper "
                  "bounds swap in gold rewrites or the evaluation's own judge.", ""] + regime + [""]
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


def main(argv=None) -> int:
    args = parse_args(argv)
    check(args.seed >= 0, f"--seed must be >= 0 (got {args.seed})")
    check(args.seeds >= 1, f"--seeds must be >= 1 (got {args.seeds})")
    check(args.jobs >= 1, f"--jobs must be >= 1 (got {args.jobs})")
    check(not (args.quick and args.smoke), "--quick and --smoke exclude each other")
    names = selected_arms(args.arms)
    suffix = "-smoke" if args.smoke else "-quick" if args.quick else ""
    out = Path(args.out or f"runs/reproduce{suffix}")
    results_path = Path(args.results or f"docs/RESULTS{suffix}.md")
    seeds = seed_list(args)
    t_start = time.perf_counter()
    print(f"training {len(names)} arms x {len(seeds)} seeds into {out}/seed-S/ "
          f"({'smoke' if args.smoke else 'quick' if args.quick else 'full'} settings): {', '.join(names)}")
    trained = train_all(names, seeds, out, args)
    t_eval = time.perf_counter()

    print("evaluating on each seed's test queries")
    grid = evaluate_grid(out, names, seeds)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    plots = plot_curves(out / f"seed-{seeds[0]}", results_path.parent, suffix, names)
    now = time.perf_counter()
    timing = {"total": now - t_start, "training": t_eval - t_start, "evaluation": now - t_eval,
              "recorded": sum(s for s, _ in trained.values()), "reused": sum(r for _, r in trained.values()),
              "runs": len(trained)}
    lines = report(args, grid, trained, timing, plots, out)
    results_path.write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(to_json({
        "command": grid_command(args), "seeds": seeds, "arms": names, "timing_seconds": timing,
        "rows": grid.rows, "rows_by_seed": {str(s.seed): s.rows for s in grid.seeds},
        "rewrite_kinds_by_seed": {str(s.seed): s.kinds for s in grid.seeds},
        "tagging_by_seed": {str(s.seed): s.tag_detail for s in grid.seeds},
        "gate_by_seed": {str(s.seed): s.gates for s in grid.seeds},
        "query_gate_by_seed": {str(s.seed): s.query_gates for s in grid.seeds},
        "comparisons": {" minus ".join(reversed(key[:2])) + (" (log-only)" if len(key) > 2 else ""): c
                        for key, c in grid.cmp.items()}}) + "\n")
    print("\n".join(lines))
    print(f"wrote {results_path} and {out / 'results.json'} ({timing['total'] / 60:.1f} min in this call)")
    return 0


if __name__ == "__main__":
    run_main(main)
