"""PNG figures written into the workdir (local or gs://): confusion matrix and learning curves."""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # Headless: training machines have no display.
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from grace_jax import paths  # noqa: E402


def save_confusion_matrix(
    path: str, confusion: np.ndarray, class_names: Sequence[str], title: str = ""
) -> str:
    """Row-normalized confusion matrix (rows: true class) with counts, as a PNG at `path`."""
    confusion = np.asarray(confusion, np.float64)
    rows = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    size = 1.2 + 0.6 * len(class_names)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(class_names)):
        for j in range(len(class_names)):
            ax.text(
                j,
                i,
                f"{rows[i, j]:.2f}\n({int(confusion[i, j])})",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if rows[i, j] > 0.5 else "black",
            )
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_title(title)
    fig.tight_layout()
    _save(fig, path)
    return path


def save_learning_curves(path: str, records: Sequence[dict]) -> str:
    """Train loss and eval UAR/WAR against step, from metrics.jsonl records."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    train = [r for r in records if r.get("split") == "train" and "loss" in r]
    evals = [r for r in records if r.get("split") == "eval"]
    if train:
        left.plot([r["step"] for r in train], [r["loss"] for r in train])
    left.set_xlabel("step")
    left.set_ylabel("train loss")
    for key in ("uar", "war"):
        points = [(r["step"], r[key]) for r in evals if key in r]
        if points:
            right.plot(*zip(*points), marker="o", label=key.upper())
    right.set_xlabel("step")
    right.set_ylabel("eval")
    right.set_ylim(0, 1)
    if evals:
        right.legend()
    fig.tight_layout()
    _save(fig, path)
    return path


def _save(fig, path: str) -> None:
    # Rendered in memory and written in one go (local or gs://): never a half-written PNG.
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=100)
    finally:
        plt.close(fig)
    paths.makedirs(paths.dirname(path))
    paths.write_bytes(path, buffer.getvalue())
