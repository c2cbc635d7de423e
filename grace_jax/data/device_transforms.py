"""The train pipeline's random resized crop and flip, run on the accelerator inside the jitted step.

With `augment_on_device` the host decodes the sampled JPEG frames at their stored size and draws each
clip's crop box and flip exactly as the host path does; `crop_resize_flip` then does the resampling as
two small matmuls per clip. Decoding is then the host's only per-pixel work, which is what lets a few
host cores feed an accelerator (see benchmarks/input_pipeline.py). On the accelerator the cost is
about 2 GFLOP per 16x224x224 clip (XLA's cost analysis), against ~560 GFLOP for the forward pass of
ViT-B/16 alone over those 16 frames (17.6 G multiply-adds per 224 px image, as the DeiT paper reports).

Sampling is PIL's bilinear `resize(size, box=...)`: output pixel centres map linearly into the box,
weights follow a triangle filter widened by the downscale factor (so shrinking is antialiased) and are
renormalized where the filter leaves the image. PIL also rounds to uint8 after each of its two passes;
this path keeps floats, so the two differ by at most one grey level.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def resize_weights(start: jax.Array, stop: jax.Array, in_size: int, out_size: int) -> jax.Array:
    """Resampling matrix of the input span [start, stop) (pixels, may be fractional) onto `out_size` pixels.

    Returns:
      float32 [out_size, in_size]; each row sums to one.
    """
    start = jnp.asarray(start, jnp.float32)
    scale = (jnp.asarray(stop, jnp.float32) - start) / out_size  # input pixels per output pixel
    support = jnp.maximum(scale, 1.0)
    centres = start + (jnp.arange(out_size, dtype=jnp.float32) + 0.5) * scale  # [out]
    taps = jnp.arange(in_size, dtype=jnp.float32) + 0.5  # [in]
    weights = jnp.maximum(0.0, 1.0 - jnp.abs(taps[None, :] - centres[:, None]) / support)  # [out, in]
    return weights / jnp.sum(weights, axis=1, keepdims=True)


def crop_resize_flip(video: jax.Array, crop_box: jax.Array, flip: jax.Array, *, size: int) -> jax.Array:
    """Crops each clip to its box, resizes it bilinearly to `size` x `size` and mirrors it where `flip`.

    Args:
      video: uint8 or float [B, T, H, W, C] frames at their stored size.
      crop_box: float32 [B, 4] (left, top, right, bottom) in pixels of the stored frames, one per clip.
      flip: bool [B]; mirror the clip left-right after cropping.
      size: output side.

    Returns:
      float32 [B, T, size, size, C], pixel values in the input's range (0..255 for uint8).
    """
    _, _, height, width, _ = video.shape
    crop_box = crop_box.astype(jnp.float32)
    rows = jax.vmap(lambda b: resize_weights(b[1], b[3], height, size))(crop_box)  # [B, size, H]
    cols = jax.vmap(lambda b: resize_weights(b[0], b[2], width, size))(crop_box)  # [B, size, W]
    # Mirroring the output is reversing the order of the column weights: no extra pass over pixels.
    cols = jnp.where(flip[:, None, None], cols[:, ::-1, :], cols)
    highest = jax.lax.Precision.HIGHEST  # pixel values, not activations: keep full float32 on TPU too
    video = video.astype(jnp.float32)
    video = jnp.einsum("bthwc,bpw->bthpc", video, cols, precision=highest)  # [B, T, H, size, C]
    return jnp.einsum("bthpc,boh->btopc", video, rows, precision=highest)  # [B, T, size, size, C]
