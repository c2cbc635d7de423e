"""List parsing and re-rooting of paths written on another machine."""

import pytest

from data_prep.sources.annotations import parse_list_file, reroot


@pytest.mark.parametrize(
    "listed,root,anchors,expected",
    [
        (
            "/home/x/DFEW/DFEW_Frame_Face/03271",
            "/data/DFEW",
            ("DFEW",),
            ("/data/DFEW/DFEW_Frame_Face/03271", "DFEW_Frame_Face/03271"),
        ),
        # The root's own folder name is an anchor too, and matching ignores case.
        (
            "/mnt/a/ferv39K/2_ClipsforFaceCrop/Action/Sad/0015",
            "/data/fer",
            ("FERV39k", "fer"),
            ("/data/fer/2_ClipsforFaceCrop/Action/Sad/0015", "2_ClipsforFaceCrop/Action/Sad/0015"),
        ),
        # The last matching component wins: an outer folder with the same name is not the dataset folder.
        (
            "/DFEW/backup/DFEW/DFEW_Frame_Face/1",
            "/d/DFEW",
            ("DFEW",),
            ("/d/DFEW/DFEW_Frame_Face/1", "DFEW_Frame_Face/1"),
        ),
        ("C:\\data\\MAFW\\frames\\00025", "/srv/MAFW", ("MAFW",), ("/srv/MAFW/frames/00025", "frames/00025")),
        ("frames/00025", "/srv/MAFW", ("MAFW",), ("/srv/MAFW/frames/00025", "frames/00025")),
        ("frames/00025", None, ("MAFW",), ("/lists/frames/00025", "frames/00025")),
        ("/elsewhere/clip7", "/srv/MAFW", ("MAFW",), ("/elsewhere/clip7", "elsewhere/clip7")),
    ],
)
def test_reroot(listed, root, anchors, expected):
    assert reroot(listed, root, anchors, base_dir="/lists") == expected


def test_parse_list_file_keeps_spaces_in_paths_and_reports_bad_lines(tmp_path):
    lst = tmp_path / "set_1_train.txt"
    lst.write_text(
        "# comment\n\n/x/DFEW/My Clips/001 12 3\n/x/DFEW/002 12 -1\n/x/DFEW/003 twelve 1\nonlyonefield\n/x/DFEW/004 7 6\n"
    )
    clips, bad = parse_list_file(str(lst), "train", num_classes=7, root="/d/DFEW", anchors=("DFEW",))
    assert [(c.path, c.label, c.listed_frames, c.source) for c in clips] == [
        ("/d/DFEW/My Clips/001", 3, 12, f"{lst}:3"),
        ("/d/DFEW/004", 6, 7, f"{lst}:7"),
    ]
    assert [(b.source, b.reason.split(":")[0]) for b in bad] == [
        (f"{lst}:4", "label -1 out of range 0..6"),
        (f"{lst}:5", "malformed line"),
        (f"{lst}:6", "malformed line"),
    ]
