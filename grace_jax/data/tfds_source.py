"""Clips of a tensorflow-datasets dataset (data_prep.tfds_builders' dfew, ferv39k, mafw) for the pipeline.

`--config.data.tfds=dfew/fold_3 --config.data.tfds_dir=/data/tensorflow_datasets` trains on what
`python -m data_prep.tfds_builders.build` prepared (and `python -m grace_jax.evaluate --tfds=dfew/fold_3
--tfds_dir=...` evaluates on it). The loaders take a `TfdsDataset` wherever they take
a shard folder: `records(dataset, split)` gives the split's clips as the same record bytes the shards
hold (grace_jax.data.schema), so sampling, augmentation, evaluation and the checkpointable iterator
state are those of the shards; `manifest(dataset)` gives what the trainer reads from a shard folder's
manifest.json (class names, clips per split, frame side).

Reading needs tensorflow-datasets (`pip install -e '.[tfds]'`), never TensorFlow, and not data_prep:
a prepared dataset is read from its files (dataset_info.json, features.json), no builder code needed.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import os

import grain

from grace_jax.data import schema, shards
from grace_jax.data.errors import DamagedShardError
from grace_jax.infra import errors, paths

# data_prep.tfds_builders' datasets (named here: reading never imports data_prep).
BUILDERS = ("dfew", "ferv39k", "mafw")
_INSTALL_HINT = "install it with pip install -e '.[tfds]' (tensorflow-datasets without TensorFlow)"


@dataclasses.dataclass(frozen=True)
class TfdsDataset:
    """A prepared TFDS dataset: `name` as tfds.data_source takes it ("dfew/fold_3"), `data_dir` its
    data folder ("" means tfds's default, $TFDS_DATA_DIR or ~/tensorflow_datasets)."""

    name: str
    data_dir: str = ""

    @classmethod
    def from_config(cls, data) -> TfdsDataset:
        """From a config's `data` fields `tfds` and `tfds_dir` (a relative tfds_dir is made absolute)."""
        tfds_dir = data.get("tfds_dir", "")
        return cls(data.tfds, paths.resolve(tfds_dir) if tfds_dir else "")

    def __str__(self) -> str:
        return f"tfds:{self.name} in {self.data_dir or '(tfds default data_dir)'}"


def _tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise errors.ConfigError(f"data.tfds needs tensorflow-datasets ({e}); {_INSTALL_HINT}") from None
    return tfds


def _builder(dataset: TfdsDataset, field: str = "data.tfds"):
    """The prepared dataset's tfds builder; errors name `field` (the config field, or a command's flag
    such as grace_jax.evaluate's "--tfds") and `field`_dir."""
    tfds = _tfds()
    try:
        builder = tfds.builder(dataset.name, data_dir=dataset.data_dir or None)
        prepared = builder.is_prepared()
    except Exception as e:  # noqa: BLE001 - tfds raises several types for "not there"; all mean the same
        prepared, reason = False, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    else:
        reason = f"{os.fspath(builder.data_dir)} holds no finished build"
        config = builder.builder_config
        if "/" not in dataset.name and config is not None and config.name != "default":
            # tfds would take the first config (a fold) in silence: say which one to name.
            raise errors.ConfigError(
                f"{field}={dataset.name}: name its config too, e.g. {dataset.name}/{config.name} "
                "(a bare name means the first config)."
            )
    if not prepared:
        base = dataset.name.split("/")[0]
        if base in BUILDERS:
            hint = (f"prepare it with python -m data_prep.tfds_builders.build --dataset={base} "
                    f"--manual_dir=<its folder> --data_dir=<{field.lstrip('-')}_dir> (--fold=k)")  # fmt: skip
        else:
            hint = f"data_prep.tfds_builders prepares {', '.join(BUILDERS)}"
        raise errors.NotFoundError(
            f"{field}={dataset.name}: not prepared in {field}_dir={dataset.data_dir or '(tfds default)'} "
            f"({reason}); {hint}."
        )
    return builder


def manifest(dataset: TfdsDataset, field: str = "data.tfds") -> dict:
    """The parts of a shard folder's manifest.json the trainer and its checks read, from dataset_info.
    `field`: what errors call the dataset's name (see `_builder`)."""
    info = _builder(dataset, field).info
    names = list(info.features["label"].names)
    frame_size = (info.metadata or {}).get("frame_size")
    return {
        "dataset": dataset.name.split("/")[0],
        "class_names": names,
        "num_classes": len(names),
        "frame_size": frame_size,
        "splits": {s: {"num_clips": int(v.num_examples)} for s, v in info.splits.items()},
        "source": {"tfds": dataset.name, "tfds_dir": dataset.data_dir},
    }


class TfdsRecords(grain.sources.RandomAccessDataSource):
    """One split of a TFDS dataset as record bytes (grace_jax.data.schema), one per clip.

    The frames stay the JPEG bytes tfds stored, so the transforms decode only the frames they sample.
    Picklable (grain worker processes): tfds's data source pickles.
    """

    def __init__(self, dataset: TfdsDataset, split: str):
        builder = _builder(dataset)
        if split not in builder.info.splits:
            raise errors.ConfigError(f"split {split!r} not in {dataset}; it has {sorted(builder.info.splits)}")
        self._name = str(dataset)
        self._split = split
        self._source = builder.as_data_source(split=split)
        # The split's files and their record counts, to name the file of a record that cannot be read.
        files = builder.info.splits[split].file_instructions
        self._files = [os.fspath(f.filename) for f in files]
        self._starts = [0, *itertools.accumulate(int(f.take) for f in files)]

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> bytes:
        try:
            example = self._source[index]
        except (RuntimeError, OSError) as e:  # riegeli's "Corrupted Riegeli/records file", naming no file
            file = bisect.bisect_right(self._starts, index) - 1
            where = f"{self._files[file]}: record {index - self._starts[file]} of that file" if self._files else ""
            raise DamagedShardError(
                f"{where} (record {index} of split {self._split} of {self._name}) cannot be read "
                f"({shards.reason(e)}); the file is damaged: copy it again or prepare the dataset again."
            ) from None
        caption = example["caption"].decode("utf-8") if example["has_caption"] else None
        return schema.serialize(
            schema.ClipRecord(
                label=int(example["label"]),
                clip_id=example["clip_id"].decode("utf-8"),
                frames=tuple(example["frames"]),
                frame_size=int(example["frame_size"]),
                caption=caption,
            )
        )

    def __repr__(self) -> str:
        return f"TfdsRecords({self._name})"


def check_config(config) -> dict:
    """Before any work (grace_jax.config_checks): data.tfds is prepared and has the config's splits,
    with clips, and the config's class count. Returns `manifest`; raises errors.UserError naming the field."""
    data = config.data
    if data.tfds.count("/") > 1 or not data.tfds.strip("/"):
        raise errors.ConfigError(f"data.tfds={data.tfds!r}: give a dataset name with its config, e.g. dfew/fold_3")
    dataset = TfdsDataset.from_config(data)
    found = manifest(dataset)
    for field in ("train_split", "eval_split"):
        if data[field] not in found["splits"]:
            raise errors.ConfigError(
                f"data.{field}={data[field]!r}: {dataset} has no such split; it holds {sorted(found['splits'])}."
            )
        if not found["splits"][data[field]]["num_clips"]:
            raise errors.ConfigError(f"data.{field}={data[field]!r}: {dataset} holds no clips of that split.")
    # The class count against model.num_classes: grace_jax.text.class_set, as for shard folders.
    return found
