"""Per-window class probabilities over a video's time, as PNG timelines (matplotlib, Agg).

    png = timeline_png(starts, ends, probabilities, class_names, title="clip.mp4")
    png = timeline_tracks_png([("face 1", s1, e1, p1), ("face 2", s2, e2, p2)], class_names)

Each class is a line through its probability at each window's centre; behind the lines, each
window's top class is shaded in that class's colour over the part of the time axis nearest that
window's centre (overlapping windows then share the axis instead of stacking their shades). Windows
without a face (NaN rows) get no shade and break the lines: a gap. Class colours are fixed by class
index, so the same expression has the same colour in every picture. The figures are
`matplotlib.figure.Figure`s drawn on their own Agg canvas: nothing touches pyplot's global state.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

# matplotlib's "tab10" colours, written out so that no style sheet or rcParams change moves them.
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
BAND_ALPHA = 0.22  # light enough that the lines over the shade stay readable
WIDTH_INCHES = 10.0
PANEL_INCHES = 2.6  # each panel's own height
TOP_INCHES, BOTTOM_INCHES, GAP_INCHES = 0.45, 0.55, 0.45
DPI = 100
LEFT, RIGHT = 0.07, 0.82  # of the width: the legend sits right of the axes

Panel = tuple[str, np.ndarray, np.ndarray, np.ndarray]  # (label, starts [W], ends [W], probabilities [W,C])


def class_colour(index: int) -> str:
    """The fixed colour of class `index` (hex; the palette repeats after 10 classes)."""
    return PALETTE[index % len(PALETTE)]


def band_colour(index: int) -> tuple[int, int, int]:
    """RGB 0..255 of class `index`'s shade over the white axes background, as the PNG shows it."""
    rgb = np.array([int(class_colour(index)[k : k + 2], 16) for k in (1, 3, 5)], np.float64)
    return tuple(int(round(v)) for v in BAND_ALPHA * rgb + (1 - BAND_ALPHA) * 255)


def _check(starts: np.ndarray, ends: np.ndarray, probabilities: np.ndarray, num_classes: int) -> tuple:
    starts = np.asarray(starts, np.float64).reshape(-1)
    ends = np.asarray(ends, np.float64).reshape(-1)
    probabilities = np.asarray(probabilities, np.float64)
    w = len(starts)
    if len(ends) != w or probabilities.shape != (w, num_classes):
        raise ValueError(
            f"timeline: {w} starts, {len(ends)} ends and probabilities of shape {probabilities.shape}; "
            f"probabilities must be [{w},{num_classes}] for {num_classes} class names"
        )
    if (ends < starts).any():
        raise ValueError("timeline: a window ends before it starts")
    return starts, ends, probabilities


def _band_edges(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per window [W], the part of the time axis it shades: from the midpoint to the previous
    window's centre to the midpoint to the next one's (windows sorted by centre), inside the window."""
    centres = (starts + ends) / 2
    order = np.argsort(centres, kind="stable")
    c = centres[order]
    mids = (c[1:] + c[:-1]) / 2
    lo, hi = np.empty_like(c), np.empty_like(c)
    lo[order] = np.concatenate([[-np.inf], mids])
    hi[order] = np.concatenate([mids, [np.inf]])
    return np.maximum(lo, starts), np.minimum(hi, ends)


def _draw(ax, starts, ends, probabilities, class_names, label, track_labels) -> None:
    centres = (starts + ends) / 2
    order = np.argsort(centres, kind="stable")
    has_face = np.isfinite(probabilities).all(axis=1)
    lo, hi = _band_edges(starts, ends)
    previous = None
    for i in order:
        if not has_face[i]:
            previous = None
            continue
        top = int(np.argmax(probabilities[i]))
        ax.axvspan(lo[i], hi[i], color=class_colour(top), alpha=BAND_ALPHA, linewidth=0, zorder=0)
        if track_labels is not None and track_labels[i] != previous:  # only where it changes
            ax.text(lo[i], 0.97, f" {track_labels[i]}", fontsize=7, va="top", ha="left", zorder=3)
        previous = None if track_labels is None else track_labels[i]
    for k in range(len(class_names)):
        # NaN rows (no face) break the line: nothing is drawn between the neighbouring centres.
        y = np.where(has_face, probabilities[:, k], np.nan)[order]
        ax.plot(centres[order], y, color=class_colour(k), linewidth=1.4, marker=".", markersize=3, zorder=2)
    ax.set_ylim(0.0, 1.0)
    if len(starts):
        ax.set_xlim(float(starts.min()), float(max(ends.max(), starts.min() + 1e-3)))
    ax.set_ylabel("probability")
    ax.grid(axis="y", color="#dddddd", linewidth=0.6)  # horizontal only: the gaps stay blank
    ax.set_axisbelow(True)
    if label:
        ax.set_title(label, fontsize=10, loc="left")


def timeline_figure(
    panels: Sequence[Panel],
    class_names: Sequence[str],
    *,
    title: str = "",
    window_labels: Sequence[Sequence[str] | None] | None = None,
) -> Figure:
    """One panel per (label, starts [W], ends [W], probabilities [W,C]), sharing the time axis.

    The figure that `timeline_png` and `timeline_tracks_png` render: WIDTH_INCHES wide, PANEL_INCHES
    per panel plus fixed margins, at DPI, laid out without depending on the text drawn.
    `window_labels`: per panel, None or a label per window (see `timeline_png`'s track_labels).
    """
    if not panels:
        raise ValueError("timeline: no panels to draw")
    class_names = list(class_names)
    checked = [(label, *_check(s, e, p, len(class_names))) for label, s, e, p in panels]
    n = len(checked)
    track_labels = list(window_labels) if window_labels is not None else [None] * n
    if len(track_labels) != n:
        raise ValueError(f"timeline: {len(track_labels)} window label lists for {n} panels")
    for labels, (_, starts, _, _) in zip(track_labels, checked):
        if labels is not None and len(labels) != len(starts):
            raise ValueError(f"timeline: {len(labels)} window labels for {len(starts)} windows")
    height = TOP_INCHES + BOTTOM_INCHES + n * PANEL_INCHES + (n - 1) * GAP_INCHES
    fig = Figure(figsize=(WIDTH_INCHES, height), dpi=DPI)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(
        left=LEFT,
        right=RIGHT,
        top=1 - TOP_INCHES / height,
        bottom=BOTTOM_INCHES / height,
        hspace=GAP_INCHES / PANEL_INCHES,
    )
    axes = fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0]
    for ax, (label, starts, ends, probabilities), labels in zip(axes, checked, track_labels):
        _draw(ax, starts, ends, probabilities, class_names, label, labels)
    all_starts = np.concatenate([c[1] for c in checked])
    all_ends = np.concatenate([c[2] for c in checked])
    if len(all_starts):
        axes[0].set_xlim(float(all_starts.min()), float(max(all_ends.max(), all_starts.min() + 1e-3)))
    axes[-1].set_xlabel("time (s)")
    handles = [Line2D([], [], color=class_colour(k), linewidth=2) for k in range(len(class_names))]
    fig.legend(handles, class_names, loc="upper left", bbox_to_anchor=(RIGHT + 0.01, 1 - TOP_INCHES / height))
    if title:
        fig.suptitle(title, x=LEFT, ha="left", y=1 - 0.08 / height, va="top", fontsize=11)
    return fig


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def timeline_png(
    starts: np.ndarray,
    ends: np.ndarray,
    probabilities: np.ndarray,
    class_names: Sequence[str],
    *,
    title: str = "",
    track_labels: Sequence[str] | None = None,
) -> bytes:
    """PNG of one timeline: windows [start, end] seconds [W], probabilities [W,C] (NaN row: no face).

    `track_labels` [W] (optional): which face each window follows (e.g. "face 1"), written at the
    top of the shade wherever it changes from the previous window with a face.
    """
    labels = None if track_labels is None else [[str(t) for t in track_labels]]
    return _png(timeline_figure([("", starts, ends, probabilities)], class_names, title=title, window_labels=labels))


def timeline_tracks_png(tracks: Sequence[Panel], class_names: Sequence[str], *, title: str = "") -> bytes:
    """PNG with one panel per face track, (label, starts [W], ends [W], probabilities [W,C]) each,
    stacked over one shared time axis."""
    return _png(timeline_figure(tracks, class_names, title=title))
