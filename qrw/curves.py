"""``python -m qrw.curves RUN_DIR``: does training generalise? Validation loss per task beside the training loss.

An SFT run logs every step's training loss per task (``rewrite_loss``,
``relevance_loss`` in ``metrics.jsonl``) and, every ``--sft-eval-every`` steps and at
the end of stage 1, the loss on fixed validation examples (``val_rewrite_loss``,
``val_relevance_loss``). At each evaluation step this prints, per stage and task:

- train: the mean of the logged training losses since the previous evaluation
  (steps ``prev < step <= this``; the first window starts at the stage's step 0);
- val: the validation loss at that step;
- gap: val - train.

and one verdict per task (:func:`verdict`). What counts as a change is
``--tolerance`` (5%) of how far the validation loss fell from its first evaluation
to its minimum (of its level when it never fell), so that the same rule reads a
curve at loss 6 and one at loss 0.3:

- **overfitting**: validation loss ended more than the tolerance above its minimum
  while the training loss fell;
- **plateau**: validation loss stayed within the tolerance of its minimum from an
  early step on (before the last quarter of the stage) while training loss kept falling:
  what it learns since then does not carry to held-out queries;
- **tracks**: validation loss was still reaching new lows in the last quarter.

Caveats a reader needs: the model has no dropout, so training and validation losses
are the same function of the data; the training mean lags (it averages a window,
validation is measured at its end), so an early gap is smaller than the true one;
the rewrite task validates on gold val rewrites even when it trains on mined pairs
(``--rewrite-data mined``), so its gap then includes the drift of the mined targets.
Stage 0 logs no validation loss (said in one line). GRPO runs log rewards, not a
validation loss: one-line error (their held-out comparison is their ``metrics.json``).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from qrw.config import Parser, UserError, check, run_main

TOLERANCE = 0.05  # a change below this share of the validation loss's fall (first evaluation to minimum) is noise
LATE = 0.75  # "late": the last quarter of the stage's evaluation steps


@dataclass
class CurvePoint:
    """One evaluation step of one task."""

    step: int
    train: float | None  # mean training loss since the previous evaluation (None: no step logged it)
    val: float

    @property
    def gap(self) -> float | None:
        return None if self.train is None else self.val - self.train


def read_records(run_dir: str | Path) -> list[dict]:
    """The run directory's ``metrics.jsonl`` records (lines cut by a crash skipped); one-line errors."""
    run_dir = Path(run_dir)
    check(run_dir.is_dir(), f"no run directory at {run_dir}")
    path = run_dir / "metrics.jsonl"
    config_path = run_dir / "config.json"
    if config_path.exists():
        try:
            kind = json.loads(config_path.read_text()).get("kind")
        except (json.JSONDecodeError, AttributeError):
            kind = None
        check(kind != "grpo", f"{run_dir} is a GRPO run: it logs rewards, not a validation loss (its held-out "
                              f"before/after comparison is in {run_dir / 'metrics.json'}; curves come from SFT runs)")
    check(path.exists(), f"{run_dir} has no metrics.jsonl (is it a qrw run directory?)")
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "stage" in record and "step" in record:
            records.append(record)
    return records


def loss_curves(records: list[dict]) -> dict[str, dict[str, list[CurvePoint]]]:
    """stage -> task -> the task's evaluation points, in step order (stages in order of appearance).

    A record with ``val_<task>_loss`` keys is an evaluation; every other record of the
    stage with ``<task>_loss`` is a training step. Stages without an evaluation map to ``{}``.

    >>> recs = [{"stage": "sft", "step": s, "rewrite_loss": float(s)} for s in (1, 2, 3, 4)]
    >>> recs += [{"stage": "sft", "step": 2, "val_rewrite_loss": 5.0}, {"stage": "sft", "step": 4, "val_rewrite_loss": 6.0}]
    >>> [(p.step, p.train, p.val) for p in loss_curves(recs)["sft"]["rewrite"]]  # train means (1+2)/2, (3+4)/2
    [(2, 1.5, 5.0), (4, 3.5, 6.0)]
    """
    stages: dict[str, list[dict]] = {}
    for record in records:
        stages.setdefault(record["stage"], []).append(record)
    curves: dict[str, dict[str, list[CurvePoint]]] = {}
    for stage, recs in stages.items():
        evals = sorted((r for r in recs if any(k.startswith("val_") and k.endswith("_loss") for k in r)),
                       key=lambda r: r["step"])
        steps = [r for r in recs if not any(k.startswith("val_") for k in r)]
        tasks = sorted({k[len("val_"):-len("_loss")] for r in evals for k in r
                        if k.startswith("val_") and k.endswith("_loss")}, key=lambda t: (t != "rewrite", t))
        curves[stage] = {}
        for task in tasks:
            points, previous = [], 0
            for ev in evals:
                if f"val_{task}_loss" not in ev:
                    continue
                window = [r[f"{task}_loss"] for r in steps if previous < r["step"] <= ev["step"] and f"{task}_loss" in r]
                points.append(CurvePoint(ev["step"], sum(window) / len(window) if window else None,
                                         float(ev[f"val_{task}_loss"])))
                previous = ev["step"]
            curves[stage][task] = points
    return curves


def verdict(task: str, points: list[CurvePoint], tolerance: float = TOLERANCE) -> str:
    """One line: how the task's validation loss moved against its training loss (module doc's three cases)."""
    if not points:
        return f"{task}: no evaluation logged"
    last = points[-1]
    if len(points) == 1:
        return (f"{task}: one evaluation (step {last.step}): validation {last.val:.4f}, training {_num(last.train)}, "
                f"gap {_num(last.gap, '+.4f')}; no curve (evaluate more often: --sft-eval-every)")
    best = min(points, key=lambda p: p.val)
    fell = points[0].val - best.val
    margin = tolerance * (fell if fell > 0 else best.val)
    rise = last.val - best.val
    fall = None if best.train is None or last.train is None else best.train - last.train
    if rise > margin:
        trend = ("training loss was not logged" if fall is None else
                 f"training loss fell {fall:.4f} ({best.train:.4f} -> {last.train:.4f}): overfitting" if fall > 0 else
                 "training loss did not fall: training got worse, not overfitting")
        return (f"{task}: validation loss rose {rise:.4f} ({rise / best.val:.0%}) since its minimum {best.val:.4f} at "
                f"step {best.step} while {trend}; gap at the end {_num(last.gap, '+.4f')}")
    since = next(p for p in points if p.val <= best.val + margin)  # the first step within the tolerance
    if since.step < LATE * last.step and since is not last:
        fall = None if since.train is None or last.train is None else since.train - last.train
        return (f"{task}: plateau: validation loss within {margin:.4f} of its minimum {best.val:.4f} since step "
                f"{since.step} ({since.val:.4f} -> {last.val:.4f}) while training loss fell "
                f"{_num(fall)} ({_num(since.train)} -> {_num(last.train)}); gap {_num(since.gap, '+.4f')} -> "
                f"{_num(last.gap, '+.4f')}")
    return (f"{task}: tracks: validation loss still falling late ({points[0].val:.4f} at step {points[0].step} -> "
            f"{last.val:.4f} at step {last.step}, minimum {best.val:.4f} at step {best.step}) with training loss "
            f"{_num(points[0].train)} -> {_num(last.train)}; gap at the end {_num(last.gap, '+.4f')}")


def _num(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def format_curves(curves: dict[str, dict[str, list[CurvePoint]]], tolerance: float = TOLERANCE,
                  compact: bool = False) -> list[str]:
    """The tables (one row per evaluation step, train / val / gap per task) and the verdicts, as lines.

    ``compact``: a Markdown table per stage, without the verdicts (docs/RESULTS.md lists them itself).
    """
    lines = []
    for stage, tasks in curves.items():
        if not tasks:
            lines.append(f"{stage}: no validation loss logged (training loss only)")
            continue
        steps = sorted({p.step for points in tasks.values() for p in points})
        by_step = {task: {p.step: p for p in points} for task, points in tasks.items()}
        if compact:
            lines += [f"| {stage} step | " + " | ".join(f"{t} train | {t} val | {t} gap" for t in tasks) + " |",
                      "|---:|" + "---:|---:|---:|" * len(tasks)]
        else:
            lines += [f"== {stage}: training loss (mean since the previous evaluation) vs validation loss ==",
                      f"{'step':>7}  " + "  ".join(f"{t + ' train':>16} {t + ' val':>14} {'gap':>8}" for t in tasks)]
        for step in steps:
            cells = []
            for task in tasks:
                p = by_step[task].get(step)
                cells.append(("-", "-", "-") if p is None else (_num(p.train), f"{p.val:.4f}", _num(p.gap, "+.4f")))
            if compact:
                lines.append(f"| {step} | " + " | ".join(" | ".join(c) for c in cells) + " |")
            else:
                lines.append(f"{step:>7}  " + "  ".join(f"{a:>16} {b:>14} {c:>8}" for a, b, c in cells))
        if not compact:
            lines += [f"{stage} {verdict(task, points, tolerance)}" for task, points in tasks.items()]
        lines.append("")
    return lines


def parse_args(argv=None) -> argparse.Namespace:
    p = Parser(prog="python -m qrw.curves", description="Does training generalise? An SFT run's validation loss per task beside its training loss.",
               epilog="example:\n  python -m qrw.curves runs/sft")
    p.add_argument("run_dir", metavar="RUN_DIR", help="an SFT run directory (train_sft.py --out)")
    p.add_argument("--tolerance", type=float, default=TOLERANCE,
                   help="share of the validation loss's fall (first evaluation to minimum) below which a change "
                        "counts as noise")
    p.add_argument("--json", action="store_true", help="print the curves and verdicts as JSON")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    check(0 <= args.tolerance < 1, f"--tolerance must be in [0, 1) (got {args.tolerance})")
    curves = loss_curves(read_records(args.run_dir))
    if not any(curves.values()):
        raise UserError(f"{args.run_dir} logged no validation loss (an SFT run evaluates every --sft-eval-every "
                        "steps and at the end of stage 1; was it interrupted?)")
    if args.json:
        from qrw.evaluate import to_json
        print(to_json({stage: {task: {"points": [asdict(p) | {"gap": p.gap} for p in points],
                                      "verdict": verdict(task, points, args.tolerance)}
                               for task, points in tasks.items()} for stage, tasks in curves.items()}))
        return 0
    print("\n".join(format_curves(curves, args.tolerance)).rstrip())
    return 0


if __name__ == "__main__":
    run_main(main)
