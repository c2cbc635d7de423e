"""Frame folders: numbered images of one clip, read in natural order (2.jpg before 10.jpg)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import numpy as np
from PIL import Image

from grace_jax.data.errors import ClipError
from grace_jax.data.resize import fit_within, to_square

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def natural_key(name: str) -> list:
    """Sort key that orders digit runs by value: `frame2.jpg` < `frame10.jpg`."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


def list_frames(folder: str) -> list[str]:
    """Image file names in `folder` in natural order; raises ClipError for a missing or empty folder."""
    if not os.path.isdir(folder):
        raise ClipError(f"frame folder {folder} does not exist")
    names = [n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith(".")]
    if not names:
        raise ClipError(f"frame folder {folder} holds no images (zero frames)")
    return sorted(names, key=natural_key)


def read_frame_folder(
    folder: str, side: int, *, whole_frame: bool = False, indices: Sequence[int] | None = None
) -> np.ndarray:
    """The frames of a frame folder at the stored side: all, or those at `indices` (natural order).

    `whole_frame`: as in `video.read_video` (every frame at the first one's size).

    Returns:
      uint8 [N, side, side, 3] (whole_frame: [N, h, w, 3]; N = len(indices) when given). Raises ClipError naming the folder or the
      unreadable frame.
    """
    names = list_frames(folder)
    if indices is not None:
        if max(indices) >= len(names):
            raise ClipError(f"frame folder {folder} has {len(names)} frames, asked for frame {max(indices)}")
        names = [names[i] for i in indices]
    frames = []
    for name in names:
        path = os.path.join(folder, name)
        try:
            with Image.open(path) as image:
                image.load()
                if whole_frame:
                    frames.append(fit_within(image, side, frames[0].shape[1::-1] if frames else None))
                else:
                    frames.append(to_square(image, side))
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise ClipError(f"frame {path} is unreadable: {e}") from e
    return np.stack(frames)
