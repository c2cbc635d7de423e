"""Generated pictures for the face tests: faceless scenes, and a face pasted into them.

The face is the crop stored by tools/convert_blazeface.py in faces/data/blazeface_reference.npz (from
matplotlib's public-domain portrait of Grace Hopper), with `face_box`: where the original model
puts the face in that crop. Pasting the crop scaled by s at (x, y) puts the face at
s * face_box + (x, y), the truth the detector is held to.
"""

from __future__ import annotations

import functools
import os

import numpy as np
from PIL import Image

REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "faces", "data", "blazeface_reference.npz")


@functools.lru_cache(maxsize=1)
def reference() -> dict[str, np.ndarray]:
    """The stored inputs, the original model's outputs on them, the face crop and its box."""
    with np.load(REFERENCE, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def scene(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """uint8 [height,width,3]: gradient, rectangles, discs and noise; no face."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([50 + 150 * xx / width, 80 + 100 * yy / height, 160 - 80 * xx / width], -1)
    for _ in range(12):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        colour = rng.integers(0, 256, 3)
        if rng.random() < 0.5:
            img[y0 : y0 + rng.integers(10, height // 3), x0 : x0 + rng.integers(10, width // 3)] = colour
        else:
            r = rng.integers(6, height // 6)
            img[(yy - y0) ** 2 + (xx - x0) ** 2 < r * r] = colour
    img += rng.normal(0, 5, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def paste_face(image: np.ndarray, x: int, y: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns (a copy of image with the face crop pasted as a side x side square at (x, y),
    the face's true box (x0, y0, x1, y1) there)."""
    ref = reference()
    face = np.asarray(Image.fromarray(ref["face"]).resize((side, side), Image.BILINEAR))
    out = image.copy()
    out[y : y + side, x : x + side] = face
    box = ref["face_box"] * side / ref["face"].shape[0] + np.array([x, y, x, y], np.float32)
    return out, box
