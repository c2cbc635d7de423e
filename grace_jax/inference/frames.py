"""Which source frames a window's prediction reads, and the small whole frames pictures keep."""

from __future__ import annotations

import numpy as np
from PIL import Image

from grace_jax.data.resize import fit_within
from grace_jax.data.segments import segment_indices

CONTEXT_SIDE = 160  # the whole frames kept for pictures (crop squares drawn), this long a side


def sample_in(times: np.ndarray, lo: int, hi: int, start: float, end: float, num_frames: int) -> np.ndarray:
    """int64 [T]: the evaluation protocol's frames among source frames lo..hi whose time is in
    [start, end] (the nearest one to `start` when none is)."""
    index = np.arange(lo, hi + 1)
    inside = index[(times[lo : hi + 1] >= start) & (times[lo : hi + 1] < end + 1e-9)]
    if len(inside) == 0:
        inside = np.array([index[int(np.argmin(np.abs(times[lo : hi + 1] - start)))]])
    return inside[segment_indices(len(inside), num_frames, train=False)].astype(np.int64)


def context_frames(frames: np.ndarray) -> np.ndarray:
    """uint8 [T,h,w,3] whole frames -> the same at most CONTEXT_SIDE a side (what pictures keep)."""
    return np.stack([fit_within(Image.fromarray(f), CONTEXT_SIDE) for f in frames])


def centre_squares(source_size: tuple[int, int], num_frames: int) -> np.ndarray:
    """float32 [T,4]: the centre square (x0, y0, x1, y1) in source pixels that every uncropped model
    frame shows."""
    height, width = source_size
    side = min(height, width)
    box = [(width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2]
    return np.tile(np.asarray(box, np.float32), (num_frames, 1))
