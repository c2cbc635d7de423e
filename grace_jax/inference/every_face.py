"""faces="all": every person in a video, followed over time, predicted in every window they are in.

Two passes over the video. The first detects faces in `detect_fps` frames a second (whole frames at
most `faces.WHOLE_FRAME_SIDE` a side) and links them into tracks with stable ids, ending a track at a
shot cut (`faces.tracks`). The second reads, for every window and every track seen in it, the
evaluation protocol's T frames among the window's frames inside the track's span, crops them to the
track's face and classifies them. A track seen in fewer than `min_face_fraction` of a window's
sampled frames gets no prediction there (a gap in its timeline).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from grace_jax import faces as faces_lib
from grace_jax.data import windows as windows_lib
from grace_jax.data.errors import ClipError
from grace_jax.inference import frames as frames_lib
from grace_jax.inference import sources
from grace_jax.inference.results import TrackResult, WindowResult
from grace_jax.run import heatmaps

if TYPE_CHECKING:
    from grace_jax.inference.predictor import Predictor, Progress

DETECT_BATCH = 32  # frames per detector call
THUMBNAIL = 32  # side of the thumbnails shot cuts are found on


def predict_tracks(
    predictor: Predictor, source: sources.Source, chosen: list[windows_lib.Window], report: Progress
) -> tuple[list[TrackResult], list[str]]:
    """(one TrackResult per face track, in id order; notes on faces seen too briefly)."""
    times = source.times
    step = max(1, int(round((source.fps or predictor.folder_fps) / predictor.detect_fps)))
    detect_at = np.unique(np.append(np.arange(0, len(times), step), len(times) - 1))
    detections, thumbnails, frame_size = _detect(predictor, source, detect_at, report)
    cuts = faces_lib.shot_cuts(thumbnails)
    tracks, notes = faces_lib.track_video_faces(detections, detect_at, times[detect_at], frame_size, cuts=cuts)
    height, width = source.source_size
    scale = width / frame_size[1]  # read pixels -> source pixels

    # Every (track, window) the track is seen in, with the source frames it samples.
    jobs = []
    for k, track in enumerate(tracks):
        lo, hi = int(track.frame_indices[0]), int(track.frame_indices[-1])
        for window in chosen:
            if window.end_seconds <= times[lo] or window.start_seconds > times[hi]:  # [start, end)
                continue
            picked = frames_lib.sample_in(times, lo, hi, window.start_seconds, window.end_seconds, predictor.num_frames)
            jobs.append((k, window, picked))
    results: list[list[WindowResult]] = [[] for _ in tracks]
    frames_of = windows_lib.frame_sets(
        lambda needed: source.read(needed, faces_lib.WHOLE_FRAME_SIDE, True), [p for _, _, p in jobs], source.name
    )
    for n, ((k, window, picked), frames) in enumerate(zip(jobs, frames_of)):
        track = tracks[k]
        squares = track.squares_at(picked, frame_size)
        seen = float(track.seen_fraction(picked))
        if seen < predictor.min_face_fraction:
            note = f"face {track.track_id} seen in {seen:.0%} of the window's frames"
            results[k].append(
                WindowResult(
                    window.start_seconds, window.end_seconds, None, seen, picked, squares * scale, True, note=note
                )
            )
        else:
            crops = faces_lib.crop_frames(frames, squares, predictor.image_size)
            detected = np.asarray([track.seen_fraction(np.asarray([p])) > 0 for p in picked])
            context = frames_lib.context_frames(heatmaps.draw_squares(frames, squares, detected))
            note = f"cropped to face {track.track_id}; seen in {seen:.0%} of the window's frames"
            results[k].append(
                predictor.window_result(window, picked, crops, seen, squares * scale, True, note, context)
            )
        report("predicting", (n + 1) / len(jobs))
    out = []
    for k, track in enumerate(tracks):
        found = np.flatnonzero(track.detected)
        boxes = np.concatenate([track.frame_indices[found, None], track.boxes[found] * scale], 1)
        out.append(
            TrackResult(
                track_id=track.track_id,
                windows=results[k],
                boxes=boxes.astype(np.float32),
                first_seconds=float(track.times[0]),
                last_seconds=float(track.times[-1]),
            )
        )
    return out, list(notes)


def _detect(predictor: Predictor, source: sources.Source, indices: np.ndarray, report: Progress):
    """Detections [N] and thumbnails [N,s,s,3] of the frames `indices`, and the read frames' (H, W)."""
    detections, thumbnails, frame_size, batch = [], [], None, []

    def flush():
        detections.extend(predictor.detector.detect(np.stack(batch)))
        batch.clear()
        report("finding faces", len(detections) / len(indices))

    for _, frame in source.read(indices.tolist(), faces_lib.WHOLE_FRAME_SIDE, True):
        frame_size = frame_size or frame.shape[:2]
        if frame.shape[:2] != frame_size:  # a stream that changes size: every frame at the first's
            frame = np.asarray(Image.fromarray(frame).resize(frame_size[::-1], Image.BILINEAR))
        batch.append(frame)
        thumbnails.append(np.asarray(Image.fromarray(frame).resize((THUMBNAIL, THUMBNAIL), Image.BILINEAR)))
        if len(batch) == DETECT_BATCH:
            flush()
    if batch:
        flush()
    if len(detections) != len(indices):
        raise ClipError(f"{source.name}: {len(indices) - len(detections)} frames did not decode")
    return detections, np.stack(thumbnails), tuple(frame_size)
