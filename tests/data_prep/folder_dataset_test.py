"""--dataset=folder: a folder of videos with CSV labels; bad rows reported; --face_crop=auto."""

import os
import sys

import numpy as np
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


def test_face_crop_auto_stores_face_crops_and_reports_clips_without_a_face(tmp_path):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "faces"))
    import face_scenes

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
        job.BuildConfig(dataset="folder", videos=str(videos), labels=(f"train={tmp_path / 'train.csv'}",),
                        out=str(out), frame_size=64, max_bad_fraction=0.6, workers=1, progress=False,
                        face_crop="auto")
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
        expected = Image.fromarray(frames[t]).resize((64, 64), Image.BILINEAR,
                                                     box=(cx - half, cy - half, cx + half, cy + half))
        centre = Image.fromarray(frames[t]).resize((64, 64), Image.BILINEAR, box=(93, 0, 333, 240))
        near = np.abs(stored[t] - np.asarray(expected, np.float32)).mean()
        far = np.abs(stored[t] - np.asarray(centre, np.float32)).mean()
        assert near < 20 and far > 3 * near, (t, near, far)  # measured: near 10-15, far 65-69
    (bad,) = report.read_report(str(out / schema.BAD_CLIP_REPORT_NAME))
    assert bad.path.endswith("nobody.mp4") and "no face" in bad.reason
