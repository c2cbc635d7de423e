"""The pictures of a `VideoResult`: a window's heat maps and the per-track timeline, as PNG bytes."""

from __future__ import annotations

import io

import numpy as np

from grace_jax.inference.results import VideoResult
from grace_jax.run import heatmaps


def window_rows(result: VideoResult, track_index: int, window_index: int) -> list[tuple[str, np.ndarray]]:
    """(label, weights [T,P]) rows: the motion weights, then the predicted and runner-up class maps."""
    window = result.tracks[track_index].windows[window_index]
    rows = [("motion weight", window.motion_weights)]
    probabilities = window.probabilities
    if window.class_maps is not None and probabilities is not None:
        order = np.argsort(-probabilities)
        roles = [(int(order[0]), "predicted")] + ([(int(order[1]), "runner-up")] if len(order) > 1 else [])
        rows += [(f"{result.class_names[c]} map\n({role})", window.class_maps[c]) for c, role in roles]
    return rows


def window_figure(result: VideoResult, track_index: int, window_index: int, title: str | None = None):
    """The matplotlib Figure `grace_jax.predict` saves for one window of one track."""
    window = result.tracks[track_index].windows[window_index]
    if window.frames is None or window.probabilities is None:
        raise ValueError("this window has no prediction (no face in enough of its frames)")
    top = window.top()
    if title is None:
        title = f"{result.class_names[top]} ({window.probabilities[top]:.2f})"
    context = ("whole frame", window.context) if window.context is not None else None
    return heatmaps.build_clip_figure(window.frames, window_rows(result, track_index, window_index), title, context)


def window_png(result: VideoResult, track_index: int, window_index: int, title: str | None = None) -> bytes:
    buffer = io.BytesIO()
    window_figure(result, track_index, window_index, title).savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def timeline_png(result: VideoResult, title: str | None = None) -> bytes:
    """Per face track, the class probabilities of its windows over time (the top class shaded)."""
    from grace_jax.inference import timeline

    panels = []
    for track in result.tracks:
        starts = np.asarray([w.start_seconds for w in track.windows], np.float64)
        ends = np.asarray([w.end_seconds for w in track.windows], np.float64)
        rows = [
            np.full(len(result.class_names), np.nan) if w.probabilities is None else w.probabilities
            for w in track.windows
        ]
        panels.append((f"face {track.track_id}", starts, ends, np.asarray(rows, np.float64).reshape(len(rows), -1)))
    return timeline.timeline_tracks_png(panels, result.class_names, title=title or result.input)
