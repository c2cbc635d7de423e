"""End-to-end builds on fixture trees in the DFEW, FERV39k and MAFW layouts, and on SynthFER."""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from video_fixtures import frame_value, make_frame_folder, read_split  # noqa: E402

from data_prep import job, report, synth
from data_prep.writer import OutputExistsError
from grace_jax.data import schema


def _config(**kw):
    base = dict(frame_size=32, workers=1, progress=False, command=("test",))
    base.update(kw)
    return job.BuildConfig(**base)


def _leftovers(parent):
    return [n for n in os.listdir(parent) if ".partial-" in n or n.endswith(".tmp")]


def test_dfew_fold_reroots_lists_from_another_machine_and_reports_bad_clips(dfew_tree, tmp_path):
    out = tmp_path / "shards"
    manifest = job.build(_config(dataset="dfew", root=str(dfew_tree), fold=1, out=str(out), max_bad_fraction=0.6))

    train = read_split(str(out), "train")
    assert [r.clip_id for r in train] == ["DFEW_Frame_Face/00001", "DFEW_Frame_Face/00002", "DFEW_Frame_Face/00003"]
    assert [r.label for r in train] == [0, 6, 3]
    assert [r.num_frames for r in train] == [25, 10, 5]
    # Frames keep their natural order and are stored square at the frame size.
    frames = train[1].decode_frames(range(10))
    assert frames.shape == (10, 32, 32, 3)
    np.testing.assert_allclose(frames.mean(axis=(1, 2, 3)), [frame_value(i) for i in range(10)], atol=2)
    test = read_split(str(out), "test")
    assert [(r.clip_id, r.label, r.num_frames) for r in test] == [
        ("DFEW_Frame_Face/00004", 4, 16),
        ("DFEW_Frame_Face/00005", 5, 3),
    ]

    table = (out / "train.clips.tsv").read_text().splitlines()
    assert table == [
        "index\tclip_id\tlabel\tnum_frames\thas_caption",
        "0\tDFEW_Frame_Face/00001\t0\t25\t0",
        "1\tDFEW_Frame_Face/00002\t6\t10\t0",
        "2\tDFEW_Frame_Face/00003\t3\t5\t0",
    ]
    assert manifest["splits"]["train"]["num_clips"] == 3 and manifest["splits"]["test"]["num_clips"] == 2
    assert manifest["class_names"][:3] == ["happiness", "sadness", "neutral"]
    assert json.load(open(out / schema.MANIFEST_NAME))["frame_size"] == 32
    bad = report.read_report(str(out / schema.BAD_CLIP_REPORT_NAME))
    reasons = {b.source.rsplit(":", 1)[1]: b.reason for b in bad}
    assert all(b.source.startswith(str(dfew_tree / "annotation" / "set_1_train.txt")) for b in bad)
    assert "does not exist" in reasons["4"] and "00099" in reasons["4"]
    assert "zero frames" in reasons["5"]
    assert "unreadable" in reasons["6"] and "00003.jpg" in reasons["6"]
    assert "label 9 out of range 0..6" in reasons["7"]
    assert "malformed" in reasons["8"]
    assert manifest["num_bad_clips"] == 5


def test_too_many_bad_clips_fail_with_a_clear_message_and_write_nothing(dfew_tree, tmp_path):
    out = tmp_path / "shards"
    with pytest.raises(
        job.BuildError, match=r"3 of 10 listed clips are bad already \(30.0%\), above --max_bad_fraction=0.2"
    ) as e:
        job.build(_config(dataset="dfew", root=str(dfew_tree), fold=1, out=str(out), max_bad_fraction=0.2))
    # The job stops as soon as the bad fraction can no longer end below the limit, naming the files.
    assert "set_1_train.txt:4: frame folder" in str(e.value) and "00099 does not exist" in str(e.value)
    assert not out.exists()
    assert _leftovers(tmp_path) == []


def test_lists_from_another_machine_without_root_fail_with_a_hint(dfew_tree, tmp_path):
    lists = [str(dfew_tree / "annotation" / n) for n in ("set_2_train.txt", "set_2_test.txt")]
    with pytest.raises(job.BuildError, match="pass --root=") as e:
        job.build(_config(dataset="dfew", annotations=tuple(lists), fold=2, out=str(tmp_path / "o")))
    assert "/home/someone/datasets/DFEW/DFEW_Frame_Face/00001 does not exist" in str(e.value)
    assert not (tmp_path / "o").exists()


def test_fold_is_required_when_lists_of_several_folds_exist(dfew_tree, tmp_path):
    with pytest.raises(job.SourceError, match="--fold"):
        job.build(_config(dataset="dfew", root=str(dfew_tree), out=str(tmp_path / "o")))
    manifest = job.build(_config(dataset="dfew", root=str(dfew_tree), fold=2, out=str(tmp_path / "o2")))
    assert [r.label for r in read_split(str(tmp_path / "o2"), "train")] == [1]
    assert manifest["splits"]["test"]["num_clips"] == 1


def test_ferv39k_layout_with_upper_case_folder_in_lists(tmp_path):
    root = tmp_path / "FERV39k"
    clips = {"Action/Sad/0015": (25, 1), "Action/Happy/0002": (8, 0), "Daily/Fear/0100": (12, 6)}
    for rel, (n, _) in clips.items():
        make_frame_folder(str(root / "2_ClipsforFaceCrop" / rel), n, size=(30, 30))
    lines = [f"/mnt/storage/FERV39K/2_ClipsforFaceCrop/{rel} {n} {y}" for rel, (n, y) in clips.items()]
    (root / "FERV39k_train.txt").write_text("\n".join(lines[:2]) + "\n")
    (root / "FERV39k_test.txt").write_text(lines[2] + "\n")
    out = tmp_path / "ferv"
    job.build(_config(dataset="ferv39k", root=str(root), out=str(out), max_bad_fraction=0.0))
    train = read_split(str(out), "train")
    assert [(r.clip_id, r.label, r.num_frames) for r in train] == [
        ("2_ClipsforFaceCrop/Action/Sad/0015", 1, 25),
        ("2_ClipsforFaceCrop/Action/Happy/0002", 0, 8),
    ]
    assert [(r.label, r.num_frames) for r in read_split(str(out), "test")] == [(6, 12)]


def test_mafw_eleven_classes_and_captions_round_trip(mafw_tree, tmp_path):
    root, captions = mafw_tree
    out = tmp_path / "mafw"
    manifest = job.build(_config(dataset="mafw", root=str(root), fold=2, captions=str(captions), out=str(out)))
    train = read_split(str(out), "train")
    assert [(r.clip_id, r.label, r.caption) for r in train] == [
        ("data/frames/00025", 10, "The man frowns, lips pressed."),
        ("data/frames/00026", 7, None),
    ]
    assert read_split(str(out), "test")[0].caption == "She looks around, worried."
    assert manifest["num_classes"] == 11 and manifest["class_names"][10] == "disappointment"
    assert manifest["splits"]["train"]["num_captions"] == 1


def test_rerun_refuses_and_overwrite_replaces_without_mixing_shards(tmp_path):
    out = tmp_path / "synth"
    job.build(_config(dataset="synth", out=str(out), synth_train=14, synth_test=7, num_shards=3))
    assert len(glob.glob(str(out / "train-*"))) == 3
    with pytest.raises(OutputExistsError, match="already exists"):
        job.build(_config(dataset="synth", out=str(out), synth_train=7, synth_test=7, num_shards=1))
    assert len(glob.glob(str(out / "train-*"))) == 3
    job.build(_config(dataset="synth", out=str(out), synth_train=7, synth_test=7, num_shards=1, overwrite=True))
    assert sorted(os.path.basename(p) for p in glob.glob(str(out / "*.array_record"))) == [
        "test-00000-of-00001.array_record",
        "train-00000-of-00001.array_record",
    ]
    assert len(read_split(str(out), "train")) == 7
    assert _leftovers(tmp_path) == []


def test_worker_processes_write_the_same_shards_as_one_process(tmp_path):
    kw = dict(dataset="synth", synth_train=21, synth_test=7, num_shards=2)
    job.build(_config(out=str(tmp_path / "a"), workers=1, **kw))
    job.build(_config(out=str(tmp_path / "b"), workers=2, **kw))
    for name in ("train-00000-of-00002.array_record", "train-00001-of-00002.array_record"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    records = read_split(str(tmp_path / "a"), "train")
    assert sorted(r.label for r in records) == sorted(i % 7 for i in range(21))


def test_command_line_writes_manifest_with_command_and_refuses_rerun(tmp_path):
    out = tmp_path / "cli"
    cmd = [
        sys.executable,
        "-m",
        "data_prep.build_dataset",
        "--dataset=synth",
        "--synth_train=7",
        "--synth_test=7",
        "--frame_size=24",
        f"--out={out}",
        "--workers=1",
        "--synth_variant=hard",
        "--nosynth_ground_truth",
    ]
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    first = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    manifest = json.load(open(out / "manifest.json"))
    assert "--dataset=synth" in manifest["command"] and manifest["frame_size"] == 24
    assert manifest["synth"] == {"variant": "hard", "seed": 0, "ground_truth_splits": []}
    assert not any(r.has_ground_truth for r in read_split(str(out), "test"))
    second = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=120)
    assert second.returncode != 0
    assert f"output {out} already exists" in second.stderr


def test_listed_frame_counts_are_checked_against_the_frames_on_disk(tmp_path):
    # DFER-CLIP's own DFEW lists carried wrong counts until its PR #1: the clip is kept with the frames
    # that exist, and the mismatch is reported per clip.
    root = tmp_path / "DFEW"
    for clip, n in (("00001", 12), ("00002", 7), ("00003", 9)):
        make_frame_folder(str(root / "DFEW_Frame_Face" / clip), n)
    (root / "annotation").mkdir()
    train = root / "annotation" / "set_1_train.txt"
    train.write_text("/elsewhere/DFEW/DFEW_Frame_Face/00001 12 0\n/elsewhere/DFEW/DFEW_Frame_Face/00002 9 1\n")
    test = root / "annotation" / "set_1_test.txt"
    test.write_text("/elsewhere/DFEW/DFEW_Frame_Face/00003 4 2\n")
    out = tmp_path / "shards"
    manifest = job.build(_config(dataset="dfew", root=str(root), fold=1, out=str(out), max_bad_fraction=0.0))
    assert [r.num_frames for r in read_split(str(out), "train")] == [12, 7]
    assert [r.num_frames for r in read_split(str(out), "test")] == [9]
    assert manifest["splits"]["train"]["max_frames"] == 12 and manifest["splits"]["test"]["min_frames"] == 9
    assert manifest["num_bad_clips"] == 0
    assert manifest["num_frame_count_mismatches"] == 2
    assert manifest["frame_count_mismatches_per_split"] == {"train": 1, "test": 1}
    lines = report.read_report(str(out / schema.BAD_CLIP_REPORT_NAME))
    assert [(b.split, b.source, b.path) for b in lines] == [  # in build order: lists sorted by name
        ("test", f"{test}:1", str(root / "DFEW_Frame_Face" / "00003")),
        ("train", f"{train}:2", str(root / "DFEW_Frame_Face" / "00002")),
    ]
    assert lines[0].reason == "frame count mismatch (clip kept): the list says 4 frames, 9 found; 9 used"
    assert lines[1].reason == "frame count mismatch (clip kept): the list says 9 frames, 7 found; 7 used"


def _dfew_lists(root, clips: int, missing: int):
    """A DFEW layout whose set_1 lists (written elsewhere) name `clips` train clips, the last `missing`
    of them absent on disk, and one test clip."""
    other = "/home/someone/DFEW/DFEW_Frame_Face"
    for i in range(1, clips - missing + 1):
        make_frame_folder(str(root / "DFEW_Frame_Face" / f"{i:05d}"), 4)
    make_frame_folder(str(root / "DFEW_Frame_Face" / "09999"), 4)
    (root / "annotation").mkdir(parents=True)
    (root / "annotation" / "set_1_train.txt").write_text(
        "".join(f"{other}/{i:05d} 4 {i % 7}\n" for i in range(1, clips + 1))
    )
    (root / "annotation" / "set_1_test.txt").write_text(f"{other}/09999 4 0\n")


def test_a_few_missing_folders_with_root_get_no_hint_to_pass_root(tmp_path):
    # 1 of 15 listed folders missing, --root given: the failure names that folder and does not send
    # the user looking for a --root they already gave.
    root = tmp_path / "DFEW"
    _dfew_lists(root, clips=14, missing=1)
    with pytest.raises(job.BuildError) as e:
        job.build(_config(dataset="dfew", root=str(root), fold=1, out=str(tmp_path / "o"), max_bad_fraction=0.0))
    assert "DFEW_Frame_Face/00014 does not exist" in str(e.value)
    assert "Most listed folders" not in str(e.value) and "pass --root" not in str(e.value)


def test_a_wrong_root_gets_a_hint_about_root(tmp_path):
    root = tmp_path / "DFEW"
    _dfew_lists(root, clips=14, missing=0)
    wrong = tmp_path / "elsewhere"
    (wrong / "annotation").mkdir(parents=True)
    for name in ("set_1_train.txt", "set_1_test.txt"):
        (wrong / "annotation" / name).write_text((root / "annotation" / name).read_text())
    with pytest.raises(job.BuildError) as e:
        job.build(_config(dataset="dfew", root=str(wrong), fold=1, out=str(tmp_path / "o"), max_bad_fraction=0.1))
    assert f"Most listed folders (15 of 15) do not exist under --root={wrong}" in str(e.value)


def test_synth_examples_are_the_test_split_clips_as_mp4_named_by_class(tmp_path):
    from grace_jax.data.video import read_video

    out = tmp_path / "synth"
    manifest = job.build(_config(dataset="synth", out=str(out), synth_train=7, synth_test=9, synth_examples=1))
    names = [f"examples/{i:06d}_{schema.BASIC_CLASSES[i % 7]}.mp4" for i in range(7)]
    assert manifest["examples"] == names
    assert sorted(os.listdir(out / "examples")) == [os.path.basename(n) for n in names]
    stored = {record.clip_id: record for record in read_split(str(out), "test")}
    for i, name in enumerate(names):
        frames = read_video(str(out / name), 32)
        record = stored[f"synth/test/{i:06d}"]
        expected = record.decode_frames(range(record.num_frames)).astype(np.float32)
        assert frames.shape == expected.shape
        # H.264 at its default quality against JPEG q95 of the same rendering; another clip is far off.
        assert np.abs(frames.astype(np.float32) - expected).mean() < 6
    other = stored["synth/test/000001"].decode_frames(range(stored["synth/test/000001"].num_frames)).astype(np.float32)
    first = read_video(str(out / names[0]), 32).astype(np.float32)
    n = min(len(first), len(other))
    assert np.abs(first[:n] - other[:n]).mean() > 15


def test_synth_examples_need_an_even_frame_size_and_write_nothing(tmp_path):
    with pytest.raises(job.BuildError, match="even --frame_size"):
        job.build(
            _config(
                dataset="synth", out=str(tmp_path / "s"), synth_train=7, synth_test=7, synth_examples=1, frame_size=33
            )
        )
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("variant", synth.VARIANTS)
def test_synth_test_records_carry_lossless_ground_truth_and_train_records_none(tmp_path, variant):
    out = tmp_path / "synth"
    manifest = job.build(
        _config(
            dataset="synth",
            out=str(out),
            synth_train=3,
            synth_test=4,
            synth_seed=5,
            synth_variant=variant,
            synth_min_frames=6,
            synth_max_frames=9,
        )
    )
    assert manifest["synth"] == {"variant": variant, "seed": 5, "ground_truth_splits": ["test"]}
    assert manifest["format_version"] == schema.FORMAT_VERSION
    config = synth.SynthConfig(frame_size=32, min_frames=6, max_frames=9, variant=variant)
    assert not any(r.has_ground_truth for r in read_split(str(out), "train"))
    for i, record in enumerate(read_split(str(out), "test")):
        assert record.clip_id == f"synth/test/{i:06d}" and record.has_ground_truth
        seed = synth.clip_seed(5, "test", i)
        expression, distractors = synth.sample_ground_truth(seed, synth.clip_label(i), config)
        everything = range(record.num_frames)
        assert len(record.header["expression_lengths"]) == len(record.header["distractor_lengths"]) == record.num_frames
        np.testing.assert_array_equal(record.decode_ground_truth("expression", everything), expression)
        np.testing.assert_array_equal(record.decode_ground_truth("distractor", everything), distractors)
        # The stored clip is the variant's clip of the same seed (JPEG q95 of it, noise and all).
        clip = synth.sample_clip(seed, synth.clip_label(i), config).astype(np.float32)
        assert np.abs(record.decode_frames(everything).astype(np.float32) - clip).mean() < 6


def test_unknown_synth_variant_is_refused_before_any_work(tmp_path):
    with pytest.raises(job.BuildError, match="--synth_variant must be one of standard, hard, got 'easy'"):
        job.build(_config(dataset="synth", out=str(tmp_path / "s"), synth_train=7, synth_test=7, synth_variant="easy"))
    assert os.listdir(tmp_path) == []
