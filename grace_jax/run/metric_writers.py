"""Where training numbers go: TensorBoard event files, `metrics.jsonl`, and a progress line.

Only process 0 writes; other processes get a writer that drops everything, so multi-host runs do not
interleave lines in one file. The workdir may be local or a URI (gs://bucket/run): Cloud Storage has no
append (fsspec's "a" mode silently overwrites), so there the writer keeps the file's records, earlier
runs' included, and rewrites the whole object at each write; locally it appends.
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
import time
import uuid
from collections.abc import Mapping

import numpy as np

from grace_jax.infra import paths

METRICS_NAME = "metrics.jsonl"


def _scalar(value) -> float | None:
    try:
        value = float(np.asarray(value))
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _parse(text: str) -> tuple[list[dict], list[str]]:
    """(records, damaged lines): a line that is not one JSON object (a last line cut by a full disk
    or a power loss, or a record appended onto such a line) is returned apart, never raised."""
    records, damaged = [], []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            damaged.append(line)
    return records, damaged


def _set_aside_damaged_lines(path: str, records: list[dict], damaged: list[str]) -> None:
    """Writes the damaged lines to `<path>.damaged-<n>` (kept for the user), the readable records
    back to `path`, and says so in one warning line."""
    from grace_jax.infra import cli

    n = 1
    while paths.exists(f"{path}.damaged-{n}"):
        n += 1
    aside = f"{path}.damaged-{n}"
    paths.write_text(aside, "".join(line + "\n" for line in damaged))
    paths.write_text(path, _dump(records))
    cli.warn(
        f"{path}: {len(damaged)} damaged line{'s' if len(damaged) > 1 else ''} (cut short, e.g. by a full disk "
        f"or a power loss) moved to {aside}; the readable lines are kept."
    )


def _dump(records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


class MetricWriter:
    """Appends `{"step": s, "split": ..., **scalars}` lines to metrics.jsonl and TensorBoard scalars.

    `resume_step`: the step a resumed run restarts from. Records of later steps (written by the
    earlier run after its last checkpoint, and about to be redone) are dropped, so the file holds
    exactly one trajectory; records up to that step are kept.
    """

    def __init__(
        self,
        workdir: str,
        *,
        enabled: bool = True,
        resume_step: int | None = None,
        tb_flush_secs: int = 60,
    ):
        self.enabled = enabled
        self.path = paths.join(workdir, METRICS_NAME)
        self._remote = paths.is_uri(workdir)
        self._records: list[dict] = []  # Everything in the file; kept only for URIs.
        self._tb = None
        if not enabled:
            return
        paths.makedirs(workdir)
        if self._remote or resume_step is not None:
            records, damaged = _read(self.path)
            kept = [r for r in records if resume_step is None or r.get("step", 0) <= resume_step]
            if damaged:  # healed before the first append, which would land on the cut line
                _set_aside_damaged_lines(self.path, kept, damaged)
            elif len(kept) != len(records):  # One rewrite, local or remote.
                paths.write_text(self.path, _dump(kept))
            if self._remote:
                self._records = kept
        from tensorboardX import SummaryWriter

        if self._remote:
            _register_object_store_events(workdir)
        # On object storage every flush uploads the whole event file again: there, flush every
        # `tb_flush_secs` and at close instead of at every write. The suffix keeps two runs that
        # start in the same second (names carry seconds and host only) from sharing one file.
        self._tb = SummaryWriter(
            paths.join(workdir, "tensorboard"),
            flush_secs=tb_flush_secs,
            filename_suffix=f".{os.getpid()}.{uuid.uuid4().hex[:8]}",
        )

    def write(self, step: int, split: str, values: Mapping) -> None:
        if not self.enabled:
            return
        scalars = {k: _scalar(v) for k, v in values.items()}
        scalars = {k: v for k, v in scalars.items() if v is not None}
        record = {"step": int(step), "split": split, **scalars}
        if self._remote:
            self._records.append(record)
            paths.write_text(self.path, _dump(self._records))
        else:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        for key, value in scalars.items():
            self._tb.add_scalar(f"{split}/{key}", value, int(step))
        if not self._remote:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


class _ObjectEventFile:
    """A TensorBoard event file on object storage, written through `paths`: the object is rewritten
    whole at each flush that has something new (there is no append), and never after close.

    It replaces tensorboardX's own gs:// writer, which needs a google-cloud-storage client with a
    project and uploads once more when garbage-collected, after close (at interpreter exit).
    """

    def __init__(self, path: str):
        self.path = path
        self._buffer = io.BytesIO()
        self._dirty = False
        self._closed = False

    def write(self, data: bytes) -> None:
        self._buffer.write(data)
        self._dirty = True

    def flush(self) -> None:
        if self._dirty and not self._closed:
            paths.write_bytes(self.path, self._buffer.getvalue())
            self._dirty = False

    def close(self) -> None:
        self.flush()
        self._closed = True


class _ObjectEventFileFactory:
    def open(self, path: str) -> _ObjectEventFile:
        return _ObjectEventFile(path)

    def directory_check(self, path: str) -> None:
        del path  # Object stores have no folders to create.


def _register_object_store_events(workdir: str) -> None:
    from tensorboardX import record_writer

    record_writer.register_writer_factory(workdir.split(":", 1)[0], _ObjectEventFileFactory())


def _read(path: str) -> tuple[list[dict], list[str]]:
    if not paths.exists(path):
        return [], []
    # Bytes a crash left (a tail of NULs, half a character) fail their line, not the whole file.
    return _parse(paths.read_bytes(path).decode("utf-8", errors="replace"))


def read_metrics(workdir: str) -> list[dict]:
    """All readable records of `<workdir>/metrics.jsonl` (local or URI), in order. Damaged lines are
    skipped here; a resumed trainer's MetricWriter sets them aside with a warning."""
    return _read(paths.join(workdir, METRICS_NAME))[0]


class Progress:
    """One line per report: step, loss, clips/s over the last interval, and ETA."""

    def __init__(self, total_steps: int, global_batch_size: int, *, enabled: bool = True, stream=sys.stdout):
        self.total_steps = total_steps
        self.batch = global_batch_size
        self.enabled = enabled
        self.stream = stream
        self._last_time = None
        self._last_step = None

    def start(self, step: int) -> None:
        self._last_time, self._last_step = time.perf_counter(), step

    def report(self, step: int, values: Mapping, data_wait_s: float | None = None) -> float:
        """Prints the line; returns clips/s since the previous report.

        `data_wait_s`: seconds the loop waited for input batches since the previous report (the
        prefetcher's `wait_s` difference); the line then splits the time per step into data wait and
        the rest (the step itself, logging, checkpoints), so a stalling input pipeline shows.
        """
        now = time.perf_counter()
        steps = step - self._last_step
        interval = max(now - self._last_time, 1e-9)
        rate = steps * self.batch / interval
        self._last_time, self._last_step = now, step
        eta_s = (self.total_steps - step) * self.batch / max(rate, 1e-9)
        if self.enabled:
            shown = " ".join(f"{k}={_scalar(v):.4g}" for k, v in values.items() if _scalar(v) is not None)
            timing = ""
            if data_wait_s is not None and steps > 0:
                wait_ms = 1e3 * data_wait_s / steps
                step_ms = 1e3 * interval / steps - wait_ms
                timing = (f" data wait {wait_ms:.0f} ms/step ({100 * data_wait_s / interval:.0f}%), "
                          f"step {step_ms:.0f} ms")  # fmt: skip
            hours, rest = divmod(int(eta_s), 3600)
            print(
                f"step {step}/{self.total_steps} {shown} {rate:.1f} clips/s{timing} "
                f"ETA {hours}:{rest // 60:02d}:{rest % 60:02d}",
                file=self.stream,
                flush=True,
            )
        return rate


def best_by_war(workdir: str) -> dict:
    """The highest-WAR evaluation in metrics.jsonl before a resume (without its confusion matrix,
    which only final_metrics.json and the evaluation that follows keep)."""
    best = {"war": -1.0}
    for record in read_metrics(workdir):
        if record.get("split") == "eval" and record.get("war", -1.0) > best["war"]:
            best = {k: v for k, v in record.items() if k != "split"}
    return best


def write_final_metrics(workdir: str, *, last: dict, best: dict, best_war: dict) -> None:
    """final_metrics.json: the last evaluation, the best by UAR (checkpoints/best) and by WAR."""
    selection = {
        "best": "highest UAR (checkpoints/best)",
        "best_war": "highest WAR (DFER-CLIP's rule; no checkpoint kept)",
    }
    record = {"last": last, "best": best, "best_war": best_war, "selection": selection}
    paths.write_text(paths.join(workdir, "final_metrics.json"), json.dumps(record, indent=2))
