"""The flag surface: ``--help`` lists the flags a user touches first, ``--help-all`` every flag, advanced flags work.

A config field declared ``arg(..., advanced=True)`` (or a whole config passed to
``add_config_args`` as advanced) is left out of ``--help``, which ends with a
line counting the flags it left out; ``--help-all`` lists them all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

import train_grpo
import train_sft
from qrw.config import Parser, add_config_args, arg, config_from_args
from qrw.rewards import RewardConfig
from qrw.update import GRPOConfig, grpo_config_from_saved

SFT_TEACHER = {"--out", "--device", "--smoke", "--resume", "--seed", "--tasks", "--pretrain", "--rewrite-data",
               "--pretrain-steps", "--sft-steps"}
GRPO_TEACHER = {"--out", "--device", "--smoke", "--resume", "--init", "--seed", "--steps", "--queries-per-step",
                "--group-size", "--lr", "--beta", "--loss-type", "--mu", "--reward", "--relevance-judge",
                "--aggregation"}
SFT_ADVANCED = {"--pretrain-lr", "--sft-warmup-steps", "--sft-batch-size", "--label-steps", "--sft-log-every",
                "--sft-ckpt-every", "--n-products", "--p-typo", "--preset", "--dtype", "--stop-after", "--quiet"}
GRPO_ADVANCED = {"--temperature", "--warmup-steps", "--weight-decay", "--clip-low", "--clip-high", "--scale",
                 "--minibatch-size", "--dynamic-sampling", "--log-every", "--ckpt-every", "--w-relevance", "--rules",
                 "--dtype", "--stop-after", "--quiet"}


def help_text(parse_args, flag: str, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        parse_args([flag])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def listed_flags(text: str) -> set[str]:
    """The flags a help text documents (one per option line: ``  --flag ...`` or ``  --flag, --no-flag``)."""
    return set(re.findall(r"^  (--[a-z0-9-]+)", text, flags=re.M))


@pytest.mark.parametrize("script, teacher, advanced", [(train_sft, SFT_TEACHER, SFT_ADVANCED),
                                                       (train_grpo, GRPO_TEACHER, GRPO_ADVANCED)])
def test_help_shows_the_teacher_flags_and_help_all_every_flag(script, teacher, advanced, capsys):
    short = help_text(script.parse_args, "--help", capsys)
    full = help_text(script.parse_args, "--help-all", capsys)
    shown, every = listed_flags(short) - {"--help-all"}, listed_flags(full) - {"--help-all"}
    assert teacher <= shown and not shown & advanced  # the teacher's flags, none of the advanced ones
    assert advanced <= every and shown < every
    hidden = len(every - shown)
    assert short.rstrip().endswith(f"{hidden} advanced flags: see --help-all")
    assert "advanced flags: see --help-all" not in full
    for flag in advanced:  # not in the usage line either
        assert f"[{flag}" not in short and f"[{flag}" in full


def test_advanced_flags_still_set_the_config():
    args = train_sft.parse_args(["--pretrain-lr", "0.002", "--n-products", "300", "--sft-log-every", "7"])
    configs = train_sft.build_configs(args)
    assert configs["pretrain"].lr == 0.002 and configs["world"].n_products == 300 and configs["sft"].log_every == 7
    args = train_grpo.parse_args(["--clip-high", "0.28", "--scale", "group", "--w-format", "0.25", "--beta", "0.1"])
    assert config_from_args(GRPOConfig, args).clip_high == 0.28
    assert config_from_args(GRPOConfig, args).scale == "group" and config_from_args(GRPOConfig, args).beta == 0.1
    assert config_from_args(RewardConfig, args).w_format == 0.25


def test_the_marker_on_a_field_a_whole_config_and_shown_fields(capsys):
    @dataclass
    class Knobs:
        first: int = arg(1, "a first flag")
        deep: float = arg(2.0, "an advanced knob", advanced=True)
        toggle: bool = arg(False, "an advanced switch", advanced=True)

    p = Parser(prog="knobs")
    p.add_argument("--quiet", action="store_true", help="quiet", advanced=True)
    add_config_args(p, Knobs, group_title="knobs")
    add_config_args(p, Knobs, prefix="stage", group_title="a stage", shown=("first", "toggle"))  # toggle: declared
    add_config_args(p, Knobs, prefix="world", group_title="a world", advanced=True)
    short = help_text(p.parse_args, "--help", capsys)
    assert listed_flags(short) == {"--help-all", "--first", "--stage-first"}
    assert "a world:" not in short  # a group with every flag advanced is left out whole
    assert short.rstrip().endswith("8 advanced flags: see --help-all")  # --toggle/--no-toggle is one flag
    assert len(listed_flags(help_text(p.parse_args, "--help-all", capsys))) == 11
    args = p.parse_args(["--deep", "3", "--no-toggle", "--world-first", "5", "--quiet"])
    assert (args.deep, args.toggle, args.world_first, args.quiet) == (3.0, False, 5, True)
    plain = Parser(prog="plain")  # no advanced flag: no --help-all, no count line
    plain.add_argument("--x", help="x")
    text = help_text(plain.parse_args, "--help", capsys)
    assert "--help-all" not in text and "advanced" not in text


def test_grpo_offers_no_sampling_filter_and_resumes_runs_saved_with_one():
    """--top-k/--top-p were refused when used; now they are not offered. Old runs saved them at 0 and 1."""
    saved = {"steps": 3, "top_k": 0, "top_p": 1.0}
    assert grpo_config_from_saved(saved) == GRPOConfig(steps=3)
    with pytest.raises(SystemExit):
        train_grpo.parse_args(["--top-k", "5"])
