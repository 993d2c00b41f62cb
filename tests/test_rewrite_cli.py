"""``python -m qrw.rewrite`` as a new user meets it: odd input, interactive stdin, broken run directories.

Every case runs the real command in a subprocess on a tiny trained run (an
almost untrained model: its rewrites are mostly empty, which is fine for the
plumbing checked here); the report's logic is checked in-process with a planted
gold rewrite.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import train_sft
from qrw.rewrite import Explainer, clean_text
from qrw.runs import load_run

ROOT = Path(__file__).resolve().parents[1]
# tests/test_scripts.py's TINY world, and as few training steps as a complete run directory needs
TINY = ["--smoke", "--quiet", "--n-products", "120", "--n-train-queries", "150", "--n-val-queries", "20",
        "--n-test-queries", "30", "--n-log-sessions", "200", "--pretrain-steps", "2", "--sft-steps", "2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}
LONG = "buy " + "x" * 4996  # 5,000 characters


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "sft"
    assert train_sft.main(TINY + ["--out", str(out)]) == 0
    return out


def rewrite_cli(*args: str, stdin: bytes | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "qrw.rewrite", *args], cwd=ROOT, input=stdin or b"",
                            capture_output=True, env=env or ENV, timeout=300)
    assert b"Traceback" not in result.stderr, result.stderr.decode()
    return result


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_odd_queries_as_arguments(run_dir):
    """Spacing, capitals, a typo, emoji and CJK, a 5,000-character query: each gets a full report."""
    title = load_run(run_dir).world.titles[0]  # a query that surely finds products
    queries = ["  " + "   ".join(title.upper().split()) + "\t", "  TCL   Flatscreen\tFULL HD ", "samsng televison",
               "😀 手机 📱 phone", LONG]
    result = rewrite_cli("--ckpt", str(run_dir), *queries, "--k", "3")
    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout.decode()
    assert out.count("results before: page(q), top 3") == 5 and out.count("results after:") == 5
    assert f"query:   {title!r}" in out and "   1. Exact " in out
    assert "query:   'tcl flatscreen full hd'" in out  # normalised
    assert "category=television | brand=tcl | resolution=1080p" in out  # the judge reads variants
    assert "category=television | brand=samsung" in out  # and single typos
    assert "query:   '😀 手机 📱 phone'" in out and "category=smartphone" in out
    assert "note: query truncated to its first" in out and "(5,000 characters given)" in out
    assert "greedy" in out and "tagger " in out and "conversion " in out
    assert max(len(line) for line in out.splitlines()) < 400  # the long query is not echoed whole


def test_interactive_mode_reads_stdin_lines_until_end_of_input(run_dir):
    lines = ["Blk KICKS for men", "", "   ", "☕️ coffee maker", "\x00\x1b[31m red", LONG]
    stdin = ("\n".join(lines) + "\n").encode() + b"caf\xe9 \xff\xfe bad bytes\n"  # invalid UTF-8 last
    result = rewrite_cli("--ckpt", str(run_dir), "--samples", "2", stdin=stdin)
    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout.decode()
    assert out.count("note: empty query") == 2  # the empty and the whitespace-only line
    assert out.count("results before:") == 5  # every other line is a query
    assert out.count("  sample 1  ") == 5 and out.count("  sample 2  ") == 5
    assert "query:   'blk kicks for men'" in out and "category=sneakers" in out
    assert "'\\x00\\x1b[31m red'" in out  # control characters shown escaped, never sent to the terminal
    assert "\x1b" not in out
    assert "caf\ufffd \ufffd\ufffd bad bytes" in out  # undecodable bytes become U+FFFD


def test_sampled_rewrites_are_seeded(run_dir):
    args = ["--ckpt", str(run_dir), "kids backpack", "--samples", "3", "--temperature", "1.5"]
    first, second = rewrite_cli(*args), rewrite_cli(*args)
    assert first.returncode == 0 and first.stdout == second.stdout
    assert rewrite_cli(*args, "--seed", "1").stdout != first.stdout


def test_empty_and_invalid_arguments_are_one_line_errors(run_dir):
    assert one_line_error(rewrite_cli("--ckpt", str(run_dir), "phone", "  \t ")) == \
        "error: query 2 is empty (only whitespace)"
    assert "--samples must be between 0 and 64" in one_line_error(rewrite_cli("--ckpt", str(run_dir), "x",
                                                                              "--samples", "-1"))
    assert "--temperature must be > 0" in one_line_error(rewrite_cli("--ckpt", str(run_dir), "x",
                                                                     "--temperature", "0"))
    assert "required: --ckpt" in one_line_error(rewrite_cli("phone"))


def test_missing_or_corrupted_run_directories_are_one_line_errors(run_dir, tmp_path):
    assert one_line_error(rewrite_cli("--ckpt", str(tmp_path / "nope"), "phone")) == \
        f"error: no run directory at {tmp_path / 'nope'} (train one with `python train_sft.py`)"
    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    (broken / "ckpt.pt").write_bytes((run_dir / "ckpt.pt").read_bytes()[:500])
    assert "corrupted or truncated checkpoint" in one_line_error(rewrite_cli("--ckpt", str(broken), "phone"))
    (broken / "ckpt.pt").unlink()
    assert "missing checkpoint" in one_line_error(rewrite_cli("--ckpt", str(broken), "phone", stdin=b"phone\n"))
    config = json.loads((run_dir / "config.json").read_text())
    config["model"]["n_layer"] += 1
    shutil.copy(run_dir / "ckpt.pt", broken / "ckpt.pt")
    (broken / "config.json").write_text(json.dumps(config))
    assert "another model config" in one_line_error(rewrite_cli("--ckpt", str(broken), "phone"))
    (broken / "tokenizer.json").write_text("{}")
    assert "tokenizer" in one_line_error(rewrite_cli("--ckpt", str(broken), "phone"))


def test_report_of_a_planted_gold_rewrite(run_dir):
    """With the gold rewrite planted as the model's output: judge grade 2, more Exact products, new ones marked."""
    run = load_run(run_dir)
    explainer = Explainer(run, "cpu", samples=0, temperature=1.0, k=10, seed=0)
    query = next(q for q in run.world.queries["test"] if q.gold != q.text)
    explainer.rewrites = lambda text: [("greedy", query.gold)]
    lines = explainer.explain(query.text.upper())
    report = "\n".join(lines)
    assert f"query:   {query.text!r}" in report
    assert "judge 2 equivalent" in report
    before, after = report.split("results after:")
    assert after.count("Exact") >= before.count("Exact")
    assert "  + " in after or before.count("Exact") == after.count("Exact")


def test_clean_text_replaces_undecodable_bytes():
    assert clean_text("ok 手机") == "ok 手机"
    assert clean_text(b"caf\xe9".decode("utf-8", "surrogateescape")) == "caf\ufffd"
    assert clean_text("lone \ud800 surrogate") == "lone ? surrogate"


def test_gate_serves_or_withholds_the_greedy_rewrite(run_dir):
    """``--gate``: served iff the gate's tagger score is above the threshold and (``--gate-query dictionary``)
    the shop reads a product in the query; a withheld rewrite leaves page(q) alone. Stub scores, planted rewrite."""
    from types import SimpleNamespace

    run = load_run(run_dir)
    explainer = Explainer(run, "cpu", samples=0, temperature=1.0, k=3, seed=0, gate=0.5, gate_query="dictionary",
                          gate_judge=(None, "stub"))
    read = next(q for q in run.world.queries["test"] if explainer.ctx.reads_product([q.text])[0])
    known = next(q for q in run.world.queries["test"] if explainer.ctx.knows_query([q.text])[0])
    explainer.rewrites = lambda text: [("greedy", read.gold)]
    for text, score, check_, served, why in (
            (read.text, 0.9, "dictionary", True, "the shop reads a product in the query"),
            (read.text, 0.5, "dictionary", False, "P(equivalent) 0.500 <= 0.5 (stub)"),
            ("dinosaur", 0.9, "dictionary", False, "the shop reads no catalog category or brand in the query"),
            ("dinosaur", 0.9, "none", True, "P(equivalent) 0.900 > 0.5 (stub)"),
            ("grey dinosaur", 0.9, "vocabulary", False, "the shop does not know 'dinosaur'"),
            (known.text, 0.9, "vocabulary", True, "the shop knows every word of the query")):
        explainer.gate_scorer = SimpleNamespace(gate_scores=lambda qs, rs, value=score: [value] * len(qs))
        explainer.gate_query = check_
        report = "\n".join(explainer.explain(text))
        assert f"gate:    greedy rewrite {'served' if served else 'withheld'}: " in report and why in report
        assert ("results after: page(q, greedy rewrite)" in report) == served
        assert ("results after: the same, page(q) alone (the gate withheld the rewrite)" in report) == (not served)


def test_gate_flags(run_dir):
    result = rewrite_cli("--ckpt", str(run_dir), "kids backpack", "--gate", "1", "--gate-query", "dictionary")
    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout.decode()
    assert "gate:    greedy rewrite withheld: P(equivalent) " in out and "<= 1 (the run's own tagger)" in out
    assert "--gate must be a threshold in [0, 1]" in one_line_error(rewrite_cli("--ckpt", str(run_dir), "x",
                                                                                "--gate", "1.5"))
    assert "--gate-query and --gate-judge need --gate THRESHOLD" in one_line_error(
        rewrite_cli("--ckpt", str(run_dir), "x", "--gate-query", "dictionary"))
