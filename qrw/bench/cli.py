"""Benchmarks: speed is measured, never guessed; the tables of the README's "Performance" come from here.

``python -m qrw.bench train`` times optimizer steps of stage 0 and stage 1 on the
default world's own batches (as ``train_sft.py`` builds them) in three layouts:
right-padded rows with the LM head on every position, the same with the head on
the loss targets only (``select=``), and sequences packed into rows with attention
kept within each sequence (``collate(..., pack_len)``), the training default.

``python -m qrw.bench generate`` times the KV-cache engine (``qrw.lm.generate.sample``)
against the naive full-recompute reference (``naive_generate``) on a model with
random weights and the chosen preset's shape, for several batch sizes, and prints
tokens/s and the speedup. As context it prints the model's FLOPs per token and
the machine's measured float32 matmul rate, the two numbers every performance
claim is read against.

Decoding is greedy with an EOS that a random model almost never emits, so both
engines run the full ``--new-tokens`` steps; generated tokens/s counts
``batch * steps`` completion tokens (prompt tokens are not counted).

``python -m qrw.bench profile`` runs every stage (stage 0, stage 1, GRPO's rollout, reference
scoring and update) on a trained run in fp32 and bf16 and prints, per stage, the share of time
in matrix multiplies and the FLOP rate against the machine's: see :mod:`qrw.bench.profile`.

``python -m qrw.bench compile`` says per stage whether ``torch.compile`` pays back its compile time
within one default run: see :mod:`qrw.bench.compile`.

``python -m qrw.bench compare`` holds qrw against HF transformers and TRL side by side
(generation, training step, GRPO step; fp32 and bf16): see :mod:`qrw.bench.compare`. It needs the
optional extra ``pip install -e .[bench]`` and says so in one line without it.

On a machine shared with other jobs, pass ``--threads 1``: OpenMP threads that
compete with other processes for the cores make small-batch timings erratic
(seen on 2 cores: batch 1 cached decoding 10x slower with 2 threads than with 1).
"""

from __future__ import annotations

import time

import torch

from qrw.config import Parser, check
from qrw.lm.generate import naive_generate, sample
from qrw.lm.model import PRESETS, ModelConfig, Transformer


def matmul_gflops(n: int = 1024, repeats: int = 10, device: str = "cpu", dtype: torch.dtype = torch.float32,
                  shape: tuple[int, int, int] | None = None) -> float:
    """Measured GFLOP/s of an (n, n) @ (n, n) matmul in ``dtype`` (2 n^3 FLOPs each), best of ``repeats``.

    ``shape`` = (m, k, n') times an (m, k) @ (k, n') matmul instead (2 m k n' FLOPs): a model's own shapes
    can run far from the square rate.
    """
    m, k, n = shape if shape is not None else (n, n, n)
    a = torch.randn(m, k, device=device).to(dtype)
    b = torch.randn(k, n, device=device).to(dtype)
    best = float("inf")
    for _ in range(repeats + 1):  # the first run warms up
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * m * k * n / best / 1e9


def _sync(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def time_engine(engine, model, prompts, new_tokens: int, eos_id: int, pad_id: int, device) -> tuple[float, int]:
    """Seconds for one call of ``engine`` and the number of completion tokens it produced (batch * steps)."""
    _sync(device)
    t0 = time.perf_counter()
    rollout = engine(model, prompts, max_new_tokens=new_tokens, temperature=0.0, eos_id=eos_id, pad_id=pad_id)
    _sync(device)
    return time.perf_counter() - t0, rollout.tokens.numel()


def bench_generate(preset: str, vocab_size: int, batch_sizes: list[int], prompt_len: int, new_tokens: int,
                   device: str, seed: int, skip_naive: bool) -> list[dict]:
    """Run the generation benchmark and print its table; return one dict per batch size."""
    config = ModelConfig.preset(preset, vocab_size)
    check(prompt_len + new_tokens <= config.max_seq_len,
          f"--prompt-len + --new-tokens = {prompt_len + new_tokens} exceeds the preset's context window ({config.max_seq_len})")
    torch.manual_seed(seed)
    model = Transformer(config).to(device).eval()
    eos_id, pad_id = vocab_size - 1, vocab_size - 2
    # Decoding one token costs a third of the training FLOPs at its context length (mean over the completion).
    decode_flops = model.flops_per_token(prompt_len + new_tokens // 2) / 3
    print(f"device {device} | threads {torch.get_num_threads()} | preset {preset} | params {model.num_params() / 1e6:.2f}M "
          f"| decode FLOPs/token {decode_flops / 1e6:.1f}M (training {model.flops_per_token() / 1e6:.1f}M) "
          f"| matmul {matmul_gflops(device=device):.1f} GFLOP/s (float32, 1024^3)")
    print(f"prompt {prompt_len} tokens, {new_tokens} new tokens, greedy; "
          f"cached GFLOP/s = cached tok/s * decode FLOPs/token (the naive engine does far more work per token)")
    print(f"{'batch':>5} | {'cached tok/s':>12} | {'naive tok/s':>11} | {'speedup':>7} | {'cached s':>8} | {'naive s':>7} "
          f"| {'cached GFLOP/s':>14}")
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for batch in batch_sizes:
        prompts = torch.randint(0, vocab_size - 2, (batch, prompt_len), generator=gen).tolist()
        time_engine(sample, model, prompts[:1], 4, eos_id, pad_id, device)  # warm-up
        cached_s, n_tokens = time_engine(sample, model, prompts, new_tokens, eos_id, pad_id, device)
        row = dict(batch=batch, tokens=n_tokens, cached_s=cached_s, cached_tps=n_tokens / cached_s)
        gflops = row["cached_tps"] * decode_flops / 1e9
        if skip_naive:
            print(f"{batch:>5} | {row['cached_tps']:>12.0f} | {'-':>11} | {'-':>7} | {cached_s:>8.3f} | {'-':>7} | {gflops:>14.2f}")
        else:
            naive_s, naive_tokens = time_engine(naive_generate, model, prompts, new_tokens, eos_id, pad_id, device)
            row.update(naive_s=naive_s, naive_tps=naive_tokens / naive_s, speedup=naive_s / cached_s * n_tokens / naive_tokens)
            print(f"{batch:>5} | {row['cached_tps']:>12.0f} | {row['naive_tps']:>11.0f} | {row['speedup']:>6.1f}x "
                  f"| {cached_s:>8.3f} | {naive_s:>7.3f} | {gflops:>14.2f}")
        rows.append(row)
    return rows


def training_batches(seed: int, smoke: bool, n_batches: int) -> tuple[int, dict[str, list], dict[str, float]]:
    """The first ``n_batches`` batches of stage 0 and of stage 1 exactly as ``train_sft.py`` builds them.

    Returns the tokenizer's vocabulary size, ``{stage: [items of one step, ...]}`` and the task loss weights.
    """
    from qrw.lm.tokenizer import Tokenizer
    from qrw.oracle import stage1_pairs
    from qrw.sft import default_configs, pretrain_mixture, sft_mixture, stage1_budget
    from qrw.shop.observation import observe_world
    from qrw.shop.world import World

    configs = default_configs(smoke=smoke, seed=seed)
    run = configs["run"]
    world = World(configs["world"])
    observed = observe_world(world, run.label_budget, run.label_disagreement)
    tok = Tokenizer.train(observed.corpus_texts(), run.vocab_size)
    max_len = ModelConfig.preset(run.preset, tok.vocab_size).max_seq_len
    rewrites, relevance, _ = stage1_pairs(observed, world, run, stage1_budget(run, 0))
    stage0 = pretrain_mixture(observed, tok, run, configs["pretrain"], max_len)
    stage1 = sft_mixture(rewrites, relevance, tok, run, configs["sft"], max_len)
    batches = {"pretrain": [stage0.batch(i) for i in range(n_batches)], "sft": [stage1.batch(i) for i in range(n_batches)]}
    return tok.vocab_size, batches, {**stage0.weights, **stage1.weights}


def bench_train(preset: str, pack_len: int, repeats: int, device: str, seed: int, smoke: bool = False) -> list[dict]:
    """Time optimizer steps of stages 0 and 1 in three layouts; print the table.

    Layouts: one right-padded sequence per row with the LM head on every position;
    the same with the head on the loss targets only (``select=``, the default); and
    sequences packed into rows of ``pack_len`` tokens (``collate(..., pack_len)``, the
    default) with the head on targets. Every layout computes the same loss and
    gradient (tests/test_sft.py); only the work differs.
    """
    from qrw.data import collate
    from qrw.sft import multitask_loss

    vocab_size, batches, weights = training_batches(seed, smoke, repeats + 1)
    torch.manual_seed(seed)
    model = Transformer(ModelConfig.preset(preset, vocab_size)).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(items, layout_pack_len, head_on_targets):
        data = collate(items, 0, weights, layout_pack_len).to(device)
        select = data.target_mask.bool() if head_on_targets else None
        logits = model(data.input_ids, document_ids=data.document_ids, select=select)
        loss, _ = multitask_loss(logits, data, float(data.target_mask.sum()))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return data.input_ids.numel(), int(data.attention_mask.sum())

    flops_per_token = model.flops_per_token(seq_len=32) - 6 * vocab_size * model.config.d_model  # head excluded
    print(f"device {device} | threads {torch.get_num_threads()} | preset {preset} | "
          f"{len(batches['sft'][0])} sequences per step | median of {repeats} steps | "
          f"matmul {matmul_gflops(device=device):.0f} GFLOP/s")
    print(f"{'stage':<8} | {'layout':<30} | {'positions':>9} | {'real':>5} | {'step s':>7} | {'speedup':>7} "
          f"| {'GFLOP/s':>7}")
    rows = []
    layouts = (("padded, head on every position", 0, False), ("padded, head on targets", 0, True),
               (f"packed ({pack_len}), head on targets", pack_len, True))
    for stage, stage_batches in batches.items():
        base = None
        for name, layout_pack_len, on_targets in layouts:
            step(stage_batches[0], layout_pack_len, on_targets)  # warm-up
            times, positions, real = [], 0, 0
            for items in stage_batches[1:]:
                _sync(device)
                t0 = time.perf_counter()
                n_positions, n_real = step(items, layout_pack_len, on_targets)
                _sync(device)
                times.append(time.perf_counter() - t0)
                positions, real = positions + n_positions, real + n_real
            seconds = sorted(times)[len(times) // 2]
            base = base or seconds
            # useful work: the blocks' FLOPs on real tokens only (padding and the head are overhead)
            gflops = flops_per_token * real / repeats / seconds / 1e9
            rows.append(dict(stage=stage, layout=name, seconds=seconds, positions=positions / repeats,
                             real=real / repeats))
            print(f"{stage:<8} | {name:<30} | {positions / repeats:>9.0f} | {real / repeats:>5.0f} | "
                  f"{seconds:>7.4f} | {base / seconds:>6.2f}x | {gflops:>7.1f}")
    return rows


def main() -> None:
    parser = Parser(prog="python -m qrw.bench", description="qrw benchmarks.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    g = sub.add_parser("generate", help="KV-cache generation vs the naive reference: tokens/s and speedup")
    g.add_argument("--preset", default="cpu", choices=list(PRESETS), help="model preset (default: cpu)")
    g.add_argument("--vocab-size", type=int, default=2048, help="vocabulary size of the random model (default: 2048)")
    g.add_argument("--batch-sizes", default="1,16,64", help="comma-separated batch sizes (default: 1,16,64)")
    g.add_argument("--prompt-len", type=int, default=32, help="prompt length in tokens (default: 32)")
    g.add_argument("--new-tokens", type=int, default=64, help="tokens generated per row (default: 64)")
    g.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    g.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: 0 = torch's choice)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    g.add_argument("--skip-naive", action="store_true", help="time only the cached engine")
    t = sub.add_parser("train", help="stage-0 and stage-1 optimizer steps: padded vs packed rows, LM head everywhere "
                                     "vs on targets")
    t.add_argument("--preset", default="cpu", choices=list(PRESETS), help="model preset (default: cpu)")
    t.add_argument("--pack-len", type=int, default=64, help="row length of the packed layout (default: 64)")
    t.add_argument("--repeats", type=int, default=20, help="timed steps per layout (default: 20)")
    t.add_argument("--smoke", action="store_true", help="train_sft.py --smoke's tiny world (a check that it runs)")
    t.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    t.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: 0 = torch's choice)")
    t.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    c = sub.add_parser("compare", help="qrw vs HF transformers and TRL side by side: generation, training step, "
                                       "GRPO step (needs pip install -e .[bench])")
    c.add_argument("--shape", default="d256", choices=["d256", "tiny"],
                   help="model shape: d256 = issue 12's Llama (d 256, 4 layers, 4 heads, d_ff 688, vocab 4096); "
                        "tiny for tests (default: d256)")
    c.add_argument("--dtypes", default="fp32,bf16", help="comma-separated: fp32, bf16 (bf16 = autocast around every "
                                                        "forward, fp32 weights; default: fp32,bf16)")
    c.add_argument("--workloads", default="generate,train,grpo",
                   help="comma-separated: generate, train, grpo (default: all three)")
    c.add_argument("--repeats", type=int, default=7, help="timed runs per number; the median is reported (default: 7)")
    c.add_argument("--quick", action="store_true", help="2 timed runs per number (a check that it runs)")
    c.add_argument("--profile", type=int, default=0, metavar="N",
                   help="also print the top N operators of one generation call and one training step of each "
                        "library (torch.profiler, self CPU time; default: 0 = off)")
    c.add_argument("--json", default=None, metavar="PATH", help="write the numbers to PATH")
    c.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="torch device (default: cpu)")
    c.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    c.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    pr = sub.add_parser("profile", help="every stage in fp32 and bf16: seconds a step, share of time in matrix "
                                        "multiplies, FLOP rate against the machine's")
    pr.add_argument("--init", default="runs/sft", help="a finished SFT run to profile the stages on (default: runs/sft)")
    pr.add_argument("--dtypes", default="fp32,bf16", help="comma-separated: fp32, bf16 (default: fp32,bf16)")
    pr.add_argument("--steps", type=int, default=5, help="timed steps per stage; the median is reported (default: 5)")
    pr.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: 0 = torch's choice)")
    pr.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    from qrw.bench.compile import add_parser as add_compile_parser, run as run_compile

    add_compile_parser(sub)
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.command == "compare":
        from qrw.bench.compare import DTYPES, WORKLOADS, run_compare

        dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
        workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
        check(dtypes and set(dtypes) <= set(DTYPES), f"--dtypes must list some of {', '.join(DTYPES)}, got {args.dtypes!r}")
        check(workloads and set(workloads) <= set(WORKLOADS),
              f"--workloads must list some of {', '.join(WORKLOADS)}, got {args.workloads!r}")
        check(args.repeats > 0 and args.profile >= 0, "--repeats must be > 0 and --profile >= 0")
        run_compare(args.shape, dtypes, workloads, 2 if args.quick else args.repeats, torch.device(args.device),
                    args.seed, args.json, args.profile, matmul_gflops)
        return
    if args.command == "compile":
        run_compile(args)
        return
    if args.command == "profile":
        from qrw.bench.profile import bench_profile

        dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
        check(dtypes and set(dtypes) <= {"fp32", "bf16"}, f"--dtypes must list fp32 and/or bf16, got {args.dtypes!r}")
        check(args.steps > 0, "--steps must be > 0")
        bench_profile(args.init, dtypes, args.steps, args.seed, matmul_gflops)
        return
    if args.command == "train":
        check(args.repeats > 0, "--repeats must be > 0")
        check(0 < args.pack_len <= ModelConfig.preset(args.preset, 2048).max_seq_len,
              "--pack-len must be > 0 and within the preset's context window")
        bench_train(args.preset, args.pack_len, args.repeats, args.device, args.seed, args.smoke)
        return
    try:
        batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    except ValueError:
        batch_sizes = []
    check(batch_sizes and all(b > 0 for b in batch_sizes), f"--batch-sizes must be positive integers like 1,16,64, got {args.batch_sizes!r}")
    check(args.prompt_len > 0 and args.new_tokens > 0, "--prompt-len and --new-tokens must be > 0")
    check(args.vocab_size >= 16, "--vocab-size must be >= 16")
    bench_generate(args.preset, args.vocab_size, batch_sizes, args.prompt_len, args.new_tokens,
                   args.device, args.seed, args.skip_naive)

