"""Video files (mp4, avi, mov, mkv, webm, ...) decoded with PyAV.

Every decoded frame is kept, in presentation order, so variable-frame-rate files lose nothing; the
display-matrix rotation that phones write is applied so faces are upright.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import av
import numpy as np
from PIL import Image

from grace_jax.data.errors import ClipError
from grace_jax.data.resize import fit_within, to_square

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")


def _upright(frame: av.VideoFrame) -> np.ndarray:
    """RGB array of a decoded frame with its display rotation applied."""
    array = frame.to_ndarray(format="rgb24")
    # `rotation` is the counter-clockwise angle the display matrix applies; np.rot90 turns
    # counter-clockwise for positive k, so k = rotation / 90 shows the frame as a player would.
    quarter_turns = int(round(frame.rotation / 90.0)) % 4
    return np.rot90(array, k=quarter_turns) if quarter_turns else array


def _presentation_pts(path: str) -> list[int] | None:
    """Every frame's pts in presentation order, from the packets alone (no decoding); None when a
    packet has no pts (some AVI files), where only decoding tells the order."""
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise ClipError(f"video {path} has no video stream")
            stream = container.streams.video[0]
            pts = []
            for packet in container.demux(stream):
                if packet.size == 0:  # the demuxer's end-of-stream flush packet
                    continue
                if packet.pts is None:
                    return None
                pts.append(packet.pts)
    except ClipError:
        raise
    except (av.FFmpegError, OSError, ValueError) as e:
        raise ClipError(f"video {path} is unreadable: {e}") from e
    if not pts:
        raise ClipError(f"video {path} has zero frames")
    return sorted(pts)


def frame_times(path: str) -> np.ndarray:
    """float64 [N]: each frame's presentation time in seconds from the first frame, read from the
    packets without decoding (a frame rate of the stream's average rate where packets carry no pts)."""
    pts = _presentation_pts(path)
    with av.open(path) as container:
        stream = container.streams.video[0]
        if pts is None:
            rate = float(stream.average_rate or 25)
            count = sum(1 for p in container.demux(stream) if p.size)
            return np.arange(count, dtype=np.float64) / rate
        base = float(stream.time_base)
    pts = np.asarray(pts, np.float64)
    return (pts - pts[0]) * base


def _convert(frame: av.VideoFrame, side: int, whole_frame: bool, size: tuple[int, int] | None) -> np.ndarray:
    image = Image.fromarray(_upright(frame))
    # whole_frame: every frame at the first one's size (a stream can change size).
    return fit_within(image, side, size) if whole_frame else to_square(image, side)


def read_video(path: str, side: int, *, whole_frame: bool = False) -> np.ndarray:
    """All frames of a video at the stored side.

    `whole_frame`: instead of the centre square, the whole frame with its aspect ratio, the longer
    side at most `side` (`resize.fit_within`; for face detection).

    Returns:
      uint8 [N, side, side, 3] (whole_frame: [N, h, w, 3], max(h, w) <= side). Raises ClipError naming
      the file for an unreadable or frameless video.
    """
    decoded: list[tuple[float, int, np.ndarray]] = []
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise ClipError(f"video {path} has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for i, frame in enumerate(container.decode(stream)):
                pts = frame.pts if frame.pts is not None else i
                size = decoded[0][2].shape[1::-1] if decoded else None
                decoded.append((pts, i, _convert(frame, side, whole_frame, size)))
    except ClipError:
        raise
    except (av.FFmpegError, OSError, ValueError) as e:
        raise ClipError(f"video {path} is unreadable after {len(decoded)} frames: {e}") from e
    if not decoded:
        raise ClipError(f"video {path} has zero decodable frames")
    decoded.sort(key=lambda item: (item[0], item[1]))
    return np.stack([frame for _, _, frame in decoded])


def iter_video(
    path: str, side: int, indices: Sequence[int], *, whole_frame: bool = False
) -> Iterator[tuple[int, np.ndarray]]:
    """(position, frame) for each distinct position in `indices` (presentation order, as in
    `frame_times`), in decoding order, as `read_video` would give it. Decodes the video once and
    holds no other frame, so windows over a long video cost the memory of the frames they use."""
    order = _presentation_pts(path)
    if order is None:  # no pts in the packets: only a full decode knows the order
        frames = read_video(path, side, whole_frame=whole_frame)
        for position in sorted(set(indices)):
            if position >= len(frames):
                raise ClipError(f"video {path} has {len(frames)} frames, asked for frame {position}")
            yield position, frames[position]
        return
    if max(indices) >= len(order):
        raise ClipError(f"video {path} has {len(order)} frames, asked for frame {max(indices)}")
    rank = {pts: k for k, pts in enumerate(order)}
    wanted = set(indices)
    size, done = None, 0
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                position = rank.get(frame.pts)
                if position not in wanted:
                    continue
                array = _convert(frame, side, whole_frame, size)
                size = size or array.shape[1::-1]
                wanted.discard(position)
                done += 1
                yield position, array
                if not wanted:
                    return
    except (av.FFmpegError, OSError, ValueError) as e:
        raise ClipError(f"video {path} is unreadable after {done} of the frames asked for: {e}") from e
    raise ClipError(f"video {path}: {len(wanted)} of the frames asked for did not decode")


def write_mp4(path: str, frames: np.ndarray, fps: int) -> None:
    """Encodes uint8 RGB frames [T,H,W,3] (H, W even) as H.264 / yuv420p, which every browser plays."""
    with av.open(path, mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())
