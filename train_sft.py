"""Stages 0 and 1: pretrain on search logs and product text, then multi-task SFT.

    world(seed) -> tokenizer -> stage 0 (pretrain) -> stage 1 (rewrite + relevance) -> test evaluation

Writes a run directory (default ``runs/sft``): ``config.json``, ``tokenizer.json``,
``ckpt.pt``, ``metrics.jsonl``, ``metrics.json``, and prints a summary table.

    python train_sft.py                      # the default run (CPU, minutes)
    python train_sft.py --smoke              # tiny end-to-end check (seconds)
    python train_sft.py --tasks rewrite      # single-task SFT ablation
    python train_sft.py --no-pretrain        # no stage 0 ablation
    python train_sft.py --resume --out DIR   # continue an interrupted run exactly
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from qrw.checkpoint import (CKPT_NAME, CONFIG_NAME, TOKENIZER_NAME, file_sha256, read_json, restore_model,
                            save_checkpoint, write_json)
from qrw.config import (Parser, UserError, add_config_args, arg, check, config_from_args, config_from_dict,
                        resolve_device, run_main)
from qrw.data import TaskMixture, mixture_counts, pretrain_dataset, relevance_dataset, rewrite_dataset
from qrw.evaluate import EvalContext, evaluate_run, format_summary
from qrw.log import MetricsLog
from qrw.model import PRESETS, ModelConfig, Transformer
from qrw.rewriter import Rewriter
from qrw.sft import TrainConfig, evaluate_loss, train_stage
from qrw.tokenizer import Tokenizer
from qrw.world import World, WorldConfig


@dataclass
class SFTRunConfig:
    """What a stage 0 + stage 1 run trains (the training hyperparameters live in two ``TrainConfig``s)."""

    seed: int = arg(0, "seed of the world, the model initialisation and the data order")
    preset: str = arg("cpu", "model preset (see python -m qrw.model)", choices=sorted(PRESETS))
    vocab_size: int = arg(2048, "BPE vocabulary size (special tokens included)")
    tasks: str = arg("rewrite,relevance", "stage-1 tasks: 'rewrite,relevance' (multi-task) or 'rewrite' (single-task)",
                     choices=["rewrite,relevance", "rewrite"], metavar="TASKS")
    pretrain: bool = arg(True, "run stage 0, pretraining on search logs and product text (--no-pretrain skips it)")
    rewrite_fraction: float = arg(0.3, "share of each stage-1 batch given to the rewrite task (the rest: relevance)")
    rewrite_weight: float = arg(1.0, "stage-1 loss weight of rewrite tokens")
    relevance_weight: float = arg(3.0, "stage-1 loss weight of relevance-label tokens")
    relevance_per_label: int = arg(4, "distinct perturbed rewrites per label and training query (relevance task)")
    relevance_balance: str = arg("over", "balance the relevance labels by dropping pairs of the commoner labels "
                                 "('under') or repeating pairs of the rarer ones ('over')", choices=["under", "over"])
    val_examples: int = arg(256, "validation examples per task for the periodic validation loss")

    def __post_init__(self) -> None:
        check(self.seed >= 0, f"--seed must be >= 0 (got {self.seed})")
        check(self.vocab_size >= 300, f"--vocab-size must be >= 300 (256 bytes + specials; got {self.vocab_size})")
        check(0 < self.rewrite_fraction < 1, f"--rewrite-fraction must be in (0, 1) (got {self.rewrite_fraction})")
        check(self.rewrite_weight > 0 and self.relevance_weight > 0, "task loss weights must be > 0")
        check(self.val_examples >= 1, "--val-examples must be >= 1")
        check(self.relevance_per_label >= 1, "--relevance-per-label must be >= 1")


DEFAULT_PRETRAIN = TrainConfig(steps=600, batch_size=64, lr=3e-3, warmup_steps=30)
DEFAULT_SFT = TrainConfig(steps=3500, batch_size=64, lr=1e-3, warmup_steps=50, eval_every=250, ckpt_every=250)
SMOKE = {
    "world": dict(n_products=200, n_train_queries=400, n_val_queries=60, n_test_queries=80, n_log_sessions=600),
    "run": dict(preset="tiny", vocab_size=512, val_examples=32),
    "pretrain": dict(steps=8, batch_size=16, micro_batch_size=16, warmup_steps=2, log_every=4, eval_every=0,
                     ckpt_every=0),
    "sft": dict(steps=12, batch_size=16, micro_batch_size=16, warmup_steps=2, log_every=4, eval_every=0,
                ckpt_every=0),
}


def pretrain_mixture(world: World, tok: Tokenizer, run: SFTRunConfig, pre: TrainConfig, max_len: int) -> TaskMixture:
    """Stage 0's batches: titles, attribute text and search-log sessions."""
    return TaskMixture({"pretrain": pretrain_dataset(world, tok, max_len)}, counts={"pretrain": pre.batch_size},
                       weights={"pretrain": 1.0}, seed=run.seed)


def sft_mixture(world: World, tok: Tokenizer, run: SFTRunConfig, sft: TrainConfig, max_len: int) -> TaskMixture:
    """Stage 1's batches: rewrite pairs, plus relevance pairs when multi-task, in the run's ratio and loss weights."""
    tasks = tuple(run.tasks.split(","))
    datasets = {"rewrite": rewrite_dataset(world.queries["train"], tok, max_len)}
    if "relevance" in tasks:
        datasets["relevance"] = relevance_dataset(world, "train", tok, max_len, seed=run.seed,
                                                  per_label=run.relevance_per_label, balance=run.relevance_balance)
    return TaskMixture(datasets, counts=mixture_counts(sft.batch_size, tasks, run.rewrite_fraction),
                       weights={"rewrite": run.rewrite_weight, "relevance": run.relevance_weight}, seed=run.seed)


def parse_args(argv=None) -> argparse.Namespace:
    p = Parser(prog="train_sft.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/sft", help="run directory")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--smoke", action="store_true", help="tiny world, model and step counts: an end-to-end check in seconds")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--stop-after", type=int, default=None,
                   help="stop (with a checkpoint) after this many optimizer steps in this invocation; continue with --resume")
    p.add_argument("--quiet", action="store_true", help="no progress bars or log lines, only the final summary")
    add_config_args(p, SFTRunConfig, group_title="run")
    add_config_args(p, WorldConfig, skip=("seed",), group_title="world")
    add_config_args(p, TrainConfig, prefix="pretrain", group_title="stage 0 (pretraining)", base=DEFAULT_PRETRAIN)
    add_config_args(p, TrainConfig, prefix="sft", group_title="stage 1 (multi-task SFT)", base=DEFAULT_SFT)
    return p.parse_args(argv)


def build_configs(args: argparse.Namespace) -> dict:
    """All configs of the run: defaults (or --smoke's) overridden by the flags given."""
    smoke = SMOKE if args.smoke else {k: {} for k in SMOKE}
    run = config_from_args(SFTRunConfig, args, base=SFTRunConfig(**smoke["run"]))
    world = config_from_args(WorldConfig, args, base=WorldConfig(**smoke["world"]), seed=run.seed)
    pre = config_from_args(TrainConfig, args, prefix="pretrain",
                           base=dataclasses.replace(DEFAULT_PRETRAIN, **smoke["pretrain"]))
    sft = config_from_args(TrainConfig, args, prefix="sft", base=dataclasses.replace(DEFAULT_SFT, **smoke["sft"]))
    if not run.pretrain:
        pre = dataclasses.replace(pre, steps=0)
    return {"run": run, "world": world, "pretrain": pre, "sft": sft}


def main(argv=None) -> int:
    args = parse_args(argv)
    check(args.stop_after is None or args.stop_after >= 1, "--stop-after must be >= 1")
    out = Path(args.out)
    device = resolve_device(args.device)
    progress = not args.quiet
    t_start = time.perf_counter()

    # ---- configs: fresh, or the saved ones on --resume --------------------------------
    configs = build_configs(args)
    if args.resume:
        saved = read_json(out / CONFIG_NAME, "run config (nothing to resume?)")
        configs = {"run": config_from_dict(SFTRunConfig, saved["run"]),
                   "world": config_from_dict(WorldConfig, saved["world"]),
                   "pretrain": config_from_dict(TrainConfig, saved["pretrain"]),
                   "sft": config_from_dict(TrainConfig, saved["sft"])}
    elif (out / CKPT_NAME).exists():
        raise UserError(f"{out} already holds a run: pass --resume to continue it, or choose another --out")
    run: SFTRunConfig = configs["run"]
    context = ModelConfig.preset(run.preset, run.vocab_size).max_seq_len
    for stage in ("pretrain", "sft"):
        check(configs[stage].pack_len <= context,
              f"--{stage}-pack-len must be <= the model's context window ({context}), got {configs[stage].pack_len}")
    torch.manual_seed(run.seed)

    # ---- world and tokenizer ----------------------------------------------------------
    world = World(configs["world"])
    if args.resume:
        tok = Tokenizer.load(out / TOKENIZER_NAME)
    else:
        out.mkdir(parents=True, exist_ok=True)
        tok = Tokenizer.train(world.corpus_texts(), run.vocab_size)
        tok.save(out / TOKENIZER_NAME)
    tok_sha = file_sha256(out / TOKENIZER_NAME)

    # ---- model --------------------------------------------------------------------------
    model_cfg = ModelConfig.preset(run.preset, tok.vocab_size)
    model = Transformer(model_cfg).to(device)
    if not args.resume:
        write_json(out / CONFIG_NAME, {k: dataclasses.asdict(v) for k, v in configs.items()}
                   | {"model": dataclasses.asdict(model_cfg), "kind": "sft"})
    state = None
    if args.resume:
        state = restore_model(out, model, tok_sha)
    log = MetricsLog(out / "metrics.jsonl", truncate=not args.resume)
    if state is not None:
        log.truncate_after(state["stage"], state["step"])
    if progress:
        print(f"world: {len(world.products)} products, {len(world.queries['train'])} train queries | "
              f"model: {run.preset}, {model.num_params() / 1e6:.2f}M params | device: {device}")

    def save(stage: str):
        def _save(step: int, optimizer: torch.optim.Optimizer) -> None:
            save_checkpoint(out / CKPT_NAME, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                              "stage": stage, "step": step,
                                              "model_config": dataclasses.asdict(model_cfg),
                                              "tokenizer_sha256": tok_sha})
        return _save

    max_len = model_cfg.max_seq_len
    budget = args.stop_after
    start_stage = state["stage"] if state else "pretrain"
    start_step = state["step"] if state else 0

    # ---- stage 0: pretraining on logs and product text -----------------------------------
    pre: TrainConfig = configs["pretrain"]
    if pre.steps > 0 and start_stage == "pretrain" and start_step < pre.steps:
        finished = train_stage(model, pretrain_mixture(world, tok, run, pre, max_len), pre, stage="pretrain", device=device, pad_id=tok.pad_id, log=log,
                               save=save("pretrain"), start_step=start_step,
                               optimizer_state=state["optimizer"] if state else None,
                               stop_after=budget, progress=progress)
        if not finished:
            print(f"stopped after {budget} steps; continue with: python train_sft.py --resume --out {out}")
            return 0
        if budget is not None:
            budget -= pre.steps - start_step
            if budget <= 0:
                print(f"stopped after stage 0; continue with: python train_sft.py --resume --out {out}")
                return 0
    # ---- stage 1: multi-task SFT (rewrite generation + relevance tagging) ----------------
    sft: TrainConfig = configs["sft"]
    tasks = tuple(run.tasks.split(","))
    mixture = sft_mixture(world, tok, run, sft, max_len)
    val = {"rewrite": rewrite_dataset(world.queries["val"][:run.val_examples], tok, max_len)}
    if "relevance" in tasks:
        val["relevance"] = relevance_dataset(world, "val", tok, max_len, seed=run.seed)[:run.val_examples]
    resuming_sft = start_stage == "sft"
    sft_start = start_step if resuming_sft else 0
    if sft_start < sft.steps:
        finished = train_stage(model, mixture, sft, stage="sft", device=device, pad_id=tok.pad_id, log=log,
                               save=save("sft"), evaluate=lambda: evaluate_loss(model, val, tok.pad_id, device, pack_len=sft.pack_len),
                               start_step=sft_start,
                               optimizer_state=state["optimizer"] if (state and resuming_sft) else None,
                               stop_after=budget, progress=progress)
        if not finished:
            print(f"stopped; continue with: python train_sft.py --resume --out {out}")
            return 0
    elif sft.steps == 0:
        save("sft")(0, torch.optim.AdamW(model.parameters()))
    train_seconds = time.perf_counter() - t_start

    # ---- evaluation on held-out test queries ---------------------------------------------
    ctx = EvalContext(world)
    rewriter = Rewriter(model, tok, device)
    results = evaluate_run(ctx, rewriter, name="multi-task SFT" if "relevance" in tasks else "single-task SFT",
                           baselines=True, tagging="relevance" in tasks)
    results.pop("rewrites")
    results.pop("well_formed")
    results["train_seconds"] = round(train_seconds, 1)
    write_json(out / "metrics.json", results)
    print(format_summary(results, title=f"test queries ({out})"))
    print(f"wrote {out}/ ({CONFIG_NAME}, {TOKENIZER_NAME}, {CKPT_NAME}, metrics.jsonl, metrics.json) "
          f"in {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    run_main(main)
