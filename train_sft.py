"""Stages 0 and 1: pretrain on search logs and product text, then multi-task SFT.

    world(seed) -> tokenizer -> stage 0 (pretrain) -> stage 1 (rewrite + relevance)
                 [-> stage 1b (label the model's own rewrites, train on them)] -> test evaluation

Writes a run directory (default ``runs/sft``): ``config.json``, ``tokenizer.json``,
``ckpt.pt``, ``metrics.jsonl``, ``metrics.json``, and prints a summary table.

    python train_sft.py                      # the default run (CPU, minutes)
    python train_sft.py --smoke              # tiny end-to-end check (seconds)
    python train_sft.py --classroom          # a small world and short stages (train_grpo.py --classroom runs it)
    python train_sft.py --tasks rewrite      # single-task SFT ablation
    python train_sft.py --no-pretrain        # no stage 0 ablation
    python train_sft.py --label-rewrites 8000  # + stage 1b: a labelling round of the model's own rewrites
    python train_sft.py --label-rewrites 8000 --label-from runs/grpo  # ... of a GRPO policy's rewrites
    python train_sft.py --resume --out DIR   # continue an interrupted run exactly
    python train_sft.py --init-from-hf DIR   # start from a local Hugging Face Llama (shape, weights, tokenizer)

The loop of a stage is written out below in :func:`train_stage`; the loss and the
data are in :mod:`qrw.sft` and :mod:`qrw.data`, the run directory in :mod:`qrw.runs`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time
from typing import Callable

import torch

from qrw import distributed, preemption
from qrw.checkpoint import CKPT_NAME, CONFIG_NAME, TOKENIZER_NAME
from qrw.config import (NonFiniteLossError, Parser, add_config_args, check, config_from_args, config_from_dict,
                        resolve_device, run_main)
from qrw.data import TASKS, TaskMixture
from qrw.hf import import_hf, load_hf_tokenizer, read_hf_config
from qrw.lm.model import ModelConfig, Transformer
from qrw.lm.precision import resolve_dtype, set_precision
from qrw.lm.tokenizer import Tokenizer
from qrw.log import log_line
from qrw.rewriter import Rewriter
from qrw.runs import RunDir, StageLoop, load_run, lr_at, set_lr
from qrw.scorecard import evaluate_run, format_summary
from qrw.checkpoint import read_json, write_json
from qrw.data import relevance_pair_dataset
from qrw.sft import (DEFAULT_LABEL, DEFAULT_PRETRAIN, DEFAULT_SFT, SFTRunConfig, TrainConfig, accumulate_gradients,
                     default_configs, evaluate_loss, label_mixture, make_optimizer, model_rewrite_pairs,
                     ood_rewrite_pairs, pretrain_mixture, sft_mixture, stage1_budget, target_tokens)
from qrw.oracle import stage1_pairs, val_rewrite_pairs, validation_sets
from qrw.shop import wall
from qrw.shop.observation import observe_world
from qrw.shop.shop import Shop
from qrw.shop.world import World, WorldConfig


def parse_args(argv=None) -> argparse.Namespace:
    p = Parser(prog="train_sft.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None, help="run directory (default: runs/sft; with --classroom: runs/classroom-sft)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--smoke", action="store_true", help="tiny world, model and step counts: an end-to-end check in seconds")
    p.add_argument("--classroom", action="store_true",
                   help="a small world and short stages (CLASSROOM below): words, not byte garbage, in a few minutes")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--stop-after", type=int, default=None, advanced=True,
                   help="stop (with a checkpoint) after this many optimizer steps in this invocation; continue with --resume")
    p.add_argument("--quiet", action="store_true", help="no progress bars or log lines, only the final summary",
                   advanced=True)
    p.add_argument("--init-from-hf", default=None, metavar="HF_DIR", advanced=True,
                   help="start from a local Hugging Face Llama directory: its shape and weights (instead of --preset "
                        "and a random init) and its tokenizer.json (a qrw tokenizer, instead of training one)")
    # --help: the flags a user touches first; --help-all: every stage's optimiser and logging knobs, the world's
    add_config_args(p, SFTRunConfig, group_title="run", shown=("seed", "tasks", "pretrain", "rewrite_data"))
    add_config_args(p, WorldConfig, skip=("seed",), group_title="world", advanced=True)
    add_config_args(p, TrainConfig, prefix="pretrain", group_title="stage 0 (pretraining)", base=DEFAULT_PRETRAIN,
                    shown=("steps",))
    add_config_args(p, TrainConfig, prefix="sft", group_title="stage 1 (multi-task SFT)", base=DEFAULT_SFT,
                    shown=("steps",))
    add_config_args(p, TrainConfig, prefix="label", base=DEFAULT_LABEL, advanced=True,
                    group_title="stage 1b (with --label-rewrites: a labelling round of the model's own rewrites)")
    args = p.parse_args(argv)
    args.out = args.out or ("runs/classroom-sft" if args.classroom else "runs/sft")
    return args


# --classroom (python train_grpo.py --classroom runs it first): the default recipe (mined rewrite pairs, multi-task
# SFT, the production relevance data) on a smaller world with shorter stages (batches of 32; stage 1's peak learning
# rate 2e-3 for its short schedule), aiming at three minutes on 2 CPU cores for all three stages (measured: 244 s of
# CPU time); sizes and step counts were chosen on the validation split (docs/ALGORITHM.md, "The classroom run").
CLASSROOM = {
    "world": dict(n_products=600, n_train_queries=1500, n_val_queries=200, n_test_queries=300, n_log_sessions=3000),
    "run": dict(val_examples=64),
    "pretrain": dict(steps=400, batch_size=32, micro_batch_size=32, warmup_steps=10, log_every=100, ckpt_every=0),
    "sft": dict(steps=1200, batch_size=32, micro_batch_size=32, lr=2e-3, warmup_steps=20, log_every=200,
                eval_every=0, ckpt_every=0),
    "label": {},
}


def build_configs(args: argparse.Namespace) -> dict:
    """All configs of the run: defaults (or --smoke's, or --classroom's) overridden by the flags given."""
    check(not (args.smoke and args.classroom), "--smoke and --classroom are two presets: pass one of them")
    base = default_configs(smoke=args.smoke)
    if args.classroom:
        base = {name: dataclasses.replace(config, **CLASSROOM[name]) for name, config in base.items()}
    run = config_from_args(SFTRunConfig, args, base=base["run"])
    world = config_from_args(WorldConfig, args, base=base["world"], seed=run.seed)
    pre = config_from_args(TrainConfig, args, prefix="pretrain", base=base["pretrain"])
    sft = config_from_args(TrainConfig, args, prefix="sft", base=base["sft"])
    label = config_from_args(TrainConfig, args, prefix="label", base=base["label"])
    if not run.pretrain:
        pre = dataclasses.replace(pre, steps=0)
    if run.label_rewrites == 0:  # no stage 1b: config.json says 0 steps
        label = dataclasses.replace(label, steps=0)
    return {"run": run, "world": world, "pretrain": pre, "sft": sft, "label": label}


def saved_configs(saved: dict) -> dict:
    """The configs of a run being resumed, from its ``config.json``."""
    return {"run": config_from_dict(SFTRunConfig, {"dtype": "fp32"} | saved["run"]),  # runs before --dtype: fp32
            "world": config_from_dict(WorldConfig, saved["world"]),
            "pretrain": config_from_dict(TrainConfig, saved["pretrain"]),
            "sft": config_from_dict(TrainConfig, saved["sft"]),
            "label": (config_from_dict(TrainConfig, saved["label"]) if "label" in saved  # runs before stage 1b: none
                      else dataclasses.replace(DEFAULT_LABEL, steps=0))}


def train_stage(model: torch.nn.Module, mixture: TaskMixture, cfg: TrainConfig, *, stage: str, run: RunDir,
                device: torch.device, pad_id: int, evaluate: Callable[[], dict] | None = None, start_step: int = 0,
                optimizer_state: dict | None = None, stop_after: int | None = None, progress: bool = True) -> bool:
    """Train ``model`` on ``mixture`` for steps ``start_step .. cfg.steps - 1`` of one stage.

    Step order: learning rate -> micro-batches (forward, loss, backward) -> finite check ->
    clip -> optimizer step -> log -> validation -> checkpoint. Returns False when
    ``stop_after`` ended the stage early (after a checkpoint), True when it finished.

    Under torchrun (:mod:`qrw.distributed`) each rank runs the micro-batches of its
    share of the step's batch, normalised by the whole batch's target tokens; the
    loss, statistics and gradients are summed over the ranks before the finite
    check, and rank 0 alone logs, validates and checkpoints.
    """
    model.train()
    optimizer = make_optimizer(model, cfg, device)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    loop = StageLoop(stage, start_step, cfg.steps, log_every=cfg.log_every, ckpt_every=cfg.ckpt_every,
                     stop_after=stop_after, progress=progress)
    for step in loop:
        t0 = time.perf_counter()
        lr = lr_at(step, peak=cfg.lr, warmup_steps=cfg.warmup_steps, total_steps=cfg.steps,
                   min_ratio=cfg.min_lr_ratio)
        set_lr(optimizer, lr)
        items = mixture.batch(step)  # the whole step's batch (every rank draws the same one)
        loss, sums = accumulate_gradients(model, distributed.shard(items), cfg.micro_batch_size, pad_id,
                                          mixture.weights, device, cfg.pack_len, normalizer=target_tokens(items))
        loss, sums = distributed.all_reduce_sum(loss), distributed.all_reduce_sum(sums)  # over the ranks
        if not math.isfinite(loss):
            optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLossError(f"{stage}: non-finite loss {loss} at step {step + 1}; "
                                     "the last good checkpoint is kept (lower the learning rate?)")
        distributed.all_reduce_gradients(model.parameters())  # sum over the ranks: the whole batch's gradient
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                   cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1

        # every step goes to metrics.jsonl (so a resumed run logs exactly what an uninterrupted one does)
        record = {"stage": stage, "step": done, "loss": loss, "lr": lr, "grad_norm": float(grad_norm)}
        for task in TASKS:
            if f"{task}_tokens" in sums:
                record[f"{task}_loss"] = sums[f"{task}_loss_sum"] / max(sums[f"{task}_tokens"], 1.0)
                record[f"{task}_acc"] = sums[f"{task}_correct"] / max(sums[f"{task}_tokens"], 1.0)
        record["seconds"] = time.perf_counter() - t0
        run.log.write(record)
        loop.show(loss=loss, lr=lr)
        if loop.print_due(done):
            loop.log_line(done, {k: v for k, v in record.items() if k == "loss" or k.endswith("_loss")} | {"lr": lr},
                          record["seconds"])
        if evaluate is not None and distributed.is_main() and (  # validation: rank 0 alone
                (cfg.eval_every and done % cfg.eval_every == 0) or done == cfg.steps):
            metrics = evaluate()
            run.log.write({"stage": stage, "step": done, **metrics})
            if progress:
                loop.write(f"{stage} eval " + log_line(done, cfg.steps, metrics))
        if loop.checkpoint_due(done):
            run.save(stage, done, optimizer)
    return not loop.stopped


LABEL_PAIRS_NAME = "label_pairs.json"  # stage 1b's labelled rewrites (read back when resuming within the stage)


def label_source(path: str, world_config: WorldConfig, tok: Tokenizer | None = None, device="cpu"):
    """The finished run of ``--label-from``, checked against this run's world (and tokenizer, when given)."""
    source = load_run(path, device)
    check(source.config["world"] == dataclasses.asdict(world_config),
          f"--label-from {path} was trained on another world (seed or world flags differ)")
    check(tok is None or source.tok.to_json() == tok.to_json(), f"--label-from {path} has another tokenizer")
    return source


def labelled_rewrites(model: torch.nn.Module, sampler: torch.nn.Module | None, tok: Tokenizer, world: World, observed,
                      run: SFTRunConfig, run_dir: RunDir,
                      device: torch.device, *, fresh: bool, progress: bool) -> dict[str, list]:
    """Stage 1b's labelling round: ``{"train": pairs, "val": pairs}`` of ``(query, rewrite, grade)``.

    At the stage's start (``fresh``) the model as stage 1 left it (or, with
    ``run.label_from``, that finished run's model: a GRPO policy's own drift) samples
    ``run.label_rewrites`` rewrites of training queries and ``run.val_examples`` of
    validation queries (the tagger's validation set on those rewrites),
    the annotation service labels the training ones (the door; the validation ones are graded by the judge as
    evaluation), and rank 0 saves them in the run directory; resuming
    within the stage reads them back (the model has moved on since).
    """
    path = run_dir.out / LABEL_PAIRS_NAME
    if not fresh:
        saved = read_json(path, "stage 1b's labelled rewrites")
        return {split: [tuple(p) for p in saved[split]] for split in ("train", "val")}
    sampler = sampler if sampler is not None else model  # --label-from's model, loaded before the seal
    pairs = {"train": model_rewrite_pairs(sampler, tok, observed, run.seed, run.label_rewrites, device),
             "val": val_rewrite_pairs(sampler, tok, world, run.seed, run.val_examples, device)}
    if run.label_ood:  # the gate's hard negatives: what the sampler writes for searches nobody clicked on
        pairs["train"] += ood_rewrite_pairs(sampler, tok, observed, run.seed, run.label_ood, device)
    model.train()
    if distributed.is_main():
        write_json(path, {split: [list(p) for p in v] for split, v in pairs.items()})
    if progress:
        shares = [sum(1 for *_, g in pairs["train"] if g == grade) / len(pairs["train"]) for grade in (0, 1, 2)]
        print(f"stage 1b: {run.label_rewrites} rewrites of training queries sampled"
              f"{' from ' + run.label_from if run.label_from else ''}"
              f"{f' (and {run.label_ood} of out-of-domain queries, label 0)' if run.label_ood else ''} and labelled: "
              f"{len(pairs['train'])} distinct pairs, grade 0 / 1 / 2: "
              + " / ".join(f"{x:.1%}" for x in shares))
    return pairs


def main(argv=None) -> int:
    args = parse_args(argv)
    check(args.stop_after is None or args.stop_after >= 1, "--stop-after must be >= 1")
    device = distributed.setup(resolve_device(args.device))  # under torchrun: join the other ranks
    progress = not args.quiet and distributed.is_main()
    t_start = time.perf_counter()

    # ---- configs: fresh, or the saved ones on --resume --------------------------------
    run_dir = RunDir(args.out, resume=args.resume, writer=distributed.is_main())
    out = run_dir.out
    configs = saved_configs(run_dir.saved_config) if args.resume else build_configs(args)
    configs["run"] = dataclasses.replace(configs["run"], dtype=resolve_dtype(configs["run"].dtype, device))
    run: SFTRunConfig = configs["run"]
    init_from_hf = run_dir.saved_config.get("init_from_hf") if args.resume else args.init_from_hf
    hf_cfg = None  # the model's shape when it starts from a Hugging Face Llama (a resumed run: the shape it saved)
    if init_from_hf:
        hf_cfg = (config_from_dict(ModelConfig, run_dir.saved_config["model"]) if args.resume
                  else read_hf_config(init_from_hf))
    context = (hf_cfg or ModelConfig.preset(run.preset, run.vocab_size)).max_seq_len
    for stage in ("pretrain", "sft", "label"):
        check(configs[stage].pack_len <= context,
              f"--{stage}-pack-len must be <= the model's context window ({context}), got {configs[stage].pack_len}")
        check(configs[stage].batch_size >= distributed.world_size(), f"--{stage}-batch-size must be >= the number "
              f"of processes ({distributed.world_size()}), got {configs[stage].batch_size}")
    if run.label_from and not args.resume:  # a wrong --label-from fails now, not after stages 0 and 1
        label_source(run.label_from, configs["world"])
    torch.manual_seed(run.seed)

    # ---- world and tokenizer ----------------------------------------------------------
    world = World(configs["world"])
    observed = observe_world(world, run.label_budget, run.label_disagreement)  # what the shop has (the door:
    # observed.annotations)
    if args.resume or not distributed.is_main():  # under torchrun the other ranks read rank 0's tokenizer
        distributed.barrier()
        tok = Tokenizer.load(run_dir.tokenizer_path)
    else:
        run_dir.create()  # the directory, locked against a second writer, before the first file
        if init_from_hf:
            tok = load_hf_tokenizer(init_from_hf, hf_cfg.vocab_size)
        else:
            tok = Tokenizer.train(observed.corpus_texts(), run.vocab_size)  # the shop's text: no gold, no val/test
        tok.save(run_dir.tokenizer_path)
        distributed.barrier()

    # ---- model --------------------------------------------------------------------------
    model_cfg = hf_cfg or ModelConfig.preset(run.preset, tok.vocab_size)
    model = set_precision(Transformer(model_cfg).to(device), run.dtype)
    if init_from_hf and not (out / CKPT_NAME).exists():  # fresh, or resumed before the first checkpoint
        model.load_state_dict(import_hf(init_from_hf)[1])
    state = run_dir.begin({k: dataclasses.asdict(v) for k, v in configs.items()}
                          | {"model": dataclasses.asdict(model_cfg), "kind": "sft"}
                          | ({"init_from_hf": os.path.abspath(init_from_hf)} if init_from_hf else {}), model)
    if progress:
        print(f"world: {len(world.products)} products, {len(world.queries['train'])} train queries | "
              f"model: {init_from_hf or run.preset}, {model.num_params() / 1e6:.2f}M params | device: {device} "
              f"({run.dtype})")
    max_len = model_cfg.max_seq_len
    budget = args.stop_after
    start_stage = state["stage"] if state else "pretrain"
    start_step = state["step"] if state else 0
    common = dict(run=run_dir, device=device, pad_id=tok.pad_id, progress=progress)

    label_model = (label_source(run.label_from, world.config, tok, device).model  # (its world is built here)
                   if run.label_from and configs["label"].steps > 0 else None)
    wall.reset_crossings()
    with wall.sealed():  # training sees the observed side only (qrw.shop.wall); evaluation comes after
        # ---- stage 0: pretraining on logs and product text -----------------------------------
        pre: TrainConfig = configs["pretrain"]
        if pre.steps > 0 and start_stage == "pretrain" and start_step < pre.steps:
            finished = train_stage(model, pretrain_mixture(observed, tok, run, pre, max_len), pre, stage="pretrain",
                                   start_step=start_step, optimizer_state=state["optimizer"] if state else None,
                                   stop_after=budget, **common)
            if not finished:
                print(f"stopped{'' if preemption.received() else f' after {budget} steps'}; "
                      f"continue with: python train_sft.py --resume --out {out}")
                return preemption.exit_code()  # 0 after --stop-after, 128 + the signal's number after SIGTERM/SIGINT
            if budget is not None:
                budget -= pre.steps - start_step
                if budget <= 0:
                    print(f"stopped after stage 0; continue with: python train_sft.py --resume --out {out}")
                    return 0

        # ---- stage 1: multi-task SFT (rewrite generation + relevance tagging) ----------------
        sft: TrainConfig = configs["sft"]
        rewrites, relevance, bought = stage1_pairs(observed, world, run, stage1_budget(run, configs["label"].steps))
        if progress and bought:
            print(f"stage 1 relevance pairs: {bought['labels_bought']} labels bought through the annotation door "
                  f"({len(bought['sources'])} sources; label shares 0 / 1 / 2: "
                  + " / ".join(f"{x:.1%}" for x in bought["labels"]) + ")")
        mixture = sft_mixture(rewrites, relevance, tok, run, sft, max_len)
        val = validation_sets(world, tok, run, max_len)
        resuming_sft = start_stage == "sft"
        sft_start = start_step if resuming_sft else sft.steps if start_stage == "label" else 0
        if sft_start < sft.steps:
            finished = train_stage(model, mixture, sft, stage="sft",
                                   evaluate=lambda: evaluate_loss(model, val, tok.pad_id, device, pack_len=sft.pack_len),
                                   start_step=sft_start,
                                   optimizer_state=state["optimizer"] if (state and resuming_sft) else None,
                                   stop_after=budget, **common)
            if not finished:
                print(f"stopped; continue with: python train_sft.py --resume --out {out}")
                return preemption.exit_code()
            if budget is not None:
                budget -= sft.steps - sft_start
                if budget <= 0 and configs["label"].steps > 0:
                    print(f"stopped after stage 1; continue with: python train_sft.py --resume --out {out}")
                    return 0
        elif sft.steps == 0 and start_stage != "label":
            run_dir.save("sft", 0, torch.optim.AdamW(model.parameters()))

        # ---- stage 1b: a labelling round of the model's own rewrites (--label-rewrites) ------
        label: TrainConfig = configs["label"]
        resuming_label = start_stage == "label"
        label_start = start_step if resuming_label else 0
        if label.steps > 0 and label_start < label.steps:
            pairs = labelled_rewrites(model, label_model, tok, world, observed, run, run_dir, device,
                                      fresh=label_start == 0,
                                      progress=progress)
            val_label = val | {"labelled": relevance_pair_dataset(pairs["val"], tok, max_len)}
            evaluate = lambda: evaluate_loss(model, val_label, tok.pad_id, device, pack_len=label.pack_len)  # noqa: E731
            if label_start == 0 and distributed.is_main():  # the tagger on the labelled rewrites before the round
                run_dir.log.write({"stage": "label", "step": 0, **evaluate()})
            finished = train_stage(model, label_mixture(rewrites, relevance, tok, run, label, max_len, pairs["train"]),
                                   label,
                                   stage="label", evaluate=evaluate, start_step=label_start,
                                   optimizer_state=state["optimizer"] if (state and resuming_label) else None,
                                   stop_after=budget, **common)
            if not finished:
                print(f"stopped; continue with: python train_sft.py --resume --out {out}")
                return preemption.exit_code()
    train_seconds = time.perf_counter() - t_start
    wall_record = {"crossings": wall.crossings(), **observed.annotations.summary(),  # what training read beside the door
                   "stage1_labelling": bought}
    if progress:
        print(f"the wall: {observed.annotations.bought} labels bought through the annotation door (budget "
              f"{run.label_budget}, disagreement {run.label_disagreement:.0%}); named crossings: "
              + (", ".join(f"{k} x{v}" for k, v in wall_record["crossings"].items()) or "none"))
    if not distributed.is_main():  # rank 0 alone evaluates
        return 0

    # ---- evaluation on held-out test queries ---------------------------------------------
    multitask = "relevance" in run.task_list
    results = evaluate_run(Shop(world, observed=observed), Rewriter(model, tok, device),
                           name="multi-task SFT" if multitask else "single-task SFT", baselines=True,
                           tagging=multitask)
    results.pop("rewrites")
    results.pop("well_formed")
    results["train_seconds"] = round(train_seconds, 1)
    results["wall"] = wall_record
    run_dir.write_results(results)
    print(format_summary(results, title=f"test queries ({out})"))
    print(f"wrote {out}/ ({CONFIG_NAME}, {TOKENIZER_NAME}, {CKPT_NAME}, metrics.jsonl, metrics.json) "
          f"in {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    run_main(lambda: distributed.finish_after(main))
