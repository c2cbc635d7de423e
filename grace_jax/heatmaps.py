"""Pictures of where the model looks: frames with per-patch weights overlaid as heat maps.

Used by `grace_jax.predict` for the motion weights (which regions moved) and the optimal-transport mass
of the predicted class (which regions the class's text tokens were matched to).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from grace_jax import paths

_STOPS = np.array(  # dark blue -> cyan -> yellow -> red: readable over skin tones.
    [[0, 0, 128], [0, 200, 255], [255, 230, 0], [220, 0, 0]], np.float32
)


def colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1], any shape -> uint8 RGB of that shape + (3,)."""
    x = np.clip(values, 0, 1) * (len(_STOPS) - 1)
    low = np.minimum(np.floor(x).astype(int), len(_STOPS) - 2)
    t = (x - low)[..., None]
    return ((1 - t) * _STOPS[low] + t * _STOPS[low + 1]).astype(np.uint8)


def overlay(
    frame: np.ndarray, weights: np.ndarray, *, scale: float, opacity: float = 0.5
) -> np.ndarray:
    """Blends a [g, g] patch-weight grid (divided by `scale`) over a uint8 [H, W, 3] frame."""
    h, w = frame.shape[:2]
    heat = Image.fromarray(colormap(weights / max(scale, 1e-12))).resize((w, h), Image.NEAREST)
    return (frame * (1 - opacity) + np.asarray(heat) * opacity).astype(np.uint8)


def clip_figure(
    path: str,
    frames: np.ndarray,
    rows: Sequence[tuple[str, np.ndarray]],
    title: str,
    cell: int = 96,
) -> str:
    """Saves a PNG: the T frames on top, then one row of overlays per (label, weights [T, P]).

    Each row is scaled by its own maximum over the clip, so the brightest patch is the clip's most
    weighted one. Written in one go (local or gs:// `path`): no half-written pictures.
    """
    t = frames.shape[0]
    grid = []
    for label, weights in [("frames", None), *rows]:
        cells = []
        for i in range(t):
            frame = frames[i]
            if weights is not None:
                side = int(round(np.sqrt(weights.shape[-1])))
                frame = overlay(frame, weights[i].reshape(side, side), scale=float(weights.max()))
            cells.append(np.asarray(Image.fromarray(frame).resize((cell, cell), Image.BILINEAR)))
        grid.append((label, np.concatenate(cells, axis=1)))
    label_w, title_h = 110, 24
    canvas = Image.new("RGB", (label_w + t * cell, title_h + len(grid) * cell), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 4), title, fill="black")
    for r, (label, strip) in enumerate(grid):
        canvas.paste(Image.fromarray(strip), (label_w, title_h + r * cell))
        draw.text((4, title_h + r * cell + cell // 2 - 6), label, fill="black")
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    paths.makedirs(paths.dirname(path))
    paths.write_bytes(path, buffer.getvalue())
    return path
