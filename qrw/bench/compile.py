"""Does ``torch.compile`` pay back its compile time within one default run? Measured per stage.

``python -m qrw.bench compile`` runs three stages on a trained run (``--init runs/sft``,
the default: the run's own batches, real prompts and rewrite lengths), each twice from
the same weights, once eager and once with the model's forward compiled, and prints per stage:

- eager seconds per step: the median of ``--steps`` steps after one warm-up step;
- compile seconds: the one-time cost. The compiled model runs the stage's ``--steps`` batches
  twice: the first pass compiles (the first call traces and compiles; a batch of a shape not seen
  yet may compile again), the second is timed; compile seconds = the first pass's wall time minus
  what its steps cost compiled (they train too);
- the graphs compiled (a graph break splits one forward into several graphs) and the
  number of batches after the first that compiled anything (recompiles: new shapes);
- compiled seconds per step: the median of the second pass;
- the speedup eager / compiled, the break-even step count compile / (eager - compiled), the
  number of steps the stage runs in the default recipe (``qrw.sft.DEFAULT_PRETRAIN.steps``,
  ``DEFAULT_SFT.steps``, ``qrw.update.GRPOConfig().steps``, read when the command runs), the
  verdict "pays back" (break-even below that count) and the seconds saved over the stage,
  default steps * (eager - compiled) - compile;
- |loss eager - loss compiled| of the stage's first step, both from the same weights: the
  compiled model must compute what the eager one does (float rounding apart).

What is compiled: ``torch.compile(model.forward, dynamic=...)`` set as the model's
``forward`` (``--dynamic true``, the default, compiles shape-generic code from the first
call; ``auto`` is torch's default, which specialises on the first shapes and recompiles
generically when they change; ``false`` specialises on every shape). The loss, the backward
(through AOTAutograd's compiled backward graph) and the optimizer step are the training
code's own. The ``select=`` head (boolean indexing: a data-dependent shape) breaks the
graph in two; that is counted, not avoided.

Stages, each on its own batches so that the shapes vary as in a run: stage 0 and stage 1
optimizer steps on the run's first batches of each mixture (packed in rows of 64 tokens, as
``train_sft.py`` builds them: the number of rows and of targets changes from step to step);
GRPO's update (``qrw.update.update_policy`` with ``GRPOConfig()``) on the rollouts of the
first GRPO steps, sampled eagerly with the run's own model before any update (their
completion lengths differ), random advantages (the cost does not depend on their values).
``qrw.bench.profile.stage_steps`` holds one batch per stage and repeats it, so the steps are
built here. Generation (the KV-cache engine) is not compiled: its cost is another question.

Each stage's compile cost is measured from cold: dynamo is reset, inductor's in-memory caches
are cleared and its on-disk cache is an empty directory, per stage (a first run on a fresh
machine pays this; a second run, or stage 1 after stage 0 in one process, finds compiled code
cached and pays less). Even with ``dynamic=True`` a size that the traced code turns into a
Python value (an f-string, say an error message built before its check) is specialised, so
each new value of it compiles again: the recompiles column counts them. Timings share the
machine with whatever else runs: on a busy machine they should be redone on an idle one.
"""

from __future__ import annotations

import copy
import json
import math
import statistics
import tempfile
import time
from contextlib import contextmanager
from typing import Callable

import torch

from qrw.config import check

STAGES = {"pretrain": "stage 0 step", "sft": "stage 1 step", "grpo": "GRPO update"}
DYNAMIC = {"true": True, "auto": None, "false": False}


def default_steps() -> dict[str, int]:
    """The number of steps each stage runs in the default recipe, read now (the defaults change)."""
    from qrw.sft import DEFAULT_PRETRAIN, DEFAULT_SFT
    from qrw.update import GRPOConfig

    return {"pretrain": DEFAULT_PRETRAIN.steps, "sft": DEFAULT_SFT.steps, "grpo": GRPOConfig().steps}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def varied_steps(init: str, seed: int, n: int, stages: list[str], device: torch.device | str = "cpu",
                 dtype: str = "fp32"
                 ) -> tuple[torch.nn.Module, torch.optim.Optimizer, dict[str, Callable[[int], float]]]:
    """The run's model, its optimizer and ``stage -> step(i)``: step ``i`` (0 <= i < n) trains the model in
    place on the stage's ``i``-th batch (or rollout) and returns the step's loss. ``dtype``: "fp32" or "bf16"
    (:func:`qrw.lm.precision.set_precision`), set before the rollouts are sampled.

    As in :func:`qrw.bench.profile.stage_steps`, but with ``n`` different batches per stage instead
    of one repeated, so that shapes vary as they do in a run.
    """
    from qrw.config import config_from_dict
    from qrw.data import collate
    from qrw.lm.precision import set_precision
    from qrw.oracle import stage1_pairs
    from qrw.rewriter import Rewriter
    from qrw.rollout import groups_batch, rollout_logprobs, sample_groups, step_generator, step_queries
    from qrw.runs import load_run
    from qrw.sft import SFTRunConfig, TrainConfig, pretrain_mixture, sft_mixture, stage1_budget
    from qrw.bench.profile import packed_step
    from qrw.shop.observation import observe_world
    from qrw.update import GRPOConfig, update_policy

    device = torch.device(device)
    loaded = load_run(init, device)
    model, tok, config = loaded.model, loaded.tok, loaded.config
    set_precision(model, dtype)
    run = config_from_dict(SFTRunConfig, {"dtype": "fp32"} | config["run"])
    observed = observe_world(loaded.world, run.label_budget, run.label_disagreement)
    optimizer = torch.optim.AdamW(model.param_groups(0.1), lr=1e-6, fused=device.type in ("cpu", "cuda"))
    steps: dict[str, Callable[[int], float]] = {}

    if "pretrain" in stages or "sft" in stages:
        max_len = model.config.max_seq_len
        mixtures = {"pretrain": pretrain_mixture(observed, tok, run, config_from_dict(TrainConfig, config["pretrain"]),
                                                 max_len)}
        if "sft" in stages:
            label_steps = config.get("label", {}).get("steps", 0)
            rewrites, relevance, _ = stage1_pairs(observed, loaded.world, run, stage1_budget(run, label_steps))
            mixtures["sft"] = sft_mixture(rewrites, relevance, tok, run, config_from_dict(TrainConfig, config["sft"]),
                                          max_len)
        weights = {k: w for mixture in mixtures.values() for k, w in mixture.weights.items()}

        def sft_step(mixture):
            batches = [mixture.batch(i) for i in range(n)]

            def step(i: int) -> float:
                return packed_step(model, optimizer, collate(batches[i], tok.pad_id, weights, 64).to(device)).item()
            return step

        steps.update({stage: sft_step(mixtures[stage]) for stage in ("pretrain", "sft") if stage in stages})

    if "grpo" in stages:
        grpo = GRPOConfig()
        P, G = grpo.queries_per_step, grpo.group_size
        rewriter = Rewriter(model, tok, device, max_new_tokens=grpo.max_new_tokens)
        rollouts = []
        for i in range(n):  # sampled now, before any update: every rollout comes from the run's own model
            groups = sample_groups(rewriter, step_queries(observed.grpo_texts, i, P, seed), G,
                                   temperature=grpo.temperature, generator=step_generator(seed, i, device))
            batch = groups_batch(groups, pad_id=tok.pad_id, eos_id=tok.eos_id, device=device)
            ref = rollout_logprobs(model, batch, temperature=grpo.temperature) if grpo.beta > 0 else None
            rollouts.append((batch, groups.rollout.logprobs, ref))

        def update(i: int) -> float:
            batch, old_logp, ref = rollouts[i]
            model.eval()  # as train_grpo.py updates (no dropout either way; the compiled code guards on the mode)
            advantages = torch.randn(P, G, generator=torch.Generator().manual_seed(seed + i)).to(device)
            keep = torch.ones(P, dtype=torch.bool, device=device)  # the defaults: every group
            result = update_policy(model, optimizer, batch, advantages, keep, grpo, old_logp=old_logp, ref_logp=ref)
            return result["loss"]

        steps["grpo"] = update
    return model, optimizer, steps


class CompiledForward:
    """``with CompiledForward(model, dynamic):`` calls of ``model(...)`` run ``torch.compile(model.forward)``.

    The compiled function is made once, so its compiled code survives leaving and re-entering.
    """

    def __init__(self, model: torch.nn.Module, dynamic: bool | None):
        self.model = model
        self.compiled = torch.compile(model.forward, dynamic=dynamic)

    def __enter__(self) -> "CompiledForward":
        self.model.forward = self.compiled  # an instance attribute: nn.Module.__call__ finds it first
        return self

    def __exit__(self, *exc) -> None:
        del self.model.forward  # back to the class's eager forward


def compiled_graphs() -> int:
    """Graphs dynamo has compiled in this process since its last reset (a graph break makes two)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


@contextmanager
def cold_compiler(cache_dir: str):
    """Compile as a fresh process on a fresh machine would: dynamo's caches and counters reset, inductor's
    in-memory caches cleared and its on-disk cache an empty directory under ``cache_dir`` (restored after)."""
    from torch._dynamo.utils import counters
    from torch._inductor.utils import fresh_cache

    torch._dynamo.reset()
    counters.clear()
    with fresh_cache(dir=cache_dir):
        try:
            yield
        finally:
            torch._dynamo.reset()


def measure_stage(step: Callable[[int], float], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                  steps: int, dynamic: bool | None, device: torch.device) -> dict:
    """Eager, then compiled, on the stage's batches ``0 .. steps - 1``, each from the weights and optimizer state
    the stage starts with.

    Eager: one warm-up step on batch 0, then the batches timed. Compiled: a first pass over the batches (the first
    call compiles; a batch of a shape not seen yet may compile again), then a second pass timed (every shape
    compiled by then). Compile seconds: the first pass's time minus what its steps cost compiled (they train too).
    """
    start = (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()))

    def timed(i: int) -> tuple[float, float]:
        _sync(device)
        t0 = time.perf_counter()
        loss = step(i)
        _sync(device)
        return time.perf_counter() - t0, loss

    _, eager_loss = timed(0)  # warm-up
    eager = statistics.median(timed(i)[0] for i in range(steps))

    model.load_state_dict(start[0])
    optimizer.load_state_dict(start[1])
    first, second, recompiles, compiled_loss = [], [], 0, None
    with CompiledForward(model, dynamic):
        for i in range(steps):
            graphs = compiled_graphs()
            seconds, loss = timed(i)
            compiled_loss = loss if i == 0 else compiled_loss
            recompiles += i > 0 and compiled_graphs() > graphs
            first.append(seconds)
        graphs = compiled_graphs()
        second = [timed(i)[0] for i in range(steps)]
        late = compiled_graphs() - graphs  # 0 unless dynamo gave up on a function and recompiled something else
    compiled = statistics.median(second)
    from torch._dynamo.utils import counters

    return {"eager_s": eager, "compile_s": max(sum(first) - steps * compiled, 0.0), "compiled_s": compiled,
            "graphs": compiled_graphs(), "graph_breaks": int(sum(counters["graph_break"].values())),
            "recompiles": recompiles, "late_graphs": late, "eager_loss": eager_loss, "compiled_loss": compiled_loss}


def verdict(row: dict, default: int) -> dict:
    """Speedup, break-even step count, whether that is below ``default`` steps, and seconds saved over them."""
    gain = row["eager_s"] - row["compiled_s"]
    break_even = row["compile_s"] / gain if gain > 0 else math.inf
    return {"speedup": row["eager_s"] / row["compiled_s"], "break_even": break_even, "default_steps": default,
            "pays_back": break_even < default, "saved_s": default * gain - row["compile_s"],
            "loss_diff": abs(row["eager_loss"] - row["compiled_loss"])}


HEADER = ("stage", "eager s/step", "compile s", "graphs", "recompiles", "compiled s/step", "speedup",
          "break-even steps", "default steps", "pays back", "saved s", "loss diff step 1")


def table_line(row: dict) -> str:
    break_even = "never" if math.isinf(row["break_even"]) else f"{row['break_even']:.0f}"
    cells = (row["name"], f"{row['eager_s']:.4f}", f"{row['compile_s']:.1f}", str(row["graphs"]),
             str(row["recompiles"]), f"{row['compiled_s']:.4f}", f"{row['speedup']:.2f}x", break_even,
             str(row["default_steps"]), "yes" if row["pays_back"] else "no", f"{row['saved_s']:.0f}",
             f"{row['loss_diff']:.1e}")
    return "| " + " | ".join(cells) + " |"


def bench_compile(init: str, stages: list[str], steps: int, dynamic: str, device: str,
                  dtype: str, seed: int = 0, json_path: str | None = None) -> list[dict]:
    """Measure every stage of ``stages`` (keys of ``STAGES``), print the markdown table, return its rows."""
    from qrw.lm.precision import resolve_dtype

    check(stages and set(stages) <= set(STAGES),
          f"--stages must list some of {', '.join(STAGES)}, got {','.join(stages)!r}")
    check(steps > 0, "--steps must be > 0")
    check(dynamic in DYNAMIC, f"--dynamic must be one of {', '.join(DYNAMIC)}, got {dynamic!r}")
    device = torch.device(device)
    dtype = resolve_dtype(dtype, device)
    model, optimizer, step_of = varied_steps(init, seed, steps, stages, device, dtype)
    defaults = default_steps()
    print(f"run {init} | device {device} | threads {torch.get_num_threads()} | dtype {dtype} | "
          f"torch {torch.__version__} | torch.compile(model.forward, dynamic={DYNAMIC[dynamic]}), each stage from "
          f"a cold cache | {steps} batches a stage; eager: median after 1 warm-up step; compiled: a first pass "
          f"compiles, the median of a second")
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(HEADER))) + "|")
    rows = []
    with tempfile.TemporaryDirectory(prefix="qrw-bench-compile-") as cache_dir:
        for stage in stages:
            with cold_compiler(cache_dir):
                row = measure_stage(step_of[stage], model, optimizer, steps, DYNAMIC[dynamic], device)
            row = {"stage": stage, "name": STAGES[stage], "dtype": dtype, **row, **verdict(row, defaults[stage])}
            rows.append(row)
            print(table_line(row), flush=True)
    limit = torch._dynamo.config.recompile_limit
    for row in rows:
        if row["recompiles"]:
            print(f"{row['name']}: {row['recompiles']} of the {steps - 1} batches after the first compiled again "
                  f"(a new shape): a run's compile cost grows with its number of shapes, until a function has compiled "
                  f"{limit} times (torch._dynamo.config.recompile_limit) and runs eager from then on")
        if row["late_graphs"]:
            print(f"{row['name']}: {row['late_graphs']} graphs compiled in the timed pass, on shapes already seen")
    if json_path:
        meta = {"init": init, "device": str(device), "threads": torch.get_num_threads(), "dtype": dtype,
                "dynamic": dynamic, "steps": steps, "torch": torch.__version__}
        with open(json_path, "w") as f:
            json.dump({"meta": meta, "rows": [{**r, "break_even": None if math.isinf(r["break_even"])
                                               else r["break_even"]} for r in rows]}, f, indent=2)
    return rows


def add_parser(sub) -> None:
    """Register ``compile`` on the subparsers ``sub`` of ``python -m qrw.bench``."""
    c = sub.add_parser("compile", help="per stage: does torch.compile pay back its compile time within one default "
                                       "run? eager vs compiled seconds a step, compile seconds, break-even steps")
    c.add_argument("--init", default="runs/sft", help="a finished SFT run to run the stages on (default: runs/sft)")
    c.add_argument("--stages", default="pretrain,sft,grpo",
                   help="comma-separated: pretrain (stage 0), sft (stage 1), grpo (GRPO update) (default: all three)")
    c.add_argument("--steps", type=int, default=10,
                   help="batches per stage, timed eager and compiled (the compiled model runs them twice: a first "
                        "pass compiles, the second is timed); medians are reported (default: 10)")
    c.add_argument("--dynamic", default="true", choices=list(DYNAMIC),
                   help="torch.compile's dynamic= (true: shape-generic from the first call; auto: torch's default, "
                        "generic after the first new shape; false: specialised on every shape)")
    c.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    c.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "auto"], help="precision (default: fp32)")
    c.add_argument("--json", default=None, metavar="PATH", help="also write the numbers to PATH")
    c.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: 0 = torch's choice)")
    c.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


def run(args) -> None:
    """``python -m qrw.bench compile`` with parsed ``args``."""
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    bench_compile(args.init, stages, args.steps, args.dynamic, args.device, args.dtype,
                  args.seed, args.json)
