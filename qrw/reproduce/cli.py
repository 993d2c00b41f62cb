"""Train and evaluate the grid of the paper's comparisons over seeds, then write docs/RESULTS.md.

``python -m qrw.reproduce`` (:mod:`qrw.reproduce` describes the grid, the seeds and the report): train the grid,
evaluate it, write the report and ``OUT/results.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from qrw.config import Parser, check
from qrw.evaluate import to_json
from qrw.reproduce.evaluation import evaluate_grid
from qrw.reproduce.grid import GRID, grid_command, seed_list, selected_arms, train_all
from qrw.reproduce.report import plot_curves, report


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
    p.add_argument("--train-only", action="store_true",
                   help="train the runs and stop: no evaluation, no report (to split the grid across sessions; a "
                        "later call with every seed reuses the finished runs and writes the report)")
    p.add_argument("--jobs", type=int, default=1,
                   help="train this many runs at once, the CPU threads split between them (default 1: on this "
                        "project's 2 cores a one-thread GRPO run beside another took about 12 s a step, one "
                        "two-thread run alone 4 s; for machines with more cores)")
    return p.parse_args(argv)


def vs_dictionary_json(vs_dictionary: dict) -> dict:
    """:attr:`GridEvaluation.vs_dictionary` (keys ``(arm, subset)``) as JSON: arm -> subset -> metric -> entry."""
    out: dict = {}
    for (arm, subset), c in vs_dictionary.items():
        out.setdefault(arm, {})[subset] = c
    return out


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
    if args.train_only:
        print(f"trained {sum(not reused for _, reused in trained.values())} runs, reused "
              f"{sum(reused for _, reused in trained.values())} ({(t_eval - t_start) / 60:.1f} min); no report "
              f"(--train-only): a later call with every seed writes it from the finished runs")
        return 0

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
                        for key, c in grid.cmp.items()},
        "vs_dictionary": vs_dictionary_json(grid.vs_dictionary), "n_unseen": grid.n_unseen,
        "n_log_only": grid.n_log_only, "wall_by_seed": {str(s.seed): s.walls for s in grid.seeds},
        "conversion_model_by_seed": {str(s.seed): {name: {"model": float(v.mean()),
                                                          "simulator": float(s.per_query[name]["ucvr"].mean())}
                                                   for name, v in s.conversion.items()} for s in grid.seeds}}) + "\n")
    print("\n".join(lines))
    print(f"wrote {results_path} and {out / 'results.json'} ({timing['total'] / 60:.1f} min in this call)")
    return 0
