"""Windows of long videos: where they fall, which frames they sample, and reading them in one pass."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from video_fixtures import frame_value, grey_clip, make_frame_folder, write_video  # noqa: E402

from grace_jax.data import video as video_lib
from grace_jax.data.errors import ClipError
from grace_jax.data.segments import segment_indices
from grace_jax.data.windows import frame_sets, read_windows, windows


def _spans(ws):
    return [(w.start_seconds, w.end_seconds) for w in ws]


def test_windows_side_by_side_then_one_more_ending_with_the_video():
    times = np.arange(100) / 10  # 10 s
    ws = windows(times, 4, window_seconds=3)
    assert _spans(ws) == [(0, 3), (3, 6), (6, 9), (7, 10)]
    # Each window samples the centre frame of 4 segments among its own 30 frames.
    assert ws[1].frames.tolist() == (30 + segment_indices(30, 4, train=False)).tolist()
    assert ws[3].frames.tolist() == (70 + segment_indices(30, 4, train=False)).tolist()


def test_overlapping_windows_exact_fit_whole_video_and_short_video():
    times = np.arange(100) / 10
    assert _spans(windows(times, 4, window_seconds=4, stride_seconds=2)) == [(0, 4), (2, 6), (4, 8), (6, 10)]
    whole = windows(times, 4)
    assert _spans(whole) == [(0, 10)] and whole[0].frames.tolist() == segment_indices(100, 4, train=False).tolist()
    short = windows(np.arange(5) / 10, 8, window_seconds=3)  # shorter than a window and than T
    assert _spans(short) == [(0, 0.5)] and short[0].frames.tolist() == [0, 1, 2, 3, 4, 4, 4, 4]
    with pytest.raises(ValueError, match="must be >= 0"):
        windows(times, 4, window_seconds=-1)


def test_variable_frame_rate_windows_go_by_time_not_by_frame_count():
    times = np.concatenate([np.arange(10) / 10, 1 + np.arange(40) / 40])  # 10 fps for 1 s, then 40 fps
    first, second = windows(times, 2, window_seconds=1)
    assert (first.start_seconds, second.start_seconds) == (0, 1)
    assert set(first.frames) <= set(range(10)) and set(second.frames) <= set(range(10, 50))


@pytest.mark.parametrize(
    "ext,codec",
    [("mp4", "mpeg4"), ("mov", "libx264"), ("mov", "libx265"), ("webm", "libvpx")],  # x265: HEVC
)
def test_read_windows_of_a_video_gives_the_frames_read_video_gives(tmp_path, ext, codec):
    path = write_video(str(tmp_path / f"clip.{ext}"), grey_clip(20), codec, rate=5)  # 4 s
    every = video_lib.read_video(path, 16)
    got = list(read_windows(path, 4, 16, window_seconds=1.5, stride_seconds=1))
    assert _spans(w for w, _ in got) == [(0, 1.5), (1, 2.5), (2, 3.5), (2.5, 4)]
    for window, frames in got:
        np.testing.assert_array_equal(frames, every[window.frames])
    np.testing.assert_allclose(video_lib.frame_times(path), np.arange(20) / 5, atol=1e-6)


def test_iter_video_decodes_only_what_is_asked_and_names_a_bad_request(tmp_path):
    path = write_video(str(tmp_path / "clip.mp4"), grey_clip(12), "mpeg4")
    got = dict(video_lib.iter_video(path, 16, [11, 2, 2, 5]))
    assert sorted(got) == [2, 5, 11]
    for i in (2, 5, 11):
        assert abs(float(got[i].mean()) - frame_value(i)) < 3
    with pytest.raises(video_lib.ClipError, match="clip.mp4 has 12 frames, asked for frame 12"):
        list(video_lib.iter_video(path, 16, [12]))


def test_read_windows_of_a_frame_folder_uses_folder_fps(tmp_path):
    folder = make_frame_folder(str(tmp_path / "clip"), 20)
    got = list(read_windows(folder, 2, 8, window_seconds=1, folder_fps=10))
    assert _spans(w for w, _ in got) == [(0, 1), (1, 2)]
    assert got[1][1].shape == (2, 8, 8, 3)
    with pytest.raises(video_lib.ClipError, match="nothing.mp4: no such file"):
        list(read_windows(str(tmp_path / "nothing.mp4"), 2, 8))


def test_frame_sets_read_every_needed_frame_once_in_order_and_name_one_that_never_comes():
    calls = []

    def read(needed):
        calls.append(needed)
        for p in needed:
            yield p, np.full(2, p)

    sets = [[0, 2, 4], [2, 3], [1, 5]]  # the last set goes back to frame 1, decoded for the first
    got = list(frame_sets(read, sets, "clip.mp4"))
    assert calls == [[0, 1, 2, 3, 4, 5]]
    assert [g[:, 0].tolist() for g in got] == sets

    def cut_short(needed):
        yield needed[0], np.zeros(2)

    with pytest.raises(ClipError, match=r"^clip\.mp4: frame 2 did not decode$"):
        list(frame_sets(cut_short, [[0, 2]], "clip.mp4"))
