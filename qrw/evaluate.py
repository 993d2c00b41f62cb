"""``python -m qrw.evaluate``: a trained rewriter's offline scorecard, or a simulated online A/B test.

Offline (``python -m qrw.evaluate --ckpt DIR [--baselines]``): the run's greedy
rewrites of the split's queries scored per difficulty segment, overall and on
the unseen intents (queries whose intent occurs in no training query, logged
query or mined pair; accuracy, relevance@k, recall@k, UCVR, length,
diversity), beside, with --baselines, no rewrite, the dictionary a shop can fit
on its logs' (query, clicked title) pairs, and two upper bounds that read the
hidden gold: the same dictionary fit on gold pairs (``gold-dictionary``) and the
gold rewrite (and then the paired difference model - dictionary), and the
relevance tagger's accuracy and macro-F1 against the judge when the run trained
one: :mod:`qrw.scorecard`.
With ``--gate THRESHOLD`` or ``--gate auto`` (chosen on val: the smallest
threshold that serves a rewrite to at most ``--gate-target`` of each set of
out-of-domain val queries), the serving gate beside it: the metrics with a
rewrite served only when the model's tagger gives it P(equivalent) above the
threshold, their paired difference with the gate off, and the share of
out-of-domain queries (products the catalog does not sell) served a rewrite,
gate off and on, for two sets: the out-of-domain searches the shop's logs hold
(their val and test halves) and queries of nouns the logs never hold.
``--gate-query dictionary`` or ``vocabulary`` also reads the query, from the
shop's observed side only: a rewrite is served only where the dictionary fit
on the logs reads a catalog category or brand in the query
(:meth:`qrw.shop.shop.Shop.reads_product`), or where the shop knows every word
of it (:meth:`qrw.shop.shop.Shop.knows_query`).

Offline, paired (``python -m qrw.evaluate --paired BEFORE AFTER``): two rewriters
(run directories of one world, or baselines) on the same split's queries, per-query
paired differences AFTER - BEFORE with 95% intervals (accuracy, relevance@k, recall@k,
UCVR) and each side's drift counts. E.g. a bf16 run against an fp32 run of the same
commit. Repeated (``--paired B0 A0 --paired B1 A1 --paired B2 A2``, one pair per seed),
the differences are paired within each pair and pooled over the pairs
(:func:`qrw.scorecard.compare_rewrites_pooled`): how a cheaper recipe or another dtype
is judged against the default over seeds (docs/PERFORMANCE.md).

Online, simulated (``python -m qrw.evaluate --ab CONTROL TREATMENT --users N``),
the paper's A/B test in miniature: shoppers bring test queries, are randomised
to a side, see that side's page and buy or not; we report UCVR and relevance per
side and the lift of treatment over control with a 95% confidence interval:
:func:`qrw.shop.abtest.ab_test`.

This module holds only the command: its flags, loading the runs, and printing
(tables, or with ``--json`` deterministic JSON: sorted keys, rounded floats).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from qrw.config import Parser, UserError, check, config_from_dict, resolve_device, run_main
from qrw.rewriter import GATE_SCORES
from qrw.gate import GATE_QUERY_CHECKS, GATE_TARGET, OOD_QUERIES, evaluate_gate
from qrw.scorecard import evaluate_run, format_summary, run_name, tagger_source
from qrw.shop.abtest import AB_METRICS, MAX_AB_USERS, ab_test
from qrw.shop.metrics import page_grades
from qrw.shop.ood import MAX_OOD_QUERIES
from qrw.shop.shop import BASELINES, Shop
from qrw.shop.world import World, WorldConfig

JSON_DIGITS = 6  # floats in --json output are rounded to this many decimals (byte-stable across runs)


# ---- printing ----------------------------------------------------------------------------------

def format_ab(result: dict, control: str, treatment: str, n_queries: int, seed: int) -> str:
    """The human-readable report of :func:`qrw.shop.abtest.ab_test`'s result."""
    c, t = result["control"], result["treatment"]
    confidence = 2 * (0.5 * (1 + math.erf(result["z"] / math.sqrt(2)))) - 1
    lines = [f"== simulated A/B test: control {control} vs treatment {treatment} ==",
             f"{result['users']:,} shoppers (query drawn uniformly from {n_queries} test queries, sides by complete "
             f"randomisation), seed {seed}",
             f"users: control {c['users']:,} | treatment {t['users']:,}",
             f"{'metric':<10} {'control':>9} {'treatment':>9} {'lift':>9} {'rel. lift':>9}  "
             f"{f'{confidence:.0%} CI of lift':<20} {'expected lift':>13}"]
    for metric in AB_METRICS:
        lift = result["lift"][metric]
        relative = "-" if lift["relative"] is None else f"{lift['relative']:+.1%}"
        interval = f"[{lift['ci_low']:+.4f}, {lift['ci_high']:+.4f}]"
        verdict = "" if lift["ci_low"] <= 0 <= lift["ci_high"] else " *"
        lines.append(f"{metric:<10} {c[metric]:>9.4f} {t[metric]:>9.4f} {lift['absolute']:>+9.4f} {relative:>9}  "
                     f"{interval:<20} {lift['expected']:>+13.4f}{verdict}")
    lines.append("* = the interval excludes 0. CI: difference of means, Welch standard error, normal approximation. "
                 "expected lift: the closed-form population value the test estimates.")
    return "\n".join(lines)


def jsonable(obj, digits: int = JSON_DIGITS):
    """``obj`` with floats rounded to ``digits`` decimals, NaN/inf as None, numpy scalars and tuples as JSON types."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, digits) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return round(value, digits) + 0.0 if math.isfinite(value) else None  # + 0.0: no "-0.0"
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist(), digits)
    return obj


def to_json(obj) -> str:
    """Deterministic JSON text: sorted keys, rounded floats, no NaN (see :func:`jsonable`)."""
    return json.dumps(jsonable(obj), sort_keys=True, indent=1, ensure_ascii=False)


# ---- command line ------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    p = Parser(prog="python -m qrw.evaluate",
               description="Evaluate a trained rewriter offline (--ckpt DIR), or run a simulated online A/B test "
                           "(--ab CONTROL TREATMENT).",
               epilog="examples:\n"
                      "  python -m qrw.evaluate --ckpt runs/sft --baselines          # offline table\n"
                      "  python -m qrw.evaluate --ckpt runs/sft --baselines --json   # the same, as JSON\n"
                      "  python -m qrw.evaluate --ckpt runs/sft --gate auto          # with the serving gate\n"
                      "  python -m qrw.evaluate --ab none runs/grpo --users 20000    # A/B: no rewrite vs GRPO\n"
                      "  python -m qrw.evaluate --ab none gold --ckpt runs/sft       # baselines in runs/sft's world")
    p.add_argument("--ckpt", default=None, metavar="DIR",
                   help="run directory to evaluate; with --ab, the run whose world a baselines-only test "
                        "uses (default: the default world of train_sft.py)")
    p.add_argument("--baselines", action="store_true",
                   help="offline: also score no rewrite, the dictionary fit on the logs, and the upper bounds "
                        "gold-dictionary (fit on gold pairs) and gold")
    p.add_argument("--ab", nargs=2, default=None, metavar=("CONTROL", "TREATMENT"),
                   help=f"simulated A/B test; each side a run directory or a baseline ({', '.join(BASELINES)}; "
                        "a baseline name wins over a directory of that name: write ./gold for the directory)")
    p.add_argument("--paired", nargs=2, action="append", default=None, metavar=("BEFORE", "AFTER"),
                   help="offline paired differences AFTER - BEFORE on the split's queries; each a run directory "
                        f"or a baseline ({', '.join(BASELINES)}), both of one world. Repeat it for more seeds "
                        "(one pair per seed, e.g. a recipe against another): the differences are pooled over "
                        "the pairs (qrw.shop.pooled)")
    p.add_argument("--users", type=int, default=None,
                   help="--ab: number of simulated shoppers, split 50/50 (default: 20000)")
    p.add_argument("--seed", type=int, default=0, help="--ab: seed of the shoppers' queries, sides and sessions")
    p.add_argument("--split", default="test", choices=["test", "val"], help="queries to evaluate on")
    p.add_argument("--k", type=int, default=10, help="results page size (relevance@k, recall@k)")
    p.add_argument("--gate", default=None, metavar="THRESHOLD|auto",
                   help="offline: also evaluate the serving gate (a rewrite is served only when the tagger's "
                        "P(equivalent) exceeds THRESHOLD in [0, 1]; auto: chosen on val, see --gate-target)")
    p.add_argument("--gate-score", default="equivalent", choices=list(GATE_SCORES),
                   help="--gate: what the threshold applies to: the tagger's P(equivalent), or 1 - P(irrelevant) "
                        "(relevant: partial rewrites are served too)")
    p.add_argument("--gate-target", type=float, default=GATE_TARGET,
                   help="--gate auto: the share of each set of out-of-domain val queries (logged searches, nouns "
                        f"never logged) the threshold may serve a rewrite (default {GATE_TARGET})")
    p.add_argument("--gate-judge", default=None, metavar="RUN",
                   help="--gate: score the rewrites with this finished run's tagger (same world), e.g. a relevance "
                        "model refreshed after GRPO (default: the run's own tagger; a GRPO run's SFT init's)")
    p.add_argument("--gate-query", default="none", choices=list(GATE_QUERY_CHECKS),
                   help="--gate: also read the query: dictionary serves a rewrite only when the dictionary fit "
                        "on the logs reads a catalog category or brand in the query; vocabulary only when the shop "
                        "knows every word of it, one typo forgiven in words of 5+ letters (default: none, the "
                        "tagger alone)")
    p.add_argument("--ood-queries", type=int, default=OOD_QUERIES,
                   help=f"--gate: out-of-domain queries per split and set (default {OOD_QUERIES})")
    p.add_argument("--json", action="store_true",
                   help="print deterministic JSON (sorted keys, floats rounded to 6 decimals) instead of tables")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    return p.parse_args(argv)


def _read_run_config(run_dir: Path) -> dict:
    """A run directory's config.json (one-line UserError when missing or not a qrw run config)."""
    from qrw.checkpoint import CONFIG_NAME, read_json

    if not run_dir.is_dir():
        raise UserError(f"no run directory at {run_dir} (train one with `python train_sft.py`)")
    config = read_json(run_dir / CONFIG_NAME, "run config")
    if not isinstance(config, dict) or not isinstance(config.get("world"), dict):
        raise UserError(f"{run_dir / CONFIG_NAME} is not a qrw run config (no world section)")
    return config


def _world_diff(a: dict, b: dict) -> str:
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return ", ".join(f"{k} {a.get(k)} vs {b.get(k)}" for k in keys)


def parse_gate(text: str | None, split: str) -> float | str | None:
    """``--gate``: None (off), ``"auto"``, or a threshold in [0, 1] (one-line UserError otherwise)."""
    if text is None or text == "auto":
        check(text is None or split == "test", "--gate auto chooses the threshold on val: use it with --split test")
        return text
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"--gate must be a threshold in [0, 1] or 'auto' (got {text!r})") from None
    check(0.0 <= value <= 1.0, f"--gate must be a threshold in [0, 1] or 'auto' (got {text})")
    return value


def gate_judge(loaded, device, judge_dir: str | None = None):
    """``(judge, description)``: whose tagger scores the serving gate of the finished run ``loaded``.

    ``judge_dir`` (``--gate-judge``): that finished run's tagger (same world, trained
    with the relevance task). Otherwise a GRPO run's frozen SFT init (the reward's
    relevance model: the policy's updates drift the tagger it shares weights with),
    and for an SFT run None (its own tagger). One-line UserErrors for what a user can get wrong.
    """
    from qrw.runs import load_run

    if judge_dir is not None:
        other = load_run(judge_dir, device)
        check(other.config["world"] == loaded.config["world"],
              f"--gate-judge {judge_dir} was trained on another world than {loaded.path}: "
              + _world_diff(other.config["world"], loaded.config["world"]))
        check(tagger_source(other.config) is not None,
              f"--gate-judge {judge_dir} was trained without the relevance task: it has no tagger")
        return other.rewriter(device), f"tagger of {judge_dir} (--gate-judge)"
    name = "frozen SFT init's tagger (the reward's relevance model)"
    if loaded.config.get("kind") != "grpo":
        return None, name
    init = Path(loaded.config["run"]["init"])
    check((init / "config.json").exists(), f"--gate on a GRPO run scores rewrites with its SFT init's tagger, "
                                           f"and its init {init} is not there")
    return load_run(init, device).rewriter(device), name


def offline_main(args: argparse.Namespace) -> int:
    """``--ckpt DIR``: the run's greedy rewrites on the split, with --baselines and --gate beside them."""
    from qrw.runs import load_run

    gate = parse_gate(args.gate, args.split)
    check(args.gate_judge is None or gate is not None, "--gate-judge needs --gate (THRESHOLD or auto)")
    check(args.gate_query == "none" or gate is not None, "--gate-query needs --gate (THRESHOLD or auto)")
    check(0.0 <= args.gate_target < 1.0, f"--gate-target must be in [0, 1) (got {args.gate_target})")
    check(2 <= args.ood_queries <= MAX_OOD_QUERIES,
          f"--ood-queries must be between 2 and {MAX_OOD_QUERIES} (got {args.ood_queries})")
    device = resolve_device(args.device)
    loaded = load_run(args.ckpt, device)
    name = run_name(loaded.config)
    source = tagger_source(loaded.config)
    check(gate is None or source is not None,
          f"--gate needs the relevance tagger, and {args.ckpt} was trained without the relevance task")
    ctx = Shop(loaded.world, k=args.k)
    rewriter = loaded.rewriter(device)
    results = evaluate_run(ctx, rewriter, name=name, split=args.split, baselines=args.baselines,
                           tagging=source is not None)
    if gate is not None:
        judge, judge_name = gate_judge(loaded, device, args.gate_judge)
        evaluate_gate(ctx, rewriter, results, threshold=gate, target=args.gate_target, n_ood=args.ood_queries,
                      judge=judge, score=args.gate_score, judge_name=judge_name, query_check=args.gate_query)
    results.pop("rewrites")
    results.pop("well_formed")
    results.update(kind=loaded.config.get("kind"), k=args.k, tagger=source)
    if args.json:
        print(to_json(results))
        return 0
    print(format_summary(results, title=f"{name} ({loaded.path})"))
    if source == "sft init":
        print("(GRPO does not train the tagger: it is the SFT init's, sharing weights with the updated policy)")
    elif source is None:
        print("(no tagging metrics: this run was trained without the relevance task)")
    return 0


def _shared_world(specs: list[str], ckpt: str | None) -> tuple[str, dict] | None:
    """``(run directory, world config)`` that every run among the sides and ``--ckpt`` shares (None: no run).

    Read from each config.json before any model is loaded; different worlds are a one-line error.
    """
    worlds: list[tuple[str, dict]] = []  # (run directory, its world config)
    for spec in specs:
        if spec in BASELINES:
            continue
        if not Path(spec).is_dir():
            raise UserError(f"--ab: {spec!r} is neither a run directory nor a baseline ({', '.join(BASELINES)})")
        worlds.append((spec, _read_run_config(Path(spec))["world"]))
    if ckpt is not None:
        worlds.append((ckpt, _read_run_config(Path(ckpt))["world"]))
    for spec, world in worlds[1:]:
        if world != worlds[0][1]:
            raise UserError(f"--ab: {worlds[0][0]} and {spec} come from different worlds "
                            f"({_world_diff(worlds[0][1], world)}); an A/B test needs one world")
    return worlds[0] if worlds else None


def _build_world(shared: tuple[str, dict] | None) -> World:
    """The world of :func:`_shared_world`'s run, or the default world when both sides are baselines."""
    try:
        config = config_from_dict(WorldConfig, shared[1]) if shared else WorldConfig()
    except TypeError as e:  # a hand-edited config.json: a value of the wrong type
        raise UserError(f"{shared[0]}: config.json has an invalid world section ({e})") from None
    return World(config)


def _side_label(spec: str) -> str:
    """A side's name in the printed tables: a baseline that reads the hidden gold says it is an upper bound."""
    return f"{spec} (upper bound)" if spec == "gold-dictionary" else spec


def side_rewrites(spec: str, ctx: Shop, queries, device) -> list[str | None]:
    """One side's greedy rewrites of ``queries``: a baseline by name, or a run directory's model."""
    from qrw.runs import load_run

    if spec in BASELINES:
        return ctx.baseline_rewrites(spec, queries)
    return load_run(spec, device).rewriter(device).rewrite([q.text for q in queries])


def paired_main(args: argparse.Namespace) -> int:
    """``--paired BEFORE AFTER`` (repeatable): per-query paired differences of two rewriters on the split's
    queries, pooled over the pairs when there are several (one per seed), and each side's drift counts."""
    from qrw.scorecard import HACKING, compare_rewrites_pooled, format_comparison, rewrite_kinds

    device = resolve_device(args.device)
    replicates, drift = [], {"before": [], "after": []}
    for pair in args.paired:
        shared = _shared_world(list(pair), args.ckpt if len(args.paired) == 1 else None)
        world = _build_world(shared)
        ctx = Shop(world, k=args.k)
        queries = world.queries[args.split]
        before, after = (side_rewrites(spec, ctx, queries, device) for spec in pair)
        replicates.append((ctx, queries, before, after))
        for side, rewrites in (("before", before), ("after", after)):
            kinds = rewrite_kinds(world, queries, rewrites)
            drift[side].append({name: kinds[name] for name in HACKING})
    comparison = compare_rewrites_pooled(replicates)
    drift_mean = {side: {name: float(np.mean([d[name] for d in per])) for name in HACKING}
                  for side, per in drift.items()}
    n_queries = [len(q) for _, q, _, _ in replicates]
    if args.json:
        single = len(args.paired) == 1
        print(to_json({"split": args.split, "n_queries": n_queries[0] if single else n_queries,
                       "before": args.paired[0][0] if single else [p[0] for p in args.paired],
                       "after": args.paired[0][1] if single else [p[1] for p in args.paired],
                       "comparison": {m: {k: v for k, v in c.items() if k != "per_seed" or not single}
                                      for m, c in comparison.items()},
                       "drift": drift_mean}))
        return 0
    first = args.paired[0]
    if len(args.paired) == 1:
        print(f"== paired differences on the {n_queries[0]} {args.split} queries: {first[1]} - {first[0]} ==")
    else:
        print(f"== paired differences pooled over {len(args.paired)} pairs (seeds) of {args.split} queries "
              f"({' + '.join(map(str, n_queries))}): AFTER - BEFORE, 95% t interval over the pairs ==")
        for i, (b, a) in enumerate(args.paired):
            print(f"  pair {i}: {a} - {b}")
    before, after = (_side_label(spec) for spec in first)
    print(format_comparison(comparison, before if first[0] in BASELINES else before[-12:],
                            after if first[1] in BASELINES else after[-14:]))
    if len(args.paired) > 1:
        for metric, c in comparison.items():
            print(f"  {metric} per pair: {', '.join(f'{d:+.4f}' for d in c['per_seed'])}")
    per_pair = "" if len(args.paired) == 1 else " (mean per pair)"
    print(f"rewrites that drift{per_pair}: " + "; ".join(
        f"{name} {drift_mean['before'][name]:.{0 if len(args.paired) == 1 else 1}f} -> "
        f"{drift_mean['after'][name]:.{0 if len(args.paired) == 1 else 1}f}" for name in HACKING))
    return 0


def ab_main(args: argparse.Namespace) -> int:
    """``--ab CONTROL TREATMENT``: both sides' pages for every query of the split, then ``ab_test``."""
    from qrw.runs import load_run

    n_users = 20_000 if args.users is None else args.users
    check(4 <= n_users <= MAX_AB_USERS, f"--users must be between 4 and {MAX_AB_USERS:,} (got {n_users})")
    check(args.seed >= 0, f"--seed must be >= 0 (got {args.seed})")
    specs = list(args.ab)
    shared = _shared_world(specs, args.ckpt)
    device = resolve_device(args.device)
    world = _build_world(shared)
    ctx = Shop(world, k=args.k)
    queries = world.queries[args.split]
    texts = list(dict.fromkeys(q.text for q in queries))  # each side rewrites a distinct query once
    sides, labels = {}, {}
    for role, spec in zip(("control", "treatment"), specs):
        if spec in BASELINES:
            rewrites = ctx.baseline_rewrites(spec, queries)
            labels[role] = _side_label(spec)
        else:
            loaded = load_run(spec, device)
            by_text = dict(zip(texts, loaded.rewriter(device).rewrite(texts)))
            rewrites = [by_text[q.text] for q in queries]
            labels[role] = f"{run_name(loaded.config)} [{Path(spec).name}]"
        pages = ctx.engine.pages([q.text for q in queries], rewrites, args.k)  # (Q, k)
        sides[role] = (pages, page_grades(world.judge, [q.intent for q in queries], pages))
    result = ab_test(ctx.users, *sides["control"], *sides["treatment"], n_users, np.random.default_rng(args.seed))
    if args.json:
        print(to_json({"control": labels["control"], "treatment": labels["treatment"], "split": args.split,
                       "n_queries": len(queries), "k": args.k, "seed": args.seed, "result": result}))
    else:
        print(format_ab(result, labels["control"], labels["treatment"], len(queries), args.seed))
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    check(1 <= args.k <= 100, f"--k must be between 1 and 100 (got {args.k})")
    if args.paired is not None:
        check(args.ab is None and args.gate is None and args.gate_judge is None and not args.baselines
              and args.users is None, "--paired takes no --ab, --gate, --gate-judge, --baselines or --users")
        check(args.ckpt is None or len(args.paired) == 1, "--ckpt picks the world of one --paired pair of "
                                                             "baselines; with several pairs give run directories")
        return paired_main(args)
    if args.ab is not None:
        check(not args.baselines, "--baselines applies to the offline evaluation (--ckpt without --ab)")
        check(args.gate is None and args.gate_judge is None,
              "--gate and --gate-judge apply to the offline evaluation (--ckpt without --ab)")
        return ab_main(args)
    check(args.ckpt is not None, "give --ckpt DIR (offline evaluation) or --ab CONTROL TREATMENT (A/B test)")
    check(args.users is None, "--users applies to the A/B test (--ab CONTROL TREATMENT)")
    return offline_main(args)


if __name__ == "__main__":
    run_main(main)
