"""Precision: the explicit CPU attention, the --dtype choice, and bf16 training and sampling.

fp32 keeps every bitwise guarantee of the other tests (they run in fp32); here bf16
is shown to run, stay finite and stay close to fp32, and ``auto`` to decide as documented.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from qrw.config import UserError
from qrw.lm.generate import sample
from qrw.lm.model import ModelConfig, Transformer, attention, attention_mask_4d
from qrw.lm.precision import cpu_has_fast_bf16, resolve_dtype, set_precision


def test_explicit_attention_equals_sdpa_with_and_without_mask():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 5, 8), torch.randn(3, 2, 5, 8), torch.randn(3, 2, 5, 8)
    assert torch.allclose(attention(q, k, v, None), F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-6)
    key_mask = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 1, 1]], dtype=torch.bool)
    mask = attention_mask_4d(key_mask, 0, 5)  # (B, 1, T, S)
    assert torch.allclose(attention(q, k, v, mask), F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-6)
    # decoding: 1 query at the end of 5 cached keys, causal = every key
    q1 = q[:, :, -1:]
    assert torch.allclose(attention(q1, k, v, None), F.scaled_dot_product_attention(q1, k, v), atol=1e-6)


def test_attention_by_hand():
    q = torch.tensor([[[[1.0, 0.0]], ]])  # (1, 1, 1, 2)
    k = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])  # (1, 1, 2, 2)
    v = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    w = torch.softmax(torch.tensor([1 / math.sqrt(2), 0.0]), 0)  # scores q.k / sqrt(D)
    expected = w[0] * v[0, 0, 0] + w[1] * v[0, 0, 1]
    assert torch.allclose(attention(q, k, v, None)[0, 0, 0], expected, atol=1e-6)
    only_first = torch.tensor([[[[True, False]]]])
    assert torch.allclose(attention(q, k, v, only_first)[0, 0, 0], v[0, 0, 0])


def test_cpu_flags_and_auto():
    assert cpu_has_fast_bf16("processor : 0\nflags : fpu sse avx512f avx512_bf16\n")
    assert cpu_has_fast_bf16("flags\t\t: fpu amx_bf16 amx_tile\n")
    assert not cpu_has_fast_bf16("flags : fpu sse avx2 avx512f\n")
    assert not cpu_has_fast_bf16("")
    assert resolve_dtype("fp32", "cpu") == "fp32" and resolve_dtype("bf16", "cpu") == "bf16"
    assert resolve_dtype("auto", "cpu") == ("bf16" if cpu_has_fast_bf16() else "fp32")
    with pytest.raises(UserError, match="--dtype must be one of"):
        resolve_dtype("fp16", "cpu")
    with pytest.raises(UserError, match="resolve 'auto' first"):
        set_precision(Transformer(ModelConfig.preset("tiny", 64)), "auto")


def test_bf16_forward_close_to_fp32_and_logits_float32():
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("tiny", 64)).eval()
    ids = torch.randint(0, 64, (4, 12))
    mask = torch.ones(4, 12, dtype=torch.bool)
    mask[1, :3] = False
    fp32 = model(ids, attention_mask=mask)
    bf16 = set_precision(model, "bf16")(ids, attention_mask=mask)
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16).all()
    assert not torch.equal(bf16, fp32)  # the matmuls really ran in bf16
    real = mask[:, :, None].expand_as(fp32)
    assert (bf16 - fp32)[real].abs().max() < 0.05 * fp32[real].abs().max()
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32


def test_bf16_training_step_and_sampling_stay_finite():
    torch.manual_seed(0)
    model = set_precision(Transformer(ModelConfig.preset("tiny", 64)), "bf16")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = torch.randint(0, 64, (8, 16))
    losses = []
    for _ in range(20):
        logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, 64), ids[:, 1:].reshape(-1))
        loss.backward()
        assert all(torch.isfinite(p.grad).all() and p.grad.dtype == torch.float32 for p in model.parameters())
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0] - 0.5  # it learns
    model.eval()
    rollout = sample(model, [[1, 2, 3], [4, 5]], num_samples=4, max_new_tokens=8, temperature=1.0, eos_id=63,
                     pad_id=0, generator=torch.Generator().manual_seed(0))
    assert rollout.logprobs.dtype == torch.float32
    assert torch.isfinite(rollout.logprobs).all() and (rollout.logprobs <= 0).all()


def test_bf16_smoke_runs_record_the_dtype_and_stay_finite(tmp_path):
    import train_grpo
    import train_sft

    sft = tmp_path / "sft"
    assert train_sft.main(["--smoke", "--quiet", "--dtype", "bf16", "--out", str(sft)]) == 0
    assert json.loads((sft / "config.json").read_text())["run"]["dtype"] == "bf16"
    records = [json.loads(line) for line in (sft / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) for r in records if "loss" in r)
    grpo = tmp_path / "grpo"
    assert train_grpo.main(["--smoke", "--quiet", "--dtype", "bf16", "--init", str(sft), "--out", str(grpo)]) == 0
    assert json.loads((grpo / "config.json").read_text())["run"]["dtype"] == "bf16"
    steps = [json.loads(line) for line in (grpo / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["reward_fused_mean"]) for r in steps)
    assert all(r["loss"] is None or math.isfinite(r["loss"]) for r in steps)
    assert all(r["kl"] is None or math.isfinite(r["kl"]) for r in steps)


def test_smoke_defaults_to_fp32(smoke_sft_run):
    assert json.loads((smoke_sft_run / "config.json").read_text())["run"]["dtype"] == "fp32"


def test_bf16_sampler_logprobs_equal_a_rescoring_forward():
    """GRPO's pi_old is the sampler's log-probs: in bf16 they must still match a re-scoring forward
    (the head and the log-softmax are float32; measured gap ~5e-7 on the tiny preset)."""
    from qrw.rollout import RolloutBatch, rollout_logprobs

    torch.manual_seed(0)
    model = set_precision(Transformer(ModelConfig.preset("tiny", vocab_size=64)).eval(), "bf16")
    prompts = [[2, 3, 4], [5], [6, 7]]
    out = sample(model, prompts, num_samples=4, max_new_tokens=6, temperature=0.8, eos_id=63, pad_id=0,
                 generator=torch.Generator().manual_seed(1))
    batch = RolloutBatch.from_completions(prompts, out.tokens, 4, pad_id=0, eos_id=63, mask=out.mask)
    rescored = rollout_logprobs(model, batch, temperature=0.8)  # (N, L)
    mask = out.mask > 0
    torch.testing.assert_close(out.logprobs[mask], rescored[mask], rtol=0, atol=1e-3)


def test_bench_profile_runs_every_stage(smoke_sft_run, capsys):
    """python -m qrw.bench profile on a finished run: one row per stage, shares in [0, 1], FLOPs counted."""
    from qrw.bench.cli import matmul_gflops
    from qrw.bench.profile import bench_profile

    rows = bench_profile(str(smoke_sft_run), ["fp32"], steps=1, matmul_gflops=matmul_gflops)
    assert [r["stage"] for r in rows] == ["stage 0 step", "stage 1 step", "GRPO rollout", "GRPO reference scoring",
                                          "GRPO update"]
    assert all(0 < r["matmul_share"] <= 1 and r["flops"] > 0 and r["seconds"] > 0 for r in rows)
    assert "of machine" in capsys.readouterr().out


def test_an_fp32_model_follows_the_callers_autocast():
    """compute_dtype None must not switch off an autocast context the caller opened (it did once)."""
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("tiny", 64)).eval()
    seen = []
    model.layers[0].mlp.down_proj.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    ids = torch.randint(0, 64, (2, 6))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(ids)
    model(ids)
    assert seen == [torch.bfloat16, torch.float32] and logits.dtype == torch.float32
