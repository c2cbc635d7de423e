"""Figures say what they show (titles, axis labels, labelled colour bars, the normalisation) and are
written as real PNGs, atomically."""

import numpy as np
from matplotlib.colorbar import Colorbar

from grace_jax.run import plots


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def _colour_bars(fig) -> list[Colorbar]:
    return [ax._colorbar for ax in fig.axes if getattr(ax, "_colorbar", None) is not None]  # noqa: SLF001


def test_confusion_matrix_states_its_normalisation_and_labels_its_colour_bar():
    fig = plots.confusion_matrix_figure(np.array([[5, 1], [2, 3]]), ["happy", "sad"], "step 6: UAR 0.717")
    ax = fig.axes[0]
    assert ax.get_title().startswith("Confusion matrix: step 6: UAR 0.717")
    assert "rows normalised: each row sums to 1" in ax.get_title()
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted class", "true class")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["happy", "sad"]
    cells = [t.get_text() for t in ax.texts]
    assert cells == ["0.83\n(5)", "0.17\n(1)", "0.40\n(2)", "0.60\n(3)"]  # shares of each row
    bars = _colour_bars(fig)
    assert len(bars) == 1 and bars[0].ax.get_ylabel() == plots.COLOUR_BAR_LABEL


def test_learning_curves_draw_coinciding_uar_and_war_distinguishably():
    records = [
        {"step": 2, "split": "train", "loss": 2.0},
        {"step": 4, "split": "train", "loss": 1.5},
        {"step": 4, "split": "eval", "uar": 0.5, "war": 0.5},  # equal, as on balanced data
        {"step": 6, "split": "eval", "uar": 0.75, "war": 0.75},
    ]
    fig = plots.learning_curves_figure(records)
    assert fig.get_suptitle() == "Learning curves (metrics.jsonl)"
    left, right = fig.axes
    assert left.get_title() == "Training loss" and left.get_xlabel() == "step"
    assert "train loss" in left.get_ylabel()
    assert right.get_title() == "Evaluation recall" and "recall" in right.get_ylabel()
    uar, war = right.get_lines()
    np.testing.assert_array_equal(uar.get_ydata(), war.get_ydata())
    assert uar.get_linestyle() != war.get_linestyle() and uar.get_marker() != war.get_marker()
    assert war.get_markerfacecolor() == "none"  # hollow: the UAR dot shows through
    assert war.get_zorder() > uar.get_zorder()
    labels = [t.get_text() for t in right.get_legend().get_texts()]
    assert labels[0].startswith("UAR") and labels[1].startswith("WAR")


def test_figures_are_written_as_pngs(tmp_path):
    path = plots.save_confusion_matrix(str(tmp_path / "cm.png"), np.array([[5, 1], [2, 3]]), ["happy", "sad"], "eval")
    assert _is_png(path)
    records = [{"step": 1, "split": "train", "loss": 2.0}, {"step": 2, "split": "eval", "uar": 0.4, "war": 0.5}]
    assert _is_png(plots.save_learning_curves(str(tmp_path / "curves.png"), records))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cm.png", "curves.png"]
