"""Transformer: parameter count, causality, padding invariance, init loss, overfitting, RoPE, optimizer groups."""

import math
import sys

import pytest
import torch
import torch.nn.functional as F

from qrw.config import UserError
from qrw.lm.model import PRESETS, ModelConfig, Transformer, apply_rope, attention_mask_4d, main, rope_tables

V = 97


def tiny(**overrides) -> Transformer:
    torch.manual_seed(0)
    return Transformer(ModelConfig.preset("tiny", V, **overrides))


def expected_params(c: ModelConfig) -> int:
    """Closed form: embedding + (untied head) + per block (q, k, v, o: 4 d^2; gate, up, down: 3 d d_ff;
    two RMSNorm scales: 2 d) + final RMSNorm d."""
    d = c.d_model
    head = 0 if c.tie_embeddings else c.vocab_size * d
    return c.vocab_size * d + head + c.n_layer * (4 * d * d + 3 * d * c.d_ff + 2 * d) + d


@pytest.mark.parametrize("tie", [True, False])
def test_param_count_closed_form(tie):
    model = tiny(tie_embeddings=tie)
    assert model.num_params() == expected_params(model.config)
    assert (model.lm_head.weight is model.embed_tokens.weight) == tie
    assert not any(name.endswith("bias") for name, _ in model.named_parameters())


def test_preset_sizes():
    sizes = {"cpu": (2048, 1e6, 3e6), "gpu-25m": (8192, 20e6, 30e6), "gpu-100m": (16384, 90e6, 110e6)}
    for name, (vocab, low, high) in sizes.items():
        with torch.device("meta"):  # shapes only, no memory
            model = Transformer(ModelConfig.preset(name, vocab))
        assert model.num_params() == expected_params(model.config)
        assert low <= model.num_params() <= high, (name, model.num_params())
    assert set(PRESETS) == {"tiny", "cpu", "gpu-25m", "gpu-100m"}
    assert ModelConfig() == ModelConfig.preset("cpu", ModelConfig().vocab_size)  # the defaults are the cpu preset


def test_flops_per_token_formula():
    c = tiny().config  # d 32, d_ff 64, 2 layers, V 97
    n_matmul = 2 * (4 * 32 * 32 + 3 * 32 * 64) + 97 * 32
    assert tiny().flops_per_token(seq_len=10) == 6 * n_matmul + 12 * 2 * 32 * 10
    assert tiny().flops_per_token() == 6 * n_matmul + 12 * 2 * 32 * c.max_seq_len


def test_config_validation():
    for bad in (dict(d_model=30, n_head=4), dict(d_model=24, n_head=8), dict(n_layer=0), dict(vocab_size=-1),
                dict(rope_theta=0.0), dict(norm_eps=0.0), dict(init_std=-1.0), dict(max_seq_len=2.5)):
        with pytest.raises(UserError):
            ModelConfig(**bad)
    with pytest.raises(UserError, match="unknown model preset"):
        ModelConfig.preset("huge", 100)
    with pytest.raises(UserError, match="unknown ModelConfig fields"):
        ModelConfig.preset("tiny", 100, n_layers=3)


def test_causality():
    model = tiny()
    x = torch.randint(0, V, (2, 20))
    y = x.clone()
    y[:, 12:] = torch.randint(0, V, (2, 8))
    with torch.no_grad():
        for mask in (None, torch.ones(2, 20, dtype=torch.bool)):  # fused causal kernel and explicit mask path
            a, b = model(x, attention_mask=mask), model(y, attention_mask=mask)
            assert torch.allclose(a[:, :12], b[:, :12], atol=1e-6)
            assert not torch.allclose(a[:, 12:], b[:, 12:], atol=1e-3)


def test_mask_path_equals_fused_path():
    model = tiny()
    x = torch.randint(0, V, (3, 16))
    with torch.no_grad():
        assert torch.allclose(model(x), model(x, attention_mask=torch.ones_like(x, dtype=torch.bool)), atol=1e-5)


def test_left_and_right_padding_match_unpadded():
    model = tiny()
    seqs = [torch.randint(0, V, (n,)) for n in (11, 5, 8)]
    T, pad = 11, 0
    with torch.no_grad():
        alone = [model(s[None])[0] for s in seqs]  # each (n, V)
        for side in ("left", "right"):
            ids = torch.full((3, T), pad)
            mask = torch.zeros(3, T, dtype=torch.bool)
            for i, s in enumerate(seqs):
                cols = slice(T - len(s), T) if side == "left" else slice(0, len(s))
                ids[i, cols], mask[i, cols] = s, True
            logits = model(ids, attention_mask=mask)  # (3, T, V)
            assert torch.isfinite(logits).all()  # pad rows included: no NaN
            for i, s in enumerate(seqs):
                assert torch.allclose(logits[i][mask[i]], alone[i], atol=1e-5), (side, i)


def test_attention_mask_by_hand():
    key_mask = torch.tensor([[False, False, True, True], [True, True, True, False]])  # left pad 2, right pad 1
    got = attention_mask_4d(key_mask, 0, 4)[:, 0].int().tolist()  # (B, T, S)
    assert got[0] == [[1, 0, 0, 0],   # pad query: only itself, so its row is never empty
                      [0, 1, 0, 0],   # pad query: only itself
                      [0, 0, 1, 0],
                      [0, 0, 1, 1]]
    assert got[1] == [[1, 0, 0, 0],
                      [1, 1, 0, 0],
                      [1, 1, 1, 0],
                      [1, 1, 1, 1]]   # right pad query sees the real tokens and itself
    # decoding one token at cache position 4 over 5 keys, key 1 being a pad
    got = attention_mask_4d(torch.tensor([[True, False, True, True, True]]), 4, 1)
    assert got.shape == (1, 1, 1, 5) and got.int().flatten().tolist() == [1, 0, 1, 1, 1]


def test_full_context_window_with_padding():
    model = tiny()
    T = model.config.max_seq_len
    ids = torch.randint(0, V, (2, T))
    mask = torch.ones(2, T, dtype=torch.bool)
    mask[1, :7] = False
    with torch.no_grad():
        logits = model(ids, attention_mask=mask)  # positions reach max_seq_len - 1 exactly
        assert torch.allclose(logits[0], model(ids)[0], atol=1e-5)
        assert torch.allclose(logits[1, 7:], model(ids[1:, 7:])[0], atol=1e-5)


def test_padded_backward_is_finite():
    model = tiny()
    ids = torch.randint(0, V, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[0, :4] = False  # left padding
    logits = model(ids, attention_mask=mask)
    loss = F.cross_entropy(logits[:, :-1][mask[:, 1:]], ids[:, 1:][mask[:, 1:]])
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_loss_at_init_is_log_vocab():
    torch.manual_seed(0)
    vocab = 512
    model = Transformer(ModelConfig.preset("tiny", vocab))
    x = torch.randint(0, vocab, (8, 32))
    with torch.no_grad():
        loss = F.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
    assert abs(loss.item() - math.log(vocab)) < 0.1 * math.log(vocab)
    assert model(x).dtype == torch.float32


def test_tiny_model_overfits_a_batch():
    model = tiny()
    x = torch.randint(0, V, (4, 16))
    opt = torch.optim.AdamW(model.param_groups(0.0), lr=1e-2)
    for _ in range(150):
        loss = F.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05


def test_rope_is_relative():
    """<rot(q, m), rot(k, n)> depends on m - n only; position 0 is the identity."""
    D = 8
    cos, sin = rope_tables(D, 64, 10000.0)
    q, k = torch.randn(1, 1, 1, D), torch.randn(1, 1, 1, D)

    def rot(x, p):
        return apply_rope(x, cos[p].view(1, 1, 1, D), sin[p].view(1, 1, 1, D))

    score = lambda m, n: (rot(q, m) * rot(k, n)).sum()  # noqa: E731
    assert torch.allclose(score(5, 2), score(40, 37), atol=1e-5)
    assert not torch.allclose(score(5, 2), score(5, 3), atol=1e-3)
    assert torch.allclose(rot(q, 0), q)
    # rotate-half pairing: dims i and i + D/2 rotate together by angle p * theta^(-2i/D)
    p, i = 3, 1
    angle = p * 10000.0 ** (-2 * i / D)
    x = torch.zeros(1, 1, 1, D)
    x[..., i] = 1.0
    y = rot(x, p)
    assert torch.allclose(y[0, 0, 0, [i, i + D // 2]], torch.tensor([math.cos(angle), math.sin(angle)]), atol=1e-6)


def test_init_scales():
    model = Transformer(ModelConfig.preset("tiny", 2000, n_layer=8, d_model=64, d_ff=256))
    assert abs(model.embed_tokens.weight.std().item() - 0.02) < 0.002
    assert abs(model.layers[0].mlp.down_proj.weight.std().item() - 0.02 / 4) < 0.001  # 1/sqrt(2 * 8)
    assert torch.equal(model.norm.weight, torch.ones(64))


def test_param_groups():
    for tie in (True, False):
        model = tiny(tie_embeddings=tie)
        decay, no_decay = model.param_groups(0.1)
        assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
        ids = [id(p) for p in decay["params"] + no_decay["params"]]
        assert len(ids) == len(set(ids)) == len(list(model.parameters()))
        assert all(p.dim() == 2 for p in decay["params"])
        assert any(p is model.embed_tokens.weight for p in no_decay["params"])
        assert all(p.dim() == 1 or p is model.embed_tokens.weight for p in no_decay["params"])
        assert any(p is model.lm_head.weight for p in decay["params"]) == (not tie)
        torch.optim.AdamW(model.param_groups(0.1), lr=1e-3)


def test_bad_forward_input():
    model = tiny()
    with pytest.raises(ValueError, match="context window") as bug:  # a caller's bug, not a user mistake
        model(torch.zeros(1, model.config.max_seq_len + 1, dtype=torch.long))
    assert not isinstance(bug.value, UserError)  # so the scripts show its traceback
    with pytest.raises(ValueError):
        model(torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError):
        model(torch.zeros(1, 5))
    with pytest.raises(ValueError):
        model(torch.zeros(1, 5, dtype=torch.long), attention_mask=torch.ones(1, 4, dtype=torch.bool))


def test_cli(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["qrw.lm.model", "--preset", "tiny", "--vocab-size", "97"])
    main()
    out = capsys.readouterr().out
    assert f"parameters: {tiny().num_params():,}" in out and "FLOPs per token" in out
