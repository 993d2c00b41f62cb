"""qrw: relevance-aware LLM query rewriting for e-commerce search, in plain PyTorch.

A reference implementation of "Relevance Matters: A Multi-Task and Multi-Stage
Large Language Model Approach for E-commerce Query Rewriting" (Dai et al.,
JD.com, arXiv 2603.02555): a synthetic e-commerce world, a small decoder-only
model, pretraining on logs and product text, multi-task SFT (rewrite generation +
relevance tagging), and GRPO with relevance and conversion rewards.
"""

__version__ = "0.1.0"
