"""End to end: train_sft.py and train_grpo.py on --smoke configs (run directories, exact resume, errors)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train_grpo
import train_sft
from qrw.config import NonFiniteLossError

ROOT = Path(__file__).resolve().parents[1]
# a world even smaller than --smoke's, so that four SFT runs fit in seconds
TINY = ["--smoke", "--quiet", "--n-products", "120", "--n-train-queries", "150", "--n-val-queries", "20",
        "--n-test-queries", "30", "--n-log-sessions", "200"]


def weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "ckpt.pt", weights_only=True)["model"]


def assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def training_records(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock fields."""
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        out.append({k: v for k, v in rec.items() if not k.startswith("seconds")})
    return out


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "sft"
    assert train_sft.main(TINY + ["--out", str(out)]) == 0
    return out


def test_sft_smoke_writes_a_complete_run_directory(sft_run):
    for name in ("config.json", "tokenizer.json", "ckpt.pt", "metrics.jsonl", "metrics.json"):
        assert (sft_run / name).is_file(), name
    metrics = json.loads((sft_run / "metrics.json").read_text())
    assert set(metrics["rows"]) == {"no rewrite", "dictionary", "gold-dictionary (upper bound)", "gold",
                                    "multi-task SFT"}
    assert metrics["wall"]["labels_bought"] > 0  # the relevance pairs were bought through the annotation door
    assert 0.0 <= metrics["tagging"]["tag_macro_f1"] <= 1.0
    stages = {rec["stage"] for rec in training_records(sft_run)}
    assert stages == {"pretrain", "sft"}


def test_sft_resume_is_bitwise_exact(sft_run, tmp_path):
    """Stopped mid stage 0, then mid stage 1, then resumed: the same weights and log as one run."""
    out = tmp_path / "resumed"
    assert train_sft.main(TINY + ["--out", str(out), "--stop-after", "5"]) == 0
    assert torch.load(out / "ckpt.pt", weights_only=True)["stage"] == "pretrain"
    assert train_sft.main(["--resume", "--quiet", "--out", str(out), "--stop-after", "6"]) == 0
    state = torch.load(out / "ckpt.pt", weights_only=True)
    assert (state["stage"], state["step"]) == ("sft", 3)
    assert train_sft.main(["--resume", "--quiet", "--out", str(out)]) == 0
    assert_bitwise_equal(weights(out), weights(sft_run))
    assert training_records(out) == training_records(sft_run)


def test_grpo_smoke_and_exact_resume(sft_run, tmp_path):
    """A GRPO run writes its directory; stopped after 2 steps and resumed, it ends bitwise equal."""
    common = ["--smoke", "--quiet", "--init", str(sft_run), "--steps", "4"]
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    assert train_grpo.main(common + ["--out", str(full)]) == 0
    for name in ("config.json", "tokenizer.json", "ckpt.pt", "metrics.jsonl", "metrics.json"):
        assert (full / name).is_file(), name
    records = training_records(full)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for key in ("reward_fused_mean", "reward_relevance_std", "zero_spread_frac", "adv_abs_mean", "loss", "kl",
                "clip_frac_low", "clip_frac_high", "ratio_mean", "entropy", "length_mean", "truncated_frac",
                "lr", "grad_norm"):
        assert key in records[-1], key
    metrics = json.loads((full / "metrics.json").read_text())
    assert {"SFT init", "GRPO (fusion)"} <= set(metrics["rows"])
    assert train_grpo.main(common + ["--out", str(resumed), "--stop-after", "2"]) == 0
    assert torch.load(resumed / "ckpt.pt", weights_only=True)["step"] == 2
    assert train_grpo.main(["--resume", "--quiet", "--out", str(resumed)]) == 0
    assert_bitwise_equal(weights(resumed), weights(full))
    assert training_records(resumed) == records


def test_grpo_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(sft_run, tmp_path, monkeypatch):
    import qrw.update as loop

    real_update = loop.grpo_update
    calls = {"n": 0}

    def update_that_blows_up(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise NonFiniteLossError("non-finite loss nan; optimizer not stepped")
        return real_update(*args, **kwargs)

    monkeypatch.setattr(loop, "grpo_update", update_that_blows_up)
    out = tmp_path / "nan"
    with pytest.raises(NonFiniteLossError, match="grpo step 3.*last good checkpoint"):
        train_grpo.main(["--smoke", "--quiet", "--init", str(sft_run), "--steps", "4", "--ckpt-every", "2",
                         "--out", str(out)])
    assert torch.load(out / "ckpt.pt", weights_only=True)["step"] == 2


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("script,flags,message", [
    ("train_sft.py", ["--sft-lr", "-1"], "learning rate must be > 0"),
    ("train_sft.py", ["--pretrain-batch-size", "0"], "batch size must be >= 1"),
    ("train_sft.py", ["--bogus"], "unrecognized arguments"),
    ("train_grpo.py", ["--group-size", "1"], "--group-size must be >= 2"),
    ("train_grpo.py", ["--clip-low", "0"], "--clip-low must be > 0"),
    ("train_grpo.py", ["--loss-type", "ppo"], "invalid choice"),
    ("train_grpo.py", ["--reward", "clicks"], "invalid choice"),
    ("train_grpo.py", ["--init", "/nonexistent/run", "--out", "/nonexistent/out"], "no run directory at /nonexistent/run"),
])
def test_bad_settings_give_one_line_errors(script, flags, message):
    result = run_cli(script, *flags)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_mismatched_checkpoint_is_a_one_line_error(sft_run, tmp_path):
    """An SFT run whose tokenizer.json was swapped: named as such, no traceback."""
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(sft_run, broken)
    tok = json.loads((broken / "tokenizer.json").read_text())
    (broken / "tokenizer.json").write_text(json.dumps(tok, indent=1))  # same vocabulary, other bytes
    result = run_cli("train_grpo.py", "--init", str(broken), "--steps", "1", "--out", str(tmp_path / "g"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: checkpoint {broken / 'ckpt.pt'} was trained with another tokenizer than the run's tokenizer.json"]
    (broken / "ckpt.pt").write_bytes((broken / "ckpt.pt").read_bytes()[:1000])
    result = run_cli("train_grpo.py", "--init", str(broken), "--steps", "1", "--out", str(tmp_path / "g"))
    assert result.returncode == 2 and "corrupted or truncated checkpoint" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
