"""Metrics: JSON lines always, TensorBoard optionally (tensorboardX), written by process 0 only.

``metrics.jsonl`` holds one JSON object per logged step (``{"step": ..., "loss": ...}``). On
resume, lines for steps after the restored checkpoint are dropped (they will be logged again),
and a trailing partial line left by ``kill -9`` is ignored, so the file of a resumed run equals
the file of an unbroken one.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import jax


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # "nan", "inf": valid JSON, unlike NaN
    return v


def read_jsonl(path: str | os.PathLike, *, max_step: int | None = None) -> list[dict]:
    """Read a metrics file, skipping a torn last line; keep records with ``step <= max_step``."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # torn write from a killed process
        rec = {k: (float(v) if isinstance(v, str) and v in ("nan", "inf", "-inf") else v) for k, v in rec.items()}
        if max_step is not None and rec.get("step", 0) > max_step:
            continue
        out.append(rec)
    return out


class MetricWriter:
    """Append-only JSONL writer (+ optional TensorBoard) that is a no-op off process 0."""

    def __init__(self, workdir: str | os.PathLike | None, *, tensorboard: bool = False):
        self.enabled = workdir is not None and jax.process_index() == 0
        self.path = Path(workdir) / "metrics.jsonl" if workdir is not None else None
        self._tb = None
        if self.enabled and tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError as e:  # pragma: no cover - tensorboardX is a dependency
                raise ImportError("tensorboard=True needs the `tensorboardX` package.") from e
            self._tb = SummaryWriter(str(Path(workdir) / "tensorboard"))

    def truncate_after(self, step: int) -> list[dict]:
        """Drop records with ``step > step`` (atomically) and return the kept ones."""
        if self.path is None:
            return []
        kept = read_jsonl(self.path, max_step=step)
        if self.enabled and self.path.exists():
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(json.dumps({k: _jsonable(v) for k, v in r.items()}) + "\n" for r in kept))
            os.replace(tmp, self.path)
        return kept

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({k: _jsonable(v) for k, v in record.items()}) + "\n")
            f.flush()
        if self._tb is not None:
            step = int(record["step"])
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
