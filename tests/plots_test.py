"""Figures are written as real PNGs, atomically."""

import numpy as np

from grace_jax import plots


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_confusion_and_curves(tmp_path):
    cm = np.array([[5, 1], [2, 3]])
    path = plots.save_confusion_matrix(str(tmp_path / "cm.png"), cm, ["happy", "sad"], "eval")
    assert _is_png(path)
    records = [
        {"step": 1, "split": "train", "loss": 2.0},
        {"step": 2, "split": "eval", "uar": 0.4, "war": 0.5},
    ]
    assert _is_png(plots.save_learning_curves(str(tmp_path / "curves.png"), records))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cm.png", "curves.png"]
