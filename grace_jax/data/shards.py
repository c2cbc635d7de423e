"""A split's ArrayRecord shards as one random-access source whose read errors name the shard.

ArrayRecord (riegeli) reports a damaged file as `RuntimeError: Corrupted Riegeli/records file ... at
byte N`, naming neither the file nor the record; with hundreds of shards the user cannot tell which to
copy again. `ShardRecords(paths)` opens every shard first (a cut shard fails there: its footer is gone)
and turns each failure into a `DamagedShardError` naming the shard, the record within it and its index
in the split; `check_count` compares the records found with the manifest's count.

    records = ShardRecords(["/data/dfew3/train-00000-of-00004.array_record", ...], split="train")
    records[31]   # bytes; or DamagedShardError("/data/.../train-00000-of-00004.array_record: record 31 ...")

Picklable (grain worker processes): the error raised in a worker reaches the main process as the same
one-line DamagedShardError.
"""

from __future__ import annotations

import bisect
import concurrent.futures
import itertools
import re

import grain
from array_record.python import array_record_module

from grace_jax.data.errors import DamagedShardError

__all__ = ["COPY_AGAIN", "REMEDY", "ShardRecords", "expected_counts", "reason", "shard_count"]

COPY_AGAIN = "copy that shard again from its source (or rebuild the dataset)"
REMEDY = f"{COPY_AGAIN}; python -m data_prep.build_dataset --verify --out=<dataset folder> checks every shard"
_OPEN_THREADS = 16  # shards opened at once: on gs:// each open is a round trip


def reason(error: BaseException) -> str:
    """The reader's message on one line, without riegeli's hash values."""
    text = " ".join(str(error).split()) or type(error).__name__
    return re.sub(r"\s*\(computed 0x[0-9a-f]+, stored 0x[0-9a-f]+\)", "", text)


def shard_count(path: str, remedy: str = REMEDY) -> int:
    """Records in one shard; DamagedShardError naming it (and `remedy`) when it cannot be opened."""
    try:
        reader = array_record_module.ArrayRecordReader(path)
        try:
            return reader.num_records()
        finally:
            reader.close()
    except (RuntimeError, OSError, ValueError) as e:
        raise DamagedShardError(f"{path}: damaged shard, it cannot be opened ({reason(e)}); {remedy}.") from None


def expected_counts(total: int, num_shards: int) -> list[int]:
    """Records per shard as data_prep's writer distributes them (round-robin, empty shards dropped)."""
    return [len(range(i, total, num_shards)) for i in range(num_shards)]


class ShardRecords(grain.sources.RandomAccessDataSource):
    """The records of `paths` in order (shard 0's, then shard 1's, ...); every failure names the shard."""

    def __init__(self, paths: list[str], split: str = ""):
        self._paths = list(paths)
        self._split = split
        with concurrent.futures.ThreadPoolExecutor(min(_OPEN_THREADS, max(1, len(paths)))) as pool:
            self._counts = list(pool.map(shard_count, self._paths))  # the first failure, in shard order
        self._starts = [0, *itertools.accumulate(self._counts)]
        # The counts given as `path[start:end]`: the source does not open every shard a second time.
        self._source = grain.sources.ArrayRecordDataSource([f"{p}[0:{n}]" for p, n in zip(self._paths, self._counts)])

    @property
    def counts(self) -> list[int]:
        """Records per shard, in shard order."""
        return list(self._counts)

    def check_count(self, expected: int, where: str) -> None:
        """DamagedShardError unless the shards hold `expected` records (the manifest's count)."""
        found = self._starts[-1]
        if found == expected:
            return
        wanted = expected_counts(expected, len(self._paths))
        odd = [p for p, n, w in zip(self._paths, self._counts, wanted) if n != w]
        which = f"; {odd[0]} holds {self._counts[self._paths.index(odd[0])]}" if odd else ""
        raise DamagedShardError(
            f"{where}: the shards of split {self._split!r} hold {found} records, its manifest.json says "
            f"{expected}{which}: a shard is from another build or was cut; {REMEDY}."
        )

    def locate(self, key: int) -> tuple[str, int]:
        """(shard path, record index within it) of record `key` of the split."""
        shard = bisect.bisect_right(self._starts, key) - 1
        return self._paths[shard], key - self._starts[shard]

    def __len__(self) -> int:
        return self._starts[-1]

    def __getitem__(self, key: int) -> bytes:
        try:
            return self._source[key]
        except (RuntimeError, OSError) as e:
            path, position = self.locate(int(key))
            of_split = f" (record {int(key)} of split {self._split})" if self._split else ""
            count = self._counts[self._paths.index(path)]
            raise DamagedShardError(
                f"{path}: damaged shard, record {position} of its {count}{of_split} cannot be read "
                f"({reason(e)}); {REMEDY}."
            ) from None

    def __repr__(self) -> str:
        return f"ShardRecords({len(self._paths)} shards of split {self._split!r}, {len(self)} records)"
