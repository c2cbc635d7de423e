"""Fixtures for data_prep tests: DFEW and MAFW layouts with lists from other machines."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from video_fixtures import make_frame_folder  # noqa: E402


@pytest.fixture
def dfew_tree(tmp_path):
    """DFEW layout with lists written on another machine; fold 1 has 5 good clips and 5 bad lines."""
    root = tmp_path / "DFEW"
    faces = root / "DFEW_Frame_Face"
    other = "/home/someone/datasets/DFEW/DFEW_Frame_Face"
    lengths = {"00001": 25, "00002": 10, "00003": 5, "00004": 16, "00005": 3}
    for clip, n in lengths.items():
        make_frame_folder(str(faces / clip), n)
    os.makedirs(faces / "00006")  # empty folder: zero frames
    make_frame_folder(str(faces / "00007"), 4)
    with open(faces / "00007" / "00003.jpg", "wb") as f:
        f.write(b"\xff\xd8 this is not a jpeg")
    (root / "annotation").mkdir()
    train = [
        f"{other}/00001 25 0",
        f"{other}/00002 10 6",
        f"{other}/00003 5 3",
        f"{other}/00099 12 1",  # missing folder
        f"{other}/00006 0 2",  # zero frames
        f"{other}/00007 4 2",  # corrupt frame
        f"{other}/00004 16 9",  # label out of range
        "this line is garbage",
    ]
    test = [f"{other}/00004 16 4", f"{other}/00005 3 5"]
    (root / "annotation" / "set_1_train.txt").write_text("\n".join(train) + "\n")
    (root / "annotation" / "set_1_test.txt").write_text("\n".join(test) + "\n")
    (root / "annotation" / "set_2_train.txt").write_text(f"{other}/00001 25 1\n")
    (root / "annotation" / "set_2_test.txt").write_text(f"{other}/00002 10 2\n")
    return root


@pytest.fixture
def mafw_tree(tmp_path):
    """(root, captions file) of a MAFW layout with lists written on Windows: folds 1 and 2, 3 clips,
    captions for two of them."""
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
    return root, captions
