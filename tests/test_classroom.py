"""--classroom: the presets of train_sft.py and train_grpo.py are what their dicts say; it excludes --smoke."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

import train_grpo
import train_sft
from qrw.config import UserError, config_from_args
from qrw.sft import DEFAULT_SFT
from qrw.update import GRPOConfig

ROOT = Path(__file__).resolve().parents[1]


def test_the_sft_preset_is_classroom_over_the_defaults():
    configs = train_sft.build_configs(train_sft.parse_args(["--classroom"]))
    for name, values in train_sft.CLASSROOM.items():
        for field, value in values.items():
            assert getattr(configs[name], field) == value, (name, field)
    assert configs["sft"].weight_decay == DEFAULT_SFT.weight_decay  # what the preset leaves is the default's
    assert configs["run"].rewrite_data == "mined" and configs["run"].tasks == "rewrite,relevance"
    assert configs["label"].steps == 0
    assert train_sft.parse_args(["--classroom"]).out == "runs/classroom-sft"
    assert train_sft.parse_args([]).out == "runs/sft"
    flags = train_sft.build_configs(train_sft.parse_args(["--classroom", "--sft-steps", "7", "--seed", "3"]))
    assert flags["sft"].steps == 7 and flags["world"].seed == 3  # a flag given beats the preset
    assert flags["world"].n_products == train_sft.CLASSROOM["world"]["n_products"]


def test_the_grpo_preset_keeps_the_default_recipe():
    args = train_grpo.parse_args(["--classroom"])
    assert train_grpo.preset_of(args) == "classroom"
    grpo = config_from_args(GRPOConfig, args, base=GRPOConfig(**train_grpo.CLASSROOM_GRPO))
    default = GRPOConfig()
    for field in dataclasses.fields(GRPOConfig):
        expected = train_grpo.CLASSROOM_GRPO.get(field.name, getattr(default, field.name))
        assert getattr(grpo, field.name) == expected, field.name
    assert grpo.beta == default.beta > 0  # the KL stays: only sizes and step counts change
    _, init, out = train_grpo.PRESETS["classroom"]
    assert (init, out) == ("runs/classroom-sft", "runs/classroom-grpo")


@pytest.mark.parametrize("script", [train_sft, train_grpo])
def test_classroom_with_smoke_is_refused_in_one_line(script, tmp_path):
    with pytest.raises(UserError, match="--smoke and --classroom"):
        script.main(["--classroom", "--smoke", "--out", str(tmp_path / "run"), "--device", "cpu"])
    assert not (tmp_path / "run").exists()
    name = Path(script.__file__).name
    done = subprocess.run([sys.executable, name, "--smoke", "--classroom", "--out", str(tmp_path / "run")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "error: --smoke and --classroom are two presets: pass one of them"]
