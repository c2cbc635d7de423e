"""Shard writing: empty shards are dropped and renumbered; aborted and stale output leaves nothing."""

import os

import pytest
from array_record.python.array_record_data_source import ArrayRecordDataSource

from data_prep import writer


def test_close_drops_empty_shards_and_renumbers(tmp_path):
    w = writer.ShardSetWriter(str(tmp_path), "test", 4)
    for i in range(2):
        w.write(f"record {i}".encode())
    assert w.close() == ["test-00000-of-00002.array_record", "test-00001-of-00002.array_record"]
    assert sorted(os.listdir(tmp_path)) == ["test-00000-of-00002.array_record", "test-00001-of-00002.array_record"]
    source = ArrayRecordDataSource([str(tmp_path / n) for n in sorted(os.listdir(tmp_path))])
    assert [source[i] for i in range(len(source))] == [b"record 0", b"record 1"]


def test_abort_removes_temporary_shards(tmp_path):
    w = writer.ShardSetWriter(str(tmp_path), "train", 2)
    w.write(b"x")
    w.abort()
    assert os.listdir(tmp_path) == []


def test_staging_commit_and_stale_cleanup(tmp_path):
    out = tmp_path / "out"
    stale = tmp_path / ".out.partial-999999999"  # no such process
    stale.mkdir()
    (stale / "train-00000.array_record.tmp").write_bytes(b"half")
    assert writer.remove_stale_staging(str(out)) == [stale.name]
    staging = writer.StagingDir(str(out))
    (tmp_path / "out").mkdir()  # an empty folder may be replaced
    open(os.path.join(staging.path, "manifest.json"), "w").write("{}")
    staging.commit(overwrite=False)
    assert os.listdir(out) == ["manifest.json"]
    with pytest.raises(writer.OutputExistsError, match="holds a dataset"):
        writer.check_output_free(str(out), overwrite=False)
    assert sorted(os.listdir(tmp_path)) == ["out"]
