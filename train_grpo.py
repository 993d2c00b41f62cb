"""Stage 2: align the SFT rewriter with GRPO to relevance and conversion rewards.

    SFT run directory -> policy (trainable) + reference (frozen copy) -> GRPO -> before/after table

Writes a run directory (default ``runs/grpo``): ``config.json``, ``tokenizer.json``,
``ckpt.pt``, ``metrics.jsonl`` (every step: each reward's mean and std, KL, clip
fractions, lengths, timings, ...), ``metrics.json`` (the test evaluation of the
SFT initialisation and of the GRPO policy) and prints the before/after table.

    python train_grpo.py                                # fused reward, from runs/sft
    python train_grpo.py --reward conversion --out runs/grpo-conversion
    python train_grpo.py --relevance-judge tagger       # the SFT model's own tagger as relevance reward
    python train_grpo.py --smoke                        # tiny end-to-end check (trains its own tiny SFT first)
    python train_grpo.py --resume --out runs/grpo       # continue an interrupted run exactly
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from qrw.checkpoint import (CKPT_NAME, CONFIG_NAME, TOKENIZER_NAME, file_sha256, read_json, restore_model,
                            save_checkpoint, write_json)
from qrw.config import (Parser, UserError, add_config_args, arg, check, config_from_args, config_from_dict,
                        resolve_device, run_main)
from qrw.evaluate import EvalContext, compare_rewrites, evaluate_run, format_comparison, format_table
from qrw.grpo import frozen_reference
from qrw.grpo_train import GRPOConfig, train_grpo
from qrw.log import MetricsLog
from qrw.rewards import RewardConfig, RewardFunction
from qrw.rewriter import Rewriter, load_run


@dataclass
class GRPORunConfig:
    """Where a GRPO run starts from."""

    init: str = arg("runs/sft", "SFT run directory to start from (the policy's init and the frozen reference)")
    seed: int = arg(0, "seed of the query order and the sampling")
    queries: str = arg("logs", "GRPO's training queries: the search logs' queries (unlabelled: the rewards need "
                       "no gold rewrite) or the SFT training queries", choices=["logs", "train"])

    def __post_init__(self) -> None:
        check(self.seed >= 0, f"--seed must be >= 0 (got {self.seed})")


SMOKE_GRPO = dict(steps=4, queries_per_step=4, group_size=4, max_new_tokens=12, log_every=1, sample_every=2,
                  ckpt_every=2, minibatch_size=16)


def parse_args(argv=None) -> argparse.Namespace:
    p = Parser(prog="train_grpo.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None, help="run directory (default: runs/grpo, or runs/grpo-REWARD for a single reward)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--smoke", action="store_true",
                   help="tiny run end to end in seconds (trains a tiny SFT run first when --init is missing)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--stop-after", type=int, default=None,
                   help="stop (with a checkpoint) after this many steps in this invocation; continue with --resume")
    p.add_argument("--quiet", action="store_true", help="no progress bars or log lines, only the final table")
    add_config_args(p, GRPORunConfig, group_title="run")
    add_config_args(p, GRPOConfig, group_title="GRPO")
    add_config_args(p, RewardConfig, group_title="rewards")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    check(args.stop_after is None or args.stop_after >= 1, "--stop-after must be >= 1")
    device = resolve_device(args.device)
    progress = not args.quiet
    t_start = time.perf_counter()

    run = config_from_args(GRPORunConfig, args)
    grpo = config_from_args(GRPOConfig, args, base=GRPOConfig(**SMOKE_GRPO) if args.smoke else None)
    rewards = config_from_args(RewardConfig, args)
    default_out = "runs/grpo" if rewards.reward == "fusion" else f"runs/grpo-{rewards.reward}"
    out = Path(args.out or (("runs/smoke-grpo" if args.smoke else default_out)))
    if args.smoke and args.init is None:
        run = dataclasses.replace(run, init="runs/smoke-sft")
        if not (Path(run.init) / CKPT_NAME).exists():
            import train_sft
            shutil.rmtree(run.init, ignore_errors=True)
            train_sft.main(["--smoke", "--quiet", "--out", run.init, "--device", args.device])
    if args.resume:
        saved = read_json(out / CONFIG_NAME, "run config (nothing to resume?)")
        run = config_from_dict(GRPORunConfig, saved["run"])
        grpo = config_from_dict(GRPOConfig, saved["grpo"])
        rewards = config_from_dict(RewardConfig, saved["rewards"])
    elif (out / CKPT_NAME).exists():
        raise UserError(f"{out} already holds a run: pass --resume to continue it, or choose another --out")

    init = Path(run.init)
    loaded = load_run(init, device)
    world, tok, policy = loaded.world, loaded.tok, loaded.model
    model_cfg = policy.config
    reference = frozen_reference(policy)
    torch.manual_seed(run.seed)
    out.mkdir(parents=True, exist_ok=True)
    if not args.resume:
        shutil.copyfile(init / TOKENIZER_NAME, out / TOKENIZER_NAME)
        write_json(out / CONFIG_NAME, {"kind": "grpo", "run": dataclasses.asdict(run), "grpo": dataclasses.asdict(grpo),
                                       "rewards": dataclasses.asdict(rewards),
                                       "world": dataclasses.asdict(world.config),
                                       "model": dataclasses.asdict(model_cfg)})
    tok_sha = file_sha256(out / TOKENIZER_NAME)
    state = None
    if args.resume:
        state = restore_model(out, policy, tok_sha)
    log = MetricsLog(out / "metrics.jsonl", truncate=not args.resume)
    if state is not None:
        log.truncate_after("grpo", state["step"])

    ctx = EvalContext(world)
    tagger = Rewriter(reference, tok, device) if rewards.relevance_judge == "tagger" else None
    reward_fn = RewardFunction(ctx, rewards, tagger=tagger)
    rewriter = Rewriter(policy, tok, device, max_new_tokens=grpo.max_new_tokens)
    if progress:
        print(f"GRPO from {init}: reward {rewards.reward} (weights {reward_fn.weights}, relevance judge "
              f"{rewards.relevance_judge}) | P {grpo.queries_per_step} x G {grpo.group_size} | "
              f"loss {grpo.loss_type} | beta {grpo.beta} | device {device}")

    def save(step: int, optimizer: torch.optim.Optimizer) -> None:
        save_checkpoint(out / CKPT_NAME, {"model": policy.state_dict(), "optimizer": optimizer.state_dict(),
                                          "stage": "grpo", "step": step,
                                          "model_config": dataclasses.asdict(model_cfg), "tokenizer_sha256": tok_sha})

    start = state["step"] if state else 0
    if start < grpo.steps or grpo.steps == 0:
        pool = world.log_queries if run.queries == "logs" else world.queries["train"]
        finished = train_grpo(policy, reference, rewriter, reward_fn, pool, grpo, seed=run.seed,
                              device=device, log=log, save=save, start_step=start,
                              optimizer_state=state["optimizer"] if state else None,
                              stop_after=args.stop_after, progress=progress)
        if not finished:
            print(f"stopped; continue with: python train_grpo.py --resume --out {out}")
            return 0
        if grpo.steps == 0:
            save(0, torch.optim.AdamW(policy.parameters()))
    train_seconds = time.perf_counter() - t_start

    # ---- before / after on held-out test queries -------------------------------------------
    before = evaluate_run(ctx, Rewriter(reference, tok, device), name="SFT init", baselines=True, tagging=False)
    after = evaluate_run(ctx, Rewriter(policy, tok, device), name=f"GRPO ({rewards.reward})", baselines=False,
                         tagging=False)
    rows = {**before["rows"], **after["rows"]}
    queries = world.queries["test"]
    before_label, after_label = "SFT init", f"GRPO ({rewards.reward})"
    fused = {label: reward_fn(queries, res["rewrites"], res["well_formed"])["fused"]
             for label, res in ((before_label, before), (after_label, after))}
    for label, values in fused.items():
        rows[label]["all"]["reward"] = float(np.mean(values))
    comparison = compare_rewrites(ctx, queries, before["rewrites"], after["rewrites"],
                                  extra={"reward": (fused[before_label], fused[after_label])})
    results = {"split": "test", "n_queries": len(queries), "segments": before["segments"], "rows": rows,
               "reward": rewards.reward, "comparison": comparison, "train_seconds": round(train_seconds, 1),
               "samples": after["samples"]}
    write_json(out / "metrics.json", results)
    print(f"== test queries ({len(queries)}): SFT init vs GRPO ({rewards.reward}); reward = the run's fused reward ==")
    print(format_table(rows, before["segments"], ("accuracy", "relevance", "recall", "ucvr", "reward")))
    print(f"paired differences on the {len(queries)} test queries (GRPO - SFT init):")
    print(format_comparison(comparison, before_label, after_label))
    print(f"wrote {out}/ in {time.perf_counter() - t_start:.0f} s (training {train_seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    run_main(main)
