"""The grid of runs: one :class:`Arm` per comparison, trained over seeds in subprocesses.

:data:`GRID` names every arm (one line each to add another) with its training
command and, for GRPO, the arm whose run it starts from; :func:`train_all` trains
every (seed, arm) into ``OUT/seed-S/NAME`` (a finished run is reused), ``--jobs``
at a time; :func:`grid_command` is the command that regenerates the report.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from qrw.config import UserError, check


@dataclass(frozen=True)
class Arm:
    """One arm of the grid: a training command and, for GRPO, the arm whose run it starts from."""

    label: str  # its row in the report's tables
    script: str  # train_sft.py or train_grpo.py
    flags: tuple[str, ...] = ()  # on top of --out, --seed, --device, --quiet
    init: str | None = None  # the arm whose run is --init (GRPO)


# sft-multi and grpo-fusion are the scripts' defaults (DEFAULT_ARMS); an arm starts after the arm it starts from
GRID = {
    "sft-multi": Arm("multi-task SFT", "train_sft.py"),
    "sft-single": Arm("single-task SFT", "train_sft.py", ("--tasks", "rewrite")),
    "sft-nopretrain": Arm("multi-task SFT, no pretrain", "train_sft.py", ("--no-pretrain",)),
    "grpo-fusion": Arm("GRPO fusion", "train_grpo.py", ("--reward", "fusion"), "sft-multi"),
    "grpo-relevance": Arm("GRPO relevance", "train_grpo.py", ("--reward", "relevance"), "sft-multi"),
    "grpo-conversion": Arm("GRPO conversion", "train_grpo.py", ("--reward", "conversion"), "sft-multi"),
    "grpo-norules": Arm("GRPO fusion, no rules", "train_grpo.py", ("--reward", "fusion", "--rules", "none"), "sft-multi"),
    # the upper bounds: each swaps in one piece of the hidden truth that a shop does not have (it crosses the wall)
    "sft-single-gold": Arm("single-task SFT, gold pairs (upper bound)", "train_sft.py",
                           ("--tasks", "rewrite", "--rewrite-data", "gold")),
    "sft-gold-relevance": Arm("multi-task SFT, gold-built relevance pairs (upper bound)", "train_sft.py",
                              ("--relevance-data", "production")),
    "grpo-oracle": Arm("GRPO fusion, oracle relevance (upper bound)", "train_grpo.py",
                       ("--reward", "fusion", "--relevance-judge", "oracle"), "sft-multi"),
    "grpo-oracle-conversion": Arm("GRPO fusion, oracle conversion (upper bound)", "train_grpo.py",
                                  ("--reward", "fusion", "--conversion-judge", "oracle"), "sft-multi"),
}
LABELS = {"none": "no rewrite", **{name: arm.label for name, arm in GRID.items()}}
# (before, after) pairs compared on the same queries: the claims' and the upper bounds' (after minus before)
CLAIM_PAIRS = [("sft-single", "sft-multi"), ("sft-nopretrain", "sft-multi"), ("sft-multi", "grpo-fusion"),
               ("sft-multi", "grpo-relevance"), ("sft-multi", "grpo-conversion"), ("grpo-fusion", "grpo-conversion")]
BOUND_PAIRS = [("sft-single-gold", "sft-single"), ("sft-gold-relevance", "sft-multi"), ("grpo-norules", "grpo-fusion"),
               ("grpo-oracle", "grpo-fusion"), ("grpo-oracle-conversion", "grpo-fusion")]
DEFAULT_ARMS = ("sft-multi", "grpo-fusion")  # the scripts' defaults: the production regime, behind the wall
QUICK = {"train_sft.py": ["--pretrain-steps", "150", "--sft-steps", "500"], "train_grpo.py": ["--steps", "40"]}
SMOKE = {"train_sft.py": ["--smoke", "--sft-eval-every", "4"], "train_grpo.py": ["--smoke"]}  # tests: seconds a run


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


RECIPE_IGNORED = {"log_every", "eval_every", "ckpt_every", "sample_every", "kl_every"}
"""Config fields that say when a run logs, validates or saves, not what it trains: left out of its recipe."""


def recipe_of(config: dict, script: str) -> dict:
    """The training recipe in a run's ``config.json``: each stage's step counts, batch sizes, learning rates
    and the like (not :data:`RECIPE_IGNORED`), and the compute precision."""
    sections = ("pretrain", "sft", "label") if script == "train_sft.py" else ("grpo",)
    recipe = {f"{section}.{key}": value for section in sections
              for key, value in (config.get(section) or {}).items() if key not in RECIPE_IGNORED}
    return recipe | {"dtype": (config.get("run") or {}).get("dtype", "fp32")}


def expected_recipe(script: str, args: argparse.Namespace) -> dict | None:
    """The recipe an arm of this grid trains with today: the scripts' defaults, with ``--quick``'s step
    counts (:data:`QUICK`); None for ``--smoke`` (its configs are the tests' own)."""
    if getattr(args, "smoke", False):
        return None
    import dataclasses

    quick = dict(zip(QUICK[script][::2], QUICK[script][1::2]))  # --quick's flag -> value
    if script == "train_sft.py":
        from qrw.sft import DEFAULT_LABEL, DEFAULT_PRETRAIN, DEFAULT_SFT, SFTRunConfig

        stages = {"pretrain": dataclasses.asdict(DEFAULT_PRETRAIN), "sft": dataclasses.asdict(DEFAULT_SFT),
                  "label": dataclasses.asdict(DEFAULT_LABEL)}
        if SFTRunConfig().label_rewrites + SFTRunConfig().label_ood == 0:
            stages["label"]["steps"] = 0  # no stage 1b: the run records 0 steps
        if args.quick:
            stages["pretrain"]["steps"] = int(quick["--pretrain-steps"])
            stages["sft"]["steps"] = int(quick["--sft-steps"])
        return recipe_of(stages | {"run": {"dtype": SFTRunConfig().dtype}}, script)
    from qrw.update import GRPOConfig

    grpo = dataclasses.asdict(GRPOConfig())
    if args.quick:
        grpo["steps"] = int(quick["--steps"])
    return recipe_of({"grpo": grpo, "run": {"dtype": "fp32"}}, script)  # train_grpo.py's --dtype default


def recipe_changes(run_dir: Path, script: str, args: argparse.Namespace) -> list[str]:
    """``key saved -> today`` for each recipe field where the finished run in ``run_dir`` differs from what
    the grid would train today (:func:`expected_recipe`); empty when they agree or nothing is expected."""
    expected = expected_recipe(script, args)
    if expected is None:
        return []
    try:
        saved = recipe_of(json.loads((run_dir / "config.json").read_text()), script)
    except (OSError, ValueError):
        return ["config.json unreadable"]  # a run whose recipe cannot be read is not reused
    return [f"{key} {saved.get(key)} -> {value}" for key, value in expected.items() if saved.get(key) != value]


def train(name: str, seed: int, out: Path, args: argparse.Namespace, threads: int = 0) -> tuple[float, bool]:
    """Train one arm with one seed in a subprocess, into ``out/name`` (output to ``out/name.log``).

    ``out`` is the seed's directory (``OUT/seed-S``); ``threads`` > 0 sets the
    subprocess's CPU threads (``OMP_NUM_THREADS``). Returns (its training wall time,
    whether a finished run was reused). A finished run (``metrics.json`` written) is
    reused unless ``args.force``, or unless it trained before the hidden truth's wall
    (:mod:`qrw.shop.wall`: its ``metrics.json`` has no ``wall`` record) or with another recipe
    than today's defaults (:func:`recipe_changes`: step counts, batch sizes, learning rates,
    dtype), and it is retrained (a grid mixes no regimes and no recipes).
    """
    arm = GRID[name]
    run_dir = out / name
    if (run_dir / "metrics.json").exists() and not args.force:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        changes = recipe_changes(run_dir, arm.script, args) if "wall" in metrics else []
        if "wall" in metrics and not changes:
            print(f"  seed {seed} {name}: reusing {run_dir}")
            return metrics.get("train_seconds", 0.0), True
        if changes:
            print(f"  seed {seed} {name}: {run_dir} trained with another recipe ({'; '.join(changes)}): retraining")
        else:
            print(f"  seed {seed} {name}: {run_dir} trained before the wall (its metrics.json has no 'wall' record): "
                  "retraining")
    if run_dir.exists():
        shutil.rmtree(run_dir)
    cmd = [sys.executable, arm.script, "--out", str(run_dir), "--seed", str(seed), "--device", args.device,
           "--quiet", *arm.flags, *mode_flags(arm.script, args)]
    if arm.init:
        cmd += ["--init", str(out / arm.init)]
    print(f"  seed {seed} {name}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    root = Path(__file__).resolve().parents[2]  # the repository
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
