"""data_prep records where the frames came from and compares clip counts with the published ones."""

import json
import os
import shutil

from data_prep import job, provenance


def _build(root, out, fold=1):
    return job.build(
        job.BuildConfig(
            dataset="dfew", out=str(out), root=str(root), fold=fold, workers=1, max_bad_fraction=0.9, progress=False
        )
    )


def test_own_crops_and_a_count_that_differs_from_the_published_one(dfew_tree, tmp_path):
    manifest = _build(dfew_tree, tmp_path / "own")
    source = manifest["frame_source"]
    assert source["kind"] == "frame folders" and source["official"] is False
    assert source["folder"].endswith(os.path.join("DFEW", "DFEW_Frame_Face"))
    assert "own crops" in source["description"] and "clip_224x224_16f" in source["description"]
    check = manifest["published_counts"]
    assert check["published"] == {"train+test": 11697}
    written = manifest["splits"]["train"]["num_clips"] + manifest["splits"]["test"]["num_clips"]
    assert check["differences"] == [
        f"train+test: {written:,} clips written, dfew publishes 11,697 ({written - 11697:+,}; the lists gave 10, "
        f"{10 - written} of them unreadable)"
    ]
    on_disk = json.loads((tmp_path / "own" / "manifest.json").read_text())
    assert on_disk["frame_source"] == source and on_disk["published_counts"] == check


def test_official_face_frames_are_named(dfew_tree, tmp_path):
    official = dfew_tree / "Clip" / "clip_224x224_16f"
    official.parent.mkdir()
    shutil.move(str(dfew_tree / "DFEW_Frame_Face"), str(official))
    other = "/home/someone/DFEW/Clip/clip_224x224_16f"  # lists as the official release names the folders
    (dfew_tree / "annotation" / "set_2_train.txt").write_text(f"{other}/00001 25 1\n")
    (dfew_tree / "annotation" / "set_2_test.txt").write_text(f"{other}/00002 10 2\n")
    manifest = _build(dfew_tree, tmp_path / "official", fold=2)
    source = manifest["frame_source"]
    assert source["official"] is True and "official face frames (clip_224x224_16f)" in source["description"]


def test_ferv39k_counts_are_checked_per_split():
    check = provenance.published_check(
        "ferv39k", {"train": 31088, "test": 7840}, {"train": 31088, "test": 7847}, {"train": 0, "test": 7}
    )
    assert check["differences"] == [
        "test: 7,840 clips written, ferv39k publishes 7,847 (-7; the lists gave 7,847, 7 of them unreadable)"
    ]
    assert provenance.published_check("ferv39k", {"train": 31088, "test": 7847}, {}, {})["differences"] == []
    assert provenance.published_check("folder", {"train": 3}, {}, {}) is None
