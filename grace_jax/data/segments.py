"""Which frames of a clip the model sees: the segment sampling of DFER-CLIP (DESIGN 2.7).

A clip of n frames is cut into T equal segments, segment k covering frames
[floor(k*n/T), floor((k+1)*n/T)). Training takes one uniformly random frame of each segment;
evaluation takes the centre frame floor((k + 1/2) * n / T). A clip shorter than T frames is
played once and its last frame repeated up to T frames, for training and evaluation alike.

`scheme="dferclip"` is what DFER-CLIP's official train loader does instead
(dataloader/video_dataloader.py, `_get_train_indices` with duration 1): every segment is
L = n // T frames long and starts at k * L, so the last n - T * L frames are never sampled (a clip
of 16..31 frames always gives frames 0..15). Its test indices, int(tick/2 + tick*k) with tick = n/T,
equal ours for T = 16 (n/16 is exact in binary floating point) and its short-clip padding is ours.
"""

from __future__ import annotations

import numpy as np


def segment_bounds(num_frames: int, num_segments: int) -> np.ndarray:
    """Segment edges [T+1]: segment k is frames [bounds[k], bounds[k+1]); needs num_frames >= T."""
    return (np.arange(num_segments + 1, dtype=np.int64) * num_frames) // num_segments


def segment_indices(
    num_frames: int,
    num_segments: int,
    *,
    train: bool,
    rng: np.random.Generator | None = None,
    scheme: str = "grace",
) -> np.ndarray:
    """Frame indices to read from a clip.

    Args:
      num_frames: frames in the clip (n >= 1).
      num_segments: frames the model sees (T, 16 by default).
      train: random frame per segment if True, centre frame per segment if False.
      rng: randomness for train; unused for eval.
      scheme: "grace" (equal segments over the whole clip) or "dferclip" (segments of n // T frames
        from frame 0, DFER-CLIP's train sampling); evaluation is the same for both.

    Returns:
      int32 [T] indices in 0..n-1, non-decreasing.
    """
    if scheme not in ("grace", "dferclip"):
        raise ValueError(f"unknown frame sampling scheme {scheme!r}: use 'grace' or 'dferclip'")
    if num_frames < 1:
        raise ValueError(f"a clip needs at least one frame, got {num_frames}")
    if num_frames < num_segments:
        return np.concatenate([np.arange(num_frames), np.full(num_segments - num_frames, num_frames - 1)]).astype(
            np.int32
        )
    if train:
        if rng is None:
            raise ValueError("train sampling needs an rng")
        if scheme == "dferclip":
            length = num_frames // num_segments
            return (np.arange(num_segments) * length + rng.integers(0, length, num_segments)).astype(np.int32)
        bounds = segment_bounds(num_frames, num_segments)
        return rng.integers(bounds[:-1], bounds[1:]).astype(np.int32)
    return ((2 * np.arange(num_segments) + 1) * num_frames // (2 * num_segments)).astype(np.int32)
