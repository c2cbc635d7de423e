"""The mafw builder on a MAFW fixture tree (lists written on Windows, a captions file): 11 classes,
captions and has_caption, the shards' bytes; TensorFlow checked absent."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from tfds_fixtures import assert_no_tensorflow, assert_same_as_shards, block_tensorflow, examples, shard_records  # noqa: E402,E501

block_tensorflow()  # checked before tensorflow_datasets is imported

import tensorflow_datasets as tfds  # noqa: E402

from data_prep.tfds_builders import prepare  # noqa: E402


def test_mafw_eleven_classes_and_captions(mafw_tree, tmp_path):
    root, captions = mafw_tree
    done = prepare.build(
        "mafw", str(root), str(tmp_path / "tfds"), fold=2, frame_size=32, captions=str(captions), progress=False
    )
    train = examples(done.name, tmp_path / "tfds", "train")
    assert train["data/frames/00025"]["caption"] == b"The man frowns, lips pressed."
    assert not train["data/frames/00026"]["has_caption"] and train["data/frames/00026"]["label"] == 7
    shards = shard_records(root, tmp_path / "shards", dataset="mafw", fold=2, captions=str(captions))
    for split in ("train", "test"):
        assert_same_as_shards(examples(done.name, tmp_path / "tfds", split), shards[split])
    info = tfds.builder(done.name, data_dir=str(tmp_path / "tfds")).info
    assert len(info.features["label"].names) == 11 and info.features["label"].names[10] == "disappointment"
    assert_no_tensorflow()
