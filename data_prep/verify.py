"""`python -m data_prep.build_dataset --verify --out=DIR`: every record of every split read back.

A dataset copied between machines (rsync, gsutil, a cut transfer) can hold a shard with flipped bytes
or one cut short; the trainer names such a shard when it meets it, maybe hours in. This check reads
every record of every shard the manifest lists, parses each record's header (grace_jax.data.schema)
and compares the counts with the manifest, in minutes for a whole dataset:

    python -m data_prep.build_dataset --verify --out=/data/shards/dfew3
    train: 9356 records in 19 shards, all readable (manifest.json: 9356)
    test: 2341 records in 5 shards, all readable (manifest.json: 2341)
    /data/shards/dfew3: every shard readable, counts as in manifest.json

A damaged shard is named on a line of its own (with the records that cannot be read), and the command
ends with `build_dataset: error: ...` and exit status 1. Nothing is written.
"""

from __future__ import annotations

import dataclasses

from array_record.python import array_record_module

from grace_jax.data import input_pipeline, schema, shards
from grace_jax.data.errors import DamagedShardError
from grace_jax.infra.errors import UserError

__all__ = ["DatasetDamagedError", "ShardReport", "check_shard", "verify"]

_LISTED = 5  # bad record indices listed per shard


class DatasetDamagedError(UserError):
    """--verify found shards that cannot be read or counts that differ from the manifest."""


@dataclasses.dataclass
class ShardReport:
    path: str
    records: int = 0
    bad: list[tuple[int, str]] = dataclasses.field(default_factory=list)  # (record index, reason)
    error: str = ""  # the shard as a whole cannot be opened

    @property
    def ok(self) -> bool:
        return not self.bad and not self.error

    def describe(self) -> str:
        if self.error:
            return self.error
        listed = ", ".join(str(i) for i, _ in self.bad[:_LISTED]) + (", ..." if len(self.bad) > _LISTED else "")
        return (
            f"{self.path}: damaged shard, {len(self.bad)} of its {self.records} records cannot be read "
            f"(record {listed}: {self.bad[0][1]}); {shards.COPY_AGAIN}."
        )


def check_shard(path: str) -> ShardReport:
    """Reads every record of one shard; the report lists those that cannot be read or parsed."""
    report = ShardReport(path)
    try:
        report.records = shards.shard_count(path, shards.COPY_AGAIN)
    except DamagedShardError as e:
        report.error = str(e)
        return report
    reader = array_record_module.ArrayRecordReader(path, "readahead_buffer_size:0")
    try:
        for i in range(report.records):
            try:
                schema.parse(reader.read([i])[0])
            except (RuntimeError, OSError, ValueError, UnicodeDecodeError) as e:
                report.bad.append((i, shards.reason(e)))
    finally:
        reader.close()
    return report


def verify(out: str, echo=print) -> dict:
    """Checks every split of the dataset at `out`; `echo` gets one line per split and per damaged
    shard. Returns {split: records}; raises DatasetDamagedError when anything is wrong."""
    manifest = input_pipeline.read_manifest(out)
    problems = []
    counts = {}
    for split, info in manifest["splits"].items():
        reports = [check_shard(p) for p in input_pipeline.shard_paths(out, split)]
        for report in reports:
            if not report.ok:
                problems.append(report.describe())
                echo(report.describe())
        found = sum(r.records - len(r.bad) for r in reports)
        expected = info["num_clips"]
        counts[split] = found
        state = "all readable" if all(r.ok for r in reports) else "DAMAGED"
        echo(f"{split}: {found} readable records in {len(reports)} shard(s), {state} (manifest.json: {expected})")
        if found != expected and all(r.ok for r in reports):
            wanted = shards.expected_counts(expected, len(reports))
            odd = [f"{r.path} holds {r.records}, expected {w}" for r, w in zip(reports, wanted) if r.records != w]
            problem = f"split {split}: {found} records, manifest.json says {expected}" + (f" ({odd[0]})" if odd else "")
            problems.append(problem)
            echo(problem)
    if problems:
        raise DatasetDamagedError(f"{out}: {len(problems)} problem(s), listed above; the first: {problems[0]}")
    echo(f"{out}: every shard readable, counts as in manifest.json")
    return counts
