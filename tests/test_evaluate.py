"""Evaluation: tagging macro-F1 (qrw.scorecard), the A/B statistics (qrw.shop.abtest: hand-computed,
A/A coverage, planted lifts), the command ``python -m qrw.evaluate``, and the claim checks of qrw.reproduce.

The statistics tests use a tiny hand-built population (a dozen queries on a
ten-product catalog) with the pure :func:`qrw.shop.abtest.ab_test`, so they run in
well under a second; the CLI tests use a tiny trained run directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import train_sft
from qrw.config import UserError
from qrw.evaluate import jsonable, main, to_json
from qrw.scorecard import confusion_matrix, macro_f1, tagging_metrics
from qrw.shop.abtest import ab_test, diff_ci
from qrw.shop.judge import COMPLEMENT, EXACT, SUBSTITUTE
from qrw.shop.metrics import METRICS, page_grades
from qrw.shop.shop import Shop
from qrw.shop.users import UserSimulator
from qrw.shop.relevance import held_out_mined_pairs
from qrw.shop.world import World, WorldConfig

ROOT = Path(__file__).resolve().parents[1]
# tests/test_scripts.py's TINY world, and as few training steps as a complete run directory needs
TINY = ["--smoke", "--quiet", "--n-products", "120", "--n-train-queries", "150", "--n-val-queries", "20",
        "--n-test-queries", "30", "--n-log-sessions", "200", "--pretrain-steps", "2", "--sft-steps", "2"]
ONE_THREAD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "sft"
    assert train_sft.main(TINY + ["--out", str(out)]) == 0
    return out


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qrw.evaluate", *args], cwd=ROOT, capture_output=True,
                          env=ONE_THREAD_ENV, timeout=300)


# ---- tagging metrics ---------------------------------------------------------------------------

def test_macro_f1_on_a_hand_made_confusion():
    confusion = np.array([[5, 1, 0],   # judge 0: 5 right, 1 tagged 1
                          [2, 3, 1],   # judge 1
                          [0, 0, 4]])  # judge 2: all right
    f1s, macro = macro_f1(confusion)
    # F1 = 2 tp / (row sum + column sum): 10 / 13, 6 / 10, 8 / 9
    assert f1s == pytest.approx([10 / 13, 0.6, 8 / 9])
    assert macro == pytest.approx((10 / 13 + 0.6 + 8 / 9) / 3)
    # a class never predicted (and never right) has F1 0 and still counts in the mean
    f1s, macro = macro_f1([[3, 0, 0], [1, 0, 0], [0, 0, 2]])
    assert f1s == pytest.approx([2 * 3 / (3 + 4), 0.0, 1.0]) and macro == pytest.approx((6 / 7 + 1) / 3)
    assert confusion_matrix([0, 0, 1, 2, 2], [0, 1, 1, 2, 0]).tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]


def test_tagging_metrics_of_a_perfect_and_a_constant_tagger():
    world = World(WorldConfig(seed=3, n_products=150, n_train_queries=20, n_val_queries=10, n_test_queries=20,
                              n_log_sessions=0))
    truth = {(q, r): label for q, r, label in world.relevance_examples("test")}
    mined = held_out_mined_pairs(world, "test")
    assert mined and not {(p.query, p.rewrite) for p in mined} & {(p.query, p.rewrite) for p in world.mined_pairs}
    judge = truth | {(p.query, p.rewrite): p.grade for p in mined}
    perfect = SimpleNamespace(tag=lambda qs, rs: [judge[(q, r)] for q, r in zip(qs, rs)])
    m = tagging_metrics(perfect, world, "test")
    assert m["tag_accuracy"] == 1.0 and m["tag_macro_f1"] == 1.0 and m["tag_pairs"] == len(truth)
    assert m["tag_mined"]["n"] == len(mined) and m["tag_mined"]["accuracy"] == 1.0
    assert sum(v["n"] for v in m["tag_mined"]["by_kind"].values()) == len(mined)
    always_equivalent = SimpleNamespace(tag=lambda qs, rs: [2] * len(qs))
    m = tagging_metrics(always_equivalent, world, "test")
    share = sum(label == 2 for label in truth.values()) / len(truth)  # precision of class 2; its recall is 1
    assert m["tag_accuracy"] == pytest.approx(share)
    assert m["tag_f1"] == pytest.approx([0.0, 0.0, 2 * share / (share + 1)])
    # per kind of rewrite: the constant tagger is right on exactly the grade-2 kinds
    by_kind = m["tag_by_kind"]
    assert sum(v["n"] for v in by_kind.values()) == len(truth)
    assert {k: v["accuracy"] for k, v in by_kind.items()} == {k: float(k in ("gold", "reordered")) for k in by_kind}
    # held-out mined pairs: right exactly on the pairs the judge grades 2, kind by kind
    mined_m = m["tag_mined"]
    assert mined_m["accuracy"] == pytest.approx(np.mean([p.grade == 2 for p in mined]))
    for kind, v in mined_m["by_kind"].items():
        assert v["accuracy"] == pytest.approx(np.mean([p.grade == 2 for p in mined if p.kind == kind]))


# ---- A/B statistics ----------------------------------------------------------------------------

def test_diff_ci_against_a_hand_computed_interval():
    control, treatment = [0, 1, 1, 0], [1, 1, 1, 0, 1]
    # means 0.5 and 0.8; sample variances (ddof 1) 1/3 and 0.2
    se = np.sqrt((1 / 3) / 4 + 0.2 / 5)  # 0.351188...
    ci = diff_ci(control, treatment)
    assert ci.lift == pytest.approx(0.3)
    assert ci.se == pytest.approx(se) and ci.se == pytest.approx(0.3511885)
    assert (ci.low, ci.high) == pytest.approx((0.3 - 1.959964 * se, 0.3 + 1.959964 * se))
    assert diff_ci(treatment, control).lift == pytest.approx(-0.3)  # the sign follows treatment - control
    with pytest.raises(UserError, match=">= 2 values per side"):
        diff_ci([1], [0, 1])


def tiny_population(seed: int = 0, n_queries: int = 12, k: int = 4):
    """A 10-product catalog in two categories and ``n_queries`` random pages with random grades."""
    rng = np.random.default_rng(seed)
    world = SimpleNamespace(products=[SimpleNamespace(category="ab"[i % 2]) for i in range(10)],
                            popularity=rng.uniform(1, 10, 10), prices=rng.uniform(5, 20, 10))
    pages = np.stack([rng.permutation(10)[:k] for _ in range(n_queries)])  # (Q, k)
    grades = rng.integers(0, 4, size=(n_queries, k))  # (Q, k)
    return UserSimulator(world), pages, grades


def aa_coverage(z: float, seeds: int = 200, n_users: int = 400) -> dict[str, float]:
    users, pages, grades = tiny_population()
    covered = {"ucvr": 0, "relevance": 0}
    for seed in range(seeds):
        result = ab_test(users, pages, grades, pages, grades, n_users, np.random.default_rng(seed), z=z)
        for metric in covered:
            lift = result["lift"][metric]
            assert lift["expected"] == 0.0
            covered[metric] += lift["ci_low"] <= 0.0 <= lift["ci_high"]
    return {metric: n / seeds for metric, n in covered.items()}


def test_aa_test_interval_covers_zero_about_95_percent_of_the_time():
    """A/A: both sides serve the same pages, so the true lift is 0 and a 95% interval covers it 95% of the time.

    200 seeds of 400 shoppers (200 per side; UCVR about 0.2, so ~40 purchases a
    side, enough for the normal approximation). If the true coverage is 0.95,
    the number of covering seeds is Binomial(200, 0.95): mean 190, sd 3.1; the
    accepted band [0.90, 0.99] = [180, 198] holds it with probability 0.9984
    (P(< 180) = 0.0012, P(> 198) = 0.0004), so the test is not flaky under any
    correct implementation, seeds fixed or not. It does catch a wrong interval:
    a 90% interval (coverage 0.90) lands below 180 about half the time, and the
    z = 1 interval (68%) always does, which the second half checks.
    """
    coverage = aa_coverage(z=1.959964)
    for metric, value in coverage.items():
        assert 0.90 <= value <= 0.99, (metric, value)
    narrow = aa_coverage(z=1.0)
    for metric, value in narrow.items():
        assert value < 0.80, (metric, value)  # ~0.68: P(>= 160 of 200 | p = 0.68) < 1e-6


def test_planted_lift_is_detected_with_the_right_sign():
    """Treatment serves the same products, but its Substitutes are Exact matches for the shopper: higher
    purchase probabilities and relevance. Detected, positive, near the closed-form lift; swapped, negative."""
    users, pages, grades = tiny_population()
    better = np.where(grades == SUBSTITUTE, EXACT, grades)
    result = ab_test(users, pages, grades, pages, better, 4000, np.random.default_rng(7))
    assert result["control"]["users"] == 2000 and result["treatment"]["users"] == 2000
    for metric in ("ucvr", "relevance"):
        lift = result["lift"][metric]
        assert lift["expected"] > 0 and lift["ci_low"] > 0, (metric, lift)
        assert abs(lift["absolute"] - lift["expected"]) < 4 * lift["se"]  # estimates the closed-form lift
        assert lift["relative"] == pytest.approx(lift["absolute"] / result["control"][metric])
    swapped = ab_test(users, pages, better, pages, grades, 4000, np.random.default_rng(7))
    for metric in ("ucvr", "relevance"):
        assert swapped["lift"][metric]["ci_high"] < 0, metric
    nothing_relevant = np.where(grades == EXACT, COMPLEMENT, grades)
    result = ab_test(users, pages, nothing_relevant, pages, better, 400, np.random.default_rng(7))
    assert result["control"]["relevance"] == 0 and result["lift"]["relevance"]["relative"] is None


def test_ab_test_is_seeded_and_validates_its_input():
    users, pages, grades = tiny_population()
    a = ab_test(users, pages, grades, pages, grades, 101, np.random.default_rng(3))
    b = ab_test(users, pages, grades, pages, grades, 101, np.random.default_rng(3))
    assert to_json(a) == to_json(b)
    assert (a["control"]["users"], a["treatment"]["users"]) == (51, 50)
    with pytest.raises(UserError, match="--users must be >= 4"):
        ab_test(users, pages, grades, pages, grades, 0, np.random.default_rng(0))
    with pytest.raises(UserError, match="same"):
        ab_test(users, pages, grades, pages[:, :2], grades[:, :2], 100, np.random.default_rng(0))


def test_gold_beats_no_rewrite_in_a_small_world():
    """The real pipeline: pages of the world's search engine, grades of its judge, its shoppers."""
    world = World(WorldConfig(seed=1, n_products=300, n_train_queries=50, n_val_queries=10, n_test_queries=60,
                              n_log_sessions=0))
    ctx = Shop(world)
    queries = world.queries["test"]
    sides = []
    for name in ("none", "gold"):
        pages = ctx.engine.pages([q.text for q in queries], ctx.baseline_rewrites(name, queries), ctx.k)
        sides += [pages, page_grades(world.judge, [q.intent for q in queries], pages)]
    result = ab_test(ctx.users, *sides, 20_000, np.random.default_rng(0))
    for metric in ("ucvr", "relevance"):
        assert result["lift"][metric]["ci_low"] > 0, metric


def test_docstring_examples_run():
    """The examples in the docstrings of the statistics and the scorecard are run, not just read."""
    import doctest

    import qrw.rewards
    import qrw.scorecard
    import qrw.shop.abtest

    for module in (qrw.shop.abtest, qrw.scorecard, qrw.rewards):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_jsonable_rounds_and_drops_non_finite_values():
    assert jsonable({"a": 0.1234567891, "b": float("nan"), "c": np.float32(2.5), "d": (np.int64(3), True),
                     "e": -1e-9}) == {"a": 0.123457, "b": None, "c": 2.5, "d": [3, True], "e": 0.0}
    assert to_json({"b": 1, "a": -0.0}) == '{\n "a": 0.0,\n "b": 1\n}'


# ---- command line ------------------------------------------------------------------------------

def test_json_output_is_byte_identical_across_runs(run_dir):
    first = run_cli("--ckpt", str(run_dir), "--baselines", "--json")
    second = run_cli("--ckpt", str(run_dir), "--baselines", "--json")
    assert first.returncode == 0, first.stderr.decode()
    assert first.stdout == second.stdout
    results = json.loads(first.stdout)
    assert set(results["rows"]) == {"no rewrite", "dictionary", "gold-dictionary (upper bound)", "gold",
                                    "multi-task SFT"}
    assert "all" in results["rows"]["gold"] and "unseen" in results["rows"]["gold"]
    assert set(results["rows"]["gold"]) <= {"head", "torso", "tail", "all", "unseen"}
    assert results["rows"]["gold"]["unseen"]["n"] == results["n_unseen"]
    assert results["tagger"] == "sft" and 0 <= results["tagging"]["tag_macro_f1"] <= 1
    # paired model - dictionary differences: for a metric with no missing values the mean of the
    # per-query differences is the difference of the two rows' means
    rows = results["rows"]
    for seg, diffs in results["vs_dictionary"].items():
        for metric in ("recall", "ucvr"):
            d = diffs[metric]
            assert d["lift"] == pytest.approx(rows["multi-task SFT"][seg][metric] - rows["dictionary"][seg][metric],
                                              abs=2e-6)
            assert d["low"] <= d["lift"] <= d["high"]
    assert "all" in results["vs_dictionary"]
    assert "rewrites" not in results and str(run_dir) not in first.stdout.decode()
    ab = [run_cli("--ab", "none", str(run_dir), "--users", "2000", "--json") for _ in range(2)]
    assert ab[0].returncode == 0, ab[0].stderr.decode()
    assert ab[0].stdout == ab[1].stdout
    result = json.loads(ab[0].stdout)["result"]
    assert result["control"]["users"] + result["treatment"]["users"] == 2000
    assert set(result["lift"]) == {"ucvr", "relevance"}


def test_human_readable_outputs(run_dir, capsys):
    assert main(["--ckpt", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "multi-task SFT" in out and "macro-F1" in out and "gold" not in out.split("relevance tagger")[0]
    assert "attribute contradicted" in out  # the tagger accuracy by kind of rewrite
    assert main(["--ckpt", str(run_dir), "--ab", "none", "gold", "--users", "4000"]) == 0
    out = capsys.readouterr().out
    assert "control none vs treatment gold" in out and "95% CI of lift" in out
    assert out.count("*") >= 2  # gold's lifts are detected even in the tiny world


def test_missing_run_directory_is_a_one_line_error_from_the_real_cli(tmp_path):
    result = run_cli("--ckpt", str(tmp_path / "nope"))
    assert result.returncode == 2
    assert result.stderr.decode().strip().splitlines() == [
        f"error: no run directory at {tmp_path / 'nope'} (train one with `python train_sft.py`)"]


def test_bad_input_gives_one_line_errors(run_dir, tmp_path, cli_error):
    assert "is neither a run directory nor a baseline" in cli_error(main, "--ab", "none", "golden")
    assert "--users must be between 4" in cli_error(main, "--ab", "none", "gold", "--ckpt", str(run_dir),
                                                    "--users", "0")
    assert "--ckpt DIR" in cli_error(main)
    assert "--users applies to the A/B test" in cli_error(main, "--ckpt", str(run_dir), "--users", "10")
    assert "invalid choice" in cli_error(main, "--ckpt", str(run_dir), "--split", "train")
    other = tmp_path / "other-world"
    shutil.copytree(run_dir, other)
    config = json.loads((other / "config.json").read_text())
    config["world"]["seed"] = 5
    (other / "config.json").write_text(json.dumps(config))
    message = cli_error(main, "--ab", str(run_dir), str(other), "--users", "100")
    assert "come from different worlds (seed 0 vs 5)" in message
    (other / "ckpt.pt").write_bytes(b"not a checkpoint")
    (other / "config.json").write_text((run_dir / "config.json").read_text())
    assert "corrupted or truncated checkpoint" in cli_error(main, "--ckpt", str(other))
    (other / "config.json").write_text("{not json")
    assert "corrupted run config" in cli_error(main, "--ab", "none", str(other))


def test_trailing_mean_of_training_curves_by_hand():
    from qrw.reproduce import trailing_mean
    steps, means = trailing_mean([1, 2, 3, 4, 5], [2.0, 4.0, 6.0, 8.0, 10.0], 2)
    assert steps == [2, 3, 4, 5] and means.tolist() == [3.0, 5.0, 7.0, 9.0]  # no zero-padded ends
    steps, means = trailing_mean([1, 2], [1.0, 3.0], 20)  # window longer than the curve: one point
    assert steps == [2] and means.tolist() == [2.0]


def test_claim_checks_read_the_intervals():
    """Claim 2 reproduces only when an interval excludes 0; the log-only subset is reported, not judged."""
    from qrw.reproduce import GRID, LABELS, check_claims

    def ci(diff, half=0.01, before=0.5):
        return {"diff": diff, "low": diff - half, "high": diff + half, "before": before, "after": before + diff}

    def comparison(diff):
        return {m: ci(diff) for m in METRICS}

    metrics = {"accuracy": 0.8, "relevance": 0.6, "recall": 0.8, "ucvr": 0.45}
    rows = {LABELS[n]: {"all": dict(metrics), "tail": dict(metrics)} for n in GRID}
    pairs = [("sft-single", "sft-multi"), ("sft-nopretrain", "sft-multi"), ("sft-multi", "grpo-fusion"),
             ("sft-multi", "grpo-relevance"), ("sft-multi", "grpo-conversion"), ("grpo-fusion", "grpo-conversion")]
    cmp = {p: comparison(0.0) for p in pairs}
    claim2 = check_claims(cmp, rows)[1]
    assert "**does not reproduce**" in claim2 and "Likely reason" in claim2 and "test queries that use" not in claim2
    cmp[("sft-nopretrain", "sft-multi")] = comparison(0.02)
    cmp[("sft-nopretrain", "sft-multi", "log-only")] = comparison(-0.03)
    claim2 = check_claims(cmp, rows, n_log_only=187)[1]
    assert "**reproduces**" in claim2 and "Likely reason" not in claim2
    assert "On the 187 test queries that use a log-only variant" in claim2 and "-0.0300 [-0.0400, -0.0200]" in claim2


def test_paired_differences_of_two_rewriters(run_dir, cli_error):
    """--paired: the same run on both sides differs by exactly 0; "none" against the run gives
    compare_rewrites on the same queries (accuracy left out: no rewrite has none)."""
    from qrw.runs import load_run
    from qrw.scorecard import compare_rewrites

    same = json.loads(run_cli("--paired", str(run_dir), str(run_dir), "--json").stdout)
    assert all(c["diff"] == 0 and c["low"] == 0 and c["high"] == 0 for c in same["comparison"].values())
    got = json.loads(run_cli("--paired", "none", str(run_dir), "--json").stdout)["comparison"]
    loaded = load_run(run_dir)
    ctx = Shop(loaded.world)
    queries = loaded.world.queries["test"]
    expected = compare_rewrites(ctx, queries, ctx.baseline_rewrites("none", queries),
                                loaded.rewriter().rewrite([q.text for q in queries]))
    assert set(got) == set(expected) == {"relevance", "recall", "ucvr"}
    for metric, values in expected.items():
        assert got[metric] == pytest.approx(values, abs=1e-6)
    assert "--paired takes no" in cli_error(main, "--paired", "none", str(run_dir), "--gate", "auto")


def test_paired_pools_over_repeated_pairs(run_dir, cli_error):
    """--paired repeated: the same pair twice pools to the single pair's difference with a zero-width interval
    (the two seed means agree: sd 0), per pair listed; the drift counts are the rewrites' HACKING sums."""
    from qrw.runs import load_run
    from qrw.scorecard import HACKING, rewrite_kinds

    one = json.loads(run_cli("--paired", "none", str(run_dir), "--json").stdout)
    two = json.loads(run_cli("--paired", "none", str(run_dir), "--paired", "none", str(run_dir), "--json").stdout)
    assert two["n_queries"] == [one["n_queries"]] * 2 and two["after"] == [str(run_dir)] * 2
    for metric, c in one["comparison"].items():
        pooled = two["comparison"][metric]
        assert pooled["diff"] == pytest.approx(c["diff"], abs=1e-6)
        assert pooled["low"] == pooled["high"] == pytest.approx(c["diff"], abs=1e-6)
        assert pooled["per_seed"] == pytest.approx([c["diff"]] * 2, abs=1e-6)
    loaded = load_run(run_dir)
    queries = loaded.world.queries["test"]
    kinds = rewrite_kinds(loaded.world, queries, loaded.rewriter().rewrite([q.text for q in queries]))
    assert two["drift"]["after"] == {name: float(kinds[name]) for name in HACKING} == one["drift"]["after"]
    assert "--ckpt picks the world" in cli_error(main, "--paired", "none", "gold", "--paired", "none", "gold",
                                                 "--ckpt", str(run_dir))
