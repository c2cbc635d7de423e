"""Test helpers for the TFDS builders and reader: TensorFlow checked unimportable, and a DFEW-layout tree."""

from __future__ import annotations

import importlib.util
import os
import sys

from video_fixtures import make_frame_folder


def _tensorflow_modules() -> list[str]:
    return [m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow.")]


def block_tensorflow() -> None:
    """Checks that TensorFlow cannot be imported here: it is not installed (the `[tfds]` and `[test]`
    extras must not pull it in) and nothing imported it. (Masking an installed TensorFlow instead, with
    a None entry in sys.modules, changes tfds's own behaviour: it tests `"tensorflow" in sys.modules`.)"""
    assert importlib.util.find_spec("tensorflow") is None, (
        "TensorFlow is installed in this environment; the TFDS tests prove that nothing needs it only "
        "where it is absent (pip uninstall tensorflow, or use a fresh venv with .[test])"
    )
    loaded = _tensorflow_modules()
    assert not loaded, f"TensorFlow was imported before the TFDS tests: {loaded[:3]}"


def assert_no_tensorflow() -> None:
    """Still not importable, and nothing imported it."""
    assert importlib.util.find_spec("tensorflow") is None
    try:
        import tensorflow  # noqa: F401
    except ModuleNotFoundError:
        pass
    else:
        raise AssertionError("tensorflow is importable in the test process")
    assert not _tensorflow_modules()


def dfew_layout(root, train: int, test: int, *, frames: tuple[int, int] = (4, 7), fold: int = 1) -> str:
    """A DFEW folder (DFEW_Frame_Face/<clip>/, annotation/set_<fold>_{train,test}.txt with paths from
    another machine) of `train` + `test` clips of frames[0]..frames[1] frames, labels cycling 0..6."""
    faces = os.path.join(root, "DFEW_Frame_Face")
    other = "/home/someone/DFEW/DFEW_Frame_Face"
    lines = {"train": [], "test": []}
    for i in range(train + test):
        n = frames[0] + i % (frames[1] - frames[0] + 1)
        make_frame_folder(os.path.join(faces, f"{i + 1:05d}"), n, size=(20, 18))
        lines["train" if i < train else "test"].append(f"{other}/{i + 1:05d} {n} {i % 7}")
    os.makedirs(os.path.join(root, "annotation"), exist_ok=True)
    for split, rows in lines.items():
        with open(os.path.join(root, "annotation", f"set_{fold}_{split}.txt"), "w") as f:
            f.write("\n".join(rows) + "\n")
    return str(root)


def examples(name: str, data_dir, split: str) -> dict:
    """clip id -> example of one split of a prepared TFDS dataset, read with tfds.data_source."""
    import tensorflow_datasets as tfds

    source = tfds.data_source(name, data_dir=str(data_dir), split=split, download=False)
    return {ex["clip_id"].decode(): ex for ex in (source[i] for i in range(len(source)))}


def shard_records(root, out, frame_size: int = 32, **kw) -> dict:
    """{split: {clip id: RecordView}} of data_prep shards built from the same tree."""
    from video_fixtures import read_split

    from data_prep import job

    job.build(
        job.BuildConfig(
            out=str(out), root=str(root), frame_size=frame_size, workers=1, progress=False, command=("test",), **kw
        )
    )
    return {s: {r.clip_id: r for r in read_split(str(out), s)} for s in ("train", "test")}


def assert_same_as_shards(examples_by_id: dict, records: dict, frame_size: int = 32) -> None:
    """Every TFDS example holds its shard record's label, frame side, JPEG bytes and caption."""
    assert sorted(examples_by_id) == sorted(records)
    for clip_id, ex in examples_by_id.items():
        record = records[clip_id]
        assert ex["label"] == record.label
        assert ex["frame_size"] == frame_size
        assert list(ex["frames"]) == [record.frame_bytes(i) for i in range(record.num_frames)]
        assert (ex["caption"].decode() if ex["has_caption"] else None) == record.caption
