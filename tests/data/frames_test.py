"""Frame folders: natural order, resizing to the stored square, clear errors."""

import os

import numpy as np
import pytest
from PIL import Image

from grace_jax.data.errors import ClipError
from grace_jax.data.frames import list_frames, natural_key, read_frame_folder


def test_natural_order_puts_2_before_10():
    names = ["frame10.jpg", "frame2.jpg", "frame1.jpg", "Frame3.png"]
    assert sorted(names, key=natural_key) == ["frame1.jpg", "frame2.jpg", "Frame3.png", "frame10.jpg"]


def test_read_frame_folder_in_natural_order_resized_to_square(tmp_path):
    for i in (1, 2, 10, 11):
        Image.fromarray(np.full((30, 50, 3), i * 20, np.uint8)).save(tmp_path / f"{i}.jpg")
    (tmp_path / "notes.txt").write_text("not a frame")
    assert list_frames(str(tmp_path)) == ["1.jpg", "2.jpg", "10.jpg", "11.jpg"]
    frames = read_frame_folder(str(tmp_path), 24)
    assert frames.shape == (4, 24, 24, 3) and frames.dtype == np.uint8
    np.testing.assert_allclose(frames.mean(axis=(1, 2, 3)), [20, 40, 200, 220], atol=2)


def test_missing_and_empty_folders_raise_naming_the_folder(tmp_path):
    with pytest.raises(ClipError, match="nowhere does not exist"):
        read_frame_folder(str(tmp_path / "nowhere"), 8)
    os.makedirs(tmp_path / "empty")
    with pytest.raises(ClipError, match="empty holds no images"):
        read_frame_folder(str(tmp_path / "empty"), 8)


def test_whole_frames_keep_the_aspect_ratio_at_the_first_frames_size(tmp_path):
    Image.fromarray(np.full((30, 60, 3), 10, np.uint8)).save(tmp_path / "1.png")
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(tmp_path / "2.png")  # another size
    frames = read_frame_folder(str(tmp_path), 30, whole_frame=True)
    assert frames.shape == (2, 15, 30, 3)
    np.testing.assert_allclose(frames.mean(axis=(1, 2, 3)), [10, 90], atol=1)
