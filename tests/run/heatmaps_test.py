"""predict's picture: heat maps that leave unweighted regions of the face untouched, and a figure that
states its scaling, labels its rows and has a labelled colour bar."""

import numpy as np

from grace_jax.run import heatmaps


def test_colormap_ends():
    colours = heatmaps.colormap(np.array([0.0, 1.0]))
    assert tuple(colours[0]) == (0, 0, 128) and tuple(colours[1]) == (220, 0, 0)


def test_overlay_tints_by_weight_and_leaves_unweighted_patches_untouched():
    rng = np.random.RandomState(0)
    frame = rng.randint(0, 255, size=(8, 8, 3)).astype(np.uint8)
    weights = np.array([[0.0, 1.0], [0.25, 0.0]])  # 2x2 patches of 4x4 pixels
    out = heatmaps.overlay(frame, weights, scale=1.0)
    np.testing.assert_array_equal(out[:4, :4], frame[:4, :4])  # weight 0: the face as it was
    np.testing.assert_array_equal(out[4:, 4:], frame[4:, 4:])
    red = np.array([220, 0, 0], np.float64)
    expected_hot = np.round(frame[:4, 4:] * (1 - heatmaps.MAX_OPACITY) + red * heatmaps.MAX_OPACITY)
    np.testing.assert_array_equal(out[:4, 4:], expected_hot.astype(np.uint8))
    # The weaker patch is tinted less: closer to the frame than the hot one is.
    change = lambda a, b: np.abs(a.astype(int) - b.astype(int)).mean()  # noqa: E731
    weak = change(out[4:, :4], frame[4:, :4])
    assert 0 < weak < change(heatmaps.overlay(frame, np.full((2, 2), 1.0), scale=1.0)[4:, :4], frame[4:, :4])


def test_clip_figure_states_the_scaling_and_labels_rows_and_colour_bar(tmp_path):
    rng = np.random.RandomState(1)
    frames = rng.randint(0, 255, size=(4, 16, 16, 3)).astype(np.uint8)
    motion = rng.rand(4, 4) * 0.05
    ot = rng.rand(4, 4)
    context = ("whole frame", rng.randint(0, 255, size=(4, 9, 16, 3)).astype(np.uint8))
    fig = heatmaps.build_clip_figure(
        frames, [("motion weight", motion), ("OT mass: sadness", ot)], "clip.mp4: sadness (0.62)", context=context
    )
    assert fig.get_suptitle() == "clip.mp4: sadness (0.62)"
    assert [t.get_text() for t in fig.texts if t is not fig._suptitle] == [heatmaps.SCALE_NOTE]  # noqa: SLF001
    assert "divided by its own maximum" in heatmaps.SCALE_NOTE
    grid = [ax for ax in fig.axes if getattr(ax, "_colorbar", None) is None]
    assert len(grid) == 4 * 4  # context, frames, two heat-map rows; 4 frames each
    row_labels = [ax.get_ylabel() for ax in grid[::4]]
    assert row_labels == [
        "whole frame",
        "frames",
        f"motion weight\n(max {motion.max():.3g})",
        f"OT mass: sadness\n(max {ot.max():.3g})",
    ]
    assert [ax.get_title() for ax in grid[:4]] == ["frame 1", "frame 2", "frame 3", "frame 4"]
    bars = [ax._colorbar for ax in fig.axes if getattr(ax, "_colorbar", None) is not None]  # noqa: SLF001
    assert len(bars) == 1 and bars[0].ax.get_ylabel() == heatmaps.COLOUR_BAR_LABEL
    assert bars[0].norm.vmin == 0 and bars[0].norm.vmax == 1
    path = heatmaps.clip_figure(str(tmp_path / "clip.mp4.png"), frames, [("motion weight", motion)], "t")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
