"""metrics.jsonl, TensorBoard events and the progress line."""

import io
import os
import re
import time

from grace_jax.run import metric_writers


def test_jsonl_and_tensorboard(tmp_path):
    writer = metric_writers.MetricWriter(str(tmp_path))
    writer.write(1, "train", {"loss": 2.5, "lr": 0.1, "bad": float("nan")})
    writer.write(2, "eval", {"uar": 0.5})
    writer.close()
    records = metric_writers.read_metrics(str(tmp_path))
    assert records == [
        {"step": 1, "split": "train", "loss": 2.5, "lr": 0.1},
        {"step": 2, "split": "eval", "uar": 0.5},
    ]
    events = os.listdir(tmp_path / "tensorboard")
    assert any(name.startswith("events.out.tfevents") for name in events)


def test_disabled_writer_writes_nothing(tmp_path):
    writer = metric_writers.MetricWriter(str(tmp_path / "w"), enabled=False)
    writer.write(1, "train", {"loss": 1.0})
    assert not (tmp_path / "w").exists()


def test_progress_line_has_rate_and_eta():
    stream = io.StringIO()
    progress = metric_writers.Progress(100, 8, stream=stream)
    progress.start(0)
    rate = progress.report(10, {"loss": 1.25})
    line = stream.getvalue()
    assert rate > 0
    assert line.startswith("step 10/100 loss=1.25 ") and "clips/s ETA " in line


def test_progress_line_splits_data_wait_from_step_time():
    stream = io.StringIO()
    progress = metric_writers.Progress(100, 8, stream=stream)
    progress.start(0)
    time.sleep(0.2)
    progress.report(4, {"loss": 1.0}, data_wait_s=0.1)  # 25 ms of waiting per step
    line = stream.getvalue()
    wait = re.search(r"data wait (\d+) ms/step \((\d+)%\), step (\d+) ms ETA", line)
    assert wait, line
    assert int(wait.group(1)) == 25
    assert 5 <= int(wait.group(2)) <= 50  # 0.1 s of a >= 0.2 s interval
    assert int(wait.group(3)) >= 25  # the remaining >= 0.1 s over 4 steps


def test_resumed_writer_keeps_earlier_records_and_drops_redone_steps(tmp_path):
    # A run checkpointed at step 4 and stopped after logging step 6 is resumed from 4: its records up
    # to 4 stay, the step-6 record (about to be redone) goes, and the new ones are appended.
    first = metric_writers.MetricWriter(str(tmp_path))
    for step in (2, 4, 6):
        first.write(step, "train", {"loss": float(step)})
    first.close()
    second = metric_writers.MetricWriter(str(tmp_path), resume_step=4)
    second.write(6, "train", {"loss": 0.5})
    second.close()
    records = metric_writers.read_metrics(str(tmp_path))
    assert [(r["step"], r["loss"]) for r in records] == [(2, 2.0), (4, 4.0), (6, 0.5)]
    events = [n for n in os.listdir(tmp_path / "tensorboard") if n.startswith("events.out.tfevents")]
    assert len(events) == 2  # One event file per run, never shared.
