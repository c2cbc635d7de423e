"""What a reader needs to know about one clip before reading it, and why a clip was rejected."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """One clip to read: a frame folder or a video file, with its label and where it was listed."""

    path: str  # frame folder or video file, already re-rooted
    label: int
    clip_id: str
    split: str
    source: str  # "<list file>:<line>" that named this clip, for reports
    kind: str = "frames"  # "frames" or "video"
    # Frame count the list claims; checked against the frames on disk (a mismatch is reported, and the
    # real count is used).
    listed_frames: int | None = None
    caption: str | None = None


@dataclasses.dataclass(frozen=True)
class BadClip:
    """A clip or list line that was skipped, with the file it concerns and the reason."""

    split: str
    source: str  # "<list file>:<line>" or the clip path
    path: str
    reason: str
