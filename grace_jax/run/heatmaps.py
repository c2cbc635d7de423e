"""Pictures of where the model looks: frames with per-patch weights overlaid as heat maps.

Used by `grace_jax.predict` for the motion weights (where the motion weighting looks) and the class maps
of the predicted class and the runner-up (the transport mass each patch receives from the class's words).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LinearSegmentedColormap, Normalize
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from grace_jax.run import plots

_STOPS = np.array(  # dark blue -> cyan -> yellow -> red: readable over skin tones.
    [[0, 0, 128], [0, 200, 255], [255, 230, 0], [220, 0, 0]], np.float32
)


def colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1], any shape -> uint8 RGB of that shape + (3,)."""
    x = np.clip(values, 0, 1) * (len(_STOPS) - 1)
    low = np.minimum(np.floor(x).astype(int), len(_STOPS) - 2)
    t = (x - low)[..., None]
    return ((1 - t) * _STOPS[low] + t * _STOPS[low + 1]).astype(np.uint8)


# At a patch with its row's maximum weight the colour covers this much of the face; at weight 0 the
# frame shows through untouched, so only the regions the model weighs are tinted.
MAX_OPACITY = 0.75


def overlay(frame: np.ndarray, weights: np.ndarray, *, scale: float, max_opacity: float = MAX_OPACITY) -> np.ndarray:
    """Blends a [g, g] patch-weight grid over a uint8 [H, W, 3] frame, opacity growing with the
    weight (divided by `scale`): unweighted patches keep the frame's own pixels."""
    h, w = frame.shape[:2]
    values = np.clip(np.asarray(weights, np.float64) / max(scale, 1e-12), 0, 1)
    heat = np.asarray(Image.fromarray(colormap(values)).resize((w, h), Image.NEAREST), np.float32)
    alpha = np.asarray(Image.fromarray((values * 255).astype(np.uint8)).resize((w, h), Image.NEAREST))
    alpha = (alpha.astype(np.float32) / 255 * max_opacity)[..., None]
    return np.round(frame * (1 - alpha) + heat * alpha).astype(np.uint8)


def matplotlib_colormap() -> LinearSegmentedColormap:
    """`colormap` as a matplotlib colour map, for the pictures' colour bars."""
    return LinearSegmentedColormap.from_list("grace_heat", _STOPS / 255, N=256)


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


SCALE_NOTE = (
    "heat maps: each row divided by its own maximum over the clip (1 = its most weighted patch);\n"
    "colour and opacity grow with the weight: unweighted patches are left untinted"
)
COLOUR_BAR_LABEL = "weight / its row's maximum"


def build_clip_figure(
    frames: np.ndarray,
    rows: Sequence[tuple[str, np.ndarray]],
    title: str,
    context: tuple[str, np.ndarray] | None = None,
) -> Figure:
    """The T frames, then one row of overlays per (label, weights [T, P]), with a colour bar.

    Each row is scaled by its own maximum over the clip (stated in the figure, its maximum printed
    under its label), so the brightest patch is the clip's most weighted one. `context`: (label,
    uint8 [T,h,w,3]), a row above the frames, each picture whole (predict: the whole frames with the
    face crops drawn).
    """
    t = frames.shape[0]
    grid: list[tuple[str, list[np.ndarray]]] = []
    if context is not None:
        grid.append((context[0], list(context[1])))
    grid.append(("frames", list(frames)))
    for label, weights in rows:
        weights = np.asarray(weights, np.float64)
        side = int(round(np.sqrt(weights.shape[-1])))
        scale = float(weights.max())
        cells = [overlay(frames[i], weights[i].reshape(side, side), scale=scale) for i in range(t)]
        grid.append((f"{label}\n(max {scale:.3g})", cells))
    cell_in, label_in, bar_in, title_in = 1.1, 1.5, 1.1, 1.1
    width, height = label_in + t * cell_in + bar_in, title_in + len(grid) * cell_in
    fig = Figure(figsize=(width, height))
    axes = fig.subplots(len(grid), t, squeeze=False)
    fig.subplots_adjust(
        left=label_in / width,
        right=(width - bar_in) / width,
        bottom=0.15 / height,
        top=1 - title_in / height,
        wspace=0.05,
        hspace=0.08,
    )
    for r, (label, cells) in enumerate(grid):
        for i, picture in enumerate(cells):
            ax = axes[r, i]
            ax.imshow(picture)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if r == 0:
                ax.set_title(f"frame {i + 1}", fontsize=8)
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9, labelpad=6)
    if rows:
        bar_ax = fig.add_axes(
            [(width - bar_in + 0.2) / width, 0.15 / height, 0.15 / width, (len(rows) * cell_in) / height]
        )
        mappable = ScalarMappable(norm=Normalize(0, 1), cmap=matplotlib_colormap())
        bar = fig.colorbar(mappable, cax=bar_ax)
        bar.set_label(COLOUR_BAR_LABEL, fontsize=8)
        bar.ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=11, y=1 - 0.08 / height, va="top")
    if rows:
        fig.text(0.5, 1 - 0.42 / height, SCALE_NOTE, ha="center", va="top", fontsize=8.5)
    return fig


def clip_figure(
    path: str,
    frames: np.ndarray,
    rows: Sequence[tuple[str, np.ndarray]],
    title: str,
    context: tuple[str, np.ndarray] | None = None,
) -> str:
    """`build_clip_figure` as a PNG at `path`, written in one go (local or gs://)."""
    return plots.save_figure(build_clip_figure(frames, rows, title, context), path)
