"""grain input pipelines over the ArrayRecord shards written by `python -m data_prep.build_dataset`.

    data = grace_jax.configs.ferv39k.get_config().data   # the loaders read a config's `data` section
    data.augment_on_device = False                       # crop and flip on the host, not in the step
    loader = make_train_loader(data.dir, data, global_batch_size=48, seed=0)
    it = iter(loader)
    batch = next(it)   # {"video": f32 [B,16,224,224,3], "label": i32 [B], "mask": bool [B], "clip_index": i32 [B]}
    state = it.get_state(); ...; it.set_state(state)   # or orbax: grain.checkpoint.CheckpointSave(it)

`data_dir` is a local folder or a gs:// URI: ArrayRecord reads Cloud Storage objects itself (with
random access; give the loaders the URI string, not a path object). It may also be a
`tfds_source.TfdsDataset` (a dataset prepared by data_prep.tfds_builders): the same clips, read through
tensorflow-datasets, with everything below unchanged. B is the per-process batch,
global_batch_size / shard_count: process `shard_index` gets rows [shard_index * B, (shard_index + 1) * B)
of every global batch, so the global batches (and every random draw) are the same whatever the number
of processes (`BatchSliceSampler`). Train: seeded global shuffle repeated
forever, one random frame per segment, one random resized crop and horizontal flip per clip, CLIP
normalization. Eval: every clip of the split exactly once in order, centre frame per segment, centre
crop; the last batches are padded to full size with rows whose `mask` is False and `clip_index` is -1,
and every process gets the same number of batches. With `tokenizer` (a picklable callable
`list[str] -> (ids [N,L] int32, eot [N] int32)`), batches also hold `caption_ids` [B,L], `caption_eot`
[B] and `has_caption` [B] (False where a clip has no caption). `make_eval_loader(ground_truth=True)`
adds the records' localization ground truth (SynthFER test splits): `gt_expression` and `gt_distractor`
uint8 [B,T,H,W,3], aligned pixel for pixel with `video`, and `has_ground_truth` [B].

`normalize_on_host=False` keeps `video` uint8 and leaves normalization to `normalize_on_device` inside
the jitted step: a quarter of the bytes to batch, copy between processes and send to the accelerator
(a 16x224x224 clip is 9.6 MB as float32, 2.4 MB as uint8), for the same values.
`data.augment_on_device=True` (with `normalize_on_host=False`) also leaves the train crop and flip to the
accelerator: `video` is then the decoded frames at their stored size, and batches carry `crop_box`
[B,4] and `flip` [B] (plus `crop_inside`, `rotation`, `brightness` when the augmentation uses them)
for `device_transforms.augment`; the host only reads and decodes.
`data.augment="dferclip"` gives DFER-CLIP's official transforms instead of ours (crop, eval resize),
`data.brightness`/`data.rotation_degrees` its ColorJitter/RandomRotation, `data.normalize="unit"` its
[0,1] input.
"""

from __future__ import annotations

import json
import math
import sys

import grain
import jax
import jax.numpy as jnp
import ml_collections
from absl import flags

from grace_jax.data import schema, shards, tfds_source
from grace_jax.data.clip_transforms import (
    CLIP_MEAN,
    CLIP_STD,
    NORMALIZE_MODES,
    EvalClipTransform,
    Tokenizer,
    TrainClipTransform,
    check_mode,
)
from grace_jax.infra import errors
from grace_jax.infra import paths as paths_lib

__all__ = [
    "BatchSliceSampler",
    "CLIP_MEAN",
    "CLIP_STD",
    "IndexedSource",
    "make_eval_loader",
    "make_train_loader",
    "normalize_on_device",
    "read_clip_table",
    "read_manifest",
    "record_source",
]


def normalize_on_device(video: jax.Array, mode: str = "clip") -> jax.Array:
    """Pixel values 0..255 (uint8, or float after `device_transforms`) [..., 3] -> float32, as the host
    path's `clip_transforms.normalize(frames, mode)`: "clip": CLIP mean/std; "unit": x / 255 (DFER-CLIP)."""
    check_mode("normalize", mode, NORMALIZE_MODES)
    if mode == "unit":
        return video.astype(jnp.float32) / 255.0
    mean = jnp.asarray(CLIP_MEAN, jnp.float32)
    std = jnp.asarray(CLIP_STD, jnp.float32)
    return video.astype(jnp.float32) * (1.0 / (255.0 * std)) - mean / std


def read_manifest(data_dir: str | tfds_source.TfdsDataset) -> dict:
    """The manifest.json of a built dataset (class names, frame size, clips per split, ...)."""
    if isinstance(data_dir, tfds_source.TfdsDataset):
        return tfds_source.manifest(data_dir)
    _check_readable(data_dir)
    path = paths_lib.join(data_dir, schema.MANIFEST_NAME)
    if not paths_lib.isfile(path):
        what = "no such folder" if not paths_lib.exists(data_dir) else "not a dataset built by data_prep.build_dataset"
        raise errors.NotFoundError(f"{path} not found: {data_dir}: {what}")
    return json.loads(paths_lib.read_text(path))


def _check_readable(data_dir: str) -> None:
    # ArrayRecord's reader (and so grain's) opens local files and gs:// objects, nothing else.
    if paths_lib.is_uri(data_dir) and not paths_lib.is_gcs(data_dir):
        raise errors.ConfigError(
            f"data.dir={data_dir}: shards are read from a local folder or gs://bucket/folder only "
            "(ArrayRecord has no other remote reader); copy them to local disk or mount the bucket."
        )


def read_clip_table(data_dir: str, split: str) -> list[dict]:
    """Rows {"index", "clip_id", "label", "num_frames", "has_caption"} in record order: row i describes
    the clip that batches call `clip_index == i` (for per-clip predictions and error analysis)."""
    lines = paths_lib.read_text(paths_lib.join(data_dir, schema.clip_table_name(split))).splitlines()
    rows = []
    for line in lines[1:]:
        index, clip_id, label, num_frames, has_caption = line.split("\t")
        rows.append(
            {
                "index": int(index),
                "clip_id": clip_id,
                "label": int(label),
                "num_frames": int(num_frames),
                "has_caption": has_caption == "1",
            }
        )
    return rows


def _flags_for_workers(worker_count: int) -> None:
    # grain worker processes read absl flags; outside an absl app (notebooks, tests) they are unparsed,
    # and a worker would die on the first access. Defaults are what such callers want.
    if worker_count > 0 and not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def shard_paths(data_dir: str, split: str) -> list[str]:
    """The split's shard files in order, checked against the manifest."""
    manifest = read_manifest(data_dir)
    if split not in manifest["splits"]:
        raise errors.ConfigError(f"split {split!r} not in {data_dir}; it has {sorted(manifest['splits'])}")
    names = manifest["splits"][split]["files"]
    present = set(paths_lib.listdir(data_dir))  # One listing, not one request per shard on GCS.
    missing = [n for n in names if n not in present]
    if missing:
        raise errors.NotFoundError(
            f"shard {paths_lib.join(data_dir, missing[0])} listed in the manifest of {data_dir} is missing"
        )
    return [paths_lib.join(data_dir, n) for n in names]  # str paths: ArrayRecord takes no path objects.


def record_source(data_dir: str | tfds_source.TfdsDataset, split: str) -> grain.sources.RandomAccessDataSource:
    """The split's records (bytes of grace_jax.data.schema), from shards or from a TFDS dataset; a shard
    that cannot be read raises `errors.DamagedShardError` naming it (grace_jax/data/shards.py)."""
    if isinstance(data_dir, tfds_source.TfdsDataset):
        return tfds_source.TfdsRecords(data_dir, split)
    # Every shard is opened here, before any batch: a cut shard is named now, a damaged record when read.
    records = shards.ShardRecords(shard_paths(data_dir, split), split)
    records.check_count(read_manifest(data_dir)["splits"][split]["num_clips"], data_dir)
    return records


class IndexedSource(grain.sources.RandomAccessDataSource):
    """Records as {"key", "data"}, padded with {"key": -1} rows up to `length` records.

    `records`: a random-access source of record bytes (`record_source`: shards or a TFDS dataset)."""

    def __init__(self, records: grain.sources.RandomAccessDataSource, length: int | None = None):
        self._source = records
        self._num_records = len(self._source)
        self._length = self._num_records if length is None else length
        if self._length < self._num_records:
            raise ValueError(f"padded length {self._length} is below the {self._num_records} records")

    def __len__(self) -> int:
        return self._length

    @property
    def num_records(self) -> int:
        return self._num_records

    def __getitem__(self, key: int) -> dict:
        if key >= self._num_records:
            return {"key": -1, "data": b""}
        return {"key": int(key), "data": self._source[key]}

    def __repr__(self) -> str:
        return f"IndexedSource({self._source!r}, length={self._length})"


def _per_process_batch(global_batch_size: int, shard_count: int) -> int:
    if global_batch_size % shard_count:
        raise ValueError(f"global_batch_size {global_batch_size} is not divisible by {shard_count} processes")
    return global_batch_size // shard_count


class BatchSliceSampler:
    """One process's rows of every global batch of `sampler`, whatever the number of processes.

    `sampler` (unsharded) gives the global order: position k * G + r is row r of global batch k
    (G = `shard_count * per_process_batch`). grain's DataLoader, sharded `ShardOptions(shard_index,
    shard_count)`, asks this sampler for indices `i * shard_count + shard_index`; its i-th local element
    is mapped to row `shard_index * per_process_batch + i % per_process_batch` of global batch
    `i // per_process_batch`. So process p's batch k is rows [p * b, (p + 1) * b) of global batch k, the
    rows its devices hold, and the processes' batches put together are exactly the one-process batches,
    random draws included (grain seeds each element's RNG from its global position). The DataLoader's
    iterator state stays grain's own (checkpointable; restored under the same process count).
    """

    def __init__(self, sampler, *, per_process_batch: int, shard_index: int, shard_count: int):
        if not 0 <= shard_index < shard_count:
            raise ValueError(f"shard_index {shard_index} is not in [0, {shard_count})")
        self._sampler = sampler
        self._batch = per_process_batch
        self._index = shard_index
        self._count = shard_count
        self._global = per_process_batch * shard_count

    def __len__(self) -> int:
        n = len(self._sampler)
        return n if n == sys.maxsize else n // self._global * self._global  # whole global batches

    def __getitem__(self, index: int):
        local, shard = divmod(index, self._count)
        if shard != self._index or index >= len(self):
            raise IndexError(f"index {index} is not one of shard {self._index} of {self._count} in {self!r}")
        batch, row = divmod(local, self._batch)
        return self._sampler[batch * self._global + shard * self._batch + row]

    def __repr__(self) -> str:
        return (
            f"BatchSliceSampler({self._sampler!r}, per_process_batch={self._batch}, "
            f"shard_index={self._index}, shard_count={self._count})"
        )

    @property
    def shard_options(self) -> grain.sharding.ShardOptions:
        """What the DataLoader must be given: it asks for this shard's indices only."""
        return grain.sharding.ShardOptions(self._index, self._count, drop_remainder=True)


def _split_loader(
    source: IndexedSource,
    data: ml_collections.ConfigDict,
    transform,
    *,
    shuffle: bool,
    num_epochs: int | None,
    seed: int,
    global_batch_size: int,
    shard_index: int | None,
    shard_count: int | None,
    worker_count: int | None,
    worker_buffer_size: int,
) -> grain.DataLoader:
    """This process's batches of `source` in one global order (`BatchSliceSampler`)."""
    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
    batch = _per_process_batch(global_batch_size, shard_count)
    workers = data.num_workers if worker_count is None else worker_count
    _flags_for_workers(workers)
    sampler = BatchSliceSampler(  # one global order; this process's rows of each global batch
        grain.samplers.IndexSampler(
            num_records=len(source),
            shard_options=grain.sharding.ShardOptions(0, 1, drop_remainder=True),
            shuffle=shuffle,
            num_epochs=num_epochs,
            seed=seed if shuffle else None,
        ),
        per_process_batch=batch,
        shard_index=shard_index,
        shard_count=shard_count,
    )
    return grain.DataLoader(
        data_source=source,
        sampler=sampler,
        shard_options=sampler.shard_options,
        operations=[transform, grain.transforms.Batch(batch, drop_remainder=True)],
        worker_count=workers,
        worker_buffer_size=worker_buffer_size,
    )


def make_train_loader(
    data_dir: str | tfds_source.TfdsDataset,
    data: ml_collections.ConfigDict,
    *,
    global_batch_size: int,
    seed: int,
    split: str | None = None,
    shard_index: int | None = None,
    shard_count: int | None = None,
    tokenizer: Tokenizer | None = None,
    normalize_on_host: bool = True,
    worker_count: int | None = None,
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
    num_epochs: int | None = None,
    worker_buffer_size: int = 2,
) -> grain.DataLoader:
    """Training DataLoader: shuffled, augmented, repeated (`num_epochs=None`: forever), per-process batches.

    `data` is a config's `data` section (configs/base.py): the split (`train_split`, unless `split`),
    `num_frames`, `image_size`, `num_workers` (unless `worker_count`), `crop_scale`, `flip_probability`,
    `augment_on_device`, `normalize`, `augment`, `brightness` and `rotation_degrees`, described there
    and in `clip_transforms`; `data_dir` is where the records are (the trainer's resolution of `data.dir`,
    `data.tfds` or a generated SynthFER). `crop_ratio` is DFER-CLIP's GroupRandomSizedCrop aspect range.
    The same seed gives the same batches whatever the worker count; iterate with `iter(loader)` and
    checkpoint the iterator's `get_state()` (or `grain.checkpoint.CheckpointSave(iterator)` in orbax).
    """
    source = IndexedSource(record_source(data_dir, split or data.train_split))
    transform = TrainClipTransform(
        num_frames=data.num_frames,
        image_size=data.image_size,
        tokenizer=tokenizer,
        crop_scale=tuple(data.crop_scale),
        crop_ratio=tuple(crop_ratio),
        flip_probability=data.flip_probability,
        normalize_on_host=normalize_on_host,
        augment_on_device=data.augment_on_device,
        normalize=data.normalize,
        augment=data.augment,
        brightness=data.brightness,
        rotation_degrees=data.rotation_degrees,
    )
    return _split_loader(
        source,
        data,
        transform,
        shuffle=True,
        num_epochs=num_epochs,
        seed=seed,
        global_batch_size=global_batch_size,
        shard_index=shard_index,
        shard_count=shard_count,
        worker_count=worker_count,
        worker_buffer_size=worker_buffer_size,
    )


def eval_batches(num_records: int, global_batch_size: int) -> int:
    """Batches per process for one pass over `num_records` clips (the last one padded)."""
    return math.ceil(num_records / global_batch_size)


def make_eval_loader(
    data_dir: str | tfds_source.TfdsDataset,
    data: ml_collections.ConfigDict,
    *,
    global_batch_size: int,
    split: str | None = None,
    shard_index: int | None = None,
    shard_count: int | None = None,
    tokenizer: Tokenizer | None = None,
    normalize_on_host: bool = True,
    worker_count: int | None = None,
    ground_truth: bool = False,
    worker_buffer_size: int = 2,
) -> grain.DataLoader:
    """Evaluation DataLoader: one pass, every clip exactly once, padding rows masked.

    From the `data` config: the split (`eval_split`, unless `split`), `num_frames`, `image_size`,
    `num_workers` (unless `worker_count`), `normalize` and `augment` ("grace": centre square crop;
    "dferclip": the whole frame resized, DFER-CLIP's test loader).
    `ground_truth`: batches also hold `gt_expression`, `gt_distractor` (uint8 [B,T,H,W,3], the same frames,
    crop and resize as `video`) and `has_ground_truth` (bool [B]; False, with zero frames, for clips whose
    records carry none and for padding rows); see `clip_transforms.EvalClipTransform`.

    The split is padded to a multiple of `global_batch_size`; each global batch is cut into
    `shard_count` equal slices, one per process, so every process yields
    `eval_batches(num_clips, global_batch_size)` batches and each clip is in exactly one of them.
    """
    records = record_source(data_dir, split or data.eval_split)
    source = IndexedSource(records, length=eval_batches(len(records), global_batch_size) * global_batch_size)
    transform = EvalClipTransform(
        num_frames=data.num_frames,
        image_size=data.image_size,
        tokenizer=tokenizer,
        normalize_on_host=normalize_on_host,
        normalize=data.normalize,
        augment=data.augment,
        ground_truth=ground_truth,
    )
    return _split_loader(
        source,
        data,
        transform,
        shuffle=False,
        num_epochs=1,
        seed=0,
        global_batch_size=global_batch_size,
        shard_index=shard_index,
        shard_count=shard_count,
        worker_count=worker_count,
        worker_buffer_size=worker_buffer_size,
    )
