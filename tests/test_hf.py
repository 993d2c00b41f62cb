"""Hugging Face interop checked against transformers itself: export, import, and train_sft.py --init-from-hf.

Two exported runs: the trained ``--smoke`` run (tied head; its greedy rewrites are
all empty at this size) and an untied random model with perturbed norm scales and
large weights, saved as a run, whose greedy completions are 32 tokens of varied
ids, so that the generate() comparison bites.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models

transformers = pytest.importorskip("transformers",
                                   reason="the HF interop tests need transformers (pip install 'qrw[hf]')")
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM  # noqa: E402

import train_sft  # noqa: E402
from qrw.checkpoint import file_sha256, save_checkpoint  # noqa: E402
from qrw.config import UserError  # noqa: E402
from qrw.export import main as export_main  # noqa: E402
from qrw.hf import export_hf, import_hf, load_hf_model, model_config_from_hf  # noqa: E402
from qrw.lm.generate import sample  # noqa: E402
from qrw.lm.model import ModelConfig, RMSNorm, Transformer  # noqa: E402
from qrw.lm.tokenizer import Tokenizer, normalize_query, relevance_prompt, rewrite_prompt  # noqa: E402
from qrw.runs import load_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-5
# a world even smaller than --smoke's, for the train_sft.py runs
TINY = ["--smoke", "--quiet", "--device", "cpu", "--n-products", "120", "--n-train-queries", "150",
        "--n-val-queries", "20", "--n-test-queries", "30", "--n-log-sessions", "200"]


def perturb_norms(model: torch.nn.Module, generator: torch.Generator) -> None:
    """RMSNorm scales away from 1, so a norm mapped to the wrong place changes the logits."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, RMSNorm) or type(module).__name__ == "LlamaRMSNorm":
                module.weight.copy_(1 + 0.3 * torch.randn(module.weight.shape, generator=generator))


@pytest.fixture(scope="module")
def random_run(smoke_sft_run, tmp_path_factory) -> Path:
    """An untied random model with large weights, a rare eps and rotary base, saved as a finished run
    (the smoke run's world and tokenizer)."""
    out = tmp_path_factory.mktemp("hf") / "random-run"
    out.mkdir()
    config = json.loads((smoke_sft_run / "config.json").read_text())
    torch.manual_seed(3)
    model = Transformer(ModelConfig(**{**config["model"], "tie_embeddings": False, "init_std": 0.2,
                                       "norm_eps": 1e-3, "rope_theta": 500.0}))
    perturb_norms(model, torch.Generator().manual_seed(4))
    config["model"] = dataclasses.asdict(model.config)
    (out / "config.json").write_text(json.dumps(config))
    shutil.copy(smoke_sft_run / "tokenizer.json", out / "tokenizer.json")
    save_checkpoint(out / "ckpt.pt", {"model": model.state_dict(), "stage": "sft", "step": config["sft"]["steps"],
                                      "model_config": dataclasses.asdict(model.config),
                                      "tokenizer_sha256": file_sha256(out / "tokenizer.json")})
    return out


@pytest.fixture(scope="module", params=["smoke", "random"])
def exported(request, smoke_sft_run, random_run, tmp_path_factory):
    """(qrw run, HF model, HF tokenizer, export directory) for the smoke run and the random one."""
    run_dir = smoke_sft_run if request.param == "smoke" else random_run
    out = tmp_path_factory.mktemp("hf") / f"{request.param}-hf"
    export_hf(run_dir, out)
    return load_run(run_dir), AutoModelForCausalLM.from_pretrained(out).eval(), AutoTokenizer.from_pretrained(out), out


def left_padded_batch(vocab_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (3, 20), mask (3, 20) bool): one full row and two left-padded ones."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(9, vocab_size, (3, 20), generator=gen)
    mask = torch.ones(3, 20, dtype=torch.bool)
    mask[1, :5] = False
    mask[2, :13] = False
    return ids, mask


# ---- export -----------------------------------------------------------------------------------

def test_export_writes_a_plain_llama_config(exported):
    run, hf, tok, out = exported
    cfg = run.model.config
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["model_type"] == "llama"
    assert (config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"],
            config["num_attention_heads"], config["num_key_value_heads"]) == (cfg.d_model, cfg.d_ff, cfg.n_layer,
                                                                              cfg.n_head, cfg.n_head)
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (0, 1, 2)
    assert config["tie_word_embeddings"] is cfg.tie_embeddings
    assert (config["rms_norm_eps"], config["max_position_embeddings"]) == (cfg.norm_eps, cfg.max_seq_len)
    loaded = AutoConfig.from_pretrained(out)
    assert isinstance(loaded, LlamaConfig)
    rope = getattr(loaded, "rope_parameters", None) or {"rope_theta": loaded.rope_theta}  # transformers 5 or 4
    assert rope["rope_theta"] == cfg.rope_theta and rope.get("rope_type", "default") == "default"
    assert sum(p.numel() for p in hf.parameters()) == run.model.num_params()
    assert "<|bos|><|rewrite|>{query}<|sep|>" in (out / "README.md").read_text()


def test_exported_logits_equal_qrw_unpadded_and_left_padded(exported):
    run, hf, _, _ = exported
    ids, mask = left_padded_batch(run.model.config.vocab_size)
    with torch.no_grad():
        full_qrw, full_hf = run.model(ids), hf(ids).logits                             # (B, T, V) each
        padded_qrw = run.model(ids, attention_mask=mask)                               # (B, T, V)
        positions = (mask.long().cumsum(1) - 1).clamp(min=0)                           # (B, T): qrw's positions
        padded_hf = hf(ids, attention_mask=mask.long(), position_ids=positions).logits  # (B, T, V)
        default_positions_hf = hf(ids, attention_mask=mask.long()).logits               # positions 0..T-1
    assert full_qrw.abs().max() > 0.5  # logits far above the tolerance
    assert (full_qrw - full_hf).abs().max() <= TOL
    assert (padded_qrw - padded_hf)[mask].abs().max() <= TOL  # real positions only
    # a left-padded row equals the same tokens alone (so padding really was masked)
    assert (padded_hf[2, 13:] - hf(ids[2:, 13:]).logits[0]).abs().max() <= TOL
    # HF's default positions shift a padded row's positions; rotary attention depends only on differences
    assert (padded_qrw - default_positions_hf)[mask].abs().max() <= 1e-4


def test_greedy_generate_matches_qrw_engine(exported):
    run, hf, tok, _ = exported
    queries = [q.text for q in run.world.queries["test"][:6]]
    rewriter = run.rewriter()
    prompts = [rewrite_prompt(run.tok, q) for q in rewriter.prepare(queries)]
    ours = sample(run.model, prompts, max_new_tokens=rewriter.max_new_tokens, temperature=0.0,
                  eos_id=run.tok.eos_id, pad_id=run.tok.pad_id)
    batch = tok([f"<|bos|><|rewrite|>{normalize_query(q)}<|sep|>" for q in queries], return_tensors="pt", padding=True)
    out = hf.generate(**batch, max_new_tokens=rewriter.max_new_tokens, do_sample=False)
    theirs = out[:, batch["input_ids"].shape[1]:]                                       # (B, new tokens)
    for row, (tokens, mask) in enumerate(zip(ours.tokens.tolist(), ours.mask.tolist())):
        completion = [t for t, m in zip(tokens, mask) if m]                             # up to and with the EOS
        assert theirs[row, :len(completion)].tolist() == completion, queries[row]
        if len(completion) < theirs.shape[1]:
            assert completion[-1] == run.tok.eos_id
            assert set(theirs[row, len(completion):].tolist()) == {tok.pad_token_id}  # HF pads finished rows
    texts = [normalize_query(t) for t in tok.batch_decode(theirs, skip_special_tokens=True)]
    assert texts == rewriter.rewrite(queries)
    if run.model.config.tie_embeddings is False:  # the random model: the comparison covered real completions
        assert ours.mask.sum() >= 4 * len(queries) and len(set(ours.tokens.flatten().tolist())) > 20


def test_relevance_probabilities_as_the_export_readme_computes_them(exported):
    run, hf, tok, _ = exported
    pairs = [("blk kicks for men", "nike sneakers men black"), ("telly 55 inch", "phone case")]
    labels = tok.convert_tokens_to_ids(["<|rel_0|>", "<|rel_1|>", "<|rel_2|>"])
    assert labels == list(run.tok.rel_ids)
    with torch.no_grad():
        theirs = torch.stack([hf(**tok(f"<|bos|><|relevance|>{q}<|sep|>{r}<|sep|>", return_tensors="pt"))
                              .logits[0, -1, labels].softmax(-1) for q, r in pairs])  # (2, 3)
    assert (theirs - run.rewriter().relevance_probs(*zip(*pairs))).abs().max() <= TOL


def test_hf_tokenizer_encodes_prompts_as_qrw_does(exported):
    run, _, tok, _ = exported
    assert isinstance(tok, transformers.PreTrainedTokenizerFast)
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.sep_token_id) == (0, 1, 2, 5)
    assert tok.padding_side == "left" and len(tok) == run.tok.vocab_size
    for query in ["blk kicks for men", "telly 55 inch", "café crème 😀 ½", "samsung   GALAXY"]:
        q = normalize_query(query)
        expected = rewrite_prompt(run.tok, q)
        assert tok(f"<|bos|><|rewrite|>{q}<|sep|>")["input_ids"] == expected  # no BOS/EOS added by HF
        assert tok(f"<|bos|><|rewrite|>{q}<|sep|>", add_special_tokens=False)["input_ids"] == expected
        assert (tok(f"<|bos|><|relevance|>{q}<|sep|>nike sneakers<|sep|>")["input_ids"]
                == relevance_prompt(run.tok, q, "nike sneakers"))
        assert tok.decode(expected, skip_special_tokens=True) == q
    # the documented difference: special-token text in a query is plain bytes to qrw, a special id to HF
    assert run.tok.eos_id not in run.tok.encode("a<|eos|>b") and tok.eos_token_id in tok("a<|eos|>b")["input_ids"]


def test_export_round_trips_through_import(random_run, tmp_path):
    run = load_run(random_run)
    export_hf(random_run, tmp_path / "hf", weights_format="bin")
    assert (tmp_path / "hf" / "pytorch_model.bin").is_file() and not (tmp_path / "hf" / "model.safetensors").exists()
    cfg, state = import_hf(tmp_path / "hf")
    assert cfg == run.model.config
    assert state.keys() == run.model.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in run.model.state_dict().items())
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")  # the .bin format loads in transformers too
    ids, _ = left_padded_batch(cfg.vocab_size, seed=1)
    with torch.no_grad():
        assert (hf(ids).logits - run.model(ids)).abs().max() <= TOL


def test_export_needs_neither_transformers_nor_safetensors(smoke_sft_run, tmp_path, monkeypatch):
    code = (f"import sys; from qrw.hf import export_hf; export_hf({str(smoke_sft_run)!r}, {str(tmp_path / 'a')!r}); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'transformers'))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr
    monkeypatch.setitem(sys.modules, "safetensors", None)  # import safetensors now raises ImportError
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    export_hf(smoke_sft_run, tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "b").glob("*.bin")) == ["pytorch_model.bin"]
    with pytest.raises(UserError, match="needs the safetensors package"):
        export_hf(smoke_sft_run, tmp_path / "c", weights_format="safetensors")
    with pytest.raises(UserError, match="reading model.safetensors needs the safetensors package"):
        import_hf(tmp_path / "a")


# ---- import -----------------------------------------------------------------------------------

def tiny_llama_config(**overrides) -> LlamaConfig:
    values = dict(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=3,
                  num_key_value_heads=3, max_position_embeddings=64, rms_norm_eps=1e-3, initializer_range=0.1,
                  rope_theta=500.0, tie_word_embeddings=False)  # rope_theta: read by transformers 4 and 5
    return LlamaConfig(**{**values, **overrides})


@pytest.mark.parametrize("tied", [True, False])
def test_imported_llama_gives_identical_logits(tied, tmp_path):
    torch.manual_seed(0)
    hf = LlamaForCausalLM(tiny_llama_config(tie_word_embeddings=tied)).eval()
    perturb_norms(hf, torch.Generator().manual_seed(1))
    hf.save_pretrained(tmp_path)
    model = load_hf_model(tmp_path)
    cfg = model.config
    assert (cfg.vocab_size, cfg.d_model, cfg.d_ff, cfg.n_layer, cfg.n_head, cfg.max_seq_len) == (97, 48, 80, 2, 3, 64)
    assert (cfg.rope_theta, cfg.norm_eps, cfg.tie_embeddings) == (500.0, 1e-3, tied)
    assert (model.lm_head.weight is model.embed_tokens.weight) is tied
    ids, mask = left_padded_batch(97, seed=2)
    positions = (mask.long().cumsum(1) - 1).clamp(min=0)                               # (B, T)
    with torch.no_grad():
        ours, theirs = model(ids), hf(ids).logits                                      # (B, T, V)
        ours_padded = model(ids, attention_mask=mask)
        theirs_padded = hf(ids, attention_mask=mask.long(), position_ids=positions).logits
    assert theirs.abs().max() > 1.0
    assert (ours - theirs).abs().max() <= TOL
    assert (ours_padded - theirs_padded)[mask].abs().max() <= TOL


@pytest.mark.parametrize("overrides, message", [
    (dict(num_key_value_heads=1), "grouped-query attention (num_key_value_heads 1 != num_attention_heads 3)"),
    (dict(attention_bias=True), "attention_bias is true; qrw's model has no biases"),
    (dict(mlp_bias=True), "mlp_bias is true"),
    (dict(rope_scaling={"rope_type": "linear", "factor": 2.0}), "rotary scaling 'linear'"),
    (dict(hidden_act="gelu"), "hidden_act 'gelu'"),
    (dict(head_dim=8), "head_dim 8 != hidden_size / num_attention_heads (48 / 3)"),
])
def test_incompatible_llama_refused_in_one_line(overrides, message, tmp_path):
    tiny_llama_config(**overrides).save_pretrained(tmp_path)
    with pytest.raises(UserError) as error:
        import_hf(tmp_path)
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("change, message", [
    ({"model_type": "mistral"}, "model_type 'mistral' is not a Llama"),
    ({"rope_scaling": {"type": "dynamic", "factor": 2.0}}, "rotary scaling 'dynamic'"),  # transformers 4's layout
    ({"partial_rotary_factor": 0.5}, "partial rotary"),
    ({"quantization_config": {"quant_method": "bitsandbytes"}}, "quantized"),
])
def test_hand_written_configs_refused(change, message):
    config = {**tiny_llama_config().to_dict(), **change}
    with pytest.raises(UserError, match=message):
        model_config_from_hf(config)


def test_missing_unexpected_and_misshapen_tensors_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama_config()).save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    edits = {"missing": ({k: v for k, v in tensors.items() if k != "model.norm.weight"},
                         "missing tensors model.norm.weight (1)"),
             "unexpected": ({**tensors, "model.layers.0.self_attn.q_proj.bias": torch.zeros(48)},
                            "tensors qrw's Llama does not have: model.layers.0.self_attn.q_proj.bias (1)"),
             "misshapen": ({**tensors, "model.norm.weight": torch.ones(47)},
                           "tensor model.norm.weight has shape (47,), the config implies (48,)")}
    for name, (edited, message) in edits.items():
        save_file(edited, tmp_path / "model.safetensors", metadata={"format": "pt"})
        with pytest.raises(UserError) as error:
            import_hf(tmp_path)
        assert message in str(error.value) and "\n" not in str(error.value), name
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(UserError, match="no weights in"):
        import_hf(tmp_path)


# ---- the command ------------------------------------------------------------------------------

def test_export_command_errors_are_one_line(smoke_sft_run, tmp_path):
    result = subprocess.run([sys.executable, "-m", "qrw.export", "--ckpt", str(tmp_path / "missing"),
                             "--out", str(tmp_path / "hf")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "no run directory at" in result.stderr
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="is not empty; pass --force"):
        export_main(["--ckpt", str(smoke_sft_run), "--out", str(out)])
    with pytest.raises(UserError, match="is the run directory itself"):
        export_main(["--ckpt", str(smoke_sft_run), "--out", str(smoke_sft_run), "--force"])
    assert export_main(["--ckpt", str(smoke_sft_run), "--out", str(out), "--force", "--weights", "bin"]) == 0
    assert export_main(["--ckpt", str(smoke_sft_run), "--out", str(out), "--force"]) == 0
    assert (out / "model.safetensors").is_file() and not (out / "pytorch_model.bin").exists()  # no stale weights
    assert (out / "notes.txt").read_text() == "mine"


# ---- train_sft.py --init-from-hf ----------------------------------------------------------------

@pytest.fixture(scope="module")
def hf_start(smoke_sft_run, tmp_path_factory) -> Path:
    """A random untied Llama of a shape no preset has, with the smoke run's tokenizer (vocab 512)."""
    out = tmp_path_factory.mktemp("hf") / "hf-start"
    torch.manual_seed(5)
    vocab = Tokenizer.load(smoke_sft_run / "tokenizer.json").vocab_size
    config = tiny_llama_config(vocab_size=vocab, num_hidden_layers=3, initializer_range=0.02)
    LlamaForCausalLM(config).save_pretrained(out)
    shutil.copy(smoke_sft_run / "tokenizer.json", out / "tokenizer.json")
    return out


def test_train_sft_starts_from_hf_weights(hf_start, tmp_path):
    _, hf_state = import_hf(hf_start)
    out = tmp_path / "zero"
    assert train_sft.main(TINY + ["--out", str(out), "--init-from-hf", str(hf_start), "--no-pretrain",
                                  "--sft-steps", "0"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["init_from_hf"] == str(hf_start.resolve())
    assert (config["model"]["n_layer"], config["model"]["d_model"], config["model"]["tie_embeddings"]) == (3, 48, False)
    assert (out / "tokenizer.json").read_text() == Tokenizer.load(hf_start / "tokenizer.json").to_json()
    state = torch.load(out / "ckpt.pt", weights_only=True)["model"]
    assert state.keys() == hf_state.keys() and all(torch.equal(state[k], hf_state[k]) for k in state)


def test_train_sft_from_hf_takes_a_first_step_from_hf_weights_and_resumes(hf_start, tmp_path):
    _, hf_state = import_hf(hf_start)
    flags = TINY + ["--init-from-hf", str(hf_start)]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert train_sft.main(flags + ["--out", str(whole)]) == 0
    assert train_sft.main(flags + ["--out", str(cut), "--stop-after", "1"]) == 0
    first = torch.load(cut / "ckpt.pt", weights_only=True)["model"]
    # AdamW's first step moves each weight by at most lr0 (1 + wd |w|): lr0 = peak / warmup = 3e-3 / 2 (--smoke)
    moved = max((first[k] - hf_state[k]).abs().max().item() for k in first)
    assert 0 < moved <= 1.5e-3 * 1.01
    assert train_sft.main(["--resume", "--quiet", "--device", "cpu", "--out", str(cut)]) == 0  # the saved shape
    a, b = (torch.load(d / "ckpt.pt", weights_only=True)["model"] for d in (whole, cut))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_train_sft_refuses_an_hf_dir_that_does_not_fit(hf_start, tmp_path):
    no_tokenizer = tmp_path / "no-tokenizer"
    shutil.copytree(hf_start, no_tokenizer)
    (no_tokenizer / "tokenizer.json").unlink()
    with pytest.raises(UserError, match="has no tokenizer.json"):
        train_sft.main(TINY + ["--out", str(tmp_path / "a"), "--init-from-hf", str(no_tokenizer)])
    other_vocab = tmp_path / "other-vocab"
    tiny_llama_config(vocab_size=600).save_pretrained(other_vocab)
    shutil.copy(hf_start / "tokenizer.json", other_vocab / "tokenizer.json")
    with pytest.raises(UserError, match="has 512 tokens but the model's vocab_size is 600"):
        train_sft.main(TINY + ["--out", str(tmp_path / "b"), "--init-from-hf", str(other_vocab)])
    foreign = tmp_path / "foreign-tokenizer"  # a Llama whose tokenizer is not qrw's (no specials at ids 0-8)
    shutil.copytree(hf_start, foreign)
    HFTokenizer(models.WordLevel({"a": 0, "b": 1}, unk_token="a")).save(str(foreign / "tokenizer.json"))
    with pytest.raises(UserError, match="not a qrw tokenizer: special token <\\|bos\\|> is not id 0"):
        train_sft.main(TINY + ["--out", str(tmp_path / "d"), "--init-from-hf", str(foreign)])
    gqa = tmp_path / "gqa"
    tiny_llama_config(num_key_value_heads=1).save_pretrained(gqa)
    with pytest.raises(UserError, match="grouped-query attention"):
        train_sft.main(TINY + ["--out", str(tmp_path / "c"), "--init-from-hf", str(gqa)])
