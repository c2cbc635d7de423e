"""The mafw builder on a MAFW fixture tree (lists written on Windows, a captions file): 11 classes,
captions and has_caption, the shards' bytes; TensorFlow checked absent."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from tfds_fixtures import assert_no_tensorflow, assert_same_as_shards, block_tensorflow, examples, shard_records  # noqa: E402,E501
from video_fixtures import make_frame_folder  # noqa: E402

block_tensorflow()  # checked before tensorflow_datasets is imported

import tensorflow_datasets as tfds  # noqa: E402

from data_prep.tfds_builders import prepare  # noqa: E402


def test_mafw_eleven_classes_and_captions(tmp_path):
    root = tmp_path / "MAFW"
    for clip, n in (("00025", 6), ("00026", 7), ("00027", 5)):
        make_frame_folder(str(root / "data" / "frames" / clip), n)
    other = "D:\\datasets\\MAFW\\data\\frames"  # a list written on Windows
    (root / "lists").mkdir()
    (root / "lists" / "set_2_train.txt").write_text(f"{other}\\00025 6 10\n{other}\\00026 7 7\n")
    (root / "lists" / "set_2_test.txt").write_text(f"{other}\\00027 5 8\n")
    (root / "lists" / "set_1_train.txt").write_text(f"{other}\\00027 5 0\n")
    (root / "lists" / "set_1_test.txt").write_text(f"{other}\\00026 7 0\n")
    captions = tmp_path / "captions.tsv"
    captions.write_text("clip_id\ttext\n00025\tThe man frowns, lips pressed.\n00027\tShe looks around, worried.\n")
    done = prepare.build("mafw", str(root), str(tmp_path / "tfds"), fold=2, frame_size=32, captions=str(captions),
                         progress=False)
    train = examples(done.name, tmp_path / "tfds", "train")
    assert train["data/frames/00025"]["caption"] == b"The man frowns, lips pressed."
    assert not train["data/frames/00026"]["has_caption"] and train["data/frames/00026"]["label"] == 7
    shards = shard_records(root, tmp_path / "shards", dataset="mafw", fold=2, captions=str(captions))
    for split in ("train", "test"):
        assert_same_as_shards(examples(done.name, tmp_path / "tfds", split), shards[split])
    info = tfds.builder(done.name, data_dir=str(tmp_path / "tfds")).info
    assert len(info.features["label"].names) == 11 and info.features["label"].names[10] == "disappointment"
    assert_no_tensorflow()
