"""Per-clip work of the input pipeline: pick frames, decode only those, crop, flip, normalize.

Elements entering these transforms come from `IndexedSource`: {"key": record index (or -1 for an eval
padding row), "data": record bytes}. They leave as {"video": float32 [T,H,W,3], "label": int32,
"mask": bool, "clip_index": int32} (`video` stays uint8 when normalize_on_host is False) plus, with a tokenizer, {"caption_ids": int32 [L], "caption_eot":
int32, "has_caption": bool}. Transforms are plain picklable objects so grain worker processes can run them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import grain
import numpy as np
import simplejpeg
from PIL import Image

from data_prep import schema
from grace_jax.data.segments import segment_indices

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

Tokenizer = Callable[[list[str]], tuple[np.ndarray, np.ndarray]]


def _normalization_table() -> np.ndarray:
    """float32 [3, 256]: the normalized value of every uint8 level in each channel."""
    scale = (1.0 / (255.0 * np.asarray(CLIP_STD, np.float32))).astype(np.float32)
    bias = (-np.asarray(CLIP_MEAN, np.float32) / np.asarray(CLIP_STD, np.float32)).astype(np.float32)
    return np.ascontiguousarray((np.arange(256, dtype=np.float32)[:, None] * scale + bias).T)


_TABLE = _normalization_table()


def normalize(frames: np.ndarray) -> np.ndarray:
    """uint8 [..., 3] pixels -> float32 ((x / 255) - CLIP mean) / CLIP std.

    A per-channel lookup table: about 2.4x faster than converting and scaling the whole clip, and
    normalization is the largest single cost of a 16x224x224 clip on the host.
    """
    out = np.empty(frames.shape, np.float32)
    for channel in range(3):
        np.take(_TABLE[channel], frames[..., channel], out=out[..., channel])
    return out


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


def _decode_into(data: bytes, out: np.ndarray) -> None:
    """Decodes one stored JPEG frame into `out` (uint8 [H,W,3]), refusing a frame of another size."""
    height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    if (height, width) != out.shape[:2]:
        raise ValueError(f"a stored frame is {height}x{width}, the clip's first frame {out.shape[0]}x{out.shape[1]}")
    simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=out)


def decode_frames(view: schema.RecordView, indices: np.ndarray) -> np.ndarray:
    """Decodes frames `indices` (each distinct frame once) at their stored size.

    Returns:
      uint8 [len(indices), H, W, 3].
    """
    height, width, _, _ = simplejpeg.decode_jpeg_header(view.frame_bytes(int(indices[0])))
    out = np.empty((len(indices), height, width, 3), np.uint8)
    first: dict[int, int] = {}
    for k, i in enumerate(int(i) for i in indices):
        if i in first:  # a short clip's repeated last frame
            out[k] = out[first[i]]
        else:
            _decode_into(view.frame_bytes(i), out[k])
            first[i] = k
    return out


def decode_resized(
    view: schema.RecordView, indices: np.ndarray, box_fn, size: int
) -> np.ndarray:
    """Decodes frames `indices` (each distinct frame once), crops `box_fn(width, height)` and resizes.

    Returns:
      uint8 [len(indices), size, size, 3].
    """
    frames = decode_frames(view, indices)
    box = box_fn(frames.shape[2], frames.shape[1])
    if box == (0, 0, size, size) and frames.shape[1:3] == (size, size):
        return frames
    out = np.empty((len(indices), size, size, 3), np.uint8)
    for k, frame in enumerate(frames):
        if k and indices[k] == indices[k - 1]:
            out[k] = out[k - 1]
        else:
            out[k] = np.asarray(Image.fromarray(frame).resize((size, size), Image.Resampling.BILINEAR, box=box))
    return out


@dataclasses.dataclass
class _ClipTransformBase:
    num_frames: int
    image_size: int
    tokenizer: Tokenizer | None = None
    normalize_on_host: bool = True

    def _finish(self, element: dict, view: schema.RecordView | None, frames: np.ndarray) -> dict:
        valid = element["key"] >= 0
        out = {
            "video": normalize(frames) if self.normalize_on_host else np.ascontiguousarray(frames),
            "label": np.int32(view.label if valid else 0),
            "mask": np.bool_(valid),
            "clip_index": np.int32(element["key"]),
        }
        if self.tokenizer is not None:
            caption = view.caption if valid else None
            ids, eot = self.tokenizer([caption or ""])
            out["caption_ids"] = np.asarray(ids[0], np.int32)
            out["caption_eot"] = np.int32(eot[0])
            out["has_caption"] = np.bool_(caption is not None)
        return out


@dataclasses.dataclass
class TrainClipTransform(_ClipTransformBase, grain.transforms.RandomMap):
    """Random frame per segment, one random resized crop and flip for the whole clip, normalization.

    With `augment_on_device` the crop and flip are drawn here but not applied: `video` holds the
    decoded frames at their stored size (uint8 [T,H,W,3]), and the element gains `crop_box` (float32
    [4], left, top, right, bottom in stored pixels) and `flip` (bool) for
    `device_transforms.crop_resize_flip`. The draws are the same as the host path's for the same seed.
    """

    crop_scale: Sequence[float] = (0.08, 1.0)
    crop_ratio: Sequence[float] = (3 / 4, 4 / 3)
    flip_probability: float = 0.5
    augment_on_device: bool = False

    def __post_init__(self):
        if self.augment_on_device and self.normalize_on_host:
            raise ValueError("augment_on_device=True needs normalize_on_host=False: normalization must follow "
                             "the crop, which then happens on the accelerator.")

    def random_map(self, element: dict, rng: np.random.Generator) -> dict:
        view = schema.parse(element["data"])
        indices = segment_indices(view.num_frames, self.num_frames, train=True, rng=rng)
        box_rng_seed = int(rng.integers(2**31))

        def box_fn(width, height):
            box_rng = np.random.default_rng(box_rng_seed)
            return random_resized_box(width, height, box_rng, tuple(self.crop_scale), tuple(self.crop_ratio))

        flip = rng.uniform() < self.flip_probability
        if self.augment_on_device:
            frames = decode_frames(view, indices)
            out = self._finish(element, view, frames)
            out["crop_box"] = np.asarray(box_fn(frames.shape[2], frames.shape[1]), np.float32)
            out["flip"] = np.bool_(flip)
            return out
        frames = decode_resized(view, indices, box_fn, self.image_size)
        if flip:
            frames = frames[:, :, ::-1]
        return self._finish(element, view, frames)


@dataclasses.dataclass
class EvalClipTransform(_ClipTransformBase, grain.transforms.Map):
    """Centre frame per segment, centre crop, normalization; padding rows become masked zeros."""

    def map(self, element: dict) -> dict:
        if element["key"] < 0:
            frames = np.zeros((self.num_frames, self.image_size, self.image_size, 3), np.uint8)
            return self._finish(element, None, frames)
        view = schema.parse(element["data"])
        indices = segment_indices(view.num_frames, self.num_frames, train=False)
        return self._finish(element, view, decode_resized(view, indices, centre_box, self.image_size))
