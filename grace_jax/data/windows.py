"""Windows of a long video: one prediction per `window_seconds`, every `stride_seconds`.

Window k covers [k * stride, k * stride + window) seconds of presentation time. Windows start while
they fit in the video; when the last one ends before the video does, one more window is placed so
that it ends with the last frame, so every frame is in some window. A video shorter than one
window is a single window over all of it. Each window then gets the evaluation protocol's frames
(`segments.segment_indices`), sampled among the frames whose time falls inside it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from grace_jax.data import frames as frames_lib
from grace_jax.data import video as video_lib
from grace_jax.data.errors import ClipError
from grace_jax.data.segments import segment_indices


@dataclasses.dataclass(frozen=True)
class Window:
    start_seconds: float
    end_seconds: float
    frames: np.ndarray  # int64 [T]: indices of the frames the model sees, into the whole video


def windows(
    times: np.ndarray, num_frames: int, *, window_seconds: float = 0.0, stride_seconds: float = 0.0
) -> list[Window]:
    """Frame times [N] (seconds, non-decreasing) -> the windows and their sampled frames.

    `window_seconds` 0 means one window over the whole video (the evaluation protocol on all of
    it); `stride_seconds` 0 means the window's length (windows side by side).
    """
    times = np.asarray(times, np.float64)
    if times.ndim != 1 or len(times) == 0:
        raise ValueError(f"frame times must be a non-empty vector, got shape {times.shape}")
    if window_seconds < 0 or stride_seconds < 0:
        raise ValueError(f"window_seconds={window_seconds} and stride_seconds={stride_seconds} must be >= 0")
    # A frame lasts until the next one: the video ends one (median) frame interval after its last frame.
    step = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
    end = float(times[-1]) + step
    if window_seconds == 0 or window_seconds >= end:
        starts = [float(times[0])]
        window_seconds = max(window_seconds, end - float(times[0]))
    else:
        stride = stride_seconds or window_seconds
        count = int(np.floor((end - window_seconds) / stride + 1e-9)) + 1
        starts = [k * stride for k in range(count)]
        if starts[-1] + window_seconds < end - 1e-9:
            starts.append(end - window_seconds)
    result = []
    for start in starts:
        stop = start + window_seconds
        inside = np.flatnonzero((times >= start - 1e-9) & (times < stop - 1e-9))
        if len(inside) == 0:  # a gap in a variable-frame-rate video: the nearest frame
            inside = np.array([int(np.argmin(np.abs(times - start)))])
        picked = inside[segment_indices(len(inside), num_frames, train=False)]
        result.append(Window(round(float(start), 3), round(min(stop, end), 3), picked.astype(np.int64)))
    return result


def read_windows(
    path: str,
    num_frames: int,
    side: int,
    *,
    whole_frame: bool = False,
    window_seconds: float = 0.0,
    stride_seconds: float = 0.0,
    folder_fps: float = 25.0,
) -> Iterator[tuple[Window, np.ndarray]]:
    """A video file or frame folder -> (window, its sampled frames uint8 [T,S,S,3]) per window, in
    time order; `whole_frame` as in `video.read_video` ([T,h,w,3]).

    The video is decoded once, and a frame is dropped as soon as no later window uses it. A frame
    folder has no clock: its frames are `folder_fps` apart. Raises ClipError naming the input (when
    it is unreadable, after the windows before the failure).
    """
    if os.path.isdir(path):
        count = len(frames_lib.list_frames(path))
        times = np.arange(count, dtype=np.float64) / folder_fps
    elif not os.path.exists(path):
        raise ClipError(f"{path}: no such file or folder")
    elif path.lower().endswith(video_lib.VIDEO_EXTENSIONS):
        times = video_lib.frame_times(path)
    else:
        raise ClipError(f"{path}: not a video ({', '.join(video_lib.VIDEO_EXTENSIONS)}) or frame folder")
    chosen = windows(times, num_frames, window_seconds=window_seconds, stride_seconds=stride_seconds)

    def read(needed: list[int]) -> Iterator[tuple[int, np.ndarray]]:
        if os.path.isdir(path):
            stack = frames_lib.read_frame_folder(path, side, whole_frame=whole_frame, indices=np.asarray(needed))
            return iter(zip(needed, stack))
        return video_lib.iter_video(path, side, needed, whole_frame=whole_frame)

    yield from zip(chosen, frame_sets(read, [w.frames for w in chosen], path))


def frame_sets(
    read: Callable[[list[int]], Iterator[tuple[int, np.ndarray]]], sets: Sequence[Sequence[int]], name: str
) -> Iterator[np.ndarray]:
    """Each set of frame positions, in order, as its frames stacked [len(set), ...].

    `read(needed)` gets every position any set uses, sorted, once, and yields (position, frame) in
    that order; a frame is held until the last set that uses it is served, so a long video is decoded
    once without holding all of it. Raises ClipError naming `name` for a position that never comes.
    """
    last_use: dict[int, int] = {}
    for n, positions in enumerate(sets):
        for p in positions:
            last_use[int(p)] = n
    decoded = read(sorted(last_use)) if last_use else iter(())
    held: dict[int, np.ndarray] = {}
    for n, positions in enumerate(sets):
        want = [int(p) for p in positions]
        while not all(p in held for p in want):
            position, frame = next(decoded, (None, None))
            if position is None:
                raise ClipError(f"{name}: frame {next(p for p in want if p not in held)} did not decode")
            held[int(position)] = frame
        yield np.stack([held[p] for p in want])
        for p in [p for p in held if last_use.get(p, -1) <= n]:
            del held[p]
