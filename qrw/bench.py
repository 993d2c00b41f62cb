"""Benchmarks: measure, never guess (DESIGN.md, "Performance rules").

``python -m qrw.bench train`` times one stage-1 optimizer step on a batch shaped
like the default SFT mixture (relevance rows: a ~28-token prompt and 2 targets;
rewrite rows: a ~12-token prompt and ~6 targets), with the LM head over every
position against the head over the target positions only (``select=``).

``python -m qrw.bench generate`` times the KV-cache engine (``qrw.generate.sample``)
against the naive full-recompute reference (``naive_generate``) on a model with
random weights and the chosen preset's shape, for several batch sizes, and prints
tokens/s and the speedup. As context it prints the model's FLOPs per token and
the machine's measured float32 matmul rate, the two numbers every performance
claim is read against.

Decoding is greedy with an EOS that a random model almost never emits, so both
engines run the full ``--new-tokens`` steps; generated tokens/s counts
``batch * steps`` completion tokens (prompt tokens are not counted).

On a machine shared with other jobs, pass ``--threads 1``: OpenMP threads that
compete with other processes for the cores make small-batch timings erratic
(seen on 2 cores: batch 1 cached decoding 10x slower with 2 threads than with 1).
"""

from __future__ import annotations

import time

import torch

from qrw.config import Parser, check, run_main
from qrw.generate import naive_generate, sample
from qrw.model import PRESETS, ModelConfig, Transformer


def matmul_gflops(n: int = 1024, repeats: int = 10, device: str = "cpu") -> float:
    """Measured float32 GFLOP/s of an (n, n) @ (n, n) matmul (2 n^3 FLOPs each), best of ``repeats``."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(repeats + 1):  # the first run warms up
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


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


def sft_like_batch(vocab_size: int, batch: int, rewrite_fraction: float, gen: torch.Generator):
    """A stage-1-shaped batch of random tokens: ``(task, (ids, loss_mask))`` items as ``collate`` takes them."""
    n_rewrite = round(batch * rewrite_fraction)
    items = []
    for i in range(batch):
        task, prompt, targets = ("rewrite", 12, 6) if i < n_rewrite else ("relevance", 28, 2)
        n = prompt + targets + int(torch.randint(-3, 4, (1,), generator=gen))
        ids = torch.randint(0, vocab_size, (n,), generator=gen).tolist()
        items.append((task, (ids, [0] * (n - targets) + [1] * targets)))
    return items


def bench_train(preset: str, vocab_size: int, batch: int, rewrite_fraction: float, repeats: int, device: str,
                seed: int) -> list[dict]:
    """Time one optimizer step with the head on every position vs on the targets only; print the table."""
    from qrw.data import collate
    from qrw.sft import multitask_loss

    torch.manual_seed(seed)
    model = Transformer(ModelConfig.preset(preset, vocab_size)).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(seed)
    data = collate(sft_like_batch(vocab_size, batch, rewrite_fraction, gen), 0,
                   {"rewrite": 1.0, "relevance": 3.0}).to(device)
    n_targets = float(data.target_mask.sum())

    def step(select):
        logits = model(data.input_ids, attention_mask=data.attention_mask, select=select)
        loss, _ = multitask_loss(logits, data, n_targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    print(f"device {device} | threads {torch.get_num_threads()} | preset {preset} | batch {batch} "
          f"({round(batch * rewrite_fraction)} rewrite rows), {data.input_ids.shape[1]} positions, "
          f"{int(n_targets)} targets | median of {repeats} steps")
    print(f"{'LM head on':<18} | {'step s':>7} | {'steps/s':>7} | {'speedup':>7}")
    rows = []
    for name, select in (("every position", None), ("targets only", data.target_mask.bool())):
        step(select)  # warm-up
        times = []
        for _ in range(repeats):
            _sync(device)
            t0 = time.perf_counter()
            step(select)
            _sync(device)
            times.append(time.perf_counter() - t0)
        seconds = sorted(times)[len(times) // 2]
        rows.append(dict(head=name, seconds=seconds))
        print(f"{name:<18} | {seconds:>7.4f} | {1 / seconds:>7.2f} | {rows[0]['seconds'] / seconds:>6.2f}x")
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
    t = sub.add_parser("train", help="one stage-1 optimizer step: LM head on every position vs on targets only")
    t.add_argument("--preset", default="cpu", choices=list(PRESETS), help="model preset (default: cpu)")
    t.add_argument("--vocab-size", type=int, default=2048, help="vocabulary size of the random model (default: 2048)")
    t.add_argument("--batch-size", type=int, default=64, help="sequences per step (default: 64)")
    t.add_argument("--rewrite-fraction", type=float, default=0.3, help="share of rewrite rows (default: 0.3)")
    t.add_argument("--repeats", type=int, default=20, help="timed steps per variant (default: 20)")
    t.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    t.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: 0 = torch's choice)")
    t.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.command == "train":
        check(args.batch_size > 0 and args.repeats > 0, "--batch-size and --repeats must be > 0")
        check(0 <= args.rewrite_fraction <= 1, f"--rewrite-fraction must be in [0, 1] (got {args.rewrite_fraction})")
        check(args.vocab_size >= 16, "--vocab-size must be >= 16")
        bench_train(args.preset, args.vocab_size, args.batch_size, args.rewrite_fraction, args.repeats,
                    args.device, args.seed)
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


if __name__ == "__main__":
    run_main(main)
