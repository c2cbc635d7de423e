"""--dataset=folder: a folder of videos with CSV labels; bad rows reported; --face_crop=auto."""

import os
import sys

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
        job.BuildConfig(dataset="folder", videos=str(videos), labels=(f"train={tmp_path / 'train.csv'}",),
                        out=str(out), frame_size=16, max_bad_fraction=0.6, workers=1, progress=False)
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
