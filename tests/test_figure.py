"""``python -m qrw.figure``: the trailing mean by hand, what it reads of a GRPO run, its one-line errors, the PNG."""

import json

import pytest

from qrw.figure import main, read_grpo_run, trailing_mean

SEGMENTS = ["head", "tail", "all"]


def fake_grpo_run(path, steps=6):
    """A GRPO run directory as train_grpo.py writes one (only the keys the figure reads), plus a cut last line."""
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"kind": "grpo"}))
    lines = [json.dumps({"stage": "grpo", "step": s, "reward_fused_mean": 0.1 * s, "kl": None if s == 1 else 0.01 * s})
             for s in range(1, steps + 1)]
    (path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"stage": "grpo", "st')
    row = lambda v: {s: {"relevance": v, "ucvr": v / 2} for s in SEGMENTS}
    (path / "metrics.json").write_text(json.dumps({"segments": SEGMENTS, "n_queries": 10, "reward": "fusion",
                                                   "rows": {"SFT init": row(0.3), "GRPO (fusion)": row(0.5)}}))
    return path


def test_trailing_mean_by_hand():
    assert trailing_mean([2.0, 4.0, 6.0, 8.0, 10.0], 3).tolist() == pytest.approx([2.0, 3.0, 4.0, 6.0, 8.0])
    assert trailing_mean([5.0, 1.0], 1).tolist() == [5.0, 1.0]
    assert trailing_mean([1.0, 2.0, 3.0], 10).tolist() == pytest.approx([1.0, 1.5, 2.0])


def test_reads_the_steps_and_skips_a_line_cut_by_a_crash(tmp_path):
    records, results = read_grpo_run(fake_grpo_run(tmp_path / "run"))
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert results["rows"]["GRPO (fusion)"]["all"]["relevance"] == 0.5


def test_one_line_errors(tmp_path, cli_error, smoke_sft_run):
    assert "no run directory" in cli_error(main, str(tmp_path / "missing"), "--out", str(tmp_path / "f.png"))
    assert "not a GRPO run" in cli_error(main, str(smoke_sft_run), "--out", str(tmp_path / "f.png"))
    run = fake_grpo_run(tmp_path / "run")
    assert ".png" in cli_error(main, str(run), "--out", str(tmp_path / "f.jpg"))
    assert "--window" in cli_error(main, str(run), "--out", str(tmp_path / "f.png"), "--window", "0")
    (run / "metrics.json").unlink()
    assert "has not finished" in cli_error(main, str(run), "--out", str(tmp_path / "f.png"))


def test_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "figs" / "run.png"
    assert main([str(fake_grpo_run(tmp_path / "run")), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
