"""A video file, a frame folder or an array, behind one reader: frame times, size, frames by index."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from PIL import Image

from grace_jax.data import frames as frames_lib
from grace_jax.data import video as video_lib
from grace_jax.data.errors import ClipError
from grace_jax.data.resize import fit_within, to_square
from grace_jax.infra import paths


@dataclasses.dataclass(frozen=True)
class Source:
    name: str  # the path, or the name given for an array
    times: np.ndarray  # float64 [N] presentation times in seconds
    fps: float | None  # the video's rate (None for frame folders and arrays without a clock)
    # (indices, side, whole_frame) -> (index, uint8 frame) for each distinct index, in decoding order:
    # square side x side frames (centre crop), or whole frames at most `side` a side (whole_frame).
    read: Callable[[Sequence[int], int, bool], Iterator[tuple[int, np.ndarray]]]
    _size: Callable[[], tuple[int, int]] = dataclasses.field(repr=False)

    @property
    def source_size(self) -> tuple[int, int]:
        """(height, width) of the frames as decoded, upright."""
        return self._size()

    @property
    def duration_seconds(self) -> float:
        step = np.median(np.diff(self.times)) if len(self.times) > 1 else 1.0 / (self.fps or 25.0)
        return float(self.times[-1] + step)


def open_source(
    video: str | os.PathLike | np.ndarray, *, fps: float | None, folder_fps: float, name: str | None
) -> Source:
    """A path (video file or frame folder, local) or a uint8 array [T,H,W,3]; ClipError naming it when
    it cannot be used."""
    if isinstance(video, np.ndarray):
        return _array_source(video, fps or folder_fps, name or "array")
    path = os.fspath(video)
    if paths.is_uri(path):
        raise ClipError(f"{path}: inputs must be local files or folders (copy it first, e.g. gcloud storage cp)")
    if os.path.isdir(path):
        count = len(frames_lib.list_frames(path))
        rate = fps or folder_fps

        def read_folder(indices, side, whole_frame):
            wanted = sorted(set(int(i) for i in indices))
            stack = frames_lib.read_frame_folder(path, side, whole_frame=whole_frame, indices=wanted)
            return iter(zip(wanted, stack))

        def folder_size():
            with Image.open(os.path.join(path, frames_lib.list_frames(path)[0])) as image:
                return image.height, image.width

        return Source(name or path, np.arange(count, dtype=np.float64) / rate, None, read_folder, _once(folder_size))
    if not os.path.exists(path):
        raise ClipError(f"{path}: no such file or folder")
    if not path.lower().endswith(video_lib.VIDEO_EXTENSIONS):
        raise ClipError(f"{path}: not a video ({', '.join(video_lib.VIDEO_EXTENSIONS)}) or frame folder")
    times = video_lib.frame_times(path)
    rate = fps or (float((len(times) - 1) / times[-1]) if len(times) > 1 and times[-1] > 0 else None)

    def read_video(indices, side, whole_frame):
        return video_lib.iter_video(path, side, sorted(set(int(i) for i in indices)), whole_frame=whole_frame)

    def video_size():
        # Whole and never downscaled (fit_within only shrinks), upright as every other read of it.
        _, frame = next(video_lib.iter_video(path, 1 << 20, [0], whole_frame=True))
        return frame.shape[0], frame.shape[1]

    return Source(name or path, times, rate, read_video, _once(video_size))


def _array_source(frames: np.ndarray, rate: float, name: str) -> Source:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ClipError(
            f"{name}: frames must be a uint8 array [T,H,W,3] with T >= 1, got {frames.dtype} {frames.shape}"
        )

    def read(indices, side, whole_frame):
        for i in sorted(set(int(i) for i in indices)):
            image = Image.fromarray(frames[i])
            yield i, fit_within(image, side) if whole_frame else to_square(image, side)

    return Source(name, np.arange(len(frames), dtype=np.float64) / rate, rate, read, lambda: frames.shape[1:3])


def _once(compute: Callable[[], tuple[int, int]]) -> Callable[[], tuple[int, int]]:
    cache: list[tuple[int, int]] = []

    def get():
        if not cache:
            cache.append(tuple(int(v) for v in compute()))
        return cache[0]

    return get
