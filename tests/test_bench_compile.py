"""python -m qrw.bench compile: the break-even arithmetic by hand, the defaults read when it runs, and one real
compiled stage on the smoke run: its table, and the compiled model's loss equal to the eager model's.

torch.compile (inductor, a C++ compiler on the CPU) takes tens of seconds even for the tiny model, so only stage 0
is compiled here, on two batches.
"""

import dataclasses
import json
import math
import sys

import pytest
import torch

from qrw.bench.compile import HEADER, default_steps, varied_steps, verdict


def test_verdict_by_hand():
    row = {"eager_s": 1.0, "compiled_s": 0.8, "compile_s": 10.0, "eager_loss": 2.5, "compiled_loss": 2.5 + 1e-6}
    v = verdict(row, 100)  # gain 0.2 s a step: 10 s of compiling are paid back after 50 steps
    assert v["speedup"] == pytest.approx(1.25) and v["break_even"] == pytest.approx(50.0)
    assert v["pays_back"] and v["saved_s"] == pytest.approx(100 * 0.2 - 10) and v["default_steps"] == 100
    assert v["loss_diff"] == pytest.approx(1e-6)
    assert not verdict(row, 40)["pays_back"] and verdict(row, 40)["saved_s"] == pytest.approx(40 * 0.2 - 10)
    assert not verdict(row, 50)["pays_back"]  # break-even must be *below* the stage's steps
    slower = verdict({**row, "compiled_s": 1.25}, 10 ** 6)  # compiled slower: never pays back
    assert math.isinf(slower["break_even"]) and not slower["pays_back"] and slower["speedup"] == pytest.approx(0.8)


def test_the_stages_steps_are_read_when_the_command_runs(monkeypatch):
    import qrw.sft
    from qrw.update import GRPOConfig

    monkeypatch.setattr(qrw.sft, "DEFAULT_PRETRAIN", dataclasses.replace(qrw.sft.DEFAULT_PRETRAIN, steps=7))
    monkeypatch.setattr(qrw.sft, "DEFAULT_SFT", dataclasses.replace(qrw.sft.DEFAULT_SFT, steps=11))
    assert default_steps() == {"pretrain": 7, "sft": 11, "grpo": GRPOConfig().steps}


def test_compiled_stage_0_computes_the_eager_loss(smoke_sft_run, tmp_path, monkeypatch, capsys):
    """The CLI's table for one compiled stage, and the compiled first step's loss equal to an eager model's
    loaded afresh (so the command compiled something, compiled it right, and started it from the run's weights:
    the eager steps before it, at the command's learning rate, move the loss by ~1e-4)."""
    from qrw.bench import cli as bench
    from qrw.sft import DEFAULT_PRETRAIN

    out_json = tmp_path / "compile.json"
    monkeypatch.setattr(sys, "argv", ["qrw.bench", "compile", "--init", str(smoke_sft_run), "--stages", "pretrain",
                                      "--steps", "2", "--json", str(out_json)])
    bench.main()
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) in (4, 5) and "dynamic=True" in lines[0] and "dtype fp32" in lines[0]
    assert [c.strip() for c in lines[1].strip("|").split("|")] == list(HEADER)
    assert set(lines[2]) <= {"|", "-", ":"}
    cells = dict(zip(HEADER, (c.strip() for c in lines[3].strip("|").split("|"))))
    assert cells["stage"] == "stage 0 step" and int(cells["default steps"]) == DEFAULT_PRETRAIN.steps
    assert float(cells["eager s/step"]) > 0 and float(cells["compiled s/step"]) > 0 and int(cells["graphs"]) >= 1
    assert float(cells["compile s"]) > 0  # compiling a forward and backward takes seconds, never nothing
    assert cells["pays back"] == ("yes" if cells["break-even steps"] != "never"
                                  and float(cells["break-even steps"]) < DEFAULT_PRETRAIN.steps else "no")

    (row,) = json.loads(out_json.read_text())["rows"]
    assert row["graphs"] == int(cells["graphs"]) and row["default_steps"] == DEFAULT_PRETRAIN.steps
    assert (len(lines) == 5) == (row["recompiles"] > 0) and row["late_graphs"] == 0
    _, _, steps = varied_steps(str(smoke_sft_run), 0, 2, ["pretrain"])
    eager = steps["pretrain"](0)  # the run's weights, a fresh eager model
    assert row["eager_loss"] == eager  # eager is bitwise reproducible on one thread
    torch.testing.assert_close(row["compiled_loss"], eager, rtol=0, atol=1e-5)
