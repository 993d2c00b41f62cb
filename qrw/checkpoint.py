"""Run directories and atomic, versioned checkpoints.

A run directory holds everything needed to use or continue a run::

    config.json     the configs of every concern (world, model, training), JSON
    tokenizer.json  the BPE tokenizer
    ckpt.pt         model weights + optimizer + step + RNG state + format version
    metrics.jsonl   one JSON object per logged step
    metrics.json    the final evaluation
    .lock           held by the one process writing the run (qrw.runs.RunDir)

Checkpoints are written atomically (a temporary file in the same directory, then
``os.replace``), so a crash mid-write never leaves a half-written ``ckpt.pt``; the
previous good checkpoint survives. They are loaded with
``torch.load(..., weights_only=True)``: only tensors and plain containers, no
pickled code. Every failure a user can cause (missing file, truncated or corrupted
file, a file holding objects that safe loading refuses, a checkpoint from another
format version, model config or tokenizer) is a :class:`~qrw.config.UserError`
naming the problem.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from qrw.config import UserError

FORMAT_VERSION = 1
CKPT_NAME = "ckpt.pt"
CONFIG_NAME = "config.json"
TOKENIZER_NAME = "tokenizer.json"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same directory + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Read a JSON file; a missing or malformed file is a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"missing {what}: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"corrupted {what} {path}: {e}") from None


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (identifies the tokenizer a model was trained with)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Save ``state`` (tensors and plain containers only) atomically, stamped with the format version."""
    payload = {"format_version": FORMAT_VERSION, **state}
    tmp_dir = Path(path).parent
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=tmp_dir, prefix=f".{Path(path).name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: str | os.PathLike, *, expect_model_config: dict | None = None,
                    expect_tokenizer_sha256: str | None = None) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``, CPU).

    Raises :class:`UserError` when the file is missing, truncated or corrupted,
    holds pickled objects other than tensors and plain containers (which safe
    loading refuses without running them), has another format version, or (when
    the expectations are given) was trained with another model config or tokenizer.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CKPT_NAME
    if not path.is_file():
        raise UserError(f"missing checkpoint: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, bad pickle, foreign file: all the user's file, not our bug
        refused = re.search(r"GLOBAL ([\w.]+)", str(e)) if isinstance(e, pickle.UnpicklingError) else None
        if refused:  # a well-formed pickle naming a function or class: refused, nothing in it was run
            raise UserError(f"unsafe checkpoint {path}: it holds objects that safe loading (weights_only) refuses "
                            f"({refused.group(1)}); a qrw checkpoint holds only tensors and plain values. "
                            f"Nothing in it was run") from None
        raise UserError(f"corrupted or truncated checkpoint {path}: {_load_failure(e)}") from None
    if not isinstance(state, dict) or "format_version" not in state:
        raise UserError(f"not a qrw checkpoint: {path}")
    if state["format_version"] != FORMAT_VERSION:
        raise UserError(f"checkpoint {path} has format version {state['format_version']}, "
                        f"this qrw reads version {FORMAT_VERSION}")
    if expect_model_config is not None and state.get("model_config") != expect_model_config:
        diff = sorted(k for k in set(expect_model_config) | set(state.get("model_config", {}))
                      if expect_model_config.get(k) != state.get("model_config", {}).get(k))
        raise UserError(f"checkpoint {path} was trained with another model config "
                        f"(differs in: {', '.join(diff)})")
    if expect_tokenizer_sha256 is not None and state.get("tokenizer_sha256") != expect_tokenizer_sha256:
        raise UserError(f"checkpoint {path} was trained with another tokenizer than the run's tokenizer.json")
    return state


def _load_failure(error: Exception) -> str:
    """The line of a ``torch.load`` error that names what is wrong, without torch's advice to load unsafely."""
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation", "(1)", "(2)")
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reasons = [line for line in lines if not line.startswith(boilerplate)]
    return (reasons or lines or [type(error).__name__])[0]


def restore_model(run_dir: str | os.PathLike, model: torch.nn.Module, tokenizer_sha256: str) -> dict[str, Any]:
    """Resume: load ``run_dir``'s checkpoint (checked against the model's config and the tokenizer) into ``model``.

    Returns the whole checkpoint state (optimizer, stage, step) for the caller to continue from.
    """
    state = load_checkpoint(Path(run_dir) / CKPT_NAME, expect_model_config=dataclasses.asdict(model.config),
                            expect_tokenizer_sha256=tokenizer_sha256)
    model.load_state_dict(state["model"])
    return state


def rng_state() -> dict[str, torch.Tensor]:
    """The global torch RNG state (CPU, and CUDA when available), for exact resume."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
