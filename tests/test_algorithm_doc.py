"""docs/ALGORITHM.md states the defaults the config dataclasses have: this test fails when one changes in code alone."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from qrw.rewards import RewardConfig
from qrw.sft import SFTRunConfig
from qrw.update import GRPOConfig

DOC = Path(__file__).resolve().parents[1] / "docs" / "ALGORITHM.md"
CONFIGS = (GRPOConfig, RewardConfig, SFTRunConfig)


def _default(flag: str):
    name = flag.lstrip("-").replace("-", "_")
    for cls in CONFIGS:
        for f in dataclasses.fields(cls):
            if f.name == name:
                return f.default if f.default is not dataclasses.MISSING else f.default_factory()
    raise AssertionError(f"docs/ALGORITHM.md names {flag}, which no config has")


def _same(stated: str, default) -> bool:
    stated = stated.strip().strip("`")
    if isinstance(default, bool):
        return stated == ("on" if default else "off")
    if default is None:
        return stated.startswith("=")  # "= low": clip_high None means clip_low
    if isinstance(default, (int, float)):
        try:
            return float(stated) == float(default)
        except ValueError:
            return False
    return stated == default


def _table_rows(text: str) -> list[tuple[str, str]]:
    """(flag, stated default) of the hyperparameter table; a cell may name several: `--lr`, `--warmup-steps`."""
    section = text.split("## What each GRPO hyperparameter does", 1)[1].split("\n## ", 1)[0]
    pairs = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`--"):
            continue
        flags = re.findall(r"`(--[a-z-]+)`", cells[0])
        values = [v.strip() for v in cells[1].split(",")]
        assert len(flags) == len(values), line
        pairs += list(zip(flags, values))
    return pairs


def test_the_hyperparameter_table_states_the_config_defaults():
    pairs = _table_rows(DOC.read_text())
    assert len(pairs) >= 15
    wrong = [(flag, stated, _default(flag)) for flag, stated in pairs if not _same(stated, _default(flag))]
    assert not wrong, f"docs/ALGORITHM.md states other defaults than the code: {wrong}"


def test_every_default_stated_in_the_prose_is_the_configs():
    """Phrases like "(`--rewrite-fraction`, default 0.3)" and "(`--beta 0.04`) ... default"."""
    text = DOC.read_text()
    stated = re.findall(r"`(--[a-z-]+)`, default ([0-9.e-]+|on|off)", text)
    assert stated, "the prose states at least one default"
    for flag, value in stated:
        assert _same(value, _default(flag)), (flag, value)


def test_the_check_fails_when_a_default_changes_in_code_alone():
    """The table read against a GRPOConfig whose beta default is not the documented one is caught."""
    pairs = dict(_table_rows(DOC.read_text()))
    assert _same(pairs["--beta"], GRPOConfig().beta)
    assert not _same(pairs["--beta"], 0.0) and not _same(pairs["--dynamic-sampling"], True)
