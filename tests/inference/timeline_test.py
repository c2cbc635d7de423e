"""Timelines of per-window probabilities: PNG size, the top class's shade where it is top, gaps."""

import io

import numpy as np
import pytest
from PIL import Image

from grace_jax.inference.timeline import (
    DPI,
    band_colour,
    class_colour,
    timeline_figure,
    timeline_png,
    timeline_tracks_png,
)

NAMES = ["happy", "sad", "neutral", "angry", "surprise", "disgust", "fear"]


def _windows():
    """Ten 2 s windows over 0-20 s: class (i % 3) on top in window i, window 4 without a face."""
    starts = np.arange(0, 20, 2.0)
    probabilities = np.full((10, 7), 0.05)
    for i in range(10):
        probabilities[i, i % 3] = 0.7
    probabilities[4] = np.nan
    return starts, starts + 2, probabilities


def _decode(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB")).astype(int)


def _column(pixels, fig, axes_index, t):
    """The PNG's column of pixels at time t inside the axes' vertical extent."""
    ax = fig.axes[axes_index]
    (x, y_bottom), (_, y_top) = ax.transData.transform([(t, 0.0), (t, 1.0)])
    height = pixels.shape[0]
    return pixels[int(round(height - y_top)) + 2 : int(round(height - y_bottom)) - 2, int(round(x))]


def _share(column, rgb, tol=3):
    return float(np.mean(np.abs(column - np.asarray(rgb)).max(axis=1) <= tol))


def test_the_top_class_is_shaded_where_it_is_top_and_a_faceless_window_is_a_gap():
    starts, ends, probabilities = _windows()
    png = timeline_png(starts, ends, probabilities, NAMES, title="clip.mp4")
    pixels = _decode(png)
    assert pixels.shape == (360, 1000, 3)  # 10 x 3.6 inches at 100 dpi
    fig = timeline_figure([("", starts, ends, probabilities)], NAMES, title="clip.mp4")
    for i in (0, 1, 2, 7):
        # Off the window's centre, where the lines' points are: the shade fills most of the column.
        column = _column(pixels, fig, 0, starts[i] + 0.5)
        top = i % 3
        assert _share(column, band_colour(top)) > 0.6, (i, _share(column, band_colour(top)))
        assert _share(column, band_colour((top + 1) % 3)) == 0.0
    gap = _column(pixels, fig, 0, 9.0)  # window 4 (8-10 s): no face
    assert all(_share(gap, band_colour(k)) == 0.0 for k in range(7))
    assert _share(gap, (255, 255, 255)) > 0.9  # blank but for the horizontal grid lines


def test_class_colours_are_fixed_by_index():
    assert class_colour(0) == "#1f77b4" and class_colour(3) == "#d62728" and class_colour(10) == class_colour(0)
    assert band_colour(0) == tuple(round(0.22 * c + 0.78 * 255) for c in (0x1F, 0x77, 0xB4))
    starts, ends, probabilities = _windows()
    once = timeline_png(starts, ends, probabilities, NAMES)
    assert timeline_png(starts, ends, probabilities, NAMES) == once  # deterministic bytes


def test_tracks_stack_one_panel_per_face_on_one_time_axis():
    starts, ends, probabilities = _windows()
    late = (starts[5:] + 0.0, ends[5:] + 0.0, np.roll(probabilities[5:], 1, axis=1))  # class (i % 3) + 1 on top
    tracks = [("face 1", starts, ends, probabilities), ("face 2", *late)]
    png = timeline_tracks_png(tracks, NAMES, title="two.mp4")
    pixels = _decode(png)
    assert pixels.shape == (665, 1000, 3)  # 0.45 + 0.55 + 2 x 2.6 + 0.45 inches
    fig = timeline_figure(tracks, NAMES, title="two.mp4")
    assert len(fig.axes) == 2 and fig.axes[0].get_xlim() == fig.axes[1].get_xlim() == (0.0, 20.0)
    # Window 6 (12-14 s): class 0 on top for face 1, class 1 for face 2; face 2 absent before 10 s.
    assert _share(_column(pixels, fig, 0, 12.5), band_colour(0)) > 0.6
    assert _share(_column(pixels, fig, 1, 12.5), band_colour(1)) > 0.6
    assert _share(_column(pixels, fig, 1, 4.5), (255, 255, 255)) > 0.9
    assert fig.dpi == DPI


def test_overlapping_windows_share_the_axis_and_labels_are_accepted():
    starts = np.arange(0, 10, 1.0)  # 2 s windows every second: each shades 1 s around its centre
    probabilities = np.full((10, 3), 0.1)
    probabilities[np.arange(10), np.arange(10) % 3] = 0.8
    png = timeline_png(starts, starts + 2, probabilities, NAMES[:3], track_labels=["face 1"] * 5 + ["face 2"] * 5)
    pixels = _decode(png)
    fig = timeline_figure([("", starts, starts + 2, probabilities)], NAMES[:3])
    for i in (2, 5, 8):  # window i's centre is i + 1; its shade covers (i + 0.5, i + 1.5)
        assert _share(_column(pixels, fig, 0, i + 1.25), band_colour(i % 3)) > 0.6


def test_bad_shapes_are_refused():
    starts, ends, probabilities = _windows()
    with pytest.raises(ValueError, match="probabilities must be"):
        timeline_png(starts, ends, probabilities[:, :3], NAMES)
    with pytest.raises(ValueError, match="ends before"):
        timeline_png(ends, starts, probabilities, NAMES)
    with pytest.raises(ValueError, match="window labels"):
        timeline_png(starts, ends, probabilities, NAMES, track_labels=["face 1"])
    with pytest.raises(ValueError, match="no panels"):
        timeline_tracks_png([], NAMES)
