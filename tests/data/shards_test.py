"""A damaged shard is named: flipped bytes (the record that cannot be read, with its index) and a shard
cut short by an interrupted copy (when the loaders open it), in one line, through the loaders with and
without grain worker processes and through the public commands (evaluate, training)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from grace_jax.configs import demo
from grace_jax.data import input_pipeline, shards
from grace_jax.data.errors import DamagedShardError
from grace_jax.infra import errors

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARD = "train-00000-of-00001.array_record"


def damaged_copy(synthfer_dir: str, dest, how: str) -> str:
    """A copy of the dataset whose train shard has 4 KB of flipped bytes in its middle ("flip") or is
    cut to 55% of its size ("cut"), as the faults of an interrupted or bad copy."""
    dest = str(dest)
    shutil.copytree(synthfer_dir, dest)
    path = os.path.join(dest, SHARD)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        if how == "flip":
            f.seek(size // 2)
            chunk = f.read(4096)
            f.seek(size // 2)
            f.write(bytes(b ^ 0xFF for b in chunk))
        else:
            f.truncate(int(size * 0.55))
    return dest


def _tiny_data():
    data = demo.get_config().data
    data.num_frames, data.image_size = 4, 32
    return data


def test_flipped_bytes_name_the_shard_and_the_record(synthfer_dir, tmp_path):
    data_dir = damaged_copy(synthfer_dir, tmp_path / "flip", "flip")
    records = input_pipeline.record_source(data_dir, "train")
    assert len(records) == 48  # the shard still opens: its footer is intact
    bad = []
    for i in range(len(records)):
        try:
            records[i]
        except DamagedShardError as e:
            bad.append((i, str(e)))
    assert bad, "flipping 4 KB in the middle of the shard damaged no record"
    index, message = bad[0]
    assert message.startswith(
        f"{data_dir}/{SHARD}: damaged shard, record {index} of its 48 (record {index} of split train)"
    )
    assert "Corrupted Riegeli/records file" in message and "--verify" in message and "\n" not in message
    assert isinstance(DamagedShardError(message), errors.UserError)  # cli.run prints it as one line


def test_a_cut_shard_is_named_when_the_loader_opens_it(synthfer_dir, tmp_path):
    data_dir = damaged_copy(synthfer_dir, tmp_path / "cut", "cut")
    with pytest.raises(DamagedShardError, match=rf"^{data_dir}/{SHARD}: damaged shard, it cannot be opened \(") as e:
        input_pipeline.make_train_loader(data_dir, _tiny_data(), global_batch_size=8, seed=0, worker_count=0)
    assert "\n" not in str(e.value)
    records = input_pipeline.record_source(synthfer_dir, "test")  # the intact copy still reads
    assert len(records) == 20


def test_a_shard_of_another_build_is_caught_by_the_manifest_count(synthfer_dir, tmp_path):
    data_dir = str(tmp_path / "mixed")
    shutil.copytree(synthfer_dir, data_dir)
    # The test shard under the train shard's name: readable, but not what manifest.json describes.
    shutil.copy(os.path.join(data_dir, "test-00000-of-00001.array_record"), os.path.join(data_dir, SHARD))
    with pytest.raises(
        DamagedShardError, match=r"the shards of split 'train' hold 20 records, its manifest.json says 48"
    ):
        input_pipeline.record_source(data_dir, "train")


def test_expected_counts_follow_the_writers_round_robin():
    assert shards.expected_counts(10, 3) == [4, 3, 3]
    assert shards.expected_counts(2, 2) == [1, 1]
    assert sum(shards.expected_counts(9356, 19)) == 9356


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_the_loaders_error_reaches_the_main_process_as_the_same_line(synthfer_dir, tmp_path, workers):
    data_dir = damaged_copy(synthfer_dir, tmp_path / "flip", "flip")
    loader = input_pipeline.make_eval_loader(
        data_dir, _tiny_data(), split="train", global_batch_size=8, shard_index=0, shard_count=1, worker_count=workers
    )
    with pytest.raises(DamagedShardError, match=rf"^{data_dir}/{SHARD}: damaged shard, record \d+ of its 48"):
        for _ in loader:
            pass


def _command(module: str, args: list[str], cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env
    )


@pytest.mark.slow
@pytest.mark.parametrize("how, workers", [("flip", 0), ("cut", 0), ("flip", 2)])
def test_evaluate_on_a_damaged_shard_is_one_line_and_writes_nothing(tiny_run, synthfer_dir, tmp_path, how, workers):
    workdir, _ = tiny_run
    data_dir = damaged_copy(synthfer_dir, tmp_path / how, how)
    out = tmp_path / "evaluation"
    args = [f"--workdir={workdir}", f"--data_dir={data_dir}", "--split=train", f"--out={out}", "--batch_size=8",
            f"--num_workers={workers}"]  # fmt: skip
    done = _command("grace_jax.evaluate", args, tmp_path)
    assert done.returncode == 1, done.stderr[-3000:]
    what = (
        r"record \d+ of its 48 \(record \d+ of split train\) cannot be read" if how == "flip" else "it cannot be opened"
    )
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith(f"grace_jax.evaluate: error: {data_dir}/{SHARD}: damaged shard, ")
    assert re.search(what, lines[0]), lines[0]
    assert not out.exists()  # no result of a partial pass


@pytest.mark.slow
def test_training_on_a_shard_with_flipped_bytes_stops_naming_it(synthfer_dir, tmp_path):
    data_dir = damaged_copy(synthfer_dir, tmp_path / "flip", "flip")
    workdir = tmp_path / "run"
    # 6 steps of 8 clips read all 48 train records once: the damaged one among them.
    args = ["--config=configs/demo.py", f"--workdir={workdir}", f"--config.data.dir={data_dir}",
            "--config.data.num_frames=4", "--config.model.num_frames=4", "--config.data.image_size=32",
            "--config.optim.batch_size=8", "--config.optim.num_train_steps=6",
            "--config.train.eval_every_steps=1000", "--config.train.ckpt_every_steps=1000"]  # fmt: skip
    done = _command("grace_jax.main", args, REPO)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors_ = [line for line in done.stderr.splitlines() if ": error: " in line]
    assert len(errors_) == 1 and errors_[0].startswith(
        f"grace_jax.main: error: {data_dir}/{SHARD}: damaged shard, record "
    )
    assert not (workdir / "lock.json").exists()
