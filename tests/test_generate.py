"""Generation: KV-cache engine vs the naive reference, padding, log-probs, filters, seeds, layout, errors."""

import sys

import pytest
import torch
import torch.nn.functional as F

from qrw.config import UserError
from qrw.lm.generate import KVCache, filter_logits, naive_generate, rollout_inputs, sample, sample_next
from qrw.lm.model import ModelConfig, Transformer

V, EOS, PAD = 64, 1, 2
PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [20, 21, 22, 23, 24], [30]]


@pytest.fixture(scope="module")
def model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(ModelConfig.preset("tiny", V)).eval()


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_greedy_cached_equals_naive(model):
    kw = dict(max_new_tokens=12, temperature=0.0, eos_id=EOS, pad_id=PAD, return_logits=True)
    cached, naive = sample(model, PROMPTS, **kw), naive_generate(model, PROMPTS, **kw)
    assert torch.equal(cached.tokens, naive.tokens)
    assert torch.equal(cached.mask, naive.mask)
    assert cached.logits.shape == (4, 12, V)
    assert torch.allclose(cached.logits, naive.logits, atol=1e-5, rtol=0)
    assert torch.allclose(cached.logprobs, naive.logprobs, atol=1e-5, rtol=0)


def test_sampling_cached_equals_naive_with_same_seed(model):
    kw = dict(num_samples=3, max_new_tokens=16, temperature=1.3, top_k=20, top_p=0.9, eos_id=EOS, pad_id=PAD)
    cached = sample(model, PROMPTS, generator=gen(7), **kw)
    naive = naive_generate(model, PROMPTS, generator=gen(7), **kw)
    assert torch.equal(cached.tokens, naive.tokens)
    assert torch.allclose(cached.logprobs, naive.logprobs, atol=1e-5, rtol=0)
    assert len(set(map(tuple, cached.tokens.tolist()))) > 6  # it did sample: rows differ


def test_prompt_alone_equals_prompt_in_padded_batch(model):
    kw = dict(max_new_tokens=10, temperature=0.0, eos_id=EOS, pad_id=PAD)
    batch = sample(model, PROMPTS, **kw)
    for i, p in enumerate(PROMPTS):
        alone = sample(model, [p], **kw)
        L = alone.tokens.shape[1]
        assert torch.equal(alone.tokens[0], batch.tokens[i, :L])
        assert torch.allclose(alone.logprobs[0], batch.logprobs[i, :L], atol=1e-5)


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_logprobs_equal_rescoring_with_a_full_forward(model, temperature):
    G = 3
    rollout = sample(model, PROMPTS, num_samples=G, max_new_tokens=10, temperature=temperature,
                     eos_id=EOS, pad_id=PAD, generator=gen(3))
    ids, mask = rollout_inputs(PROMPTS, rollout, PAD)  # (N, P + L)
    P = max(map(len, PROMPTS))
    with torch.no_grad():
        logits = model(ids, attention_mask=mask)[:, P - 1:-1]  # (N, L, V): column t scores completion token t
    T = temperature if temperature > 0 else 1.0
    scored = F.log_softmax(logits / T, dim=-1).gather(-1, rollout.tokens[..., None])[..., 0]  # (N, L)
    assert torch.allclose(scored * rollout.mask, rollout.logprobs, atol=1e-5)
    assert (rollout.logprobs[rollout.mask == 0] == 0).all()


def test_rows_are_prompt_major(model):
    G = 4
    rollout = sample(model, PROMPTS, num_samples=G, max_new_tokens=6, temperature=0.0, eos_id=EOS, pad_id=PAD)
    assert rollout.prompt_index.tolist() == [p for p in range(len(PROMPTS)) for _ in range(G)]
    for p, prompt in enumerate(PROMPTS):  # greedy: the G samples of prompt p are its lone greedy output
        alone = sample(model, [prompt], max_new_tokens=6, temperature=0.0, eos_id=EOS, pad_id=PAD).tokens[0]
        for g in range(G):
            assert torch.equal(rollout.tokens[p * G + g, :len(alone)], alone)


def test_seed_reproduces_samples(model):
    kw = dict(num_samples=2, max_new_tokens=12, temperature=1.0, eos_id=EOS, pad_id=PAD)
    a, b = sample(model, PROMPTS, generator=gen(11), **kw), sample(model, PROMPTS, generator=gen(11), **kw)
    c = sample(model, PROMPTS, generator=gen(12), **kw)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.logprobs, b.logprobs)
    assert not torch.equal(a.tokens, c.tokens)
    torch.manual_seed(5)
    d = sample(model, PROMPTS, **kw)  # generator=None: torch's global RNG
    torch.manual_seed(5)
    assert torch.equal(d.tokens, sample(model, PROMPTS, **kw).tokens)


def test_eos_mask_padding_and_early_stop():
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("tiny", 4)).eval()  # 4 tokens: EOS comes quickly
    eos, pad = 3, 0
    for engine in (sample, naive_generate):
        r = engine(model, [[1, 2], [2]], num_samples=3, max_new_tokens=60, temperature=1.0,
                   eos_id=eos, pad_id=pad, generator=gen(0))
        assert r.tokens.shape[1] < 60  # stopped once every row had emitted EOS
        for tokens, mask, logprobs in zip(r.tokens.tolist(), r.mask.tolist(), r.logprobs.tolist()):
            first = tokens.index(eos)
            assert mask == [1.0] * (first + 1) + [0.0] * (len(tokens) - first - 1)
            assert tokens[first + 1:] == [pad] * (len(tokens) - first - 1)
            assert all(lp < 0 for lp in logprobs[:first + 1]) and all(lp == 0 for lp in logprobs[first + 1:])
        assert r.mask[:, -1].sum() > 0  # the last step was needed by some row


def test_pad_equal_to_eos(model):
    r = sample(model, PROMPTS, max_new_tokens=8, temperature=0.0, eos_id=PAD, pad_id=PAD)
    n = naive_generate(model, PROMPTS, max_new_tokens=8, temperature=0.0, eos_id=PAD, pad_id=PAD)
    assert torch.equal(r.tokens, n.tokens) and torch.equal(r.mask, n.mask)


def test_filter_logits_by_hand():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    keep = lambda out: torch.isfinite(out[0]).nonzero()[:, 0].tolist()  # noqa: E731
    assert keep(filter_logits(logits, top_k=2)) == [1, 3]
    assert keep(filter_logits(logits, top_k=1)) == [1]
    assert keep(filter_logits(logits, top_k=0)) == [0, 1, 2, 3, 4]
    assert torch.equal(filter_logits(logits, top_k=2)[0, [1, 3]], logits[0, [1, 3]])  # kept logits unchanged
    probs = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert keep(filter_logits(probs, top_p=0.5)) == [0]           # 0.5 alone reaches 0.5
    assert keep(filter_logits(probs, top_p=0.7)) == [0, 1]        # 0.5 < 0.7 <= 0.8
    assert keep(filter_logits(probs, top_p=0.81)) == [0, 1, 2]    # 0.8 < 0.81 <= 0.95
    assert keep(filter_logits(probs, top_p=0.01)) == [0]          # the top token is always kept
    assert keep(filter_logits(probs, top_p=1.0)) == [0, 1, 2, 3]
    # top-k first, then top-p on the renormalised top-k mass: [0.5, 0.3] -> [0.625, 0.375]
    assert keep(filter_logits(probs, top_k=2, top_p=0.6)) == [0]
    assert keep(filter_logits(probs, top_k=2, top_p=0.65)) == [0, 1]
    shuffled = probs[:, [2, 0, 3, 1]]  # order must not matter
    assert keep(filter_logits(shuffled, top_p=0.7)) == [1, 3]
    assert not torch.isfinite(logits).logical_not().any()  # the input was not modified


def test_sampling_statistics_respect_filters():
    probs = torch.tensor([0.4, 0.3, 0.2, 0.06, 0.04])
    logits = probs.log().expand(40000, 5)
    cases = [  # (top_k, top_p, expected distribution)
        (0, 1.0, probs),
        (2, 1.0, torch.tensor([0.4, 0.3, 0, 0, 0]) / 0.7),
        (0, 0.85, torch.tensor([0.4, 0.3, 0.2, 0, 0]) / 0.9),
        (3, 0.6, torch.tensor([0.4, 0.3, 0, 0, 0]) / 0.7),
    ]
    for top_k, top_p, expected in cases:
        tokens, logprobs = sample_next(logits, 1.0, top_k, top_p, gen(0))
        freq = torch.bincount(tokens, minlength=5).float() / len(tokens)
        assert (freq[expected == 0] == 0).all(), (top_k, top_p, freq)  # never outside the set
        assert torch.allclose(freq, expected, atol=0.01), (top_k, top_p, freq)
        assert torch.allclose(logprobs, probs.log()[tokens], atol=1e-6)  # unfiltered log-probs
    tokens, logprobs = sample_next(logits, 0.0, 0, 1.0, None)  # greedy
    assert (tokens == 0).all()
    tokens, _ = sample_next(logits * 2.0, 2.0, 0, 1.0, gen(1))  # temperature divides the logits
    assert torch.allclose(torch.bincount(tokens, minlength=5).float() / len(tokens), probs, atol=0.01)


def test_cache_chunked_forward_equals_full_forward(model):
    x = torch.randint(3, V, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, :3] = False  # row 1 left-padded
    with torch.no_grad():
        full = model(x, attention_mask=mask)
        cache = KVCache(model.config.n_layer, 12)
        parts = [model(x[:, :5], attention_mask=mask[:, :5], cache=cache),
                 model(x[:, 5:6], cache=cache), model(x[:, 6:], attention_mask=mask[:, 6:], cache=cache)]
    assert cache.length == 12 and cache.positions.tolist() == [12, 9]
    assert torch.allclose(torch.cat(parts, 1)[mask], full[mask], atol=1e-5)
    with pytest.raises(ValueError, match="KV cache full"):
        model(x[:, :1], cache=cache)


def test_clamps_max_new_tokens_to_the_context_window(model):
    window = model.config.max_seq_len
    prompts = [list(range(3, window - 2)), [5]]  # the longest leaves room for 5 tokens
    with pytest.warns(UserWarning, match="clamped from 50 to 5"):
        r = sample(model, prompts, max_new_tokens=50, temperature=0.0, eos_id=EOS, pad_id=PAD)
    assert r.tokens.shape[1] <= 5


def test_rollout_tensors_can_feed_a_training_forward(model):
    rollout = sample(model, PROMPTS, num_samples=2, max_new_tokens=4, temperature=1.0, eos_id=EOS, pad_id=PAD,
                     generator=gen(0))
    ids, mask = rollout_inputs(PROMPTS, rollout, PAD)
    model(ids, attention_mask=mask).sum().backward()  # not inference tensors
    assert model.embed_tokens.weight.grad is not None
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("engine", [sample, naive_generate])
def test_bad_requests_raise_user_errors(model, engine):
    window = model.config.max_seq_len
    ok = dict(max_new_tokens=4, eos_id=EOS, pad_id=PAD)
    bad = [
        ([], ok, "no prompts"),
        ([[5], []], ok, "prompt 1 is empty"),
        ([[5] * window], ok, "context window"),
        ([[5] * (window + 10)], ok, "context window"),
        ([[5, V]], ok, "outside"),
        ([[5, -1]], ok, "outside"),
        ([[5]], {**ok, "max_new_tokens": 0}, "max_new_tokens"),
        ([[5]], {**ok, "num_samples": 0}, "num_samples"),
        ([[5]], {**ok, "temperature": -1.0}, "temperature"),
        ([[5]], {**ok, "top_p": 0.0}, "top_p"),
        ([[5]], {**ok, "top_k": -2}, "top_k"),
        ([[5]], {**ok, "eos_id": V}, "eos_id"),
        ("not a list", ok, "no prompts"),
    ]
    for prompts, kwargs, message in bad:
        with pytest.raises(ValueError, match=message) as bug:
            engine(model, prompts, **kwargs)
        assert not isinstance(bug.value, UserError)


def test_bench_runs(monkeypatch, capsys):
    from qrw.bench import cli as bench
    monkeypatch.setattr(sys, "argv", ["qrw.bench", "generate", "--preset", "tiny", "--vocab-size", "64",
                                      "--batch-sizes", "1,2", "--prompt-len", "4", "--new-tokens", "3"])
    monkeypatch.setattr(bench, "matmul_gflops", lambda **kw: 1.0)  # keep the test fast
    bench.main()
    out = capsys.readouterr().out
    assert "speedup" in out and "GFLOP/s" in out and len(out.strip().splitlines()) == 5 and "decode FLOPs/token" in out


def test_bench_train_times_three_layouts_of_real_batches(monkeypatch, capsys):
    from qrw.bench import cli as bench
    monkeypatch.setattr(sys, "argv", ["qrw.bench", "train", "--preset", "tiny", "--smoke", "--repeats", "2",
                                      "--pack-len", "48"])
    bench.main()
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 8 and "GFLOP/s" in lines[0]
    for stage in ("pretrain", "sft"):
        rows = [line.split("|") for line in lines if line.startswith(stage)]
        assert [r[1].strip() for r in rows] == ["padded, head on every position", "padded, head on targets",
                                                "packed (48), head on targets"]
        positions = [float(r[2]) for r in rows]
        real = {float(r[3]) for r in rows}
        assert len(real) == 1 and positions[2] < positions[0] and positions[2] >= real.pop()
