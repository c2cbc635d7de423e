"""The dfew builder on a DFEW fixture tree (lists from another machine, bad clips): the shards' clips
and JPEG bytes, the same bad-clip report, DFEW's classes; TensorFlow checked absent."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from tfds_fixtures import assert_no_tensorflow, assert_same_as_shards, block_tensorflow, examples, shard_records  # noqa: E402,E501

block_tensorflow()  # checked before tensorflow_datasets is imported

import tensorflow_datasets as tfds  # noqa: E402

from data_prep import report  # noqa: E402
from data_prep.tfds_builders import prepare  # noqa: E402
from grace_jax.data import schema  # noqa: E402


def test_dfew_fold_has_the_shards_clips_and_their_bad_clip_report(dfew_tree, tmp_path):
    done = prepare.build(
        "dfew", str(dfew_tree), str(tmp_path / "tfds"), fold=1, frame_size=32, max_bad_fraction=0.6, progress=False
    )
    assert done.name == "dfew/fold_1_32px" and done.num_clips == {"train": 3, "test": 2}
    shards = shard_records(dfew_tree, tmp_path / "shards", dataset="dfew", fold=1, max_bad_fraction=0.6)
    for split in ("train", "test"):
        assert_same_as_shards(examples(done.name, tmp_path / "tfds", split), shards[split])
    ours = report.read_report(done.report)
    theirs = report.read_report(str(tmp_path / "shards" / schema.BAD_CLIP_REPORT_NAME))
    assert sorted(ours, key=lambda b: b.source) == sorted(theirs, key=lambda b: b.source) and len(ours) == 5
    info = tfds.builder(done.name, data_dir=str(tmp_path / "tfds")).info
    assert info.features["label"].names == list(schema.BASIC_CLASSES)
    assert info.metadata["frame_size"] == 32
    files = os.listdir(done.path)
    assert any(f.startswith("dfew-train.array_record-") for f in files), files
    assert_no_tensorflow()
