"""``python -m qrw.bench compare``: the weight mapping, the bf16 wrapper, the shared prompts, the CLI.

The timings themselves are not tested (a benchmark measures, a test checks); the end-to-end test only
checks that a tiny run produces every row with consistent numbers.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qrw.bench.compare import INSTALL_HINT, SHAPES, _row
from qrw.bench.compare_hf import autocast_forward, hf_llama, lm_loss, max_logit_difference, qrw_from_hf
from qrw.bench.compare_trl import IdRewriter, text_length_reward, word_tokenizer
from qrw.lm.generate import Rollout

ROOT = Path(__file__).resolve().parents[1]


def test_hf_weights_mapped_one_to_one_give_the_same_logits():
    pytest.importorskip("transformers")
    hf = hf_llama(SHAPES["tiny"], seed=0)
    model = qrw_from_hf(hf, SHAPES["tiny"])
    assert model.lm_head.weight is model.embed_tokens.weight  # still tied after loading
    assert max_logit_difference(hf, model, seed=1) < 1e-5
    # the check has teeth: a mapping that swaps one layer's q and k projections is caught
    layer = model.layers[1].self_attn
    with torch.no_grad():
        q = layer.q_proj.weight.clone()
        layer.q_proj.weight.copy_(layer.k_proj.weight)
        layer.k_proj.weight.copy_(q)
    assert max_logit_difference(hf, model, seed=1) > 1e-4


def test_the_training_step_loss_is_hfs_loss_and_the_mean_by_hand():
    pytest.importorskip("transformers")
    hf = hf_llama(SHAPES["tiny"], seed=0)
    model = qrw_from_hf(hf, SHAPES["tiny"])
    ids = torch.randint(0, 256, (3, 7))
    ours = lm_loss(model, ids)
    assert torch.allclose(ours, hf(input_ids=ids, labels=ids).loss, atol=1e-6)
    # by hand: the mean over the 3 * 6 next-token predictions; the last position predicts nothing
    logp = torch.log_softmax(model(ids), -1)  # (3, 7, V)
    by_hand = -torch.stack([logp[b, t, ids[b, t + 1]] for b in range(3) for t in range(6)]).mean()
    assert torch.allclose(ours, by_hand, atol=1e-6)
    # and its gradient is HF's
    ours.backward()
    hf(input_ids=ids, labels=ids).loss.backward()
    assert torch.allclose(model.layers[0].mlp.up_proj.weight.grad, hf.model.layers[0].mlp.up_proj.weight.grad,
                          atol=1e-6)


def test_autocast_forward_runs_both_models_in_bf16_and_restores_them():
    pytest.importorskip("transformers")
    hf = hf_llama(SHAPES["tiny"], seed=0).eval()
    model = qrw_from_hf(hf, SHAPES["tiny"]).eval()
    seen = []
    # a block's projection: bf16 under autocast (qrw keeps its LM head in float32 on purpose: qrw.lm.precision)
    model.layers[0].mlp.down_proj.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    ids = torch.randint(0, 200, (2, 5))
    with torch.no_grad(), autocast_forward([model, hf], torch.bfloat16, "cpu"):
        assert hf(ids).logits.dtype == torch.bfloat16
        model(ids)
        # HF's generate reads the forward's signature to pick its arguments: the wrapper keeps it
        assert "logits_to_keep" in inspect.signature(hf.forward).parameters
    assert seen == [torch.bfloat16]
    assert "forward" not in hf.__dict__ and "forward" not in model.__dict__  # the class's forward again
    with torch.no_grad(), autocast_forward([model, hf], torch.float32, "cpu"):
        assert hf(ids).logits.dtype == torch.float32


def test_trl_and_qrw_see_the_same_prompt_ids_and_completion_text():
    pytest.importorskip("transformers")
    V = 10  # t0..t7, <pad> = 8, <eos> = 9
    tok = word_tokenizer(V)
    assert tok("t3 t0 t7")["input_ids"] == [3, 0, 7]
    model = qrw_from_hf(hf_llama(dict(SHAPES["tiny"], vocab_size=V), seed=0), dict(SHAPES["tiny"], vocab_size=V))
    rewriter = IdRewriter(model, max_new_tokens=4)
    assert rewriter.prompts(["t3 t0 t7"]) == [[3, 0, 7]]
    tokens = torch.tensor([[5, 9, 8, 8], [1, 2, 3, 4]])  # row 0: EOS then pad; row 1: cut at 4 tokens
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    rollout = Rollout(tokens, mask, torch.zeros(2, 4), torch.tensor([0, 0]))
    texts = rewriter.decode_rollout(rollout)
    assert texts == ["t5", "t1 t2 t3 t4"]
    assert texts == tok.batch_decode([[5, 9], [1, 2, 3, 4]], skip_special_tokens=True)  # what TRL's reward sees
    assert rewriter.well_formed(rollout) == [True, False]
    assert text_length_reward(texts) == [2.0, 11.0]


def test_qrw_grpo_step_of_the_trl_workload_runs_without_trl():
    """The qrw side of the GRPO workload (sample_groups through IdRewriter, update_policy) needs no TRL: one step
    samples G completions per prompt and moves the weights."""
    from qrw.bench.compare_hf import Sizes
    from qrw.bench.compare_trl import grpo_prompts, qrw_grpo_step
    from qrw.lm.model import ModelConfig, Transformer

    torch.manual_seed(0)
    model = Transformer(ModelConfig(**SHAPES["tiny"]))
    sizes = Sizes(grpo_prompts=2, grpo_group=3, grpo_prompt_len=4, grpo_new_tokens=5)
    prompts = grpo_prompts(SHAPES["tiny"]["vocab_size"], sizes, steps=1, seed=0)
    assert len(prompts) == 2 and all(len(p.split()) == 4 for p in prompts)
    step, (policy, reference) = qrw_grpo_step(model, sizes, prompts, torch.device("cpu"), seed=0)
    before = policy.lm_head.weight.detach().clone()
    step(0)
    assert not torch.equal(before, policy.lm_head.weight) and policy is not reference


def test_rows_report_ratios_as_qrw_speed_over_theirs():
    rate = _row("generate", "fp32", "tokens/s", 300.0, 100.0, flops=2e9)
    assert rate["ratio"] == 3.0 and rate["qrw_gflops"] == 600.0 and rate["theirs_gflops"] == 200.0
    seconds = _row("grpo_step", "fp32", "s", 0.5, 0.75, flops=3e9)
    assert seconds["ratio"] == 1.5 and seconds["qrw_gflops"] == 6.0 and seconds["theirs_gflops"] == 4.0


def run_without(module: str, *args: str) -> subprocess.CompletedProcess:
    """``python -m qrw.bench compare ARGS`` with ``module`` unimportable (``sys.modules[module] = None``)."""
    code = (f"import runpy, sys; sys.modules[{module!r}] = None; "
            f"sys.argv = ['qrw.bench', 'compare', *{list(args)!r}]; runpy.run_module('qrw.bench', run_name='__main__')")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("module, args", [("transformers", ()), ("trl", ("--workloads", "grpo"))])
def test_without_the_bench_extra_the_command_says_so_in_one_line(module, args):
    result = run_without(module, "--shape", "tiny", *args)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [f"error: {INSTALL_HINT}"]
    assert "pip install -e .[bench]" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_quick_tiny_run_prints_and_writes_every_row(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("trl")
    out = tmp_path / "compare.json"
    result = subprocess.run([sys.executable, "-m", "qrw.bench", "compare", "--shape", "tiny", "--quick",
                             "--threads", "1", "--json", str(out)], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "max |logit difference|" in result.stdout and "matmul GFLOP/s: fp32" in result.stdout
    data = json.loads(out.read_text())
    assert data["max_logit_difference"] < 1e-4 and data["repeats"] == 2
    rows = {(r["workload"], r["dtype"]): r for r in data["rows"]}
    assert set(rows) == {(w, d) for w in ("generate", "train_step", "forward_backward", "grpo_step")
                         for d in ("fp32", "bf16")}
    for r in rows.values():
        assert r["qrw"] > 0 and r["theirs"] > 0
        expected = r["theirs"] / r["qrw"] if r["unit"] == "s" else r["qrw"] / r["theirs"]
        assert r["ratio"] == pytest.approx(expected)
    assert set(data["matmul_gflops"]) == {"fp32", "bf16"} and data["flops"]["train_per_token"] > 0
