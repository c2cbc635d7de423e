"""The train pipeline's augmentation, run on the accelerator inside the jitted step.

With `augment_on_device` the host decodes the sampled JPEG frames at their stored size and draws each
clip's random parameters exactly as the host path does (crop box, flip, and when enabled a rotation
angle and a brightness factor); `augment` applies them here. Decoding is then the host's only
per-pixel work, which is what lets a few host cores feed an accelerator (see
benchmarks/input_pipeline.py). On the accelerator the crop and resize cost about 2 GFLOP per 16x224x224
clip (XLA's cost analysis), against ~560 GFLOP for the forward pass of ViT-B/16 alone over those 16
frames (17.6 G multiply-adds per 224 px image, as the DeiT paper reports); rotation is one gather and
brightness one multiply per stored pixel.

Order, as DFER-CLIP's train transforms (dataloader/video_dataloader.py) apply them: rotation and
brightness on the whole stored frame, then the crop and resize, then the flip. Rotation (nearest
neighbour, black fill) and brightness (a per-pixel scale that keeps 0 at 0) commute exactly, so their
relative order does not matter.

Sampling is PIL's bilinear resize: output pixel centres map linearly into the box, weights follow a
triangle filter widened by the downscale factor (so shrinking is antialiased) and are renormalized
where the filter leaves the image (`inside=False`: PIL's `resize(size, box=...)`, what the `grace`
augmentation does) or leaves the box (`inside=True`: PIL's `crop(box).resize(size)`, what DFER-CLIP's
GroupRandomSizedCrop does). PIL also rounds to uint8 after each of its two passes; this path keeps
floats, so the two differ by at most one grey level.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp


def resize_weights(
    start: jax.Array, stop: jax.Array, in_size: int, out_size: int, inside: jax.Array | bool = False
) -> jax.Array:
    """Resampling matrix of the input span [start, stop) (pixels, may be fractional) onto `out_size` pixels.

    With `inside` only input pixels within [start, stop) contribute (the span is then a whole number
    of pixels): resizing the cropped image rather than sampling the box out of the whole one.

    Returns:
      float32 [out_size, in_size]; each row sums to one.
    """
    start = jnp.asarray(start, jnp.float32)
    stop = jnp.asarray(stop, jnp.float32)
    scale = (stop - start) / out_size  # input pixels per output pixel
    support = jnp.maximum(scale, 1.0)
    centres = start + (jnp.arange(out_size, dtype=jnp.float32) + 0.5) * scale  # [out]
    taps = jnp.arange(in_size, dtype=jnp.float32) + 0.5  # [in]
    weights = jnp.maximum(0.0, 1.0 - jnp.abs(taps[None, :] - centres[:, None]) / support)  # [out, in]
    in_box = (taps > start) & (taps < stop)  # pixel j lies in [start, stop) for whole-pixel bounds
    weights = jnp.where(jnp.logical_not(inside) | in_box[None, :], weights, 0.0)
    return weights / jnp.sum(weights, axis=1, keepdims=True)


def crop_resize_flip(
    video: jax.Array, crop_box: jax.Array, flip: jax.Array, *, size: int, inside: jax.Array | None = None
) -> jax.Array:
    """Crops each clip to its box, resizes it bilinearly to `size` x `size` and mirrors it where `flip`.

    Args:
      video: uint8 or float [B, T, H, W, C] frames at their stored size.
      crop_box: float32 [B, 4] (left, top, right, bottom) in pixels of the stored frames, one per clip.
      flip: bool [B]; mirror the clip left-right after cropping.
      size: output side.
      inside: optional bool [B]; True: only pixels inside the box contribute (PIL crop, then resize);
        False or None: the filter may reach past the box edges (PIL resize with box).

    Returns:
      float32 [B, T, size, size, C], pixel values in the input's range (0..255 for uint8).
    """
    _, _, height, width, _ = video.shape
    crop_box = crop_box.astype(jnp.float32)
    if inside is None:
        inside = jnp.zeros(crop_box.shape[:1], bool)
    rows = jax.vmap(lambda b, i: resize_weights(b[1], b[3], height, size, i))(crop_box, inside)  # [B, size, H]
    cols = jax.vmap(lambda b, i: resize_weights(b[0], b[2], width, size, i))(crop_box, inside)  # [B, size, W]
    # Mirroring the output is reversing the order of the column weights: no extra pass over pixels.
    cols = jnp.where(flip[:, None, None], cols[:, ::-1, :], cols)
    highest = jax.lax.Precision.HIGHEST  # pixel values, not activations: keep full float32 on TPU too
    video = video.astype(jnp.float32)
    video = jnp.einsum("bthwc,bpw->bthpc", video, cols, precision=highest)  # [B, T, H, size, C]
    return jnp.einsum("bthpc,boh->btopc", video, rows, precision=highest)  # [B, T, size, size, C]


def rotate(video: jax.Array, affine: jax.Array) -> jax.Array:
    """Rotates every frame of clip b with the inverse map `affine[b]`, as PIL's `Image.rotate(angle)` with
    its defaults (about the frame centre, nearest neighbour, same size, black fill) does it.

    `affine` is PIL's 16.16 fixed-point inverse affine map, `crops.rotation_affine(angle, W, H)`:
    output pixel (x, y) reads input pixel (X >> 16, Y >> 16) with X = a2 + x a0 + y a1 and
    Y = a5 + x a3 + y a4 (integers), and is 0 where that lies outside the frame. This is the integer
    arithmetic of PIL's nearest-neighbour affine transform (libImaging/Geometry.c, `affine_fixed`), so
    the result equals PIL's pixel for pixel.

    Args:
      video: [B, T, H, W, C], any dtype (kept).
      affine: int32 [B, 6].

    Returns:
      [B, T, H, W, C], video's dtype.
    """
    batch, frames, height, width, channels = video.shape
    a = jnp.asarray(affine, jnp.int32)[:, :, None, None]  # [B, 6, 1, 1]
    x = jnp.arange(width, dtype=jnp.int32)[None, None, :]  # [1, 1, W]
    y = jnp.arange(height, dtype=jnp.int32)[None, :, None]  # [1, H, 1]
    src_x = jnp.right_shift(a[:, 2] + x * a[:, 0] + y * a[:, 1], 16)  # [B, H, W]; arithmetic shift = floor
    src_y = jnp.right_shift(a[:, 5] + x * a[:, 3] + y * a[:, 4], 16)
    valid = (src_x >= 0) & (src_x < width) & (src_y >= 0) & (src_y < height)
    index = (jnp.clip(src_y, 0, height - 1) * width + jnp.clip(src_x, 0, width - 1)).reshape(batch, height * width)
    flat = video.reshape(batch, frames, height * width, channels)
    out = jax.vmap(lambda clip, idx: clip[:, idx])(flat, index)  # [B, T, H*W, C]
    out = jnp.where(valid.reshape(batch, 1, height * width, 1), out, jnp.zeros((), video.dtype))
    return out.reshape(video.shape)


def adjust_brightness(video: jax.Array, factor: jax.Array) -> jax.Array:
    """PIL's `ImageEnhance.Brightness(image).enhance(factor[b])` (torchvision's adjust_brightness for PIL
    images) on every frame of clip b: floor(min(factor * x, 255)) in float32, as PIL's uint8 blend with a
    black image computes it. Input pixel values must be whole numbers (uint8 frames).

    Returns:
      float32 [B, T, H, W, C] holding whole numbers in 0..255.
    """
    factor = jnp.asarray(factor, jnp.float32).reshape((-1,) + (1,) * (video.ndim - 1))
    return jnp.floor(jnp.minimum(video.astype(jnp.float32) * factor, 255.0))


def augment(batch: Mapping[str, jax.Array], *, size: int) -> jax.Array:
    """The train augmentation of an `augment_on_device` batch: `video` at its stored size with
    `crop_box`, `flip` and, when the pipeline drew them, `rotation` (int32 [B, 6], see `rotate`),
    `brightness` (factor)
    and `crop_inside` (DFER-CLIP's crop-then-resize).

    Returns:
      float32 [B, T, size, size, 3] in 0..255.
    """
    video = batch["video"]
    if "rotation" in batch:
        video = rotate(video, batch["rotation"])
    if "brightness" in batch:
        video = adjust_brightness(video, batch["brightness"])
    return crop_resize_flip(video, batch["crop_box"], batch["flip"], size=size, inside=batch.get("crop_inside"))
