"""Atomic output: shards, manifest and bad-clip report appear all at once or not at all.

Everything is written into a staging folder next to `--out` (`.<name>.partial-<pid>`); each shard is
first written as `<shard>.tmp` and renamed when closed, and only a finished job renames the staging
folder to `--out`. A failed or interrupted job removes its staging folder, and a later job removes
staging folders whose process is gone, so old and new shards can never mix.
"""

from __future__ import annotations

import json
import os
import shutil

from array_record.python import array_record_module

from grace_jax.data import schema
from grace_jax.infra.errors import UserError


class OutputExistsError(UserError):
    """`--out` already holds something and replacing it was not asked for."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_staging(out_dir: str) -> list[str]:
    """Deletes staging folders of `out_dir` left by jobs that were killed; returns what it removed."""
    parent, name = os.path.split(os.path.abspath(out_dir))
    removed = []
    if not os.path.isdir(parent):
        return removed
    prefix = f".{name}.partial-"
    for entry in os.listdir(parent):
        if entry.startswith(prefix) and entry[len(prefix) :].isdigit():
            if not _pid_alive(int(entry[len(prefix) :])):
                shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)
                removed.append(entry)
    return removed


def check_output_free(out_dir: str, overwrite: bool) -> None:
    """Raises OutputExistsError when `out_dir` exists, is not empty and `overwrite` is False."""
    if os.path.exists(out_dir) and not overwrite:
        if not os.path.isdir(out_dir) or os.listdir(out_dir):
            what = (
                "a dataset (manifest.json)" if os.path.exists(os.path.join(out_dir, schema.MANIFEST_NAME)) else "files"
            )
            raise OutputExistsError(
                f"output {out_dir} already exists and holds {what}; nothing was written. Pass --overwrite "
                "to replace it as a whole, or choose another --out."
            )


class StagingDir:
    """The folder a job writes into; `commit` moves it to the final place, `abort` deletes it."""

    def __init__(self, out_dir: str):
        self.out_dir = os.path.abspath(out_dir)
        parent, name = os.path.split(self.out_dir)
        os.makedirs(parent, exist_ok=True)
        self.path = os.path.join(parent, f".{name}.partial-{os.getpid()}")
        shutil.rmtree(self.path, ignore_errors=True)
        os.makedirs(self.path)

    def commit(self, overwrite: bool) -> None:
        """Puts the staged output at `out_dir`, replacing an existing one only when `overwrite`."""
        check_output_free(self.out_dir, overwrite)
        old = None
        if os.path.exists(self.out_dir):
            if os.path.isdir(self.out_dir) and not os.listdir(self.out_dir):
                os.rmdir(self.out_dir)
            else:
                old = f"{self.path}.old"
                os.rename(self.out_dir, old)
        os.rename(self.path, self.out_dir)
        if old is not None:
            shutil.rmtree(old) if os.path.isdir(old) else os.remove(old)

    def abort(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class ShardSetWriter:
    """Writes one split's records round-robin over `num_shards` ArrayRecord files in a folder."""

    def __init__(self, folder: str, split: str, num_shards: int):
        if num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {num_shards}")
        self.folder, self.split, self.num_shards = folder, split, num_shards
        self._tmp_paths = [os.path.join(folder, f"{split}-{i:05d}.array_record.tmp") for i in range(num_shards)]
        self._writers = [array_record_module.ArrayRecordWriter(p, schema.WRITER_OPTIONS) for p in self._tmp_paths]
        self._counts = [0] * num_shards
        self._metadata: list[list[tuple]] = [[] for _ in range(num_shards)]
        self._next = 0

    def write(self, record: bytes, metadata: tuple = ()) -> None:
        """Appends `record` to the next shard; `metadata` (clip id, label, ...) goes to the clip table."""
        self._writers[self._next].write(record)
        self._counts[self._next] += 1
        self._metadata[self._next].append(metadata)
        self._next = (self._next + 1) % self.num_shards

    def clip_table(self) -> list[tuple]:
        """Metadata of every record in reading order: shard 0's records, then shard 1's, ..."""
        return [m for shard in self._metadata for m in shard]

    @property
    def num_records(self) -> int:
        return sum(self._counts)

    def close(self) -> list[str]:
        """Closes all shards and renames them to their final names; returns those names in order.

        Shards left empty (more shards than good clips) are dropped and the rest renumbered, so a
        reader never meets an empty file and the `-of-NNNNN` count is always right.
        """
        for w in self._writers:
            w.close()
        kept = [p for p, c in zip(self._tmp_paths, self._counts) if c > 0]
        for p, c in zip(self._tmp_paths, self._counts):
            if c == 0:
                os.remove(p)
        names = []
        for i, p in enumerate(kept):
            name = schema.shard_name(self.split, i, len(kept))
            os.rename(p, os.path.join(self.folder, name))
            names.append(name)
        return names

    def abort(self) -> None:
        for w in self._writers:
            try:
                w.close()
            except Exception:  # noqa: BLE001 - best effort while already failing
                pass
        for p in self._tmp_paths:
            if os.path.exists(p):
                os.remove(p)


def write_json(path: str, content: dict) -> None:
    """Writes JSON through a temporary file so a reader never sees half a manifest."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(content, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)
