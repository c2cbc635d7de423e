"""`python -m data_prep.build_dataset --verify --out=DIR`: every record of every split read back and the
counts compared with manifest.json; exit 0 with a summary, or exit 1 naming each damaged shard (flipped
bytes, a copy cut short, a shard of another build). It writes nothing."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from data_prep import verify

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data"))
from shards_test import SHARD, damaged_copy  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _listing(folder) -> dict:
    return {name: os.path.getsize(os.path.join(folder, name)) for name in sorted(os.listdir(folder))}


def test_an_intact_dataset_passes_with_its_counts(synthfer_dir):
    lines = []
    assert verify.verify(synthfer_dir, echo=lines.append) == {"train": 48, "test": 20}
    assert lines == [
        "train: 48 readable records in 1 shard(s), all readable (manifest.json: 48)",
        "test: 20 readable records in 1 shard(s), all readable (manifest.json: 20)",
        f"{synthfer_dir}: every shard readable, counts as in manifest.json",
    ]


@pytest.mark.parametrize("how", ["flip", "cut"])
def test_a_damaged_shard_is_named(synthfer_dir, tmp_path, how):
    data_dir = damaged_copy(synthfer_dir, tmp_path / how, how)
    lines = []
    with pytest.raises(verify.DatasetDamagedError, match=rf"^{data_dir}: 1 problem\(s\), listed above; the first: "):
        verify.verify(data_dir, echo=lines.append)
    shard = f"{data_dir}/{SHARD}: damaged shard, "
    detail = "it cannot be opened" if how == "cut" else r"1 of its 48 records cannot be read \(record \d+: Corrupted"
    assert lines[0].startswith(shard) and re.search(detail, lines[0]), lines
    assert lines[1].startswith("train: ") and "DAMAGED (manifest.json: 48)" in lines[1]
    assert lines[2] == "test: 20 readable records in 1 shard(s), all readable (manifest.json: 20)"


def test_a_shard_of_another_build_differs_from_the_manifest(synthfer_dir, tmp_path):
    data_dir = str(tmp_path / "mixed")
    shutil.copytree(synthfer_dir, data_dir)
    shutil.copy(os.path.join(data_dir, "test-00000-of-00001.array_record"), os.path.join(data_dir, SHARD))
    with pytest.raises(
        verify.DatasetDamagedError,
        match=rf"split train: 20 records, manifest.json says 48 \({data_dir}/{SHARD} holds 20, expected 48\)",
    ):
        verify.verify(data_dir, echo=lambda line: None)


@pytest.mark.slow
def test_command_line_exit_codes_and_nothing_written(synthfer_dir, tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO)

    def run(out):
        return subprocess.run([sys.executable, "-m", "data_prep.build_dataset", "--verify", f"--out={out}"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)  # fmt: skip

    before = _listing(synthfer_dir)
    done = run(synthfer_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1] == f"{synthfer_dir}: every shard readable, counts as in manifest.json"
    assert _listing(synthfer_dir) == before
    damaged = damaged_copy(synthfer_dir, tmp_path / "cut", "cut")
    before = _listing(damaged)
    done = run(damaged)
    assert done.returncode == 1, done.stderr[-3000:]
    assert done.stdout.splitlines()[0].startswith(f"{damaged}/{SHARD}: damaged shard, it cannot be opened")
    assert done.stderr.strip().splitlines() == [
        f"data_prep.build_dataset: error: {damaged}: 1 problem(s), listed above; the first: "
        + done.stdout.splitlines()[0]
    ]
    assert _listing(damaged) == before
    missing = run(tmp_path / "nothing")
    assert missing.returncode == 1 and "manifest.json not found" in missing.stderr
