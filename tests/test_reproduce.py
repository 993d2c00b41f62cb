"""``python -m qrw.reproduce --seeds N``: the pooled interval over seeds (by hand, its coverage), the arms, and the
whole command end to end on smoke runs."""

from __future__ import annotations

import doctest
import json
import math
import shutil

import numpy as np
import pytest

import qrw.shop.pooled
from qrw.shop.abtest import paired_diff_ci
from qrw.shop.pooled import pooled_paired_diff, student_t_cdf, t_quantile


# ---- the pooled interval ------------------------------------------------------------------------

def test_pooled_mean_and_interval_by_hand():
    """Seed A: differences (1, 1, 0); seed B: (0, 1). Every seed weighs the same, whatever its query count."""
    pooled = pooled_paired_diff([([0, 0, 0], [1, 1, 0]), ([0, 0], [0, 1])])
    assert pooled.diff == pytest.approx((2 / 3 + 1 / 2) / 2)  # 7/12, not the 3/5 of the five queries together
    assert [c.lift for c in pooled.per_seed] == pytest.approx([2 / 3, 1 / 2])
    # se^2 = var(2/3, 1/2; ddof 1) / 2 = (1/72) / 2 = 1/144
    assert pooled.se == pytest.approx(1 / 12)
    assert pooled.quantile == pytest.approx(12.7062, abs=1e-4)  # t with 1 degree of freedom
    assert (pooled.low, pooled.high) == pytest.approx((7 / 12 - 12.7062 / 12, 7 / 12 + 12.7062 / 12), abs=1e-4)


def test_one_seed_is_the_per_query_paired_interval():
    rng = np.random.default_rng(0)
    before = rng.random(500)
    after = before + rng.normal(0.02, 0.1, 500)
    after[3] = np.nan  # dropped as paired_diff_ci drops it
    pooled, single = pooled_paired_diff([(before, after)]), paired_diff_ci(before, after)
    assert (pooled.diff, pooled.se, pooled.low, pooled.high) == (single.lift, single.se, single.low, single.high)


def test_seeds_that_disagree_widen_the_interval_beyond_pooling_the_queries():
    """Three seeds whose effects differ (+0.3, +0.1, -0.1): the queries pooled naively claim a sure +0.1."""
    rng = np.random.default_rng(1)
    seeds = []
    for effect in (0.3, 0.1, -0.1):
        before = rng.random(400)
        seeds.append((before, before + effect + rng.normal(0, 0.05, 400)))
    pooled = pooled_paired_diff(seeds)
    naive = paired_diff_ci(np.concatenate([b for b, _ in seeds]), np.concatenate([a for _, a in seeds]))
    assert pooled.diff == pytest.approx(naive.lift, abs=1e-12)  # equal query counts: the same mean
    assert naive.low > 0 and pooled.low < 0 < pooled.high
    means = [0.3, 0.1, -0.1]
    assert pooled.se == pytest.approx(np.std(means, ddof=1) / math.sqrt(3), abs=0.01)  # the between-seed spread
    assert pooled.high - pooled.low > 10 * (naive.high - naive.low)


def test_three_seeds_use_t_with_two_degrees_of_freedom():
    """Seed differences 0.1, 0.2, 0.6 (whatever each seed's query count): 0.3 -/+ 4.3027 * sd / sqrt(3)."""
    seeds = [(np.zeros(4), np.full(4, 0.1)), (np.zeros(2), np.array([0.1, 0.3])), (np.zeros(3), np.full(3, 0.6))]
    pooled = pooled_paired_diff(seeds)
    sd = math.sqrt(((0.1 - 0.3) ** 2 + (0.2 - 0.3) ** 2 + (0.6 - 0.3) ** 2) / 2)  # 0.2646
    assert pooled.diff == pytest.approx(0.3) and pooled.se == pytest.approx(sd / math.sqrt(3))
    assert (pooled.low, pooled.high) == pytest.approx((0.3 - 4.3027 * sd / math.sqrt(3),
                                                      0.3 + 4.3027 * sd / math.sqrt(3)), abs=1e-4)


def test_pooled_coverage():
    """Simulated grids of 3 seeds: the pooled interval covers the true effect 95% of the time, with or without a
    spread between seeds (not more: it is not wider than it needs); the queries pooled naively do not when seeds
    differ."""
    rng = np.random.default_rng(3)
    n_grids, n_seeds, n_queries, effect = 1500, 3, 100, 0.05
    for between_sd, naive_covers_well in ((0.05, False), (0.0, True)):
        pooled_hits = naive_hits = 0
        for _ in range(n_grids):
            seeds = []
            for _ in range(n_seeds):
                before = rng.random(n_queries)
                after = before + effect + rng.normal(0, between_sd) + rng.normal(0, 0.3, n_queries)
                seeds.append((before, after))
            pooled = pooled_paired_diff(seeds)
            naive = paired_diff_ci(np.concatenate([b for b, _ in seeds]), np.concatenate([a for _, a in seeds]))
            pooled_hits += pooled.low <= effect <= pooled.high
            naive_hits += naive.low <= effect <= naive.high
        assert 0.93 <= pooled_hits / n_grids <= 0.97, (between_sd, pooled_hits / n_grids)
        assert (naive_hits / n_grids >= 0.93) == naive_covers_well, (between_sd, naive_hits / n_grids)


def test_student_t():
    for df, reference in ((1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (9, 2.2622), (30, 2.0423)):
        assert t_quantile(0.975, df) == pytest.approx(reference, abs=1e-4)
    for t in (-3.0, -0.5, 0.0, 0.7, 2.5):
        assert student_t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi)  # Cauchy
        assert student_t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)))
        assert student_t_cdf(t, 7) + student_t_cdf(-t, 7) == pytest.approx(1.0)
    assert t_quantile(0.975, 2000) == pytest.approx(1.95996, abs=2e-3)


def test_pooled_docstring_examples_run():
    result = doctest.testmod(qrw.shop.pooled)
    assert result.attempted > 0 and result.failed == 0


# ---- the grid's arms and comparisons ----------------------------------------------------------

def test_arms_bring_the_runs_they_start_from():
    from qrw.config import UserError
    from qrw.reproduce import GRID, selected_arms

    assert selected_arms(None) == list(GRID)
    assert selected_arms("grpo-oracle,sft-single") == ["sft-multi", "sft-single", "grpo-oracle"]
    with pytest.raises(UserError, match="unknown arm sft-mystery"):
        selected_arms("sft-single,sft-mystery")
    for name, arm in GRID.items():  # an arm starts after the arm it starts from
        assert arm.init is None or list(GRID).index(arm.init) < list(GRID).index(name)


def test_pooled_comparison_pairs_within_each_seed():
    from qrw.reproduce import SeedEvaluation, pooled_comparison

    def seed(number, before, after, log_only):
        metrics = {name: {m: np.asarray(v, dtype=float) for m in ("accuracy", "relevance", "recall", "ucvr")}
                   for name, v in (("sft-single", before), ("sft-multi", after))}
        return SeedEvaluation(number, None, None, [None] * len(before), {}, {}, metrics, {},
                              np.array(log_only, dtype=bool), {}, {}, None, None)

    seeds = [seed(0, [0, 0, 1, 1], [1, 0, 1, 1], [1, 1, 0, 0]),  # difference 1/4; log-only queries: 1/2
             seed(5, [0, 0], [1, 1], [1, 0])]  # difference 1; one log-only query: left out of that subset
    c = pooled_comparison(seeds, "sft-single", "sft-multi")["accuracy"]
    assert c["diff"] == pytest.approx((0.25 + 1.0) / 2) and c["per_seed"] == pytest.approx([0.25, 1.0])
    assert c["seeds"] == [0, 5] and c["before"] == pytest.approx((0.5 + 0.0) / 2)
    sub = pooled_comparison(seeds, "sft-single", "sft-multi", log_only=True)["ucvr"]
    assert sub["seeds"] == [0] and sub["diff"] == pytest.approx(0.5)
    assert (sub["low"], sub["high"]) == pytest.approx(tuple(paired_diff_ci([0, 0], [1, 0])[2:]))


def test_pooled_comparison_on_the_tail_and_the_unseen_intents():
    """``subset``: only the seed's tail queries, or its unseen-intent ones (by hand: one seed, four queries)."""
    from types import SimpleNamespace

    from qrw.reproduce import SeedEvaluation, pooled_comparison

    metrics = {name: {m: np.asarray(v, dtype=float) for m in ("accuracy", "relevance", "recall", "ucvr")}
               for name, v in (("dictionary", [0, 0, 1, 1]), ("grpo-fusion", [1, 0, 0, 1]))}
    queries = [SimpleNamespace(segment=seg) for seg in ("tail", "head", "tail", "torso")]
    s = SeedEvaluation(0, None, None, queries, {}, {}, metrics, {}, np.zeros(4, dtype=bool), {}, {}, None, None,
                       np.array([1, 1, 0, 0], dtype=bool))
    assert pooled_comparison([s], "dictionary", "grpo-fusion", subset="tail")["ucvr"]["diff"] == pytest.approx(0.0)
    unseen = pooled_comparison([s], "dictionary", "grpo-fusion", subset="unseen")["accuracy"]
    assert unseen["diff"] == pytest.approx(0.5) and unseen["n"] == 2 and unseen["before"] == 0.0
    assert pooled_comparison([s], "dictionary", "grpo-fusion")["accuracy"]["n"] == 4
    with pytest.raises(ValueError, match="subset must be one of"):
        pooled_comparison([s], "dictionary", "grpo-fusion", subset="rare")


def test_claims_without_their_arms_are_not_checked():
    from qrw.reproduce import check_claims

    def ci(diff):
        return {"diff": diff, "low": diff + 0.01, "high": diff + 0.03, "before": 0.5, "after": 0.5 + diff}

    cmp = {("sft-single", "sft-multi"): {m: ci(0.02) for m in ("accuracy", "relevance", "recall", "ucvr")}}
    claims = check_claims(cmp, rows={})
    assert claims[0].startswith("1. *Multi-task SFT") and "**reproduces**" in claims[0]
    assert claims[1].startswith("2. Pretraining on logs helps") and "Not checked here: it needs sft-multi minus " \
                                                                    "sft-nopretrain" in claims[1]
    assert all("Not checked here" in c for c in claims[2:])


# ---- the command end to end --------------------------------------------------------------------

def test_two_seeds_end_to_end(tmp_path, smoke_sft_run, monkeypatch, capsys):
    """``--smoke --seeds 2 --arms sft-multi,sft-single``: 4 runs, seed 0's multi-task run reused from the session's
    smoke run; each seed scored in its own world, per-seed rows, pooled differences, curves and the wall time."""
    from qrw.reproduce import main

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the training subprocesses: one thread each on a shared machine
    out, results = tmp_path / "grid", tmp_path / "RESULTS.md"
    shutil.copytree(smoke_sft_run, out / "seed-0" / "sft-multi")
    assert main(["--smoke", "--seeds", "2", "--arms", "sft-multi,sft-single", "--out", str(out),
                 "--results", str(results), "--device", "cpu"]) == 0
    capsys.readouterr()
    text = results.read_text()
    data = json.loads((out / "results.json").read_text())
    assert data["seeds"] == [0, 1] and data["arms"] == ["sft-multi", "sft-single"]
    assert text.startswith("# qrw reproduction results (smoke settings)")
    assert "`python -m qrw.reproduce --seeds 2 --arms sft-multi,sft-single --smoke`" in text
    assert "Wall time of this call: " in text and "(1 of 4 runs reused" in text
    for s in (0, 1):
        for name in ("sft-multi", "sft-single"):
            assert (out / f"seed-{s}" / name / "metrics.json").exists()
        # each seed's run is scored in its own world: the rows its training script wrote agree
        own = json.loads((out / f"seed-{s}" / "sft-single" / "metrics.json").read_text())["rows"]
        for m in ("accuracy", "relevance", "recall", "ucvr"):
            assert data["rows_by_seed"][str(s)]["single-task SFT"]["all"][m] == pytest.approx(
                own["single-task SFT"]["all"][m], abs=1e-6)
        assert f"| single-task SFT | {s} | " in text and f"| multi-task SFT | {s} | " in text
    sizes = {s: json.loads((out / f"seed-{s}" / "sft-single" / "config.json").read_text())["world"]["seed"]
             for s in (0, 1)}
    assert sizes == {0: 0, 1: 1}
    comparison = data["comparisons"]["sft-multi minus sft-single"]
    for m in ("accuracy", "relevance", "recall", "ucvr"):
        assert comparison[m]["seeds"] == [0, 1] and len(comparison[m]["per_seed"]) == 2
        assert comparison[m]["diff"] == pytest.approx(np.mean(comparison[m]["per_seed"]), abs=1e-6)
        assert comparison[m]["low"] <= comparison[m]["diff"] <= comparison[m]["high"]
        assert f"| multi-task SFT minus single-task SFT | {m} | " in text
    # the wall: each run's record, its labels in the table, the validation loss its only crossing
    for s in (0, 1):
        wall = json.loads((out / f"seed-{s}" / "sft-multi" / "metrics.json").read_text())["wall"]
        assert data["wall_by_seed"][str(s)]["sft-multi"] == wall
        assert f"| multi-task SFT | {s} | {wall['labels_bought']:,} | " in text
        assert f"| single-task SFT | {s} | 0 | 0 | 0 | 0 | " in text  # no relevance task: no labels bought
        assert set(wall["crossings"]) == {"evaluation: the validation loss on held-out gold rewrites and judge grades"}
    assert "| multi-task SFT | evaluation: the validation loss on held-out gold rewrites and judge grades | 1 | 1 |" in text
    assert "cross the wall only to evaluate: **yes**." in text
    # the multi-task run against the log-fit dictionary, pooled over both seeds
    vs = data["vs_dictionary"]["sft-multi"]["all"]["accuracy"]
    assert vs["seeds"] == [0, 1] and vs["diff"] == pytest.approx(np.mean(vs["per_seed"]), abs=1e-6)
    assert data["n_unseen"] == sum(data["rows_by_seed"][str(s)]["multi-task SFT"]["unseen"]["n"] for s in (0, 1))
    assert "## Paired differences, pooled over seeds" in text and "1. *Multi-task SFT" in text
    assert "2. Pretraining on logs helps (the log-only subset is reported, not judged). Not checked here" in text
    assert "### single-task SFT" in text and "| sft step | rewrite train | rewrite val | rewrite gap |" in text
    assert "- seed 1: rewrite: " in text and "- seed 0: relevance: one evaluation" in text  # the reused run
    assert "(r) |" in text  # the runs table marks the reused run
    # reward hacking counts: every test rewrite has exactly one kind; the HACKING sums are sums of kinds
    from qrw.runs import load_run
    from qrw.scorecard import DROPPED_VALUES, HACKING
    for s in (0, 1):
        kinds = data["rewrite_kinds_by_seed"][str(s)]["sft-multi"]
        n_test = len(load_run(out / f"seed-{s}" / "sft-multi").world.queries["test"])
        assert sum(v for k, v in kinds.items() if k not in HACKING and k not in DROPPED_VALUES) == n_test
        assert sum(kinds[k] for k in DROPPED_VALUES) >= kinds["attribute dropped"] - kinds["partial, mixed"]
        for name, members in HACKING.items():
            assert kinds[name] == sum(kinds[k] for k in members)
    cells = " / ".join(str(data["rewrite_kinds_by_seed"][str(s)]["sft-single"]["no category"]) for s in (0, 1))
    assert "## Reward hacking: what the rewrites are" in text and "| single-task SFT | " in text and cells in text
    # the tagger per kind (multi-task run only: single-task SFT trains none), perturbed and held-out mined pairs
    assert "## The relevance tagger, per kind of rewrite" in text and "| perturbed: gold | " in text
    tag = data["tagging_by_seed"]["1"]
    assert set(tag) == {"multi-task SFT"} and tag["multi-task SFT"]["tag_mined"]["n"] > 0
    assert "| mined: all | " in text
    # the serving gate on the multi-task run (no GRPO arm here), its threshold chosen on val
    assert "## The serving gate" in text
    for s in (0, 1):
        assert set(data["gate_by_seed"][str(s)]) == {"sft-multi"}
        g = data["gate_by_seed"][str(s)]["sft-multi"]
        assert 0.0 <= g["threshold"] <= 1.0 and g["chosen"]["split"] == "val" and g["ood"]["served_off"] == 1.0
        by_grade = g["in_domain"]["by_grade"]
        assert sum(v["n"] for v in by_grade.values()) <= len(load_run(out / f"seed-{s}" / "sft-multi").world.queries["test"])
        assert f"| {s} | multi-task SFT | none | {g['threshold']:.4f} (" in text
        assert g["threshold"] == max(g["chosen"]["thresholds"].values())  # the largest of the val sets' picks
        assert g["query_check"] == "none" and set(data["query_gate_by_seed"][str(s)]) == {"dictionary", "vocabulary"}
        for check_, gates in data["query_gate_by_seed"][str(s)].items():  # with a query check
            q = gates["sft-multi"]
            assert q["query_check"] == check_ and q["in_domain"]["served"]["all"] <= q["in_domain"]["query_passed"]
            assert q["ood"]["served_on"] <= q["ood"]["query_passed"]
            assert f"| {s} | multi-task SFT | {check_} | {q['threshold']:.4f} (" in text
            assert f"{q['ood']['query_passed']:.1%} / {q['in_domain']['query_passed']:.1%}" in text

    from qrw.config import UserError
    with pytest.raises(UserError, match="--seeds must be >= 1"):
        main(["--smoke", "--seeds", "0", "--out", str(out)])


def test_parallel_jobs_start_each_run_after_its_init(monkeypatch, tmp_path):
    """``--jobs 2``: every (seed, arm) trained once, a GRPO arm only after its SFT init finished, each run
    with half the CPU threads; a failed init stops the runs that start from it."""
    import threading
    import time
    from types import SimpleNamespace

    import qrw.reproduce.grid as rep  # the module whose train_all calls train

    events, lock = [], threading.Lock()

    def fake_train(name, seed, out, args, threads=0):
        with lock:
            events.append(("start", seed, name, threads))
        time.sleep(0.02 if rep.GRID[name].script == "train_sft.py" else 0.0)
        if name == "sft-multi" and seed == args.fail_seed:
            raise rep.UserError(f"{name} (seed {seed}) failed")
        with lock:
            events.append(("end", seed, name, threads))
        return 1.0, False

    monkeypatch.setattr(rep, "train", fake_train)
    monkeypatch.setattr(rep.os, "cpu_count", lambda: 4)
    names, seeds = rep.selected_arms("grpo-fusion,grpo-oracle,sft-single"), [0, 1, 2]
    args = SimpleNamespace(jobs=2, fail_seed=None)
    got = rep.train_all(names, seeds, tmp_path, args)
    assert set(got) == {(s, n) for s in seeds for n in names}
    starts = [e for e in events if e[0] == "start"]
    assert len(starts) == len(got) and {e[3] for e in starts} == {2}  # 4 cores / 2 jobs
    for _, seed, name, _ in starts:
        init = rep.GRID[name].init
        if init is not None:
            assert events.index(("end", seed, init, 2)) < events.index(("start", seed, name, 2))
    events.clear()
    with pytest.raises(rep.UserError, match=r"sft-multi \(seed 1\) failed"):
        rep.train_all(names, seeds, tmp_path, SimpleNamespace(jobs=2, fail_seed=1))
    assert not any(e[0] == "start" and e[1] == 1 and e[2].startswith("grpo") for e in events)
    events.clear()
    assert set(rep.train_all(names, [0], tmp_path, SimpleNamespace(jobs=1, fail_seed=None))) == {(0, n) for n in names}
    assert [e[2] for e in events if e[0] == "start"] == names and {e[3] for e in events} == {0}  # in order, torch's threads


def test_regime_readings_follow_the_intervals_and_the_hacking_counts():
    from types import SimpleNamespace

    import qrw.reproduce as rep
    from qrw.scorecard import DROPPED_VALUES, HACKING

    def cmp_entry(diff, low, high):
        return {m: {"diff": diff, "low": low, "high": high} for m in ("accuracy", "relevance", "recall", "ucvr")}

    def grid(grpo_vs_init, gold_vs_mined, hacking_grpo):
        values = dict(zip(DROPPED_VALUES, (6, 4)))
        kinds = {n: {h: 10 for h in HACKING} | values for n in rep.GRID}
        kinds["grpo-fusion"] = dict(hacking_grpo) | dict(zip(DROPPED_VALUES, (2, 8)))
        seeds = [SimpleNamespace(kinds=kinds),
                 SimpleNamespace(kinds={**kinds, "grpo-fusion": {h: 10 for h in HACKING} | values})]
        return SimpleNamespace(seeds=seeds, names=list(rep.GRID),
                               cmp={("sft-multi", "grpo-fusion"): grpo_vs_init, ("sft-single-gold", "sft-single"): gold_vs_mined})

    def both(*args):  # the upper bounds' readings, then GRPO's against its init
        g = grid(*args)
        g.vs_dictionary = {}
        return rep.regime_lines(g) + rep.grpo_lines(g)[:1]

    up, down, unsure = cmp_entry(0.02, 0.01, 0.03), cmp_entry(-0.02, -0.03, -0.01), cmp_entry(0.01, -0.01, 0.03)
    lines = both(up, down, {h: 10 for h in HACKING})
    assert len(lines) == 2 and "both intervals excluding 0: **yes**" in lines[0]
    assert "excluding 0: **yes**; no drift count above the init's: **yes**" in lines[1]
    lines = both(unsure, unsure, {**{h: 10 for h in HACKING}, "no category": 14})
    assert "both intervals excluding 0: **no**" in lines[0]
    assert "excluding 0: **no**" in lines[1] and "**no (no category)**" in lines[1]
    assert "no category 10.0 -> 12.0" in lines[1]  # the mean over the two seeds: (14 + 10) / 2
    # the dropped attribute values, read / unread by the rules' dictionary: means (2 + 6) / 2 and (8 + 4) / 2
    assert "(the anchors rule sees them dropped) 6.0 -> 4.0" in lines[1] and "(no rule sees them) 4.0 -> 6.0" in lines[1]


def test_a_claim_not_reproduced_says_when_every_seed_agrees_in_sign():
    from qrw.reproduce.claims import _seeds_agree_text

    assert "(+0.013, +0.056, +0.211)" in _seeds_agree_text([0.013, 0.056, 0.211])
    assert _seeds_agree_text([-0.01, -0.02]) != ""
    assert _seeds_agree_text([0.013, -0.056, 0.211]) == ""  # mixed signs: nothing to say
    assert _seeds_agree_text([0.2]) == ""  # one seed: its own interval says it all


def test_a_run_of_another_recipe_is_not_reused(tmp_path, monkeypatch, capsys):
    """A finished run is reused only when its recipe (step counts, batch sizes, learning rates, dtype; not when
    it logs or saves) is what the grid trains today: a run of the old recipe is retrained, not mixed in."""
    import argparse
    import dataclasses
    import subprocess

    from qrw.reproduce import grid
    from qrw.sft import DEFAULT_LABEL, DEFAULT_PRETRAIN, DEFAULT_SFT
    from qrw.update import GRPOConfig

    args = argparse.Namespace(smoke=False, quick=False, force=False, device="cpu")
    sft = {"pretrain": dataclasses.asdict(DEFAULT_PRETRAIN), "sft": dataclasses.asdict(DEFAULT_SFT),
           "label": dataclasses.asdict(DEFAULT_LABEL) | {"steps": 0}, "run": {"dtype": "fp32"}}
    grpo = {"grpo": dataclasses.asdict(GRPOConfig()), "run": {"dtype": "fp32"}}

    def finished(name: str, config: dict) -> None:
        run = tmp_path / "seed-0" / name
        run.mkdir(parents=True, exist_ok=True)
        (run / "config.json").write_text(json.dumps(config))
        (run / "metrics.json").write_text(json.dumps({"wall": {}, "train_seconds": 7.0}))

    finished("sft-multi", sft | {"sft": sft["sft"] | {"log_every": 1, "ckpt_every": 3}})  # when it logs: no matter
    finished("grpo-fusion", grpo)
    assert grid.recipe_changes(tmp_path / "seed-0" / "sft-multi", "train_sft.py", args) == []
    assert grid.train("sft-multi", 0, tmp_path / "seed-0", args) == (7.0, True)
    assert grid.train("grpo-fusion", 0, tmp_path / "seed-0", args) == (7.0, True)

    finished("sft-multi", sft | {"sft": sft["sft"] | {"steps": sft["sft"]["steps"] + 1}})
    finished("grpo-fusion", grpo | {"run": {"dtype": "bf16"}})
    assert grid.recipe_changes(tmp_path / "seed-0" / "sft-multi", "train_sft.py", args) == [
        f"sft.steps {DEFAULT_SFT.steps + 1} -> {DEFAULT_SFT.steps}"]
    assert grid.recipe_changes(tmp_path / "seed-0" / "grpo-fusion", "train_grpo.py", args) == ["dtype bf16 -> fp32"]
    launched = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: launched.append(cmd) or subprocess.CompletedProcess(cmd, 0))
    for name in ("sft-multi", "grpo-fusion"):
        assert grid.train(name, 0, tmp_path / "seed-0", args)[1] is False
    assert [cmd[1] for cmd in launched] == ["train_sft.py", "train_grpo.py"]
    assert "trained with another recipe (sft.steps" in capsys.readouterr().out
    finished("sft-multi", sft)
    (tmp_path / "seed-0" / "sft-multi" / "config.json").unlink()  # a recipe that cannot be read is not reused
    assert grid.recipe_changes(tmp_path / "seed-0" / "sft-multi", "train_sft.py", args) == ["config.json unreadable"]
    quick = argparse.Namespace(smoke=False, quick=True)
    assert grid.expected_recipe("train_sft.py", quick)["sft.steps"] == 500
    assert grid.expected_recipe("train_grpo.py", quick)["grpo.steps"] == 40
