"""``python -m qrw.figure GRPO_RUN --out FILE.png``: one GRPO run in one picture.

Left: what the run logged at every step (``metrics.jsonl``): the fused reward of the
sampled rewrites, and the KL of the policy to its SFT init (k3, nats a token), each as a
trailing mean over ``--window`` steps. Right: the held-out before/after the run wrote
(``metrics.json``): relevance@10 and UCVR of the SFT init and of the GRPO policy on the
test queries, per difficulty segment and overall.

    python train_grpo.py --classroom && python -m qrw.figure runs/classroom-grpo --out docs/classroom.png

Needs matplotlib (``pip install -e ".[plot]"``); without it, one line says so. The
numbers drawn are the run's own: nothing is recomputed here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from qrw.config import Parser, UserError, check, run_main

BEFORE = "SFT init"  # the row train_grpo.py writes for the policy's init
PANELS = (("relevance", "relevance@10"), ("ucvr", "UCVR"))


def trailing_mean(values: list[float], window: int) -> np.ndarray:
    """Each point the mean of the ``window`` values ending there (fewer at the start: no zero padding).

    >>> trailing_mean([1.0, 3.0, 5.0, 7.0], 2).tolist()
    [1.0, 2.0, 4.0, 6.0]
    """
    x = np.asarray(values, dtype=float)
    sums = np.cumsum(np.insert(x, 0, 0.0))  # (n + 1,)
    ends = np.arange(1, len(x) + 1)
    starts = np.maximum(0, ends - window)
    return (sums[ends] - sums[starts]) / (ends - starts)


def read_grpo_run(run_dir: str | Path) -> tuple[list[dict], dict]:
    """``(step records, metrics.json)`` of a finished GRPO run; one-line errors for anything else."""
    run_dir = Path(run_dir)
    check(run_dir.is_dir(), f"no run directory at {run_dir}")
    try:
        kind = json.loads((run_dir / "config.json").read_text()).get("kind")
    except (OSError, json.JSONDecodeError, AttributeError):
        kind = None
    check(kind == "grpo", f"{run_dir} is not a GRPO run directory (train_grpo.py --out)")
    check((run_dir / "metrics.json").exists(), f"{run_dir} has no metrics.json: the run has not finished")
    records = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a crash
            continue
        if isinstance(record, dict) and record.get("stage") == "grpo":
            records.append(record)
    check(records, f"{run_dir}/metrics.jsonl holds no GRPO step")
    return records, json.loads((run_dir / "metrics.json").read_text())


def draw(records: list[dict], results: dict, out: Path, window: int, title: str) -> None:
    """Write the figure (see the module docstring) to ``out``."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError('python -m qrw.figure needs matplotlib: pip install -e ".[plot]"') from None
    after = next((label for label in results["rows"] if label.startswith("GRPO")), None)
    check(after is not None and BEFORE in results["rows"], "metrics.json has no 'SFT init' and GRPO rows")
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    steps = [r["step"] for r in records]
    axes[0].plot(steps, trailing_mean([r["reward_fused_mean"] for r in records], window), label="fused reward")
    axes[0].set_title(f"sampled rewrites' fused reward ({window}-step mean)")
    kl = [(r["step"], r["kl"]) for r in records if r.get("kl") is not None]  # the steps that measured it
    ax_kl = axes[0].twinx()
    if kl:
        ax_kl.plot([s for s, _ in kl], trailing_mean([v for _, v in kl], window), color="tab:red", label="KL to init")
    ax_kl.set_ylabel("KL to the SFT init (nats/token)", color="tab:red")
    axes[0].set_xlabel("GRPO step")
    segments = results["segments"]
    x = np.arange(len(segments))
    for ax, (metric, name) in zip(axes[1:], PANELS):
        for offset, label in ((-0.2, BEFORE), (0.2, after)):
            values = [results["rows"][label][s][metric] for s in segments]
            ax.bar(x + offset, values, width=0.4, label=label)
        ax.set_xticks(x, segments)
        ax.set_title(f"{name} on {results['n_queries']} held-out test queries")
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    p = Parser(prog="python -m qrw.figure", description="One GRPO run in one picture: its training curves and its "
               "held-out before/after.", epilog="example:\n  python -m qrw.figure runs/classroom-grpo --out docs/classroom.png")
    p.add_argument("run_dir", metavar="GRPO_RUN", help="a finished GRPO run directory (train_grpo.py --out)")
    p.add_argument("--out", required=True, help="the PNG to write")
    p.add_argument("--window", type=int, default=5, help="steps in the trailing mean of the curves")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    check(args.window >= 1, f"--window must be >= 1 (got {args.window})")
    check(args.out.lower().endswith(".png"), f"--out must name a .png file (got {args.out!r})")
    records, results = read_grpo_run(args.run_dir)
    draw(records, results, Path(args.out), args.window, f"{args.run_dir}: GRPO ({results.get('reward', '?')} reward)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    run_main(main)
