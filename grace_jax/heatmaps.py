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


def draw_squares(frames: np.ndarray, squares: np.ndarray, detected: np.ndarray) -> np.ndarray:
    """uint8 frames [T,H,W,3], crop squares [T,4] (x0, y0, x1, y1) -> copies with each square drawn:
    green where the face was detected in that frame, orange where its box was filled in."""
    out = []
    for frame, square, found in zip(frames, squares, detected):
        image = Image.fromarray(frame)
        width = max(2, round(max(image.size) / 120))
        ImageDraw.Draw(image).rectangle(
            [float(v) for v in square], outline=(0, 220, 0) if found else (255, 150, 0), width=width
        )
        out.append(np.asarray(image))
    return np.stack(out)


def _fit_cell(frame: np.ndarray, cell: int) -> np.ndarray:
    """A frame of any aspect ratio, whole, centred on a white cell x cell square."""
    image = Image.fromarray(frame)
    scale = cell / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    image = image.resize(size, Image.BILINEAR)
    canvas = Image.new("RGB", (cell, cell), "white")
    canvas.paste(image, ((cell - image.width) // 2, (cell - image.height) // 2))
    return np.asarray(canvas)


def clip_figure(
    path: str,
    frames: np.ndarray,
    rows: Sequence[tuple[str, np.ndarray]],
    title: str,
    cell: int = 96,
    context: tuple[str, np.ndarray] | None = None,
) -> str:
    """Saves a PNG: the T frames on top, then one row of overlays per (label, weights [T, P]).

    Each row is scaled by its own maximum over the clip, so the brightest patch is the clip's most
    weighted one. `context`: (label, uint8 [T,h,w,3]), a row above the frames, each picture whole
    (predict: the whole frames with the face crops drawn). Written in one go (local or gs:// `path`):
    no half-written pictures.
    """
    t = frames.shape[0]
    grid = []
    if context is not None:
        grid.append((context[0], np.concatenate([_fit_cell(f, cell) for f in context[1]], axis=1)))
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
