"""Following the face a clip is about, and cropping it: pure numpy over per-frame detections.

    track = track_face(detector.detect(frames), frames.shape[1:3], margin=0.2)
    if track.face_fraction < min_face_fraction: ...            # "no face": do not classify
    elif face_crop == "auto" and faces_fill_frame(track): ...  # already a face crop: keep frames
    else: crops = crop_frames(frames, track.squares, 224)      # uint8 [T,224,224,3]

Steps: detections in consecutive sampled frames are linked into tracks (nearest centre, similar
size); the clip's face is the track with the largest sum of box sides over the frames it appears
in (large and persistent beat small or brief); frames where that face was missed take a box
interpolated between the nearest frames where it was found (the nearest one's box before the first
and after the last); centres and sizes are smoothed over time (a centred moving average, a local
line fit near the clip's ends); each box becomes
a square of side max(w, h) * (1 + 2 * margin) around its centre, shrunk to the frame's shorter side
if larger and moved inside the frame. Boxes are (x0, y0, x1, y1) in frame pixels (see
`grace_jax.faces.detector`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

import numpy as np
from PIL import Image


class FrameDetections(Protocol):
    """What tracking reads from one frame's detections (e.g. `detector.Detections`)."""

    boxes: np.ndarray  # [N,4] (x0, y0, x1, y1)
    scores: np.ndarray  # [N]


@dataclasses.dataclass(frozen=True)
class FaceTrack:
    """The clip's face over its T sampled frames. Without any face, boxes and squares are NaN."""

    boxes: np.ndarray  # float32 [T,4]: the face box per frame, filled in and smoothed
    squares: np.ndarray  # float32 [T,4]: the square crop per frame, inside the frame
    detected: np.ndarray  # bool [T]: the face was found in that frame (else filled in)
    frame_size: tuple[int, int]  # (H, W)
    margin: float
    # Per frame, the square's side before it was fitted into the frame (the face's own scale).
    wanted_sides: np.ndarray = dataclasses.field(repr=False)

    @property
    def face_fraction(self) -> float:
        """Fraction of sampled frames where the clip's face was detected (0 for a faceless clip)."""
        return float(self.detected.mean()) if len(self.detected) else 0.0


def _centre_side(boxes: np.ndarray) -> np.ndarray:
    """[N,4] corners -> [N,3] (cx, cy, side) with side = max(w, h)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    wh = boxes[:, 2:] - boxes[:, :2]
    return np.concatenate([(boxes[:, :2] + boxes[:, 2:]) / 2, wh.max(axis=1, keepdims=True)], 1)


def link_tracks(
    detections: Sequence[FrameDetections],
    *,
    max_jump: float = 1.5,
    max_scale: float = 2.0,
    times: Sequence[float] | None = None,
    max_gap: float | None = None,
) -> list[dict[int, int]]:
    """Links detections over frames; returns tracks as {frame index: detection index}.

    A detection continues a track when its centre is within `max_jump` face sides of the track's
    last box (sampled frames can be far apart in time) and the two sides differ by less than a
    factor `max_scale`. Closest pairs are linked first; a track may skip frames where it was missed.
    With `times` (seconds per frame) and `max_gap`, a track last seen more than `max_gap` seconds
    before a frame has ended and takes no more detections.
    """
    if (times is None) != (max_gap is None):
        raise ValueError("link_tracks: give both times and max_gap, or neither")
    tracks: list[dict[int, int]] = []
    last: list[np.ndarray] = []  # each track's latest (cx, cy, side)
    last_frame: list[int] = []
    for t, det in enumerate(detections):
        cs = _centre_side(det.boxes)
        pairs = []
        for k, prev in enumerate(last):
            if max_gap is not None and times[t] - times[last_frame[k]] > max_gap + 1e-9:  # float times
                continue
            side = np.maximum(prev[2], cs[:, 2])
            dist = np.linalg.norm(cs[:, :2] - prev[:2], axis=1) / np.maximum(side, 1e-6)
            ratio = np.maximum(cs[:, 2], prev[2]) / np.maximum(np.minimum(cs[:, 2], prev[2]), 1e-6)
            pairs += [(d, k, i) for i, (d, r) in enumerate(zip(dist, ratio)) if d < max_jump and r < max_scale]
        used_tracks, used_dets = set(), set()
        for _, k, i in sorted(pairs):
            if k not in used_tracks and i not in used_dets:
                tracks[k][t] = i
                last[k] = cs[i]
                last_frame[k] = t
                used_tracks.add(k)
                used_dets.add(i)
        for i in range(len(cs)):
            if i not in used_dets:
                tracks.append({t: i})
                last.append(cs[i])
                last_frame.append(t)
    return tracks


def _fill_and_smooth(frames: np.ndarray, values: np.ndarray, num_frames: int, window: int) -> np.ndarray:
    """(cx, cy, side) known at `frames` -> [T,3]: interpolated between them, then averaged."""
    t = np.arange(num_frames)
    filled = np.stack([np.interp(t, frames, values[:, j]) for j in range(values.shape[1])], 1)
    if window <= 1:
        return filled
    half = window // 2
    out = np.empty_like(filled)
    for i in range(num_frames):
        # A straight line fitted over the window, read at frame i: the moving average where the
        # window is whole, and near the clip's ends (window cut short) still unbiased for a face
        # moving steadily, where a plain average would lag behind it.
        lo, hi = max(0, i - half), min(num_frames, i + half + 1)
        dt = np.arange(lo, hi) - i
        v = filled[lo:hi]
        var = np.mean((dt - dt.mean()) ** 2)
        slope = ((dt - dt.mean())[:, None] * (v - v.mean(axis=0))).mean(axis=0) / var if var > 0 else 0.0
        out[i] = v.mean(axis=0) - slope * dt.mean()
    return out


def square_crops(centre_side: np.ndarray, frame_size: tuple[int, int], margin: float) -> tuple[np.ndarray, np.ndarray]:
    """(cx, cy, side) [T,3] -> (squares [T,4] inside the frame, wanted sides [T]).

    The square's side is the box side times (1 + 2 * margin), capped at the frame's shorter side;
    a square that would cross the frame's edge is moved inside it (the face then sits off-centre
    rather than next to a black border the model never saw in training).
    """
    h, w = frame_size
    wanted = centre_side[:, 2] * (1 + 2 * margin)
    side = np.minimum(wanted, min(h, w))
    x0 = np.clip(centre_side[:, 0] - side / 2, 0, w - side)
    y0 = np.clip(centre_side[:, 1] - side / 2, 0, h - side)
    return np.stack([x0, y0, x0 + side, y0 + side], 1).astype(np.float32), wanted.astype(np.float32)


def track_face(
    detections: Sequence[FrameDetections],
    frame_size: tuple[int, int],
    *,
    margin: float = 0.2,
    smooth: int = 3,
    max_jump: float = 1.5,
) -> FaceTrack:
    """Per-frame detections of T sampled frames of size (H, W) -> the clip's `FaceTrack`.

    `margin`: added on each side of the face, as a fraction of its box side. `smooth`: frames in
    the centred moving average (1: none). `max_jump`: see `link_tracks`.
    """
    if margin < 0 or smooth < 1:
        raise ValueError(f"margin must be >= 0 and smooth >= 1, got {margin}, {smooth}")
    num_frames = len(detections)
    tracks = link_tracks(detections, max_jump=max_jump)
    detected = np.zeros(num_frames, bool)
    if not tracks:
        nan = np.full((num_frames, 4), np.nan, np.float32)
        return FaceTrack(
            nan,
            nan.copy(),
            detected,
            tuple(frame_size),
            margin,
            np.full(num_frames, np.nan, np.float32),
        )

    def weight(track: dict[int, int]) -> float:
        return float(sum(_centre_side(detections[t].boxes[i])[0, 2] for t, i in track.items()))

    best = max(tracks, key=weight)  # ties: the earliest-starting track (max keeps the first)
    frames = np.array(sorted(best))
    known = np.concatenate([_centre_side(detections[t].boxes[best[t]]) for t in frames])
    detected[frames] = True
    cs = _fill_and_smooth(frames, known, num_frames, smooth)
    half = cs[:, 2:3] / 2
    boxes = np.concatenate([cs[:, :2] - half, cs[:, :2] + half], 1).astype(np.float32)
    squares, wanted = square_crops(cs, frame_size, margin)
    return FaceTrack(boxes, squares, detected, tuple(frame_size), margin, wanted)


def faces_fill_frame(track: FaceTrack, threshold: float = 0.9) -> bool:
    """Whether the frames already are face crops, so `--face_crop=auto` should leave them be.

    True when the median wanted square (face side with the track's margin) covers at least
    `threshold` of the frame's longer side: cropping would then keep (nearly) the whole frame. A
    face that fills the height of a wide frame is not "filling" it (the crop removes the sides).
    False for a clip without a face.
    """
    if not track.detected.any():
        return False
    return bool(np.median(track.wanted_sides) >= threshold * max(track.frame_size))


def crop_frames(frames: np.ndarray, squares: np.ndarray, size: int) -> np.ndarray:
    """uint8 frames [T,H,W,3] and squares [T,4] (subpixel) -> uint8 [T,size,size,3], bilinear."""
    frames = np.asarray(frames)
    squares = np.asarray(squares, np.float64)
    if len(frames) != len(squares) or frames.ndim != 4:
        raise ValueError(f"crop_frames: {frames.shape} frames, {squares.shape} squares")
    if not np.isfinite(squares).all():
        raise ValueError("crop_frames: the clip has no face track (squares are NaN)")
    out = np.empty((len(frames), size, size, 3), np.uint8)
    for t in range(len(frames)):
        image = Image.fromarray(frames[t])
        out[t] = np.asarray(image.resize((size, size), Image.BILINEAR, box=tuple(squares[t])))
    return out
