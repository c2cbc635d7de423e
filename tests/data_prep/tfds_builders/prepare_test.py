"""TFDS builders of DFEW, FERV39k and MAFW prepared from fixture trees in the three layouts and read back
with tfds.data_source, with TensorFlow blocked: the same clips and JPEG bytes as data_prep's shards, the
same bad-clip report, and nothing written when a build fails."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from tfds_fixtures import assert_no_tensorflow, block_tensorflow  # noqa: E402
from video_fixtures import make_frame_folder, read_split  # noqa: E402

block_tensorflow()  # checked before tensorflow_datasets is imported

import tensorflow_datasets as tfds  # noqa: E402

from data_prep import job, report  # noqa: E402
from data_prep.tfds_builders import prepare  # noqa: E402
from data_prep.writer import OutputExistsError  # noqa: E402
from grace_jax import cli  # noqa: E402
from grace_jax.data import schema  # noqa: E402


def _examples(name, data_dir, split):
    source = tfds.data_source(name, data_dir=str(data_dir), split=split, download=False)
    return {ex["clip_id"].decode(): ex for ex in (source[i] for i in range(len(source)))}


def _shards(root, out, frame_size=32, **kw):
    job.build(job.BuildConfig(out=str(out), root=str(root), frame_size=frame_size, workers=1, progress=False,
                              command=("test",), **kw))
    return {s: {r.clip_id: r for r in read_split(str(out), s)} for s in ("train", "test")}


def _same_as_shards(examples, records, frame_size=32):
    assert sorted(examples) == sorted(records)
    for clip_id, ex in examples.items():
        record = records[clip_id]
        assert ex["label"] == record.label
        assert ex["frame_size"] == frame_size
        assert list(ex["frames"]) == [record.frame_bytes(i) for i in range(record.num_frames)]
        assert (ex["caption"].decode() if ex["has_caption"] else None) == record.caption


def test_dfew_fold_has_the_shards_clips_and_their_bad_clip_report(dfew_tree, tmp_path):
    done = prepare.build("dfew", str(dfew_tree), str(tmp_path / "tfds"), fold=1, frame_size=32,
                       max_bad_fraction=0.6, progress=False)
    assert done.name == "dfew/fold_1_32px" and done.num_clips == {"train": 3, "test": 2}
    shards = _shards(dfew_tree, tmp_path / "shards", dataset="dfew", fold=1, max_bad_fraction=0.6)
    for split in ("train", "test"):
        _same_as_shards(_examples(done.name, tmp_path / "tfds", split), shards[split])
    ours = report.read_report(done.report)
    theirs = report.read_report(str(tmp_path / "shards" / schema.BAD_CLIP_REPORT_NAME))
    assert sorted(ours, key=lambda b: b.source) == sorted(theirs, key=lambda b: b.source) and len(ours) == 5
    info = tfds.builder(done.name, data_dir=str(tmp_path / "tfds")).info
    assert info.features["label"].names == list(schema.BASIC_CLASSES)
    assert info.metadata["frame_size"] == 32
    files = os.listdir(done.path)
    assert any(f.startswith("dfew-train.array_record-") for f in files), files
    assert_no_tensorflow()


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
    shards = _shards(root, tmp_path / "shards", frame_size=224, dataset="ferv39k", max_bad_fraction=0.0)
    for split in ("train", "test"):
        _same_as_shards(_examples(done.name, tmp_path / "tfds", split), shards[split], frame_size=224)
    # The registered config is also what the bare dataset name loads.
    assert len(tfds.data_source("ferv39k", data_dir=str(tmp_path / "tfds"), split="train")) == 2
    assert_no_tensorflow()


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
    train = _examples(done.name, tmp_path / "tfds", "train")
    assert train["data/frames/00025"]["caption"] == b"The man frowns, lips pressed."
    assert not train["data/frames/00026"]["has_caption"] and train["data/frames/00026"]["label"] == 7
    shards = _shards(root, tmp_path / "shards", dataset="mafw", fold=2, captions=str(captions))
    for split in ("train", "test"):
        _same_as_shards(_examples(done.name, tmp_path / "tfds", split), shards[split])
    info = tfds.builder(done.name, data_dir=str(tmp_path / "tfds")).info
    assert len(info.features["label"].names) == 11 and info.features["label"].names[10] == "disappointment"
    assert_no_tensorflow()


def test_too_many_bad_clips_fail_clearly_and_leave_no_records(dfew_tree, tmp_path):
    with pytest.raises(job.BuildError, match=r"3 of 10 listed clips are bad \(30.0%\), above max_bad_fraction=0.2") as e:
        prepare.build("dfew", str(dfew_tree), str(tmp_path / "tfds"), fold=1, frame_size=32, max_bad_fraction=0.2,
                    progress=False)
    assert "set_1_train.txt:4" in str(e.value)
    written = [f for _, _, files in os.walk(tmp_path / "tfds") for f in files]
    assert not [f for f in written if "array_record" in f or f == "dataset_info.json"], written


def test_bad_arguments_and_an_existing_build_are_refused(dfew_tree, tmp_path):
    with pytest.raises(cli.UsageError, match="needs --fold=1..5"):
        prepare.build("dfew", str(dfew_tree), str(tmp_path / "t"), frame_size=32)
    with pytest.raises(cli.UsageError, match="has no folds"):
        prepare.build("ferv39k", str(dfew_tree), str(tmp_path / "t"), fold=1)
    with pytest.raises(cli.NotFoundError, match="--manual_dir=.*nowhere is not a folder"):
        prepare.build("dfew", str(tmp_path / "nowhere"), str(tmp_path / "t"), fold=1)
    kw = dict(fold=2, frame_size=32, progress=False)
    first = prepare.build("dfew", str(dfew_tree), str(tmp_path / "t"), **kw)
    with pytest.raises(OutputExistsError, match="already holds dfew/fold_2_32px.*--overwrite"):
        prepare.build("dfew", str(dfew_tree), str(tmp_path / "t"), **kw)
    again = prepare.build("dfew", str(dfew_tree), str(tmp_path / "t"), overwrite=True, **kw)
    assert again.num_clips == first.num_clips == {"train": 1, "test": 1}
