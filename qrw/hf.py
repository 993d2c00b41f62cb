"""Hugging Face interoperability: a qrw run as a ``transformers`` Llama directory, and back.

qrw's :class:`~qrw.lm.model.Transformer` is a Llama (pre-norm RMSNorm blocks,
rotate-half RoPE, SwiGLU, no biases) whose parameters already carry HF Llama's
names, so the conversion is a renaming, with no permutation of the q/k
projections::

    qrw                      HF LlamaForCausalLM
    embed_tokens.weight      model.embed_tokens.weight
    layers.{i}.<...>         model.layers.{i}.<...>     (self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj,
                                                         input_layernorm, post_attention_layernorm)
    norm.weight              model.norm.weight
    lm_head.weight           lm_head.weight             (absent when tied: tie_word_embeddings)

- :func:`export_hf`: a run directory -> an HF directory (``config.json``,
  ``model.safetensors`` or ``pytorch_model.bin``, ``tokenizer.json``,
  ``tokenizer_config.json``, ``special_tokens_map.json``, ``generation_config.json``,
  ``README.md``) that ``AutoModelForCausalLM.from_pretrained`` and
  ``AutoTokenizer.from_pretrained`` load without custom code. Written without
  ``transformers``: the JSON files by hand, the weights with ``safetensors`` when
  it is installed (imported lazily), else with ``torch.save``.
- :func:`import_hf`: a local HF Llama directory -> ``(ModelConfig, state_dict)``,
  with a one-line :class:`~qrw.config.UserError` for anything that does not map.

What does not map onto qrw's model, and is refused: grouped-query attention
(``num_key_value_heads != num_attention_heads``), biases (``attention_bias``,
``mlp_bias``), any rotary scaling (``rope_scaling`` / a ``rope_type`` other than
``default``, partial rotary), an activation other than ``silu``, a ``head_dim``
other than ``hidden_size / num_attention_heads``, quantized weights, and a
``model_type`` other than ``llama``. Imported weights are cast to float32 (qrw
trains in float32); ``pretraining_tp`` is ignored (it only splits the same matmuls).

The tokenizer is qrw's own ``tokenizers`` file, loaded by HF as a
``PreTrainedTokenizerFast`` with qrw's special tokens and no automatic BOS/EOS.
One difference: qrw encodes special-token *strings* typed in a query as plain
bytes, HF matches them, which is how an HF user writes the prompt as a string
(see :data:`PROMPT_FORMAT`).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch

from qrw.checkpoint import TOKENIZER_NAME, atomic_write_bytes, read_json
from qrw.config import UserError, check
from qrw.lm.model import ModelConfig, Transformer
from qrw.lm.tokenizer import SPECIAL_TOKENS, Tokenizer

SAFETENSORS_NAME = "model.safetensors"
BIN_NAME = "pytorch_model.bin"
WEIGHT_FILES = (SAFETENSORS_NAME, "model.safetensors.index.json", BIN_NAME, "pytorch_model.bin.index.json")

PROMPT_FORMAT = """\
# {name}: a qrw query rewriter as a Hugging Face Llama

Exported by `python -m qrw.export` from a qrw run. Plain `LlamaForCausalLM`, float32,
{n_params:,} parameters; the tokenizer is a byte-level BPE with qrw's special tokens.
There is no chat template: the model reads one prompt format per task.

## Prompts

Normalise the query first as qrw does: strip, collapse whitespace runs to one
space, lowercase (`" ".join(query.split()).lower()`).

    rewrite:    <|bos|><|rewrite|>{{query}}<|sep|>              -> generates {{rewrite}}<|eos|>
    relevance:  <|bos|><|relevance|>{{query}}<|sep|>{{rewrite}}<|sep|>
                -> the next token is <|rel_0|> (irrelevant), <|rel_1|> (partial) or <|rel_2|> (equivalent):
                   compare the three logits at the last position

The tokenizer adds no BOS or EOS by itself: write `<|bos|>` in the prompt
string, as above. The context window is {max_seq_len} tokens (prompt + rewrite).

## Use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tok = AutoTokenizer.from_pretrained("{path}")          # padding_side="left"
model = AutoModelForCausalLM.from_pretrained("{path}")
queries = ["blk kicks for men", "telly 55 inch"]
prompts = [f"<|bos|><|rewrite|>{{' '.join(q.split()).lower()}}<|sep|>" for q in queries]
batch = tok(prompts, return_tensors="pt", padding=True)
out = model.generate(**batch, max_new_tokens=32, do_sample=False)     # greedy, as qrw's evaluation
rewrites = tok.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)

# relevance of a (query, rewrite) pair: P(irrelevant, partial, equivalent)
ids = tok("<|bos|><|relevance|>blk kicks for men<|sep|>nike sneakers men black<|sep|>", return_tensors="pt")
labels = tok.convert_tokens_to_ids(["<|rel_0|>", "<|rel_1|>", "<|rel_2|>"])
probs = model(**ids).logits[0, -1, labels].softmax(-1)
```

With left padding, `generate()` gives each row positions `cumsum(attention_mask) - 1`,
as qrw does. A plain forward call with padding should pass
`position_ids=(attention_mask.cumsum(-1) - 1).clamp(min=0)` to reproduce qrw's
logits exactly (the default 0..T-1 gives the same logits up to rounding: rotary
attention depends only on relative positions).
"""


# ---- configs -------------------------------------------------------------------------------------

def hf_config(cfg: ModelConfig, tok: Tokenizer) -> dict:
    """The ``config.json`` of an HF Llama with ``cfg``'s shape (written for transformers 4.40+ and 5).

    The rotary base is written both ways: ``rope_theta`` (transformers 4) and
    ``rope_parameters`` (transformers 5).
    """
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_ff,
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.n_head,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": None,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "tie_word_embeddings": cfg.tie_embeddings,
        "initializer_range": cfg.init_std,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "pretraining_tp": 1,
        "bos_token_id": tok.bos_id,
        "eos_token_id": tok.eos_id,
        "pad_token_id": tok.pad_id,
        "torch_dtype": "float32",
        "use_cache": True,
    }


def model_config_from_hf(config: dict, source: str = "config.json") -> ModelConfig:
    """qrw's :class:`ModelConfig` for an HF Llama ``config.json``; UserError for what does not map."""
    check(isinstance(config, dict), f"{source} is not a JSON object")
    model_type = config.get("model_type")
    check(model_type == "llama", f"{source}: model_type {model_type!r} is not a Llama ('llama')")
    required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    missing = [k for k in required if k not in config]
    check(not missing, f"{source}: missing {', '.join(missing)}")
    n_head, d_model = config["num_attention_heads"], config["hidden_size"]
    n_kv = config.get("num_key_value_heads") or n_head
    check(n_kv == n_head, f"{source}: grouped-query attention (num_key_value_heads {n_kv} != num_attention_heads "
                          f"{n_head}) does not map onto qrw's model")
    for bias in ("attention_bias", "mlp_bias"):
        check(not config.get(bias, False), f"{source}: {bias} is true; qrw's model has no biases")
    act = config.get("hidden_act", "silu")
    check(act == "silu", f"{source}: hidden_act {act!r}; qrw's MLP is SwiGLU (silu)")
    check(not config.get("quantization_config"), f"{source}: quantized weights do not map onto qrw's model")
    head_dim = config.get("head_dim")
    check(head_dim is None or head_dim * n_head == d_model,
          f"{source}: head_dim {head_dim} != hidden_size / num_attention_heads ({d_model} / {n_head})")
    theta = _rope_theta(config, source)
    return ModelConfig(vocab_size=config["vocab_size"], n_layer=config["num_hidden_layers"], n_head=n_head,
                       d_model=d_model, d_ff=config["intermediate_size"],
                       max_seq_len=config.get("max_position_embeddings", 2048), rope_theta=float(theta),
                       norm_eps=float(config.get("rms_norm_eps", 1e-6)),
                       tie_embeddings=bool(config.get("tie_word_embeddings", False)),
                       init_std=float(config.get("initializer_range", 0.02)))


def _rope_theta(config: dict, source: str) -> float:
    """The rotary base of a plain-RoPE config; UserError for any scaling (transformers 4 or 5 layout)."""
    params = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or {}
    check(isinstance(params, dict) and isinstance(scaling, dict), f"{source}: unreadable rotary parameters")
    for table in (params, scaling):
        kind = table.get("rope_type", table.get("type", "default")) if table else "default"
        check(kind == "default", f"{source}: rotary scaling {kind!r} does not map onto qrw's plain RoPE")
    partial = params.get("partial_rotary_factor", config.get("partial_rotary_factor", 1.0))
    check(partial is None or partial == 1,
          f"{source}: partial rotary embeddings (factor {partial}) do not map onto qrw's RoPE")
    return params.get("rope_theta", config.get("rope_theta", 10000.0))


# ---- weights -------------------------------------------------------------------------------------

def to_hf_state_dict(state: dict[str, torch.Tensor], tie_embeddings: bool) -> dict[str, torch.Tensor]:
    """qrw parameter names -> HF Llama names, float32, contiguous; a tied head is left out (HF re-ties it)."""
    out = {}
    for name, tensor in state.items():
        if name == "lm_head.weight":
            if tie_embeddings:
                continue
            key = name
        else:
            key = "model." + name
        out[key] = tensor.detach().to("cpu", torch.float32).contiguous().clone()  # no storage shared with the model
    return out


def from_hf_state_dict(tensors: dict[str, torch.Tensor], cfg: ModelConfig, source: str) -> dict[str, torch.Tensor]:
    """HF Llama tensors -> a qrw state dict for ``cfg`` (float32); UserError naming missing or unexpected tensors."""
    with torch.device("meta"):
        expected = {name: t.shape for name, t in Transformer(cfg).state_dict().items()}  # no memory, just shapes
    state, unexpected = {}, []
    for key, tensor in tensors.items():
        name = key[len("model."):] if key.startswith("model.") else key
        if name.endswith("rotary_emb.inv_freq") or (name == "lm_head.weight" and cfg.tie_embeddings):
            continue  # a buffer older transformers saved; a tied head HF replaces by the embedding anyway
        if name not in expected:
            unexpected.append(key)
            continue
        check(tuple(tensor.shape) == tuple(expected[name]),
              f"{source}: tensor {key} has shape {tuple(tensor.shape)}, the config implies {tuple(expected[name])}")
        state[name] = tensor.to(torch.float32)
    check(not unexpected, f"{source}: tensors qrw's Llama does not have: {', '.join(sorted(unexpected)[:3])}"
                          f"{' ...' if len(unexpected) > 3 else ''} ({len(unexpected)})")
    if cfg.tie_embeddings and "embed_tokens.weight" in state:
        state["lm_head.weight"] = state["embed_tokens.weight"]
    missing = sorted(n if n == "lm_head.weight" else "model." + n for n in set(expected) - set(state))  # HF names
    check(not missing, f"{source}: missing tensors {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''} "
                       f"({len(missing)})")
    return state


def read_hf_weights(hf_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of an HF directory: ``model.safetensors``, sharded or not, or ``pytorch_model.bin`` (safe load)."""
    if (hf_dir / SAFETENSORS_NAME).is_file():
        files = [hf_dir / SAFETENSORS_NAME]
    elif (hf_dir / "model.safetensors.index.json").is_file():
        files = _shards(hf_dir, "model.safetensors.index.json")
    elif (hf_dir / BIN_NAME).is_file():
        files = [hf_dir / BIN_NAME]
    elif (hf_dir / "pytorch_model.bin.index.json").is_file():
        files = _shards(hf_dir, "pytorch_model.bin.index.json")
    else:
        raise UserError(f"no weights in {hf_dir} (expected {SAFETENSORS_NAME} or {BIN_NAME})")
    tensors: dict[str, torch.Tensor] = {}
    for path in files:
        tensors.update(_read_weight_file(path))
    return tensors


def _shards(hf_dir: Path, index_name: str) -> list[Path]:
    index = read_json(hf_dir / index_name, "weights index")
    check(isinstance(index, dict) and isinstance(index.get("weight_map"), dict),
          f"{hf_dir / index_name} has no weight_map")
    return [hf_dir / name for name in sorted(set(index["weight_map"].values()))]


def _read_weight_file(path: Path) -> dict[str, torch.Tensor]:
    check(path.is_file(), f"missing weights file {path}")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise UserError(f"reading {path.name} needs the safetensors package: pip install 'qrw[hf]'") from None
        try:
            return load_file(str(path))
        except Exception as e:  # SafetensorError, OSError: the user's file is broken
            raise UserError(f"corrupted weights file {path}: {_first_line(e)}") from None
    try:
        tensors = torch.load(path, map_location="cpu", weights_only=True)  # tensors only: no pickled code runs
    except Exception as e:
        raise UserError(f"corrupted or unsafe weights file {path}: {_first_line(e)}") from None
    check(isinstance(tensors, dict) and all(isinstance(t, torch.Tensor) for t in tensors.values()),
          f"{path} is not a state dict of tensors")
    return tensors


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _weights_bytes(tensors: dict[str, torch.Tensor], weights_format: str) -> tuple[str, bytes]:
    """``(file name, bytes)`` of the weights: safetensors when ``auto`` finds the package, else ``torch.save``."""
    check(weights_format in ("auto", "safetensors", "bin"), f"weights format must be auto, safetensors or bin, "
                                                            f"got {weights_format!r}")
    if weights_format != "bin":
        try:
            from safetensors.torch import save
        except ImportError:
            check(weights_format == "auto", "--weights safetensors needs the safetensors package: "
                                            "pip install 'qrw[hf]'")
        else:
            return SAFETENSORS_NAME, save(tensors, metadata={"format": "pt"})  # "pt": what transformers expects
    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    return BIN_NAME, buffer.getvalue()


# ---- tokenizer -----------------------------------------------------------------------------------

def tokenizer_files(cfg: ModelConfig) -> dict[str, dict]:
    """``tokenizer_config.json``, ``special_tokens_map.json`` and ``generation_config.json`` for qrw's tokenizer.

    No automatic BOS/EOS (``add_bos_token``/``add_eos_token`` false, and qrw's
    ``tokenizer.json`` has no post-processor), left padding for generation.
    """
    bos, eos, pad, rewrite, relevance, sep, *labels = SPECIAL_TOKENS
    special = {"bos_token": bos, "eos_token": eos, "pad_token": pad, "sep_token": sep,
               "additional_special_tokens": [rewrite, relevance, *labels]}
    tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast", **special, "add_bos_token": False,
                        "add_eos_token": False, "model_max_length": cfg.max_seq_len, "padding_side": "left",
                        "clean_up_tokenization_spaces": False}
    generation_config = {"bos_token_id": SPECIAL_TOKENS.index(bos), "eos_token_id": SPECIAL_TOKENS.index(eos),
                         "pad_token_id": SPECIAL_TOKENS.index(pad)}
    return {"tokenizer_config.json": tokenizer_config, "special_tokens_map.json": special,
            "generation_config.json": generation_config}


def load_hf_tokenizer(hf_dir: str | Path, vocab_size: int) -> Tokenizer:
    """The qrw :class:`Tokenizer` in an HF directory's ``tokenizer.json``; its vocabulary must be the model's."""
    path = Path(hf_dir) / TOKENIZER_NAME
    check(path.is_file(), f"{hf_dir} has no {TOKENIZER_NAME}: qrw needs the model's tokenizers file "
                          f"(a byte-level BPE with qrw's special tokens at ids 0-{len(SPECIAL_TOKENS) - 1})")
    tok = Tokenizer.load(path)
    check(tok.vocab_size == vocab_size,
          f"{path} has {tok.vocab_size} tokens but the model's vocab_size is {vocab_size}")
    return tok


# ---- export and import ---------------------------------------------------------------------------

def export_hf(ckpt_dir: str | Path, out_dir: str | Path, *, force: bool = False,
              weights_format: str = "auto") -> list[Path]:
    """Write the finished run in ``ckpt_dir`` as an HF Llama directory ``out_dir``; return the files written.

    ``out_dir`` must not exist or be empty, unless ``force`` (then the files are
    replaced, and weights of the other format removed). ``weights_format``:
    ``auto`` (safetensors if installed, else ``pytorch_model.bin``), ``safetensors`` or ``bin``.
    """
    from qrw.runs import load_run  # builds the run's world too: a second or two, for the run's checks

    out, src = Path(out_dir), Path(ckpt_dir)
    check(not out.exists() or out.is_dir(), f"--out {out} is a file")
    check(not src.is_dir() or not out.exists() or out.resolve() != src.resolve(),
          f"--out {out} is the run directory itself; choose another")
    check(force or not out.exists() or not any(out.iterdir()),
          f"--out {out} is not empty; pass --force to overwrite it")
    run = load_run(src)
    cfg: ModelConfig = run.model.config
    weights_name, weights = _weights_bytes(to_hf_state_dict(run.model.state_dict(), cfg.tie_embeddings),
                                           weights_format)
    files = {"config.json": hf_config(cfg, run.tok), **tokenizer_files(cfg)}
    written = []
    out.mkdir(parents=True, exist_ok=True)
    for stale in WEIGHT_FILES:  # with --force: never leave weights of another export beside the new ones
        if stale != weights_name and (out / stale).is_file():
            (out / stale).unlink()
    atomic_write_bytes(out / weights_name, weights)
    written.append(out / weights_name)
    atomic_write_bytes(out / TOKENIZER_NAME, (src / TOKENIZER_NAME).read_bytes())  # qrw's tokenizers file, as trained
    written.append(out / TOKENIZER_NAME)
    for name, obj in files.items():
        atomic_write_bytes(out / name, (json.dumps(obj, indent=2) + "\n").encode())
        written.append(out / name)
    readme = PROMPT_FORMAT.format(name=out.name, path=out.as_posix(), n_params=run.model.num_params(),
                                  max_seq_len=cfg.max_seq_len)
    atomic_write_bytes(out / "README.md", readme.encode())
    written.append(out / "README.md")
    return written


def read_hf_config(hf_dir: str | Path) -> ModelConfig:
    """The :class:`ModelConfig` of a local HF Llama directory (its ``config.json``), checked as in :func:`import_hf`."""
    path = Path(hf_dir)
    check(path.is_dir(), f"no Hugging Face model directory at {path}")
    return model_config_from_hf(read_json(path / "config.json", "Hugging Face config"), str(path / "config.json"))


def import_hf(hf_dir: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """``(ModelConfig, state_dict)`` of a local HF Llama directory, for ``Transformer(cfg).load_state_dict``.

    UserError (one line) for: no such directory, a missing or malformed
    ``config.json``, a config that does not map (see the module docstring), no
    weights, and missing, unexpected or misshapen tensors.
    """
    cfg = read_hf_config(hf_dir)
    state = from_hf_state_dict(read_hf_weights(Path(hf_dir)), cfg, str(hf_dir))
    return cfg, state


def load_hf_model(hf_dir: str | Path) -> Transformer:
    """A qrw :class:`Transformer` holding the weights of a local HF Llama directory (eval mode, CPU)."""
    cfg, state = import_hf(hf_dir)
    model = Transformer(cfg)
    model.load_state_dict(state)
    return model.eval()
