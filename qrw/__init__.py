"""qrw: relevance-aware LLM query rewriting for e-commerce search, in plain PyTorch.

A reference implementation of "Relevance Matters: A Multi-Task and Multi-Stage
Large Language Model Approach for E-commerce Query Rewriting" (Dai et al.,
JD.com, arXiv 2603.02555): a synthetic e-commerce world, a small decoder-only
model, pretraining on logs and product text, multi-task SFT (rewrite generation +
relevance tagging), and GRPO with relevance and conversion rewards.

The two training scripts (``train_sft.py``, ``train_grpo.py``) sit beside this
package. Inside it, the library (imported, never run) and the commands
(``python -m qrw.X``: thin command lines over the library) are kept apart by name:

Library, by layer (a module imports only from the layers above it):

- :mod:`qrw.config`, :mod:`qrw.log`, :mod:`qrw.checkpoint`: typed configs and their
  command lines, one log-line format, run directories and checkpoints;
- :mod:`qrw.shop` (numpy only): the synthetic world, search engine, shoppers, metrics;
- :mod:`qrw.lm`: tokenizer, Transformer, KV-cache sampler;
- :mod:`qrw.data`, :mod:`qrw.sft`: stages 0 and 1 (task data, masks, the multi-task loss);
- :mod:`qrw.grpo` (pure torch): GRPO's math (advantages, ratio, clipped surrogate, KL);
  :mod:`qrw.rewards`: the reward components; :mod:`qrw.rollout`: sampling and scoring
  groups; :mod:`qrw.update`: GRPOConfig and the update step;
- :mod:`qrw.rewriter`, :mod:`qrw.scorecard`, :mod:`qrw.runs`, :mod:`qrw.hf`,
  :mod:`qrw.distributed`, :mod:`qrw.preemption`, :mod:`qrw.health`: the rewriter as a
  product, offline evaluation, run bookkeeping, Hugging Face interop, torchrun, stopping
  at a step boundary, the GRPO health monitor.

Commands (each module's docstring is its ``--help``):

- ``python -m qrw.world``: build and describe the synthetic world;
- ``python -m qrw.evaluate``: a run's offline scorecard or a simulated A/B test;
- ``python -m qrw.rewrite``: rewrite one query with a trained run;
- ``python -m qrw.explain``: one GRPO update, number by number;
- ``python -m qrw.curves``: training beside validation loss per task;
- ``python -m qrw.figure``: a GRPO run's curves and held-out before/after as a PNG;
- ``python -m qrw.health``: a finished run's steps through the health monitor;
- ``python -m qrw.export``: a run as a Hugging Face Llama directory;
- ``python -m qrw.reproduce`` (package): the grid of the paper's comparisons over seeds;
- ``python -m qrw.bench`` (package): benchmarks and measurements, not the library;
- ``python -m qrw.lm.model``, ``python -m qrw.lm.tokenizer``: a model's size, a tokenizer's masks.
"""

__version__ = "0.1.0"
