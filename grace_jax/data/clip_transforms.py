"""Per-clip work of the input pipeline: pick frames, decode only those, augment, normalize.

Elements entering these transforms come from `IndexedSource`: {"key": record index (or -1 for an eval
padding row), "data": record bytes}. They leave as {"video": float32 [T,H,W,3], "label": int32,
"mask": bool, "clip_index": int32} (`video` stays uint8 when normalize_on_host is False) plus, with a tokenizer, {"caption_ids": int32 [L], "caption_eot":
int32, "has_caption": bool}, and from `EvalClipTransform(ground_truth=True)` {"gt_expression": uint8
[T,H,W,3], "gt_distractor": uint8 [T,H,W,3], "has_ground_truth": bool} (see there). Transforms are
plain picklable objects so grain worker processes can run them.

Two augmentations (`augment`):
  "grace": torchvision-style RandomResizedCrop (aspect ratio log-uniform, the box resampled out of the
    whole frame, fallback the largest centred box within the ratio range), flip; eval: centre square.
  "dferclip": DFER-CLIP's official train transforms (dataloader/video_transform.py,
    GroupRandomSizedCrop and GroupRandomHorizontalFlip): area fraction uniform in [0.08, 1], aspect
    ratio uniform (not log-uniform) in [3/4, 4/3], width and height swapped with probability 1/2, ten
    attempts, the crop cut out and resized to the model side; if no attempt fits, the shorter side is
    resized to the model side and a random square is cut out; then the flip. Eval: the whole frame
    resized to the model side (its GroupResize), no centre crop. Train frames are also sampled as
    DFER-CLIP's loader does (`segments.segment_indices(scheme="dferclip")`).
Either can add, before the crop and with one draw per clip as DFER-CLIP's ColorJitter and
RandomRotation do: a brightness factor uniform in [max(0, 1 - b), 1 + b] (PIL ImageEnhance.Brightness,
what torchvision's adjust_brightness does for PIL images) and a rotation by an angle uniform in
[-d, d] degrees (PIL `Image.rotate(angle)` with its defaults: nearest neighbour, same size, black fill).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import grain
import numpy as np
import simplejpeg
from PIL import Image

from grace_jax.data import schema
from grace_jax.data.crops import (
    SizedCrop,
    centre_box,
    dferclip_crop,
    full_box,
    random_resized_box,
    rotate_and_brighten,
    rotation_affine,
)
from grace_jax.data.segments import segment_indices

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

Tokenizer = Callable[[list[str]], tuple[np.ndarray, np.ndarray]]


NORMALIZE_MODES = ("clip", "unit")
AUGMENT_MODES = ("grace", "dferclip")


def check_mode(name: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ValueError(f"{name}={value!r}: expected one of {', '.join(map(repr, allowed))}")
    return value


def _normalization_table(mode: str) -> np.ndarray:
    """float32 [3, 256]: the normalized value of every uint8 level in each channel."""
    levels = np.arange(256, dtype=np.float32)
    if mode == "unit":  # DFER-CLIP's ToTorchFormatTensor: float32(x) / 255, no mean/std
        return np.ascontiguousarray(np.broadcast_to(levels / np.float32(255.0), (3, 256)))
    scale = (1.0 / (255.0 * np.asarray(CLIP_STD, np.float32))).astype(np.float32)
    bias = (-np.asarray(CLIP_MEAN, np.float32) / np.asarray(CLIP_STD, np.float32)).astype(np.float32)
    return np.ascontiguousarray((levels[:, None] * scale + bias).T)


_TABLES = {mode: _normalization_table(mode) for mode in NORMALIZE_MODES}


def normalize(frames: np.ndarray, mode: str = "clip") -> np.ndarray:
    """uint8 [..., 3] pixels -> float32: "clip": ((x / 255) - CLIP mean) / CLIP std; "unit": x / 255.

    A per-channel lookup table: about 2.4x faster than converting and scaling the whole clip, and
    normalization is the largest single cost of a 16x224x224 clip on the host.
    """
    table = _TABLES[check_mode("normalize", mode, NORMALIZE_MODES)]
    out = np.empty(frames.shape, np.float32)
    for channel in range(3):
        np.take(table[channel], frames[..., channel], out=out[..., channel])
    return out


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


def decode_resized(view: schema.RecordView, indices: np.ndarray, box_fn, size: int) -> np.ndarray:
    """Decodes frames `indices` (each distinct frame once), crops `box_fn(width, height)` and resizes.

    Returns:
      uint8 [len(indices), size, size, 3].
    """
    frames = decode_frames(view, indices)
    return resize_box(frames, indices, box_fn(frames.shape[2], frames.shape[1]), size)


def resize_box(frames: np.ndarray, indices: np.ndarray, box, size: int) -> np.ndarray:
    """PIL's bilinear `resize((size, size), box=box)` of every frame (repeated frames done once)."""
    if tuple(box) == (0, 0, size, size) and frames.shape[1:3] == (size, size):
        return frames
    out = np.empty((len(indices), size, size, 3), np.uint8)
    for k, frame in enumerate(frames):
        if k and indices[k] == indices[k - 1]:
            out[k] = out[k - 1]
        else:
            out[k] = np.asarray(Image.fromarray(frame).resize((size, size), Image.Resampling.BILINEAR, box=box))
    return out


def sized_crop(frames: np.ndarray, indices: np.ndarray, crop: SizedCrop, size: int) -> np.ndarray:
    """DFER-CLIP's crop with PIL: `crop(box).resize((size, size))` bilinear, or for the fallback
    `resize(resized)` then `crop(box)` (repeated frames done once)."""
    out = np.empty((len(indices), size, size, 3), np.uint8)
    for k, frame in enumerate(frames):
        if k and indices[k] == indices[k - 1]:
            out[k] = out[k - 1]
            continue
        image = Image.fromarray(frame)
        if crop.resized is None:
            image = image.crop(crop.box)
            if image.size != (size, size):
                image = image.resize((size, size), Image.Resampling.BILINEAR)
        else:
            image = image.resize(crop.resized, Image.Resampling.BILINEAR).crop(crop.box)
        out[k] = np.asarray(image)
    return out


@dataclasses.dataclass(frozen=True)
class ClipDraw:
    """One training clip's random choices: frame indices, crop (a box for "grace", a `SizedCrop` for
    "dferclip"), flip, rotation in degrees and brightness factor (None: not enabled)."""

    indices: np.ndarray
    crop: tuple[int, int, int, int] | SizedCrop
    flip: bool
    degrees: float | None
    factor: float | None


@dataclasses.dataclass
class _ClipTransformBase:
    num_frames: int
    image_size: int
    tokenizer: Tokenizer | None = None
    normalize_on_host: bool = True
    normalize: str = "clip"  # NORMALIZE_MODES, used when normalize_on_host
    augment: str = "grace"  # AUGMENT_MODES

    def __post_init__(self):
        check_mode("normalize", self.normalize, NORMALIZE_MODES)
        check_mode("augment", self.augment, AUGMENT_MODES)

    def _finish(self, element: dict, view: schema.RecordView | None, frames: np.ndarray) -> dict:
        valid = element["key"] >= 0
        out = {
            "video": normalize(frames, self.normalize) if self.normalize_on_host else np.ascontiguousarray(frames),
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
    """Random frame per segment; for the whole clip one rotation and brightness factor (when enabled),
    one random crop (`augment`, see the module docstring) and flip; normalization.

    With `augment_on_device` all of it is drawn here but not applied: `video` holds the decoded frames
    at their stored size (uint8 [T,H,W,3]), and the element gains `crop_box` (float32 [4], left, top,
    right, bottom in stored pixels) and `flip` (bool), under "dferclip" `crop_inside` (bool), and when
    enabled `rotation` (int32 [6], `rotation_affine`) and `brightness` (float32 factor) for
    `device_transforms.augment`. The draws are the same as the host path's for the same seed.
    """

    crop_scale: Sequence[float] = (0.08, 1.0)
    crop_ratio: Sequence[float] = (3 / 4, 4 / 3)
    flip_probability: float = 0.5
    augment_on_device: bool = False
    brightness: float = 0.0  # b: factor uniform in [max(0, 1 - b), 1 + b]; 0 = off
    rotation_degrees: float = 0.0  # d: angle uniform in [-d, d]; 0 = off

    def __post_init__(self):
        super().__post_init__()
        if self.augment_on_device and self.normalize_on_host:
            raise ValueError(
                "augment_on_device=True needs normalize_on_host=False: normalization must follow "
                "the crop, which then happens on the accelerator."
            )
        if self.brightness < 0 or self.rotation_degrees < 0:
            raise ValueError(
                f"brightness ({self.brightness}) and rotation_degrees ({self.rotation_degrees}) "
                "must be >= 0 (0 switches them off)"
            )

    def draw(self, view: schema.RecordView, rng: np.random.Generator) -> ClipDraw:
        """The clip's random choices, in the order the rng makes them."""
        # augment="dferclip" is DFER-CLIP's whole train loader, its frame sampling included.
        scheme = "dferclip" if self.augment == "dferclip" else "grace"
        indices = segment_indices(view.num_frames, self.num_frames, train=True, rng=rng, scheme=scheme)
        box_rng = np.random.default_rng(int(rng.integers(2**31)))
        flip = bool(rng.uniform() < self.flip_probability)
        # Drawn after the flip, and only when enabled, so that the other draws do not depend on them.
        degrees = float(rng.uniform(-self.rotation_degrees, self.rotation_degrees)) if self.rotation_degrees else None
        factor = float(rng.uniform(max(0.0, 1.0 - self.brightness), 1.0 + self.brightness)) if self.brightness else None
        height, width, _, _ = simplejpeg.decode_jpeg_header(view.frame_bytes(int(indices[0])))
        if self.augment == "dferclip":
            crop = dferclip_crop(
                width, height, self.image_size, box_rng, tuple(self.crop_scale), tuple(self.crop_ratio)
            )
        else:
            crop = random_resized_box(width, height, box_rng, tuple(self.crop_scale), tuple(self.crop_ratio))
        return ClipDraw(indices, crop, flip, degrees, factor)

    def random_map(self, element: dict, rng: np.random.Generator) -> dict:
        view = schema.parse(element["data"])
        d = self.draw(view, rng)
        frames = decode_frames(view, d.indices)
        height, width = frames.shape[1:3]
        if self.augment_on_device:
            out = self._finish(element, view, frames)
            if isinstance(d.crop, SizedCrop):
                box, inside = d.crop.device_box(width, height)
                out["crop_inside"] = np.bool_(inside)
            else:
                box = d.crop
            out["crop_box"] = np.asarray(box, np.float32)
            out["flip"] = np.bool_(d.flip)
            if d.degrees is not None:
                out["rotation"] = rotation_affine(d.degrees, width, height)
            if d.factor is not None:
                out["brightness"] = np.float32(d.factor)
            return out
        frames = rotate_and_brighten(frames, d.indices, d.degrees, d.factor)
        if isinstance(d.crop, SizedCrop):
            frames = sized_crop(frames, d.indices, d.crop, self.image_size)
        else:
            frames = resize_box(frames, d.indices, d.crop, self.image_size)
        if d.flip:
            frames = frames[:, :, ::-1]
        return self._finish(element, view, frames)


@dataclasses.dataclass
class EvalClipTransform(_ClipTransformBase, grain.transforms.Map):
    """Centre frame per segment; "grace": centre square crop, "dferclip": the whole frame, resized to
    `image_size` (bilinear); normalization; padding rows become masked zeros.

    With `ground_truth`, elements also hold the record's ground-truth frames (schema.GROUND_TRUTH_KINDS)
    at the frame indices and with the crop and resize of `video`, so they align pixel for pixel:
    `gt_expression` (the clip with the expression only) and `gt_distractor` (the distractors only), uint8
    [T, image_size, image_size, 3], never normalized, and `has_ground_truth` (bool); records without
    ground truth and padding rows get zeros and False.
    """

    ground_truth: bool = False

    def map(self, element: dict) -> dict:
        if element["key"] < 0:
            frames = np.zeros((self.num_frames, self.image_size, self.image_size, 3), np.uint8)
            return self._with_ground_truth(self._finish(element, None, frames), None, None, None, None)
        view = schema.parse(element["data"])
        indices = segment_indices(view.num_frames, self.num_frames, train=False)
        box_fn = full_box if self.augment == "dferclip" else centre_box
        frames = decode_frames(view, indices)
        box = box_fn(frames.shape[2], frames.shape[1])
        out = self._finish(element, view, resize_box(frames, indices, box, self.image_size))
        return self._with_ground_truth(out, view, indices, box, frames.shape[1:3])

    def _with_ground_truth(self, out: dict, view: schema.RecordView | None, indices, box, stored) -> dict:
        if not self.ground_truth:
            return out
        shape = (self.num_frames, self.image_size, self.image_size, 3)
        present = view is not None and view.has_ground_truth
        for kind in schema.GROUND_TRUTH_KINDS:
            if not present:
                out[f"gt_{kind}"] = np.zeros(shape, np.uint8)
                continue
            frames = view.decode_ground_truth(kind, indices)
            if frames.shape[1:3] != tuple(stored):  # `box` is in the video frames' pixels
                raise ValueError(
                    f"clip {view.clip_id!r}: {kind} ground truth is {frames.shape[1]}x{frames.shape[2]}, "
                    f"its frames {stored[0]}x{stored[1]}"
                )
            out[f"gt_{kind}"] = resize_box(frames, indices, box, self.image_size)
        out["has_ground_truth"] = np.bool_(present)
        return out
