"""The ferv39k builder on a FERV39k fixture tree (upper-case folder in the lists), at 224 px: the
registered config, loadable by the bare name; TensorFlow checked absent."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from tfds_fixtures import assert_no_tensorflow, assert_same_as_shards, block_tensorflow, examples, shard_records  # noqa: E402,E501
from video_fixtures import make_frame_folder  # noqa: E402

block_tensorflow()  # checked before tensorflow_datasets is imported

import tensorflow_datasets as tfds  # noqa: E402

from data_prep.tfds_builders import prepare  # noqa: E402


def test_ferv39k_layout_at_the_default_frame_size(tmp_path):
    root = tmp_path / "FERV39k"
    clips = {"Action/Sad/0015": (9, 1), "Action/Happy/0002": (8, 0), "Daily/Fear/0100": (12, 6)}
    for rel, (n, _) in clips.items():
        make_frame_folder(str(root / "2_ClipsforFaceCrop" / rel), n, size=(30, 30))
    lines = [f"/mnt/storage/FERV39K/2_ClipsforFaceCrop/{rel} {n} {y}" for rel, (n, y) in clips.items()]
    (root / "FERV39k_train.txt").write_text("\n".join(lines[:2]) + "\n")
    (root / "FERV39k_test.txt").write_text(lines[2] + "\n")
    done = prepare.build("ferv39k", str(root), str(tmp_path / "tfds"), max_bad_fraction=0.0, progress=False)
    assert done.name == "ferv39k/default" and done.num_bad_clips == 0
    shards = shard_records(root, tmp_path / "shards", frame_size=224, dataset="ferv39k", max_bad_fraction=0.0)
    for split in ("train", "test"):
        assert_same_as_shards(examples(done.name, tmp_path / "tfds", split), shards[split], frame_size=224)
    # The registered config is also what the bare dataset name loads.
    assert len(tfds.data_source("ferv39k", data_dir=str(tmp_path / "tfds"), split="train")) == 2
    assert_no_tensorflow()
