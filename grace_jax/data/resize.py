"""Bringing frames of any size to the square frame side stored in the shards."""

from __future__ import annotations

import numpy as np
from PIL import Image


def to_square(image: Image.Image, side: int) -> np.ndarray:
    """Resizes the shorter side to `side` and centre-crops the longer one.

    Face crops are close to square, so this is nearly a plain resize for DFEW/FERV39k/MAFW frames; for
    users' landscape videos it keeps the aspect ratio instead of squashing faces.

    Returns:
      uint8 RGB array [side, side, 3].
    """
    image = image.convert("RGB")
    width, height = image.size
    scale = side / min(width, height)
    new_w, new_h = max(side, round(width * scale)), max(side, round(height * scale))
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - side) // 2, (new_h - side) // 2
    return np.asarray(image.crop((left, top, left + side, top + side)))


def fit_within(image: Image.Image, longest: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """The whole frame, its aspect ratio kept, scaled down (never up) so its longer side is at most
    `longest`; or, given `size` (width, height), resized to exactly that (the frames of one clip must
    share a shape). For face detection, which needs the frame around the face.

    Returns:
      uint8 RGB array [height, width, 3].
    """
    image = image.convert("RGB")
    if size is None:
        width, height = image.size
        scale = min(1.0, longest / max(width, height))
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size != image.size:
        image = image.resize(size, Image.Resampling.BICUBIC)
    return np.asarray(image)
