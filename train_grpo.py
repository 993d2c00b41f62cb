"""Stage 2: align the SFT rewriter with GRPO to relevance and conversion rewards.

    SFT run directory -> policy (trainable) + reference (frozen copy) -> GRPO -> before/after table

Writes a run directory (default ``runs/grpo``): ``config.json``, ``tokenizer.json``,
``ckpt.pt``, ``metrics.jsonl`` (every step: each reward's mean and std, KL, clip
fractions, lengths, timings, ...), ``metrics.json`` (the test evaluation of the
SFT initialisation and of the GRPO policy) and prints the before/after table.

    python train_grpo.py                                # fused reward, from runs/sft
    python train_grpo.py --reward conversion --out runs/grpo-conversion
    python train_grpo.py --relevance-judge oracle       # the evaluation's own judge as relevance reward (upper bound)
    python train_grpo.py --smoke                        # tiny end-to-end check (trains its own tiny SFT first)
    python train_grpo.py --classroom                    # all three stages in minutes on a CPU, readable rewrites
    python train_grpo.py --resume --out runs/grpo       # continue an interrupted run exactly

One GRPO step, written out in :func:`main` (DeepSeekMath, arXiv 2402.03300, section 4.1.2):

1. P training queries; G rewrites each sampled from the current policy  (qrw.rollout.sample_groups)
2. every reward component and their fusion, (P, G)                      (qrw.rewards.RewardFunction)
3. group-relative advantages: each reward z-scored in its group, then
   weighted and summed (--aggregation sum: fused, then normalised)      (qrw.grpo.normalize_then_sum)
4. pi_old from the sampler, pi_ref once, then mu passes of the clipped
   surrogate (+ beta * KL to the frozen SFT model)                      (qrw.update.update_policy)
5. log, sample rewrites, checkpoint                                     (qrw.runs)

Under ``torchrun --nproc_per_node N`` (:mod:`qrw.distributed`) the P queries of a
step are split across the N ranks; each rank samples, rewards and computes the
advantages of its own groups (a group never spans ranks), with its own random
stream (seed, step, rank): the samples therefore differ from a single process's.
The update counts its normalisers over all ranks and sums the gradients; rank 0
gathers the step for the log and alone writes the run directory.
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
import torch.nn.functional as F

from qrw import distributed, preemption
from qrw.checkpoint import CKPT_NAME
from qrw.config import (NonFiniteLossError, Parser, add_config_args, arg, check, config_from_args, config_from_dict,
                        resolve_device, run_main)
from qrw.lm.precision import DTYPES, resolve_dtype, set_precision
from qrw.health import HealthConfig, read_records, replay
from qrw.grpo import dynamic_sampling_mask, group_advantages, kl_k3, masked_mean, normalize_then_sum
from qrw.lm.generate import Rollout
from qrw.oracle import OracleView
from qrw.rewards import COMPONENTS, RewardConfig, RewardFunction
from qrw.rewriter import Rewriter
from qrw.rollout import (SampledGroups, frozen_reference, groups_batch, rollout_logprobs, sample_groups,
                         step_generator, step_queries)
from qrw.runs import RunDir, StageLoop, load_run, lr_at, set_lr
from qrw.scorecard import HACKING, compare_rewrites, evaluate_run, format_comparison, format_table, rewrite_kinds
from qrw.shop import wall
from qrw.shop.metrics import METRICS
from qrw.shop.shop import Shop
from qrw.update import GRPOConfig, grpo_config_from_saved, update_policy


@dataclass
class GRPORunConfig:
    """Where a GRPO run starts from."""

    init: str = arg("runs/sft", "SFT run directory to start from (the policy's init and the frozen reference)")
    seed: int = arg(0, "seed of the query order and the sampling")
    queries: str = arg("logs", "GRPO's training queries: the search logs' queries (unlabelled: the rewards need "
                       "no gold rewrite) or the SFT training queries", choices=["logs", "train"], advanced=True)
    oracle_monitor: bool = arg(False, "evaluation, off by default: log the oracle's view of every step's samples "
                               "(their page relevance@10 and UCVR under the hidden truth, reward_page_relevance_mean and "
                               "reward_ucvr_mean) to watch reward hacking; it crosses the wall, never a reward",
                               advanced=True)
    dtype: str = arg("fp32", "compute precision of the policy and the reference: 'fp32', 'bf16' (autocast, "
                     "float32 weights, logits and log-probs), or 'auto' (bf16 where the hardware runs it fast)",
                     choices=list(DTYPES), advanced=True)

    def __post_init__(self) -> None:
        check(self.seed >= 0, f"--seed must be >= 0 (got {self.seed})")


SMOKE_GRPO = dict(steps=4, queries_per_step=4, group_size=4, max_new_tokens=12, log_every=1, sample_every=2,
                  ckpt_every=2, minibatch_size=16)
# --classroom: the default recipe (rewards, tagger as relevance judge, KL) at a size that fits, with the SFT run
# that train_sft.py --classroom trains, aiming at three minutes on 2 CPU cores; chosen on the validation split
CLASSROOM_GRPO = dict(steps=40, queries_per_step=16, group_size=8, log_every=5, sample_every=20, ckpt_every=40)
PRESETS = {"smoke": (SMOKE_GRPO, "runs/smoke-sft", "runs/smoke-grpo"),  # GRPO config, its SFT init, its run
           "classroom": (CLASSROOM_GRPO, "runs/classroom-sft", "runs/classroom-grpo")}
UPDATE_STATS = ("loss", "clip_frac_low", "clip_frac_high", "ratio_mean", "approx_kl", "entropy", "grad_norm")


def parse_args(argv=None) -> argparse.Namespace:
    p = Parser(prog="train_grpo.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None, help="run directory (default: runs/grpo, or runs/grpo-REWARD for a single reward)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--smoke", action="store_true",
                   help="tiny run end to end in seconds (trains a tiny SFT run first when --init is missing)")
    p.add_argument("--classroom", action="store_true",
                   help="the three stages in minutes on a CPU, with readable rewrites (docs/ALGORITHM.md): trains "
                        "runs/classroom-sft first when --init is missing, then GRPO into runs/classroom-grpo")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--stop-after", type=int, default=None, advanced=True,
                   help="stop (with a checkpoint) after this many steps in this invocation; continue with --resume")
    p.add_argument("--quiet", action="store_true", help="no progress bars or log lines, only the final table",
                   advanced=True)
    add_config_args(p, GRPORunConfig, group_title="run")
    add_config_args(p, GRPOConfig, group_title="GRPO")
    add_config_args(p, RewardConfig, group_title="rewards")
    add_config_args(p, HealthConfig, group_title="health monitor (qrw.health)")
    return p.parse_args(argv)


def preset_of(args: argparse.Namespace) -> str | None:
    """The preset the command line names (``"smoke"``, ``"classroom"``) or None; naming both is a mistake."""
    check(not (args.smoke and args.classroom), "--smoke and --classroom are two presets: pass one of them")
    return "smoke" if args.smoke else "classroom" if args.classroom else None


def step_record(step: int, lr: float, scores: dict, advantages: torch.Tensor, has_signal: torch.Tensor,
                keep: torch.Tensor, groups: SampledGroups, update: dict | None, eos_id: int) -> dict:
    """What metrics.jsonl gets for one step: every reward's mean and std, the groups, lengths, the update's stats."""
    P, G = advantages.shape
    record = {"stage": "grpo", "step": step + 1, "lr": lr}
    for name in list(COMPONENTS) + ["fused", "ucvr", "page_relevance"]:  # logged whether weighted or not
        values = np.asarray(scores[name], dtype=np.float64)
        finite = not np.isnan(values).any()  # NaN: not computed (the recall and oracle-monitor entries, off)
        record[f"reward_{name}_mean"] = float(np.mean(values)) if finite else None
        record[f"reward_{name}_std"] = float(np.std(values)) if finite else None
    lengths = groups.lengths  # (N,)
    finished = (groups.rollout.tokens == eos_id).logical_and(groups.rollout.mask > 0).any(1)  # (N,)
    record.update({"zero_spread_frac": 1.0 - float(has_signal.float().mean()), "groups_kept": int(keep.sum()),
                   "adv_abs_mean": float(advantages.abs().mean()),
                   "length_mean": float(lengths.float().mean()), "length_min": int(lengths.min()),
                   "length_max": int(lengths.max()), "truncated_frac": float(1 - finished.float().mean()),
                   "diversity": float(np.mean([len(set(groups.rewrites[p * G:(p + 1) * G])) / G for p in range(P)]))})
    if update is None:  # every group unanimous: nothing to learn from this batch, no optimizer step
        return record | dict.fromkeys(UPDATE_STATS) | {"optimizer_steps": 0}
    return record | update


def gather_step(queries: list, scores: dict, advantages: torch.Tensor, has_signal: torch.Tensor, keep: torch.Tensor,
                groups: SampledGroups) -> tuple:
    """The whole step for rank 0's log under torchrun: every rank's share, concatenated in rank order.

    Shares are contiguous (:func:`qrw.distributed.shard`), so the rows keep a single
    process's layout (``p * G + g``); completions are right-padded (mask 0) to the
    longest. A single process gets its arguments back.
    """
    if distributed.world_size() == 1:
        return queries, scores, advantages, has_signal, keep, groups
    r = groups.rollout
    parts = distributed.all_gather_object((queries, scores, advantages.cpu(), has_signal.cpu(), keep.cpu(),
                                           groups.prompts, r.tokens.cpu(), r.mask.cpu(), r.logprobs.cpu(),
                                           groups.rewrites, groups.well_formed))
    queries, scores, advantages, has_signal, keep, prompts, tokens, mask, logprobs, rewrites, well_formed = zip(*parts)
    length = max(t.shape[1] for t in tokens)
    pad = lambda ts: torch.cat([F.pad(t, (0, length - t.shape[1])) for t in ts])  # (N_rank, L_rank) each -> (N, L)
    prompts = sum(prompts, [])
    rollout = Rollout(pad(tokens), pad(mask), pad(logprobs),
                      torch.arange(len(prompts)).repeat_interleave(groups.group_size))
    return (sum(queries, []), {k: np.concatenate([s[k] for s in scores]) for k in scores[0]}, torch.cat(advantages),
            torch.cat(has_signal), torch.cat(keep),
            SampledGroups(prompts, rollout, sum(rewrites, []), sum(well_formed, []), groups.group_size))


def main(argv=None) -> int:
    args = parse_args(argv)
    check(args.stop_after is None or args.stop_after >= 1, "--stop-after must be >= 1")
    device = distributed.setup(resolve_device(args.device))  # under torchrun: join the other ranks
    progress = not args.quiet and distributed.is_main()
    t_start = time.perf_counter()

    # ---- configs, and the SFT run to start from ---------------------------------------
    preset = preset_of(args)
    run = config_from_args(GRPORunConfig, args, base=GRPORunConfig(dtype="fp32") if preset else None)
    grpo = config_from_args(GRPOConfig, args, base=GRPOConfig(**PRESETS[preset][0]) if preset else None)
    rewards_cfg = config_from_args(RewardConfig, args)
    default_out = "runs/grpo" if rewards_cfg.reward == "fusion" else f"runs/grpo-{rewards_cfg.reward}"
    out = Path(args.out or (PRESETS[preset][2] if preset else default_out))
    if preset and args.init is None:
        run = dataclasses.replace(run, init=PRESETS[preset][1])
        if not (Path(run.init) / CKPT_NAME).exists():
            import train_sft
            if distributed.is_main():
                shutil.rmtree(run.init, ignore_errors=True)
            stopped = train_sft.main([f"--{preset}", "--out", run.init, "--device", args.device]
                                     + (["--quiet"] if preset == "smoke" or args.quiet else []))
            if stopped:  # SIGTERM/SIGINT (qrw.preemption): the SFT run printed its --resume; no GRPO step was taken
                return stopped
            distributed.barrier()  # rank 0 evaluates the SFT run meanwhile
    run_dir = RunDir(out, resume=args.resume, writer=distributed.is_main())
    if args.resume:
        saved = run_dir.saved_config
        run = config_from_dict(GRPORunConfig, {"dtype": "fp32"} | saved["run"])  # runs before --dtype: fp32
        grpo = grpo_config_from_saved(saved["grpo"])
        if args.lr is not None:  # --resume --lr: go on at another learning rate (after a collapse: qrw.health)
            grpo = dataclasses.replace(grpo, lr=args.lr)
        rewards_cfg = config_from_dict(RewardConfig, saved["rewards"])

    # ---- policy (trainable) and reference (frozen SFT copy) ----------------------------
    run = dataclasses.replace(run, dtype=resolve_dtype(run.dtype, device))
    init = Path(run.init)
    loaded = load_run(init, device)
    world, tok, policy = loaded.world, loaded.tok, set_precision(loaded.model, run.dtype)
    reference = frozen_reference(policy)
    torch.manual_seed(run.seed)
    run_dir.create()  # the directory, locked against a second writer, before the first file
    if not args.resume and distributed.is_main():
        shutil.copyfile(init / "tokenizer.json", run_dir.tokenizer_path)
    distributed.barrier()  # under torchrun the other ranks read rank 0's tokenizer.json
    state = run_dir.begin({"kind": "grpo", "run": dataclasses.asdict(run), "grpo": dataclasses.asdict(grpo),
                           "rewards": dataclasses.asdict(rewards_cfg), "world": dataclasses.asdict(world.config),
                           "model": dataclasses.asdict(policy.config)}, policy)
    shop = Shop(world)  # the hidden truth: the upper-bound arms, the oracle monitor and the evaluation only
    observed = shop.observed  # what the shop has: catalog, engine, logs, conversion model, log-fit dictionary
    tagger = Rewriter(reference, tok, device) if rewards_cfg.relevance_judge == "tagger" else None
    needs_oracle = (run.oracle_monitor or rewards_cfg.relevance_judge == "oracle"
                    or rewards_cfg.conversion_judge == "oracle" or "recall" in rewards_cfg.weights())
    reward_fn = RewardFunction(observed, rewards_cfg, tagger=tagger, oracle=OracleView(shop) if needs_oracle else None,
                               monitor=run.oracle_monitor)
    rewriter = Rewriter(policy, tok, device, max_new_tokens=grpo.max_new_tokens)
    optimizer = torch.optim.AdamW(policy.param_groups(grpo.weight_decay), lr=grpo.lr, betas=(0.9, 0.99),
                                  fused=device.type in ("cuda", "cpu"))
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
    if progress:
        print(f"GRPO from {init}: reward {rewards_cfg.reward} (weights {reward_fn.weights}, relevance judge "
              f"{rewards_cfg.relevance_judge}, conversion judge {rewards_cfg.conversion_judge}) | P {grpo.queries_per_step} x G {grpo.group_size} | "
              f"loss {grpo.loss_type} | beta {grpo.beta} | device {device} ({run.dtype})")

    # ---- the GRPO loop ------------------------------------------------------------------
    pool = observed.grpo_texts if run.queries == "logs" else observed.train_texts  # query texts
    check(grpo.queries_per_step >= distributed.world_size(), f"--queries-per-step must be >= the number of "
          f"processes ({distributed.world_size()}), got {grpo.queries_per_step}")
    G = grpo.group_size
    start = state["step"] if state else 0
    health = replay(config_from_args(HealthConfig, args), read_records(out / "metrics.jsonl") if state else [],
                    grpo.steps)  # resumed: the monitor as the logged steps left it
    loop = StageLoop("grpo", start, grpo.steps, log_every=grpo.log_every, ckpt_every=grpo.ckpt_every,
                     stop_after=args.stop_after, progress=progress)
    wall.reset_crossings()
    with wall.sealed():  # training sees the observed side only (qrw.shop.wall); evaluation comes after
        for step in loop:
            t0 = time.perf_counter()
            # 1. P training queries (under torchrun: this rank's share), G rewrites each from the current policy
            #    (rows p * G + g)
            queries = distributed.shard(step_queries(pool, step, grpo.queries_per_step, run.seed))
            groups = sample_groups(rewriter, queries, G, temperature=grpo.temperature,
                                   generator=step_generator(run.seed, step, device, rank=distributed.rank()))
            t1 = time.perf_counter()
            # 2. rewards: each component and their fusion
            scores = reward_fn([q for q in queries for _ in range(G)], groups.rewrites, groups.well_formed)
            t2 = time.perf_counter()
            # 3. group-relative advantages, (P, G); --dynamic-sampling skips the groups without a signal
            if rewards_cfg.aggregation == "sum":  # weight and sum the raw rewards, then normalise the sum
                rewards = reward_fn.as_tensor(scores, G)  # (P, G)
                advantages = group_advantages(rewards, scale=grpo.scale)  # (P, G)
                has_signal = dynamic_sampling_mask(rewards)  # (P,)
            else:  # normalise each reward within its group, then weight and sum
                components = {c: reward_fn.as_tensor(scores, G, c) for c in reward_fn.weights}  # name -> (P, G)
                advantages = normalize_then_sum(components, reward_fn.weights)  # (P, G)
                has_signal = torch.stack([dynamic_sampling_mask(r) for r in components.values()]).any(0)  # (P,)
            keep = has_signal if grpo.dynamic_sampling else torch.ones_like(has_signal)  # (P,)
            # 4. the update: pi_old from the sampler, pi_ref once (no gradient), mu passes of the clipped
            #    surrogate (+ beta * KL) on the kept groups, normalised by the whole rollout
            batch = groups_batch(groups, pad_id=tok.pad_id, eos_id=tok.eos_id, device=device)  # N = P * G rows
            old_logp = groups.rollout.logprobs.to(device)  # (N, L): equal to a re-scoring forward
            measure_kl = grpo.beta > 0 or (step + 1) % grpo.kl_every == 0 or step == 0
            ref_logp = rollout_logprobs(reference, batch, temperature=grpo.temperature) if measure_kl else None  # (N, L)
            lr = lr_at(step, peak=grpo.lr, warmup_steps=grpo.warmup_steps, total_steps=grpo.steps)
            set_lr(optimizer, lr)
            try:
                update = update_policy(policy, optimizer, batch, advantages, keep, grpo, old_logp=old_logp,
                                       ref_logp=ref_logp)
            except NonFiniteLossError as e:
                raise NonFiniteLossError(f"grpo step {step + 1}: {e}; the last good checkpoint is kept") from None
            t3 = time.perf_counter()
            # 5. log (under torchrun: the whole step, gathered from the ranks), show samples, checkpoint
            kl = (distributed.mean_over_ranks(float(masked_mean(kl_k3(old_logp, ref_logp), batch.completion_mask)),
                                              float(batch.completion_mask.sum())) if ref_logp is not None else None)
            queries, scores, advantages, has_signal, keep, groups = gather_step(queries, scores, advantages, has_signal,
                                                                                keep, groups)
            record = step_record(step, lr, scores, advantages, has_signal, keep, groups, update, tok.eos_id)
            record["kl"] = kl  # every sample
            record |= {"seconds": t3 - t0, "seconds_rollout": t1 - t0, "seconds_reward": t2 - t1,
                       "seconds_update": t3 - t2}
            run_dir.log.write(record)
            done = step + 1
            verdict = health.observe(record)  # the health monitor: a verdict every step, a stop on a collapse
            if health.collapsed:
                raise health.failure(out, run_dir.checkpoint_step, grpo.lr)
            loop.show(reward=record["reward_fused_mean"], kl=record["kl"])
            if loop.print_due(done):
                shown = {"loss": record["loss"], "reward": record["reward_fused_mean"],
                         "rel": record["reward_relevance_mean"], "conv": record["reward_conversion_mean"],
                         **({"oracle rel@10": record["reward_page_relevance_mean"],
                             "oracle ucvr": record["reward_ucvr_mean"]} if run.oracle_monitor else {}),
                         "kl": record["kl"], "clip": (record["clip_frac_low"] or 0.0) + (record["clip_frac_high"] or 0.0),
                         "kept": record["groups_kept"], "len": record["length_mean"]}
                loop.log_line(done, {k: float("nan") if v is None else v for k, v in shown.items()}, record["seconds"])
                loop.write(verdict)
            if progress and done % grpo.sample_every == 0:
                for i in [p * G + g for p in range(min(len(queries), 2)) for g in range(min(G, 3))]:
                    parts = " ".join(f"{c} {scores[c][i]:.2f}" for c in reward_fn.weights)
                    loop.write(f"  {queries[i // G]!r} -> {groups.rewrites[i]!r}: reward {scores['fused'][i]:.2f} "
                               f"({parts})")
            if loop.checkpoint_due(done) and (health.healthy or done == grpo.steps):  # none while the monitor warns
                run_dir.save("grpo", done, optimizer)
    if loop.stopped:
        print(f"stopped; continue with: python train_grpo.py --resume --out {out}")
        return preemption.exit_code()  # 0 after --stop-after, 128 + signum after SIGTERM/SIGINT
    if grpo.steps == 0:
        run_dir.save("grpo", 0, torch.optim.AdamW(policy.parameters()))
    train_seconds = time.perf_counter() - t_start
    wall_crossings = wall.crossings()  # what training read of the hidden truth beside the door (upper-bound arms)
    if not distributed.is_main():  # rank 0 alone evaluates
        return 0

    # ---- before / after on held-out test queries -------------------------------------------
    before_label, after_label = "SFT init", f"GRPO ({rewards_cfg.reward})"
    before = evaluate_run(shop, Rewriter(reference, tok, device), name=before_label, baselines=True, tagging=False)
    after = evaluate_run(shop, Rewriter(policy, tok, device), name=after_label, baselines=False, tagging=False)
    rows = {**before["rows"], **after["rows"]}
    queries = world.queries["test"]
    fused = {label: reward_fn(queries, res["rewrites"], res["well_formed"])["fused"]
             for label, res in ((before_label, before), (after_label, after))}
    for label, values in fused.items():
        rows[label]["all"]["reward"] = float(np.mean(values))
    comparison = compare_rewrites(shop, queries, before["rewrites"], after["rewrites"],
                                  extra={"reward": (fused[before_label], fused[after_label])})
    kinds = {label: rewrite_kinds(world, queries, res["rewrites"]) for label, res in ((before_label, before),
                                                                                     (after_label, after))}
    run_dir.write_results({"split": "test", "n_queries": len(queries), "segments": before["segments"], "rows": rows,
                           "reward": rewards_cfg.reward, "comparison": comparison, "rewrite_kinds": kinds,
                           "train_seconds": round(train_seconds, 1), "samples": after["samples"],
                           "wall": {"crossings": wall_crossings, **observed.annotations.summary()}})
    print(f"== test queries ({len(queries)}): SFT init vs {after_label}; reward = the run's fused reward ==")
    print(format_table(rows, before["segments"], METRICS + ("reward",)))
    print(f"paired differences on the {len(queries)} test queries (GRPO - SFT init):")
    print(format_comparison(comparison, before_label, after_label))
    print("rewrites that drift (of the test queries' greedy rewrites): " + "; ".join(
        f"{name} {kinds[before_label][name]} -> {kinds[after_label][name]}" for name in HACKING))
    print(f"wrote {out}/ in {time.perf_counter() - t_start:.0f} s (training {train_seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    run_main(lambda: distributed.finish_after(main))
