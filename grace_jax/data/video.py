"""Video files (mp4, avi, mov, mkv, webm, ...) decoded with PyAV.

Every decoded frame is kept, in presentation order, so variable-frame-rate files lose nothing; the
display-matrix rotation that phones write is applied so faces are upright.
"""

from __future__ import annotations

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
                image = Image.fromarray(_upright(frame))
                if whole_frame:  # every frame at the first one's size (a stream can change size)
                    array = fit_within(image, side, decoded[0][2].shape[1::-1] if decoded else None)
                else:
                    array = to_square(image, side)
                decoded.append((pts, i, array))
    except ClipError:
        raise
    except (av.FFmpegError, OSError, ValueError) as e:
        raise ClipError(f"video {path} is unreadable after {len(decoded)} frames: {e}") from e
    if not decoded:
        raise ClipError(f"video {path} has zero decodable frames")
    decoded.sort(key=lambda item: (item[0], item[1]))
    return np.stack([frame for _, _, frame in decoded])
