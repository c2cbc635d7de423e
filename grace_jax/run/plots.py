"""PNG figures written into the workdir (local or gs://): confusion matrix and learning curves.

Each picture is built as a matplotlib `Figure` (`confusion_matrix_figure`, `learning_curves_figure`,
which tests inspect) and written by `save_figure`. Figures are made without pyplot's global state, so
building them from threads or a long-running process leaks nothing.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # Headless: training machines have no display.
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from grace_jax.infra import paths  # noqa: E402

ROW_NORMALISED = "rows normalised: each row sums to 1 over the true class's clips; counts in brackets"
COLOUR_BAR_LABEL = "share of the true class's clips"


def confusion_matrix_figure(confusion: np.ndarray, class_names: Sequence[str], title: str = "") -> Figure:
    """Row-normalised confusion matrix (rows: true class) with each cell's share and count."""
    confusion = np.asarray(confusion, np.float64)
    rows = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    n = len(class_names)
    size = 2.4 + 0.75 * n
    fig = Figure(figsize=(size + 1.6, size + 0.6))
    ax = fig.add_subplot()
    image = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                f"{rows[i, j]:.2f}\n({int(confusion[i, j])})",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if rows[i, j] > 0.5 else "black",
            )
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label(COLOUR_BAR_LABEL)
    heading = f"Confusion matrix{': ' + title if title else ''}"
    ax.set_title(f"{heading}\n{ROW_NORMALISED}", fontsize=9)
    fig.tight_layout()
    return fig


def learning_curves_figure(records: Sequence[dict]) -> Figure:
    """Train loss and eval UAR/WAR against step, from metrics.jsonl records.

    UAR and WAR are equal on class-balanced data: WAR is drawn dashed with hollow squares over UAR's
    solid line and dots, so that neither hides the other.
    """
    fig = Figure(figsize=(11, 4.2))
    left, right = fig.subplots(1, 2)
    train = [r for r in records if r.get("split") == "train" and "loss" in r]
    evals = [r for r in records if r.get("split") == "eval"]
    if train:
        left.plot([r["step"] for r in train], [r["loss"] for r in train], color="tab:gray")
    left.set_title("Training loss")
    left.set_xlabel("step")
    left.set_ylabel("train loss (mean per log line)")
    styles = {
        "uar": dict(
            label="UAR (mean per-class recall)", color="tab:blue", linestyle="-", marker="o", markersize=5, zorder=2
        ),
        "war": dict(
            label="WAR (accuracy over all clips)",
            color="tab:orange",
            linestyle="--",
            marker="s",
            markersize=9,
            markerfacecolor="none",
            markeredgewidth=1.5,
            zorder=3,
        ),
    }
    for key, style in styles.items():
        points = [(r["step"], r[key]) for r in evals if key in r]
        if points:
            right.plot(*zip(*points), **style)
    right.set_title("Evaluation recall")
    right.set_xlabel("step")
    right.set_ylabel("recall on the evaluation split (0-1)")
    right.set_ylim(0, 1.02)
    right.grid(alpha=0.3)
    if evals:
        right.legend(loc="best")
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle("Learning curves (metrics.jsonl)")
    fig.tight_layout()
    return fig


def save_confusion_matrix(path: str, confusion: np.ndarray, class_names: Sequence[str], title: str = "") -> str:
    """`confusion_matrix_figure` as a PNG at `path`."""
    return save_figure(confusion_matrix_figure(confusion, class_names, title), path)


def save_learning_curves(path: str, records: Sequence[dict]) -> str:
    """`learning_curves_figure` as a PNG at `path`."""
    return save_figure(learning_curves_figure(records), path)


def save_figure(fig: Figure, path: str, dpi: int = 100) -> str:
    """Writes `fig` as a PNG at `path` (local or gs://) in one go: never a half-written picture."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    paths.makedirs(paths.dirname(path))
    paths.write_bytes(path, buffer.getvalue())
    return path
