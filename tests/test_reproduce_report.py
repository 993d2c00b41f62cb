"""The reproduction report's readings of the wall: labels and crossings from planted run records, the arms against
the log-fit dictionary (rendered and serialised), where GRPO loses, the gate's logged out-of-domain columns; the
grid split across calls (each trains its own seeds, a later one reuses them); and the GRPO arms end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

METRICS = ("accuracy", "relevance", "recall", "ucvr")
VAL_LOSS = "evaluation: the validation loss on held-out gold rewrites and judge grades"


def entry(diff, low, high, before=0.5, n=10):
    """One pooled_comparison entry: the same figures for every metric."""
    return {m: {"diff": diff, "low": low, "high": high, "before": before, "after": before + diff, "n": n,
                "seeds": [0], "per_seed": [diff]} for m in METRICS}


def sft_record(stage1: int, total: int, crossings: dict, sources: dict | None = None) -> dict:
    return {"crossings": crossings, "labels_bought": total, "pairs_labelled": total, "pairs_asked": total,
            "budget": 60_000, "disagreement": 0.1, "annotators": 1,
            "stage1_labelling": None if sources is None else {"labels_bought": stage1, "sources": sources}}


def plant(root, seed: int, name: str, wall: dict | None) -> None:
    run = root / f"seed-{seed}" / name
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"train_seconds": 1.0} | ({} if wall is None else {"wall": wall})))


def test_wall_section_lists_the_labels_and_crossings_each_run_recorded(tmp_path):
    """Planted metrics.json records of two seeds: stage 1b = labels bought - stage 1's; each crossing with its count
    per seed; the default arms only evaluated; a run with no record is named."""
    from qrw.reproduce.evaluation import wall_records
    from qrw.reproduce.readings import labels_bought, wall_lines

    sources = {"mined": {"candidates": 900, "bought": 700, "labels": [0.1, 0.3, 0.6]},
               "null": {"candidates": 400, "bought": 300, "labels": [0.8, 0.2, 0.0]}}
    oracle = "upper-bound arm: conversion-judge oracle"
    plant(tmp_path, 0, "sft-multi", sft_record(1000, 1250, {VAL_LOSS: 1, "evaluation: stage 1b's validation pairs": 1},
                                              sources))
    plant(tmp_path, 1, "sft-multi", sft_record(900, 900, {VAL_LOSS: 1}, sources))
    plant(tmp_path, 0, "grpo-fusion", {"crossings": {}, "labels_bought": 0, "budget": 60_000})
    plant(tmp_path, 1, "grpo-fusion", {"crossings": {}, "labels_bought": 0, "budget": 60_000})
    plant(tmp_path, 0, "grpo-oracle-conversion", {"crossings": {oracle: 40}, "labels_bought": 0})
    plant(tmp_path, 1, "grpo-oracle-conversion", None)  # trained before the wall
    names = ["sft-multi", "grpo-fusion", "grpo-oracle-conversion"]
    seeds = [SimpleNamespace(seed=s, walls=wall_records(tmp_path / f"seed-{s}", names)) for s in (0, 1)]
    assert seeds[1].walls["grpo-oracle-conversion"] is None
    assert labels_bought(seeds[0].walls["sft-multi"]) == (1000, 250)
    text = "\n".join(wall_lines(SimpleNamespace(seeds=seeds, names=names)))
    assert "| multi-task SFT | 0 | 1,250 | 1,000 | 250 | 1,250 | 60,000 | 10% | 1 |" in text
    assert "| multi-task SFT | 1 | 900 | 900 | 0 | 900 | 60,000 | 10% | 1 |" in text
    assert "| mined | 900 / 900 | 700 / 700 | 10% / 30% / 60% |" in text  # the per-source table
    assert f"| multi-task SFT | {VAL_LOSS} | 1 | 1 |" in text
    assert "| multi-task SFT | evaluation: stage 1b's validation pairs | 1 | - |" in text
    assert "| GRPO fusion | none | 0 | 0 |" in text
    assert f"| GRPO fusion, oracle conversion (upper bound) | {oracle} | 40 | - |" in text
    assert "GRPO fusion, oracle conversion (upper bound) (seed 1)" in text  # named: no record
    assert "The GRPO runs bought no labels of their own." in text
    assert "cross the wall only to evaluate: **yes**." in text

    # a default arm that crossed for anything but evaluation is called out by name
    seeds[1].walls["grpo-fusion"] = {"crossings": {"oracle: index the world's queries": 1}, "labels_bought": 3}
    text = "\n".join(wall_lines(SimpleNamespace(seeds=seeds, names=names)))
    assert "cross the wall only to evaluate: **no**: oracle: index the world's queries." in text
    assert "The GRPO runs bought labels of their own: GRPO fusion (seed 1) 3." in text


def test_vs_dictionary_is_rendered_and_serialised_by_arm_and_subset():
    """The tuple-keyed ``GridEvaluation.vs_dictionary`` as a table row per (arm, subset) and as JSON arm -> subset."""
    from qrw.evaluate import to_json
    from qrw.reproduce.cli import vs_dictionary_json
    from qrw.reproduce.readings import vs_dictionary_table

    vs = {("grpo-fusion", "all"): entry(-0.03, -0.05, -0.01, before=0.7, n=3000),
          ("grpo-fusion", "unseen"): entry(0.02, -0.01, 0.05, before=0.4, n=120)}
    data = json.loads(to_json({"vs_dictionary": vs_dictionary_json(vs)}))["vs_dictionary"]
    assert set(data) == {"grpo-fusion"} and set(data["grpo-fusion"]) == {"all", "unseen"}
    assert data["grpo-fusion"]["unseen"]["ucvr"]["diff"] == pytest.approx(0.02)
    lines = vs_dictionary_table(SimpleNamespace(vs_dictionary=vs))
    assert lines[2].startswith("| GRPO fusion | all test queries (3000) | 0.700 -> 0.670: -0.0300 [-0.0500, -0.0100] * |")
    assert lines[3].startswith("| GRPO fusion | unseen intents (120) | 0.400 -> 0.420: +0.0200 [-0.0100, +0.0500] |")
    assert vs_dictionary_table(SimpleNamespace(vs_dictionary={})) == []


def test_grpo_section_says_where_it_loses_with_the_numbers():
    """GRPO minus its init and minus the log-fit dictionary: a loss whose interval excludes 0 is listed as a loss,
    a negative difference within noise as behind within noise, a gain in neither."""
    from qrw.reproduce import GRID
    from qrw.reproduce.readings import grpo_lines
    from qrw.scorecard import DROPPED_VALUES, HACKING

    kinds = {n: {h: 5 for h in HACKING} | dict.fromkeys(DROPPED_VALUES, 1) for n in GRID}
    kinds["grpo-fusion"] = {h: 5 for h in HACKING} | {"no category": 9} | dict.fromkeys(DROPPED_VALUES, 1)
    tail = entry(0.01, 0.00, 0.02)
    tail["accuracy"] = {**tail["accuracy"], "diff": -0.04, "low": -0.07, "high": -0.01, "after": 0.46}  # a loss
    tail["ucvr"] = {**tail["ucvr"], "diff": -0.01, "low": -0.03, "high": 0.01, "after": 0.49}  # within noise
    grid = SimpleNamespace(seeds=[SimpleNamespace(kinds=kinds)], names=list(GRID),
                           cmp={("sft-multi", "grpo-fusion"): entry(0.05, 0.02, 0.08)},
                           vs_dictionary={("grpo-fusion", "all"): entry(0.01, 0.005, 0.015), ("grpo-fusion", "tail"): tail})
    lines = grpo_lines(grid)
    assert lines[0].startswith("- *GRPO fusion minus its SFT init (multi-task SFT).*")
    assert "accuracy +0.0500 [+0.0200, +0.0800]" in lines[0] and "no category 5.0 -> 9.0" in lines[0]
    assert "excluding 0: **yes**; no drift count above the init's: **no (no category)**" in lines[0]
    assert lines[1].startswith("- *GRPO fusion minus the log-fit dictionary, all test queries* (10 queries")
    assert "accuracy 0.460 vs 0.500, -0.0400 [-0.0700, -0.0100]" in lines[2]
    assert lines[3] == ("- *Where GRPO fusion loses* (a pooled interval below 0; GRPO fusion vs the other side): "
                        "against the log-fit dictionary on the tail: accuracy 0.460 vs 0.500, -0.0400 [-0.0700, -0.0100].")
    assert lines[4] == ("- *Where it is behind within noise* (a negative difference whose interval includes 0): "
                        "against the log-fit dictionary on the tail: UCVR 0.490 vs 0.500, -0.0100 [-0.0300, +0.0100].")
    grid.vs_dictionary = {}
    grid.cmp = {("sft-multi", "grpo-fusion"): entry(0.05, 0.02, 0.08)}
    assert grpo_lines(grid)[-1] == ("- *Where GRPO fusion loses* (a pooled interval below 0; GRPO fusion vs the other "
                                    "side): nowhere.")


def test_upper_bound_readings():
    """The oracle relevance and oracle conversion arms, and the gold-built relevance pairs, each read from its pair."""
    from qrw.reproduce import GRID, LABELS, regime_lines
    from qrw.scorecard import DROPPED_VALUES, HACKING

    kinds = {n: {h: 5 for h in HACKING} | dict.fromkeys(DROPPED_VALUES, 1) for n in GRID}
    below, unsure = entry(-0.03, -0.05, -0.01), entry(-0.01, -0.03, 0.01)
    grid = SimpleNamespace(seeds=[SimpleNamespace(kinds=kinds)], names=list(GRID),
                           tagging={LABELS["sft-multi"]: 0.61, LABELS["sft-gold-relevance"]: 0.74},
                           cmp={("grpo-oracle", "grpo-fusion"): unsure, ("grpo-oracle-conversion", "grpo-fusion"): below,
                                ("sft-gold-relevance", "sft-multi"): below})
    budget, relevance, conversion = regime_lines(grid)
    assert budget.startswith("- *What the label budget costs.*") and "tagger macro-F1 0.610 vs 0.740" in budget
    assert budget.endswith("interval excluding 0: **yes**.")
    assert relevance.startswith("- *Oracle relevance as an upper bound.*") and relevance.endswith("in: **none**.")
    assert conversion.startswith("- *Oracle conversion as an upper bound.* GRPO fusion with the learned conversion "
                                 "reward (the conversion model fit on the logged sessions)")
    assert conversion.endswith("in: **accuracy, relevance@10, recall@10, UCVR**.")


def test_the_conversion_model_is_held_against_the_simulator_on_each_arms_pages():
    """By hand, one seed of three queries: the means, model - simulator, the correlation over queries, and the lift
    over the init the model predicts (+1/6) beside the one the simulator measures (0)."""
    from qrw.reproduce.readings import conversion_lines

    conversion = {"dictionary": [0.1, 0.1, 0.4], "sft-multi": [0.2, 0.4, 0.6], "grpo-fusion": [0.3, 0.5, 0.9]}
    ucvr = {"dictionary": [0.1, 0.2, 0.3], "sft-multi": [0.2, 0.3, 0.4], "grpo-fusion": [0.2, 0.3, 0.4]}
    seed = SimpleNamespace(seed=0, conversion={k: np.array(v) for k, v in conversion.items()},
                           per_query={k: {"ucvr": np.array(v)} for k, v in ucvr.items()})
    lines = conversion_lines(SimpleNamespace(seeds=[seed], names=["sft-multi", "grpo-fusion"]))
    assert lines[2] == "| dictionary (fit on the logs) | 0.2000 | 0.2000 | +0.0000 | 0.866 |"  # 0.03 / sqrt(0.06 * 0.02)
    assert lines[3] == "| multi-task SFT | 0.4000 | 0.3000 | +0.1000 | 1.000 |"
    assert lines[4] == "| GRPO fusion | 0.5667 | 0.3000 | +0.2667 | 0.982 |"  # 0.06 / sqrt(0.1867 * 0.02)
    assert lines[-1].startswith("| GRPO fusion minus multi-task SFT | +0.1667 [") and lines[-1].endswith(
        "| +0.0000 [+0.0000, +0.0000] |")


def test_gate_lines_show_the_logged_out_of_domain_searches():
    """The threshold with each val set's pick, the val shares of both sets, the logged searches served on test by
    query and by traffic."""
    from qrw.reproduce.report import gate_lines

    diff = {"lift": 0.0, "low": -0.01, "high": 0.01}
    gate = {"threshold": 0.62, "chosen": {"target": 0.05, "thresholds": {"logged": 0.62, "unseen": 0.4},
                                          "ood_served": 0.01, "ood_logged_served": 0.05},
            "ood": {"served_off": 1.0, "served_on": 0.02, "query_passed": 1.0},
            "ood_logged": {"n": 40, "served_off": 1.0, "served_on": 0.075, "served_on_traffic": 0.125,
                           "query_passed": 1.0},
            "in_domain": {"served": {"all": 0.8}, "query_passed": 1.0, "by_grade": {"2": {"served": 0.9}},
                          "diff": {m: diff for m in ("relevance", "recall", "ucvr")}}}
    grid = SimpleNamespace(seeds=[SimpleNamespace(seed=3, gates={"sft-multi": gate}, query_gates={})])
    lines = gate_lines(grid)
    assert "the threshold is the **largest of the two picks**" in lines[0] and "at most 5.0% of them" in lines[0]
    assert lines[-1].startswith("| 3 | multi-task SFT | none | 0.6200 (0.6200 / 0.4000) | 5.0% / 1.0% | "
                                "100.0% -> 7.5% (12.5%) | 100.0% -> 2.0% | - | 80.0% | - / - / 90% |")
    assert lines[-1].endswith(" | no / yes |")  # 12.5% of the logged traffic served; no in-domain cost
    gate["ood_logged"]["served_on_traffic"] = 0.09
    gate["in_domain"]["diff"]["ucvr"] = {"lift": -0.02, "low": -0.03, "high": -0.01}
    assert gate_lines(grid)[-1].endswith(" | yes / no |")


def test_a_grid_split_across_calls_trains_each_seed_once(tmp_path, monkeypatch):
    """``--seed 1 --seeds 1 --train-only`` trains seed 1 only and writes no report; a later ``--seeds 3`` call trains
    only what is missing; a finished run from before the wall (no ``wall`` record) is retrained."""
    import dataclasses

    import qrw.reproduce.grid as grid
    from qrw.reproduce import main
    from qrw.sft import DEFAULT_LABEL, DEFAULT_PRETRAIN, DEFAULT_SFT
    from qrw.update import GRPOConfig

    trained = []
    today = {"train_sft.py": {"pretrain": dataclasses.asdict(DEFAULT_PRETRAIN), "sft": dataclasses.asdict(DEFAULT_SFT),
                              "label": dataclasses.asdict(DEFAULT_LABEL) | {"steps": 0}, "run": {"dtype": "fp32"}},
             "train_grpo.py": {"grpo": dataclasses.asdict(GRPOConfig()), "run": {"dtype": "fp32"}}}

    def fake_run(cmd, cwd, stdout, stderr, env):
        out = cmd[cmd.index("--out") + 1]
        trained.append((int(cmd[cmd.index("--seed") + 1]), out.rsplit("/", 1)[1]))
        Path(out).mkdir(parents=True)
        (Path(out) / "metrics.json").write_text(json.dumps({"train_seconds": 2.0, "wall": {}}))
        (Path(out) / "config.json").write_text(json.dumps(today[cmd[1]]))  # trained with today's recipe
        return SimpleNamespace(returncode=0)

    monkeypatch.setattr(grid.subprocess, "run", fake_run)
    out, results = tmp_path / "grid", tmp_path / "RESULTS.md"
    common = ["--arms", "grpo-fusion", "--out", str(out), "--results", str(results), "--train-only"]
    assert main(["--seed", "1", "--seeds", "1", *common]) == 0
    assert trained == [(1, "sft-multi"), (1, "grpo-fusion")] and not results.exists()
    trained.clear()
    plant(out, 2, "sft-multi", None)  # a finished run of the old regime
    assert main(["--seeds", "3", *common]) == 0
    assert trained == [(0, "sft-multi"), (0, "grpo-fusion"), (2, "sft-multi"), (2, "grpo-fusion")]
    trained.clear()
    assert main(["--seeds", "3", *common]) == 0 and trained == []  # everything reused


def test_grpo_arms_end_to_end(tmp_path, smoke_sft_run, monkeypatch, capsys):
    """``--smoke --arms grpo-fusion,grpo-oracle-conversion``: the report opens with the wall (the SFT run's labels,
    the oracle arm's crossing), compares the arms with the log-fit dictionary, reads the oracle-conversion bound,
    and results.json holds the same."""
    from qrw.reproduce import main

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out, results = tmp_path / "grid", tmp_path / "RESULTS.md"
    shutil.copytree(smoke_sft_run, out / "seed-0" / "sft-multi")
    assert main(["--smoke", "--arms", "grpo-fusion,grpo-oracle-conversion", "--out", str(out),
                 "--results", str(results), "--device", "cpu"]) == 0
    capsys.readouterr()
    text = results.read_text()
    data = json.loads((out / "results.json").read_text())
    walls = data["wall_by_seed"]["0"]
    sft = json.loads((out / "seed-0" / "sft-multi" / "metrics.json").read_text())["wall"]
    assert walls["sft-multi"] == sft and sft["labels_bought"] > 0
    assert text.index("## The wall: what of the hidden truth training used") < text.index("## All queries")
    assert f"| multi-task SFT | 0 | {sft['labels_bought']:,} | {sft['stage1_labelling']['labels_bought']:,} |" in text
    oracle = walls["grpo-oracle-conversion"]["crossings"]
    assert list(oracle) == ["upper-bound arm: conversion-judge oracle"] and walls["grpo-fusion"]["crossings"] == {}
    assert f"| GRPO fusion, oracle conversion (upper bound) | {next(iter(oracle))} | {oracle[next(iter(oracle))]} |" in text
    assert "cross the wall only to evaluate: **yes**." in text
    assert "| gold-dictionary (upper bound) | " in text and "## Unseen intents" in text
    assert set(data["vs_dictionary"]) == {"sft-multi", "grpo-fusion"}
    assert set(data["vs_dictionary"]["grpo-fusion"]) <= {"all", "tail", "unseen"} and data["n_unseen"] >= 0
    c = data["vs_dictionary"]["grpo-fusion"]["all"]["accuracy"]
    assert c["n"] == json.loads((out / "seed-0" / "sft-multi" / "metrics.json").read_text())["n_queries"]
    assert f"| GRPO fusion | all test queries ({c['n']}) | {c['before']:.3f} -> {c['after']:.3f}: " in text
    assert "- *GRPO fusion minus its SFT init (multi-task SFT).*" in text and "- *Where GRPO fusion loses*" in text
    assert "grpo-fusion minus grpo-oracle-conversion" in data["comparisons"]
    assert "- *Oracle conversion as an upper bound.*" in text
    conv = data["conversion_model_by_seed"]["0"]["grpo-fusion"]
    assert conv["simulator"] == pytest.approx(data["rows_by_seed"]["0"]["GRPO fusion"]["all"]["ucvr"], abs=1e-9)
    assert f"| GRPO fusion | {conv['model']:.4f} | {conv['simulator']:.4f} | " in text
    assert "| GRPO fusion minus multi-task SFT | " in text.split("## The learned conversion reward")[1]
    gate = data["gate_by_seed"]["0"]["grpo-fusion"]
    assert gate["threshold"] == max(gate["chosen"]["thresholds"].values())
    assert np.isfinite(gate["chosen"]["ood_served"])
