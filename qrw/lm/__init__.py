"""The language model: byte-level BPE tokenizer with task renderers, Llama-style Transformer, KV-cache sampler."""
