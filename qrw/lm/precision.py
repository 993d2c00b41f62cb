"""Training and sampling precision: float32, or bfloat16 autocast with float32 master weights.

``--dtype bf16`` runs the model's matrix multiplies in bfloat16 under
``torch.autocast`` while the parameters, their gradients and the optimizer state
stay float32 (mixed precision, Micikevicius et al. 2018, with bfloat16's float32
exponent range, so no loss scaling). What stays float32 inside the model
(:mod:`qrw.lm.model`): the residual stream, RMSNorm, the attention softmax and the
LM head, hence the logits, every loss and every log-probability, including the
ones GRPO's ratio pi / pi_old is made of.

``--dtype auto`` picks bf16 where the hardware runs it fast: a CUDA GPU with
bfloat16, or a CPU with AVX-512 BF16 or AMX instructions (read from
``/proc/cpuinfo``); fp32 elsewhere (Apple MPS, older CPUs). Runs record the
resolved choice in ``config.json``, so a resumed or re-evaluated run computes
the same way.

bf16 changes numbers at the level of rounding, so an fp32 run and a bf16 run of
the same seed differ; each is deterministic and resumes bitwise. The tests run
in fp32 (``--smoke`` defaults to it) where their guarantees are exact.
"""

from __future__ import annotations

from pathlib import Path

import torch

from qrw.config import check

DTYPES = ("auto", "fp32", "bf16")
TORCH_DTYPES = {"fp32": None, "bf16": torch.bfloat16}  # None: no autocast


def cpu_has_fast_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU has bfloat16 matrix instructions (x86 ``avx512_bf16`` or ``amx_bf16`` flags)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:  # not Linux: assume no
            return False
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_dtype(name: str, device: torch.device | str) -> str:
    """``"fp32"`` or ``"bf16"`` for a ``--dtype`` value on ``device`` (``"auto"`` decides by the hardware)."""
    check(name in DTYPES, f"--dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    if name != "auto":
        return name
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    return "fp32"


def set_precision(model: torch.nn.Module, dtype: str) -> torch.nn.Module:
    """Make ``model`` (a :class:`qrw.lm.model.Transformer`) compute in ``dtype`` ("fp32" or "bf16"); returns it.

    The weights are not converted: bf16 is autocast around the model's forward.
    """
    check(dtype in TORCH_DTYPES, f"precision must be fp32 or bf16 (resolve 'auto' first), got {dtype!r}")
    model.compute_dtype = TORCH_DTYPES[dtype]
    return model
