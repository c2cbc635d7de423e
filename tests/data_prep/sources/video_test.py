"""PyAV reading: every container, variable frame rate, rotation metadata, and the folder dataset."""

import struct

import numpy as np
import pytest
from dataprep_fixtures import frame_value, grey_clip, make_frame_folder, read_split, write_video

from data_prep import job, report, schema
from data_prep.sources.errors import ClipError
from data_prep.sources.video import read_video

CONTAINERS = [("mp4", "mpeg4"), ("avi", "mjpeg"), ("mov", "libx264"), ("mkv", "ffv1"), ("webm", "libvpx")]


@pytest.mark.parametrize("ext,codec", CONTAINERS)
def test_each_container_decodes_every_frame_in_order(tmp_path, ext, codec):
    path = write_video(str(tmp_path / f"clip.{ext}"), grey_clip(7, 32, 48), codec)
    frames = read_video(path, 16)
    assert frames.shape == (7, 16, 16, 3)
    # Lossy codecs shift grey levels a little; order and values must survive.
    np.testing.assert_allclose(frames.mean(axis=(1, 2, 3)), [frame_value(t) for t in range(7)], atol=6)


def test_variable_frame_rate_keeps_every_frame_in_presentation_order(tmp_path):
    pts = [0, 40, 50, 200, 210, 500, 520, 900]  # milliseconds: irregular gaps
    path = write_video(str(tmp_path / "vfr.mkv"), grey_clip(8), "ffv1", pts=pts)
    frames = read_video(path, 16)
    assert frames.shape[0] == 8
    np.testing.assert_allclose(frames.mean(axis=(1, 2, 3)), [frame_value(t) for t in range(8)], atol=3)


def _with_display_matrix(path: str, matrix: tuple[int, ...]) -> None:
    """Writes a 3x3 display matrix into the mp4 track header (where phones record their rotation)."""
    data = bytearray(open(path, "rb").read())
    at = data.index(b"tkhd") + 44  # box type, version/flags, 5 fields of 4 bytes, 8 reserved, 8 more
    assert struct.unpack(">9i", data[at : at + 36]) == (0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    data[at : at + 36] = struct.pack(">9i", *matrix)
    open(path, "wb").write(bytes(data))


def test_rotation_metadata_is_honoured(tmp_path):
    # A landscape frame, red on the left half and blue in the top quarter: not symmetric under rotation.
    frame = np.zeros((32, 64, 3), np.uint8)
    frame[:, :32, 0] = 255
    frame[:8, :, 2] = 255
    path = str(tmp_path / "portrait.mp4")
    write_video(path, np.stack([frame] * 3), "mpeg4")
    # The matrix of `rotate=90` metadata: the player turns the picture 90 degrees clockwise.
    _with_display_matrix(path, (0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000))
    upright = read_video(path, 32)[0].astype(float)
    expected = np.rot90(frame, k=-1)  # 64 x 32 portrait: red on top, blue on the right
    assert expected.shape == (64, 32, 3)
    crop = expected[16:48].astype(float)  # centre square, as stored
    assert np.abs(upright - crop).mean() < 20
    assert upright[:, :, 2][:, -4:].mean() > 200 and upright[:, :, 2][:, :4].mean() < 50


def test_broken_and_empty_files_raise_clip_errors_naming_the_file(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 definitely not a video")
    with pytest.raises(ClipError, match="broken.mp4"):
        read_video(str(broken), 16)
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    with pytest.raises(ClipError, match="empty.avi"):
        read_video(str(empty), 16)


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


def test_whole_frame_keeps_the_aspect_ratio_and_never_enlarges(tmp_path):
    path = write_video(str(tmp_path / "wide.mkv"), grey_clip(3, 32, 48), "ffv1")
    assert read_video(path, 24, whole_frame=True).shape == (3, 16, 24, 3)  # longer side 48 -> 24
    frames = read_video(path, 640, whole_frame=True)
    assert frames.shape == (3, 32, 48, 3)  # already within 640: as decoded
    np.testing.assert_allclose(frames.mean(axis=(1, 2, 3)), [frame_value(t) for t in range(3)], atol=3)
