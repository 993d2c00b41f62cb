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
        """Drop the records logged after the checkpoint of ``stage`` at ``step`` (on resume: no duplicates).

        A loop writes a step's records (training, then validation) before its
        checkpoint, so everything after the last record of (``stage``, ``step``)
        was logged after the checkpoint, in this stage or a later one (a run
        killed in stage 1 and resumed from stage 0's last checkpoint). Records of
        ``stage`` beyond ``step`` and lines cut by a crash go too. The file is
        replaced atomically, so a kill meanwhile loses nothing.
        """
        if not self.path.exists():
            return
        records = []
        for line in self.path.read_text().splitlines():
            try:
                records.append((line, json.loads(line)))
            except json.JSONDecodeError:
                continue  # a line cut by a crash
        at_checkpoint = [i for i, (_, rec) in enumerate(records)
                         if rec.get("stage") == stage and rec.get("step") == step]
        if at_checkpoint:
            records = records[:at_checkpoint[-1] + 1]
        kept = [line for line, rec in records if not (rec.get("stage") == stage and rec.get("step", 0) > step)]
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, self.path)
