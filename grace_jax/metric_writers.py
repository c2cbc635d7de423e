"""Where training numbers go: TensorBoard event files, `metrics.jsonl`, and a progress line.

Only process 0 writes; other processes get a writer that drops everything, so multi-host runs do not
interleave lines in one file.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Mapping

import numpy as np


def _scalar(value) -> float | None:
    try:
        value = float(np.asarray(value))
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


class MetricWriter:
    """Appends `{"step": s, "split": ..., **scalars}` lines to metrics.jsonl and TensorBoard scalars."""

    def __init__(self, workdir: str, *, enabled: bool = True):
        self.enabled = enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if enabled:
            os.makedirs(workdir, exist_ok=True)
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, split: str, values: Mapping) -> None:
        if not self.enabled:
            return
        scalars = {k: _scalar(v) for k, v in values.items()}
        scalars = {k: v for k, v in scalars.items() if v is not None}
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": int(step), "split": split, **scalars}) + "\n")
        for key, value in scalars.items():
            self._tb.add_scalar(f"{split}/{key}", value, int(step))
        self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
    """All records of `<workdir>/metrics.jsonl`, in order."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class Progress:
    """One line per report: step, loss, clips/s over the last interval, and ETA."""

    def __init__(
        self, total_steps: int, global_batch_size: int, *, enabled: bool = True, stream=sys.stdout
    ):
        self.total_steps = total_steps
        self.batch = global_batch_size
        self.enabled = enabled
        self.stream = stream
        self._last_time = None
        self._last_step = None

    def start(self, step: int) -> None:
        self._last_time, self._last_step = time.perf_counter(), step

    def report(self, step: int, values: Mapping) -> float:
        """Prints the line; returns clips/s since the previous report."""
        now = time.perf_counter()
        steps = step - self._last_step
        rate = steps * self.batch / max(now - self._last_time, 1e-9)
        self._last_time, self._last_step = now, step
        eta_s = (self.total_steps - step) * self.batch / max(rate, 1e-9)
        if self.enabled:
            shown = " ".join(
                f"{k}={_scalar(v):.4g}" for k, v in values.items() if _scalar(v) is not None
            )
            hours, rest = divmod(int(eta_s), 3600)
            print(
                f"step {step}/{self.total_steps} {shown} {rate:.1f} clips/s "
                f"ETA {hours}:{rest // 60:02d}:{rest % 60:02d}",
                file=self.stream,
                flush=True,
            )
        return rate
