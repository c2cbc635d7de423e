"""PyAV reading: every container, variable frame rate, rotation metadata, broken files, whole frames."""

import os
import struct
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from video_fixtures import frame_value, grey_clip, write_video  # noqa: E402

from grace_jax.data.errors import ClipError
from grace_jax.data.video import read_video

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


def test_whole_frame_keeps_the_aspect_ratio_and_never_enlarges(tmp_path):
    path = write_video(str(tmp_path / "wide.mkv"), grey_clip(3, 32, 48), "ffv1")
    assert read_video(path, 24, whole_frame=True).shape == (3, 16, 24, 3)  # longer side 48 -> 24
    frames = read_video(path, 640, whole_frame=True)
    assert frames.shape == (3, 32, 48, 3)  # already within 640: as decoded
    np.testing.assert_allclose(frames.mean(axis=(1, 2, 3)), [frame_value(t) for t in range(3)], atol=3)
