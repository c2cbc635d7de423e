"""Every face of a whole video, followed with a stable identity: shot cuts, tracks, crops per window.

    cuts = shot_cuts(frames)                                   # frames: the detection frames
    tracks, notes = track_video_faces(detector.detect(frames), frame_indices, times, (H, W), cuts=cuts)
    for track in tracks:                                       # ids 1, 2, ... by first appearance
        squares = track.squares_at(window_frames, (H, W))      # float32 [K,4], for crop_frames
        if track.seen_fraction(window_frames) < 0.5: ...       # the face is mostly absent there

The detection frames are a sample of the video (a few per second), so faces can move far between
them. Detections are linked as `track.link_tracks` links them within one clip, with two more rules:
a track never continues across a shot cut, and a face missed for longer than `max_gap_seconds`
ends its track (a face seen again later is a new track). Tracks seen in too few detection frames
are dropped and described in the notes instead, since nothing can be predicted from them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from PIL import Image

from grace_jax.faces.track import FrameDetections, _fill_and_smooth, link_tracks, square_crops

_THUMB = (32, 18)  # (w, h): coarse enough that noise and small motion average out
_BINS = 4  # per RGB channel: a 64-bin joint colour histogram


def _frame_signatures(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N,H,W,3] -> (thumbnails float32 [N,h,w,3] in 0..1, colour histograms [N,64] summing to 1)."""
    thumbs, hists = [], []
    for frame in frames:
        image = Image.fromarray(frame)
        thumbs.append(np.asarray(image.resize(_THUMB, Image.BOX), np.float32) / 255.0)
        small = np.asarray(image.resize((4 * _THUMB[0], 4 * _THUMB[1]), Image.BOX)).reshape(-1, 3)
        q = small.astype(np.int64) * _BINS // 256
        codes = (q[:, 0] * _BINS + q[:, 1]) * _BINS + q[:, 2]
        hists.append(np.bincount(codes, minlength=_BINS**3) / len(codes))
    return np.stack(thumbs), np.stack(hists)


def shot_cuts(frames: np.ndarray, *, min_change: float = 0.3, relative: float = 3.0, context: int = 15) -> np.ndarray:
    """Detection frames uint8 [N,H,W,3] -> bool [N], True at i when a shot cut lies between frames
    i-1 and i (never at 0).

    Two measures between consecutive frames: the colour histogram distance (half the L1 distance of
    64-bin joint RGB histograms, 0..1) and the mean absolute difference of 32x18 thumbnails (0..1).
    Each alone also rises without a cut: the thumbnails differ when something large moves or the
    camera pans, the histograms when the light changes; a cut changes both. Their geometric mean
    must exceed `min_change` and `relative` times the typical change around it: the median over up
    to `context` frame pairs on each side, the pair itself left out (hand-held or busy footage
    changes more from one detection frame to the next than a still interview does). Gradual
    transitions (fades, dissolves) spread their change over many pairs and are not found.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"shot_cuts takes RGB frames [N,H,W,3], got shape {frames.shape}")
    cuts = np.zeros(len(frames), bool)
    if len(frames) < 2:
        return cuts
    thumbs, hists = _frame_signatures(frames)
    hist_change = 0.5 * np.abs(np.diff(hists, axis=0)).sum(axis=1)
    # Scaled so that a complete change of a mid-grey layout (|diff| ~ 0.5) reads like a full
    # histogram change: the geometric mean then weighs both measures alike.
    layout_change = np.minimum(2.0 * np.abs(np.diff(thumbs, axis=0)).mean(axis=(1, 2, 3)), 1.0)
    change = np.sqrt(hist_change * layout_change)
    for i, c in enumerate(change):
        around = np.concatenate([change[max(0, i - context) : i], change[i + 1 : i + 1 + context]])
        typical = np.median(around) if len(around) else 0.0
        cuts[i + 1] = c > min_change and c > relative * typical
    return cuts


@dataclasses.dataclass(frozen=True)
class VideoTrack:
    """One face from the detection frame where it was first seen to the one where it was last seen."""

    track_id: int  # 1, 2, ... in order of first appearance (ties: left to right)
    frame_indices: np.ndarray  # int64 [N]: the detection frames of the span, as source-video frame numbers
    times: np.ndarray  # float64 [N]: their times in seconds
    boxes: np.ndarray  # float32 [N,4]: (x0, y0, x1, y1) frame pixels, filled in where missed, smoothed
    detected: np.ndarray  # bool [N]: the face was detected in that frame (else filled in)

    @property
    def start(self) -> float:
        """Time in seconds of the first detection."""
        return float(self.times[0])

    @property
    def end(self) -> float:
        """Time in seconds of the last detection."""
        return float(self.times[-1])

    def _centre_side_at(self, frame_indices: np.ndarray) -> np.ndarray:
        """[K] source frames -> [K,3] (cx, cy, side), linear between detection frames, clamped at the ends."""
        b = self.boxes.astype(np.float64)
        cs = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, (b[:, 2:] - b[:, :2]).max(axis=1)], 1)
        f = np.asarray(frame_indices, np.float64).reshape(-1)
        return np.stack([np.interp(f, self.frame_indices, cs[:, j]) for j in range(3)], 1)

    def squares_at(self, frame_indices: np.ndarray, frame_size: tuple[int, int], margin: float = 0.2) -> np.ndarray:
        """Source frames [K] -> float32 [K,4] square crops inside a (H, W) frame, as `track.square_crops`
        makes them (side: max(w, h) * (1 + 2 * margin), capped at the shorter side, moved inside).

        Between detection frames the box is interpolated; before the span's first and after its last
        detection frame the end box is kept.
        """
        squares, _ = square_crops(self._centre_side_at(frame_indices), tuple(frame_size), margin)
        return squares

    def seen_fraction(self, frame_indices: np.ndarray) -> float:
        """Of the source frames [K] given, the fraction that lie inside the span and whose nearest
        detection frame saw the face (frames outside the span count as not seen); 0 for K = 0."""
        f = np.asarray(frame_indices, np.int64).reshape(-1)
        if not len(f):
            return 0.0
        inside = (f >= self.frame_indices[0]) & (f <= self.frame_indices[-1])
        right = np.clip(np.searchsorted(self.frame_indices, f), 1, max(len(self.frame_indices) - 1, 1))
        left = right - 1
        if len(self.frame_indices) == 1:
            nearest = np.zeros_like(f)
        else:  # ties go to the earlier detection frame
            closer_left = f - self.frame_indices[left] <= self.frame_indices[right] - f
            nearest = np.where(closer_left, left, right)
        return float(np.mean(inside & self.detected[nearest]))


def _segments(num_frames: int, cuts: np.ndarray | None) -> list[tuple[int, int]]:
    """[start, stop) ranges of detection frames between shot cuts."""
    if cuts is None:
        return [(0, num_frames)] if num_frames else []
    cuts = np.asarray(cuts, bool)
    if cuts.shape != (num_frames,):
        raise ValueError(f"cuts must be bool [{num_frames}] like the detections, got shape {cuts.shape}")
    starts = [0] + [i for i in range(1, num_frames) if cuts[i]]
    return [(s, e) for s, e in zip(starts, starts[1:] + [num_frames]) if e > s]


@dataclasses.dataclass(frozen=True)
class _Kept:
    """One frame's detections scoring at least min_score, as `FrameDetections`."""

    boxes: np.ndarray
    scores: np.ndarray


def _note(frames: np.ndarray, times: np.ndarray, boxes: np.ndarray) -> str:
    """One line on a face seen too briefly to predict anything from."""
    n = len(frames)
    when = f"{times[0]:.1f} s" if n == 1 else f"{times[0]:.1f}-{times[-1]:.1f} s"
    box = ", ".join(str(int(round(v))) for v in boxes.mean(axis=0))
    plural = "frame" if n == 1 else "frames"
    return f"a face seen in only {n} detection {plural} at {when} (box {box}): too few to predict"


def track_video_faces(
    detections: Sequence[FrameDetections],
    frame_indices: np.ndarray,
    times: np.ndarray,
    frame_size: tuple[int, int],
    *,
    cuts: np.ndarray | None = None,
    min_detections: int = 3,
    max_gap_seconds: float = 1.0,
    min_score: float = 0.5,
    max_jump: float = 1.5,
    smooth: int = 3,
) -> tuple[list[VideoTrack], list[str]]:
    """Per-frame detections of N detection frames -> (every face's `VideoTrack`, notes).

    `frame_indices` int [N] and `times` float [N] (seconds) place the detection frames in the source
    video; `frame_size` is their (H, W), the pixels the boxes are in. `cuts`: bool [N] from
    `shot_cuts` (None: one shot). Detections scoring under `min_score` are ignored. `max_jump`: as
    in `link_tracks`. `smooth`: detection frames in the box smoothing (1: none).

    Tracks seen in fewer than `min_detections` detection frames are not returned; each is described
    by one line of the notes instead. Ids count 1, 2, ... over the whole video in order of first
    appearance, faces first seen in the same frame from left to right.
    """
    num = len(detections)
    frame_indices = np.asarray(frame_indices, np.int64).reshape(-1)
    times = np.asarray(times, np.float64).reshape(-1)
    if len(frame_indices) != num or len(times) != num:
        raise ValueError(f"{num} detections but {len(frame_indices)} frame indices and {len(times)} times")
    if len(frame_size) != 2 or min(frame_size) < 1:
        raise ValueError(f"frame_size must be (H, W), got {frame_size}")
    if min_detections < 1 or max_gap_seconds < 0 or smooth < 1:
        raise ValueError(f"min_detections {min_detections}, max_gap_seconds {max_gap_seconds}, smooth {smooth}")
    kept = []
    for det in detections:
        scores = np.asarray(det.scores, np.float32).reshape(-1)
        boxes = np.asarray(det.boxes, np.float32).reshape(-1, 4)
        keep = scores >= min_score
        kept.append(_Kept(boxes[keep], scores[keep]))

    found = []  # (first frame, first centre x, frames [n] into the whole video, boxes [n,4])
    for start, stop in _segments(num, cuts):
        linked = link_tracks(kept[start:stop], max_jump=max_jump, times=times[start:stop], max_gap=max_gap_seconds)
        for track in linked:
            frames = np.array(sorted(track)) + start
            boxes = np.stack([kept[t].boxes[track[t - start]] for t in frames])
            found.append((int(frames[0]), float(boxes[0, 0] + boxes[0, 2]) / 2, frames, boxes))
    found.sort(key=lambda item: (item[0], item[1]))

    tracks, notes = [], []
    for _, _, frames, boxes in found:
        if len(frames) < min_detections:
            notes.append(_note(frame_indices[frames], times[frames], boxes))
            continue
        first, last = frames[0], frames[-1]
        span = last - first + 1
        # (cx, cy, w, h) rather than corners: interpolating and smoothing them keeps boxes well formed.
        known = np.concatenate([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], 1)
        values = _fill_and_smooth(frames - first, known.astype(np.float64), span, min(smooth, span))
        half = values[:, 2:] / 2
        detected = np.zeros(span, bool)
        detected[frames - first] = True
        tracks.append(
            VideoTrack(
                track_id=len(tracks) + 1,
                frame_indices=frame_indices[first : last + 1].copy(),
                times=times[first : last + 1].copy(),
                boxes=np.concatenate([values[:, :2] - half, values[:, :2] + half], 1).astype(np.float32),
                detected=detected,
            )
        )
    return tracks, notes
