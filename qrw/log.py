"""One log-line format and the ``metrics.jsonl`` writer shared by every training loop.

Log line, the same in every loop: ``step 120/500 | loss 1.234 | reward 0.61 | kl 0.012 | 0.84 s``.
``metrics.jsonl`` gets one JSON object per logged step, flushed immediately so a
crashed run keeps everything it logged.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def format_value(value: Any) -> str:
    """Compact human formatting: 4 significant digits for floats, scientific when tiny or huge."""
    if isinstance(value, float):
        if value != value or math.isinf(value):
            return str(value)
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.3e}"
        return f"{value:.4g}"
    return str(value)


def log_line(step: int, total: int, values: dict[str, Any], seconds: float | None = None) -> str:
    """``step 120/500 | loss 1.234 | ... | 0.84 s``."""
    parts = [f"step {step}/{total}"] + [f"{k} {format_value(v)}" for k, v in values.items()]
    if seconds is not None:
        parts.append(f"{seconds:.2f} s")
    return " | ".join(parts)


class MetricsLog:
    """Append-only JSONL metrics file (one object per call to :meth:`write`)."""

    def __init__(self, path: str | os.PathLike, *, truncate: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if truncate and self.path.exists():
            self.path.unlink()

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")

    def truncate_after(self, stage: str, step: int) -> None:
        """Drop records of ``stage`` logged after ``step`` (used on resume, so the log has no duplicates)."""
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            if rec.get("stage") == stage and rec.get("step", 0) > step:
                continue
            kept.append(line)
        self.path.write_text("".join(line + "\n" for line in kept))
