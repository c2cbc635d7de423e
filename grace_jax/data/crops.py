"""Crop boxes and per-clip photometric/geometric draws of the train and eval transforms (one draw per
clip, applied to every frame): torchvision-style RandomResizedCrop boxes, the centre and full boxes,
DFER-CLIP's GroupRandomSizedCrop, and DFER-CLIP's brightness jitter and rotation (see
grace_jax/data/clip_transforms.py for where each augmentation uses them)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image, ImageEnhance


def random_resized_box(
    width: int, height: int, rng: np.random.Generator, scale: tuple[float, float], ratio: tuple[float, float]
) -> tuple[int, int, int, int]:
    """Inception-style crop box (left, top, right, bottom): area fraction uniform in `scale`, aspect
    ratio log-uniform in `ratio`; ten tries, then the largest centred box within `ratio`."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif aspect > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def centre_box(width: int, height: int) -> tuple[int, int, int, int]:
    """The largest centred square (left, top, right, bottom)."""
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def full_box(width: int, height: int) -> tuple[int, int, int, int]:
    """The whole frame: DFER-CLIP's evaluation resizes it to the model side (GroupResize)."""
    return 0, 0, width, height


@dataclasses.dataclass(frozen=True)
class SizedCrop:
    """One clip's crop under DFER-CLIP's GroupRandomSizedCrop.

    `resized` is None: cut `box` (whole pixels) out of the frame and resize it to the model side.
    Otherwise (the fallback) resize the frame to `resized` (width, height) and cut `box` out of that.
    """

    box: tuple[int, int, int, int]
    resized: tuple[int, int] | None = None

    def device_box(self, width: int, height: int) -> tuple[tuple[float, float, float, float], bool]:
        """(box in stored pixels, inside) for `device_transforms.crop_resize_flip`: the fallback's
        resize-then-cut is the window `box` sampled out of the whole frame (inside=False)."""
        if self.resized is None:
            return tuple(float(v) for v in self.box), True
        sx, sy = width / self.resized[0], height / self.resized[1]
        left, top, right, bottom = self.box
        return (left * sx, top * sy, right * sx, bottom * sy), False


def dferclip_crop(
    width: int,
    height: int,
    size: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> SizedCrop:
    """DFER-CLIP's GroupRandomSizedCrop (dataloader/video_transform.py) with its draws made by `rng`.

    Up to ten attempts, each drawing in this order: area fraction uniform in `scale`, aspect ratio
    uniform in `ratio` (linear, not log), w = round(sqrt(area * aspect)), h = round(sqrt(area / aspect))
    (Python's round), then a swap of w and h when a uniform draw in [0, 1) is below 1/2. The first
    (w, h) with w <= width and h <= height is placed at left ~ U{0..width-w}, top ~ U{0..height-h}.
    If none fits: torchvision's Resize(size) (shorter side to `size`, longer to int(size * long /
    short), unchanged when the shorter side already is `size`) and a size x size square at
    left ~ U{0..new_w-size}, top ~ U{0..new_h-size} (its GroupScale + GroupRandomCrop).
    """
    area = width * height
    for _ in range(10):
        target = rng.uniform(*scale) * area
        aspect = rng.uniform(*ratio)
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if rng.random() < 0.5:
            w, h = h, w
        if w <= width and h <= height:
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            return SizedCrop((left, top, left + w, top + h))
    short, long = min(width, height), max(width, height)
    if short == size:
        new_w, new_h = width, height
    elif width <= height:
        new_w, new_h = size, int(size * long / short)
    else:
        new_w, new_h = int(size * long / short), size
    left = int(rng.integers(0, new_w - size + 1))
    top = int(rng.integers(0, new_h - size + 1))
    resized = None if (new_w, new_h) == (width, height) else (new_w, new_h)
    return SizedCrop((left, top, left + size, top + size), resized)


def rotation_affine(degrees: float, width: int, height: int) -> np.ndarray:
    """PIL's `Image.rotate(degrees)` as the 16.16 fixed-point inverse map its nearest-neighbour affine
    transform steps through (Image.rotate's matrix, then libImaging/Geometry.c's FIX rounding, pixel
    centres folded into the offsets): int32 [6] (a0, a1, a2, a3, a4, a5) for `device_transforms.rotate`.
    """
    angle = -math.radians(degrees % 360.0)
    cos, sin = round(math.cos(angle), 15), round(math.sin(angle), 15)
    cx, cy = width / 2, height / 2
    a = [cos, sin, cos * -cx + sin * -cy + cx, -sin, cos, -sin * -cx + cos * -cy + cy]

    def fix(v: float) -> int:
        return math.floor(v * 65536.0 + 0.5)

    return np.array(
        [
            fix(a[0]),
            fix(a[1]),
            fix(a[2] + a[0] * 0.5 + a[1] * 0.5),
            fix(a[3]),
            fix(a[4]),
            fix(a[5] + a[3] * 0.5 + a[4] * 0.5),
        ],
        np.int32,
    )


def rotate_and_brighten(
    frames: np.ndarray, indices: np.ndarray, degrees: float | None, factor: float | None
) -> np.ndarray:
    """PIL's `rotate(degrees)` and `ImageEnhance.Brightness(.).enhance(factor)` on every frame (None: skip).

    The two commute exactly (nearest-neighbour rotation with black fill, a per-pixel scale keeping 0).
    """
    if degrees is None and factor is None:
        return frames
    out = np.empty_like(frames)
    for k, frame in enumerate(frames):
        if k and indices[k] == indices[k - 1]:
            out[k] = out[k - 1]
            continue
        image = Image.fromarray(frame)
        if degrees is not None:
            image = image.rotate(degrees)
        if factor is not None:
            image = ImageEnhance.Brightness(image).enhance(factor)
        out[k] = np.asarray(image)
    return out
