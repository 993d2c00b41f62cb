"""``python -m qrw.curves``: training against validation loss per task, with hand-computed windows and verdicts."""

from __future__ import annotations

import doctest
import json

import pytest

import qrw.curves
from qrw.curves import CurvePoint, format_curves, loss_curves, main, read_records, verdict


def write_run(path, records, kind="sft"):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"kind": kind, "world": {}}))
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def hand_records():
    """Stage 0 (no validation), then stage 1: six steps, evaluations after steps 2 and 6 (and a cut line)."""
    recs = [{"stage": "pretrain", "step": s, "loss": 7.0 - s, "pretrain_loss": 7.0 - s} for s in (1, 2)]
    rewrite = [4.0, 2.0, 3.0, 1.0, 1.0, 1.0]
    relevance = [1.0, 1.0, 0.5, 0.5, 0.5, 0.5]
    for step, (rw, rl) in enumerate(zip(rewrite, relevance), 1):
        recs.append({"stage": "sft", "step": step, "loss": rw + rl, "rewrite_loss": rw, "relevance_loss": rl})
        if step == 2:
            recs.append({"stage": "sft", "step": 2, "val_rewrite_loss": 2.5, "val_relevance_loss": 0.9,
                         "val_rewrite_acc": 0.1})
    recs.append({"stage": "sft", "step": 6, "val_rewrite_loss": 2.0, "val_relevance_loss": 0.7})
    return recs


def test_train_means_are_the_windows_since_the_previous_evaluation(tmp_path):
    run = write_run(tmp_path / "run", hand_records())
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"stage": "sft", "st')  # a line cut by a crash is skipped
    curves = loss_curves(read_records(run))
    assert curves["pretrain"] == {}
    assert list(curves["sft"]) == ["rewrite", "relevance"]  # rewrite first
    rewrite = curves["sft"]["rewrite"]
    # steps 1-2: (4 + 2) / 2 = 3; steps 3-6: (3 + 1 + 1 + 1) / 4 = 1.5
    assert [(p.step, p.train, p.val) for p in rewrite] == [(2, 3.0, 2.5), (6, 1.5, 2.0)]
    assert [p.gap for p in rewrite] == [-0.5, 0.5]
    relevance = curves["sft"]["relevance"]
    assert [(p.step, p.train, p.val) for p in relevance] == [(2, 1.0, 0.9), (6, 0.5, 0.7)]
    text = "\n".join(format_curves(curves))
    assert "pretrain: no validation loss logged" in text
    assert "      2            3.0000         2.5000  -0.5000" in text
    compact = format_curves(curves, compact=True)
    assert "| 6 | 1.5000 | 2.0000 | +0.5000 | 0.5000 | 0.7000 | +0.2000 |" in compact
    assert not any("tracks" in line for line in compact)  # compact: the caller lists the verdicts


def points(vals, trains=None, every=100):
    trains = trains or [None] * len(vals)
    return [CurvePoint(every * (i + 1), t, v) for i, (t, v) in enumerate(zip(trains, vals))]


def test_verdicts_by_hand():
    # the validation loss fell 1.0 -> 0.5 (tolerance 5% of the fall: 0.025), then rose 0.1 while training fell
    over = verdict("rewrite", points([1.0, 0.5, 0.55, 0.6], [1.2, 0.4, 0.2, 0.1]))
    assert over.startswith("rewrite: validation loss rose 0.1000 (20%) since its minimum 0.5000 at step 200")
    assert "training loss fell 0.3000 (0.4000 -> 0.1000): overfitting" in over and "gap at the end +0.5000" in over
    worse = verdict("rewrite", points([1.0, 0.5, 0.6], [1.0, 0.4, 0.5]))
    assert "training loss did not fall: training got worse, not overfitting" in worse
    # within 0.025 of the minimum 0.50 from step 200 of 400 (before the last quarter): a plateau
    flat = verdict("rewrite", points([1.0, 0.51, 0.50, 0.52], [1.0, 0.3, 0.2, 0.1]))
    assert flat.startswith("rewrite: plateau: validation loss within 0.0250 of its minimum 0.5000 since step 200 "
                           "(0.5100 -> 0.5200) while training loss fell 0.2000 (0.3000 -> 0.1000)")
    # the near-minimum reached only at step 400 of 400: still falling
    falling = verdict("relevance", points([1.0, 0.8, 0.7, 0.5], [1.0, 0.8, 0.7, 0.5]))
    assert falling.startswith("relevance: tracks: validation loss still falling late (1.0000 at step 100 -> 0.5000")
    one = verdict("rewrite", [CurvePoint(12, 5.0, 5.5)])
    assert "one evaluation (step 12)" in one and "gap +0.5000" in one
    # a curve that never fell measures changes against its level: 0.52 is within 5% of 0.5, 0.6 is not
    assert "plateau" in verdict("x", points([0.5, 0.51, 0.52, 0.52, 0.52]))
    assert "rose" in verdict("x", points([0.5, 0.6]))


def test_command_on_a_run_with_several_evaluations(tmp_path, capsys):
    """A tiny SFT run that evaluates every 4 steps: the table's training means recomputed from its metrics.jsonl."""
    import train_sft

    run = tmp_path / "sft"
    assert train_sft.main(["--smoke", "--quiet", "--out", str(run), "--device", "cpu", "--sft-eval-every", "4"]) == 0
    capsys.readouterr()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["stage"] == "sft" and "rewrite_loss" in r]
    expected = sum(r["rewrite_loss"] for r in train if 4 < r["step"] <= 8) / 4
    assert main([str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    rewrite = result["sft"]["rewrite"]["points"]
    assert [p["step"] for p in rewrite] == [4, 8, 12]
    assert rewrite[1]["train"] == pytest.approx(expected, abs=1e-6)
    assert rewrite[1]["gap"] == pytest.approx(rewrite[1]["val"] - expected, abs=1e-5)
    assert result["sft"]["relevance"]["verdict"].startswith("relevance: ")
    assert main([str(run)]) == 0
    text = capsys.readouterr().out
    assert "== sft: training loss (mean since the previous evaluation) vs validation loss ==" in text
    assert "pretrain: no validation loss logged" in text and "sft rewrite: " in text


def test_smoke_run_has_one_evaluation(smoke_sft_run, capsys):
    assert main([str(smoke_sft_run)]) == 0
    assert "no curve (evaluate more often: --sft-eval-every)" in capsys.readouterr().out


def test_one_line_errors(tmp_path, cli_error):
    assert "no run directory at" in cli_error(main, str(tmp_path / "nope"))
    grpo = write_run(tmp_path / "grpo", [{"stage": "grpo", "step": 1, "reward_fused_mean": 0.5}], kind="grpo")
    assert "is a GRPO run: it logs rewards, not a validation loss" in cli_error(main, str(grpo))
    no_val = write_run(tmp_path / "cut", [{"stage": "sft", "step": 1, "rewrite_loss": 2.0}])
    assert "logged no validation loss" in cli_error(main, str(no_val))
    (tmp_path / "empty").mkdir()
    assert "has no metrics.jsonl" in cli_error(main, str(tmp_path / "empty"))
    assert "--tolerance must be in [0, 1)" in cli_error(main, str(no_val), "--tolerance", "2")


def test_docstring_examples_run():
    result = doctest.testmod(qrw.curves)
    assert result.attempted > 0 and result.failed == 0
