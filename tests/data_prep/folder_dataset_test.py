"""--dataset=folder: a folder of videos with CSV labels; bad rows reported; --face_crop=auto; class
names of one's own (from the labels or --class_names)."""

import os
import sys

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from video_fixtures import grey_clip, make_frame_folder, read_split, write_video  # noqa: E402

from data_prep import job, report
from grace_jax.data import schema

CONTAINERS = [("mp4", "mpeg4"), ("avi", "mjpeg"), ("mov", "libx264"), ("mkv", "ffv1"), ("webm", "libvpx")]


def test_folder_dataset_from_csv_with_captions_and_bad_rows(tmp_path):
    videos = tmp_path / "myclips"
    videos.mkdir()
    for i, (ext, codec) in enumerate(CONTAINERS):
        write_video(str(videos / f"c{i}.{ext}"), grey_clip(5 + i), codec)
    make_frame_folder(str(videos / "framesclip"), 4)
    (videos / "bad.mp4").write_bytes(b"garbage")
    rows = [
        "path,label,caption",
        "c0.mp4,0,a smile spreads",
        "c1.avi,sadness,",
        "c2.mov,3",
        "c3.mkv,surprise,eyes go wide",
        "c4.webm,6",
        "framesclip,2",
        "bad.mp4,1",
        "missing.mp4,1",
        "c0.mp4,12",
        "notes.txt,1",
        "too,many,fields,here",
    ]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    manifest = job.build(
        job.BuildConfig(
            dataset="folder",
            videos=str(videos),
            labels=(f"train={tmp_path / 'train.csv'}",),
            out=str(out),
            frame_size=16,
            max_bad_fraction=0.6,
            workers=1,
            progress=False,
        )
    )
    records = read_split(str(out), "train")
    assert [(r.clip_id, r.label, r.num_frames, r.caption) for r in records] == [
        ("c0", 0, 5, "a smile spreads"),
        ("c1", 1, 6, None),
        ("c2", 3, 7, None),
        ("c3", 4, 8, "eyes go wide"),
        ("c4", 6, 9, None),
        ("framesclip", 2, 4, None),
    ]
    assert records[3].decode_frames([0]).shape == (1, 16, 16, 3)
    bad = report.read_report(str(out / schema.BAD_CLIP_REPORT_NAME))
    by_line = {b.source.rsplit(":", 1)[1]: b for b in bad}
    assert set(by_line) == {"8", "9", "10", "11", "12"}
    assert "bad.mp4" in by_line["8"].reason and "missing.mp4" in by_line["9"].reason
    assert "'12'" in by_line["10"].reason and "not a video" in by_line["11"].reason
    assert "malformed" in by_line["12"].reason
    assert manifest["splits"]["train"]["num_captions"] == 2


@pytest.mark.slow
def test_face_crop_auto_stores_face_crops_and_reports_clips_without_a_face(tmp_path):
    import face_scenes  # tests/face_scenes.py

    rng = np.random.default_rng(3)
    room = face_scenes.scene(rng, 240, 426)
    videos = tmp_path / "clips"
    videos.mkdir()
    frames, truth = [], []
    for t in range(10):  # the face drifts right and grows a little
        frame, box = face_scenes.paste_face(room, 40 + 12 * t, 50, 120 + 2 * t)
        frames.append(frame)
        truth.append(box)
    write_video(str(videos / "face.mp4"), np.stack(frames), "libx264")
    write_video(str(videos / "nobody.mp4"), np.stack([room] * 10), "libx264")
    (tmp_path / "train.csv").write_text("path,label\nface.mp4,happiness\nnobody.mp4,sadness\n")
    out = tmp_path / "out"
    manifest = job.build(
        job.BuildConfig(
            dataset="folder",
            videos=str(videos),
            labels=(f"train={tmp_path / 'train.csv'}",),
            out=str(out),
            frame_size=64,
            max_bad_fraction=0.6,
            workers=1,
            progress=False,
            face_crop="auto",
        )
    )
    assert manifest["face_crop"] == "auto"
    (record,) = read_split(str(out), "train")
    stored = record.decode_frames(list(range(10))).astype(np.float32)
    # Against the square around the true face box (20% margin), cut from the frame by hand; and
    # against the centre square the frame would give without face cropping (JPEG and the track's
    # smoothing keep the first from being exact).
    for t in (0, 5, 9):
        x0, y0, x1, y1 = truth[t]
        half = max(x1 - x0, y1 - y0) * 1.4 / 2
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        expected = Image.fromarray(frames[t]).resize(
            (64, 64), Image.BILINEAR, box=(cx - half, cy - half, cx + half, cy + half)
        )
        centre = Image.fromarray(frames[t]).resize((64, 64), Image.BILINEAR, box=(93, 0, 333, 240))
        near = np.abs(stored[t] - np.asarray(expected, np.float32)).mean()
        far = np.abs(stored[t] - np.asarray(centre, np.float32)).mean()
        assert near < 20 and far > 3 * near, (t, near, far)  # measured: near 10-15, far 65-69
    (bad,) = report.read_report(str(out / schema.BAD_CLIP_REPORT_NAME))
    assert bad.path.endswith("nobody.mp4") and "no face" in bad.reason


def _three_class_folder(tmp_path, train_labels, test_labels):
    """Tiny videos with CSVs of the given labels; returns (videos, train.csv, test.csv)."""
    videos = tmp_path / "own"
    videos.mkdir()
    csvs = []
    for split, labels in (("train", train_labels), ("test", test_labels)):
        rows = ["path,label"]
        for i, label in enumerate(labels):
            write_video(str(videos / f"{split}{i}.mp4"), grey_clip(4 + i % 3, 16, 16), "mpeg4")
            rows.append(f"{split}{i}.mp4,{label}")
        csvs.append(tmp_path / f"{split}.csv")
        csvs[-1].write_text("\n".join(rows) + "\n")
    return videos, csvs[0], csvs[1]


def _build(tmp_path, videos, train_csv, test_csv, **kw):
    return job.build(
        job.BuildConfig(
            dataset="folder",
            videos=str(videos),
            out=str(tmp_path / "out"),
            labels=(f"train={train_csv}", f"test={test_csv}"),
            frame_size=16,
            workers=1,
            progress=False,
            **kw,
        )
    )


def test_classes_of_its_own_come_from_the_labels_sorted(tmp_path):
    # "Happy" and "happy" are one class, spelt as first seen; the test split lacks "tense".
    videos, train_csv, test_csv = _three_class_folder(
        tmp_path, ["tense", "calm", "Happy", "happy", "calm"], ["calm", "happy"]
    )
    manifest = _build(tmp_path, videos, train_csv, test_csv)
    assert manifest["class_names"] == ["calm", "Happy", "tense"] and manifest["num_classes"] == 3
    assert manifest["class_names_source"] == "labels"
    assert [r.label for r in read_split(str(tmp_path / "out"), "train")] == [2, 0, 1, 1, 0]
    assert [r.label for r in read_split(str(tmp_path / "out"), "test")] == [0, 1]
    assert manifest["splits"]["train"]["class_counts"] == [2, 2, 1]
    assert manifest["splits"]["test"]["class_counts"] == [1, 1, 0]


def test_class_names_flag_sets_the_order_and_accepts_indices(tmp_path):
    videos, train_csv, test_csv = _three_class_folder(tmp_path, ["tense", "0", "HAPPY", "2"], ["1", "calm"])
    manifest = _build(tmp_path, videos, train_csv, test_csv, class_names=("calm", "tense", "happy"))
    assert manifest["class_names"] == ["calm", "tense", "happy"]
    assert manifest["class_names_source"] == "--class_names"
    assert [r.label for r in read_split(str(tmp_path / "out"), "train")] == [1, 0, 2, 2]
    assert [r.label for r in read_split(str(tmp_path / "out"), "test")] == [1, 0]


def test_integer_labels_without_the_flag_keep_dfews_classes(tmp_path):
    videos, train_csv, test_csv = _three_class_folder(tmp_path, ["0", "sadness"], ["6"])
    manifest = _build(tmp_path, videos, train_csv, test_csv)
    assert manifest["class_names"] == list(schema.BASIC_CLASSES)
    assert [r.label for r in read_split(str(tmp_path / "out"), "train")] == [0, 1]


@pytest.mark.parametrize(
    "names, labels, message",
    [
        (("calm", "Calm", "x"), ["calm"], "--class_names: a class named twice"),
        (("calm", "", "x"), ["calm"], "--class_names: an empty class name"),
        (("calm", "3"), ["calm"], "--class_names: a class name that is a number"),
        (
            (),
            ["calm", "calm"],
            "one class only (calm); a classifier needs two or more; list every class with --class_names",
        ),
    ],
)
def test_bad_class_names_are_one_clear_error(tmp_path, names, labels, message):
    videos, train_csv, test_csv = _three_class_folder(tmp_path, labels, labels[:1])
    with pytest.raises(job.SourceError) as e:
        _build(tmp_path, videos, train_csv, test_csv, class_names=names)
    assert message in str(e.value)
    assert not (tmp_path / "out").exists()


def test_class_names_flag_is_for_folders_only(tmp_path):
    with pytest.raises(job.SourceError, match="--class_names is for --dataset=folder; dfew's classes are fixed"):
        job.build(job.BuildConfig(dataset="dfew", root=str(tmp_path), out=str(tmp_path / "o"), class_names=("a", "b")))


def test_build_dataset_cli_takes_class_names_and_prints_them(tmp_path):
    import subprocess

    videos, train_csv, test_csv = _three_class_folder(tmp_path, ["tense", "0", "2"], ["calm"])
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "data_prep.build_dataset",
            "--dataset=folder",
            f"--videos={videos}",
            f"--labels=train={train_csv},test={test_csv}",
            "--class_names=calm,tense,happy",
            f"--out={tmp_path / 'out'}",
            "--frame_size=16",
            "--workers=1",
        ],
        cwd=repo,
        env=dict(os.environ, PYTHONPATH=repo),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "3 classes (from --class_names): 0 calm, 1 tense, 2 happy" in done.stdout
    assert [r.label for r in read_split(str(tmp_path / "out"), "train")] == [1, 0, 2]
