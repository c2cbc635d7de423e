"""Crop/resize/flip on the accelerator against PIL's bilinear resize with a box (what the host path uses)."""

import numpy as np
import pytest
from PIL import Image

from grace_jax.data import device_transforms as dt


def _pil(frame, box, size, flip):
    image = Image.fromarray(frame).resize((size, size), Image.Resampling.BILINEAR, box=box)
    if flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(image, np.float32)


def _pil_coefficients(start, stop, in_size, out_size):
    """PIL's bilinear resampling coefficients written out as loops: a window of taps around each
    output centre, clipped to the image, triangle weights normalized over the window."""
    scale = (stop - start) / out_size
    support = max(scale, 1.0)
    weights = np.zeros((out_size, in_size))
    for i in range(out_size):
        centre = start + (i + 0.5) * scale
        lo, hi = max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), in_size)
        for j in range(lo, hi):
            weights[i, j] = max(0.0, 1.0 - abs((j - centre + 0.5) / support))
        weights[i] /= weights[i].sum()
    return weights


@pytest.mark.parametrize("start,stop,out_size", [(0, 64, 64), (3, 50, 24), (10, 30, 64), (0, 64, 17), (41, 64, 90)])
def test_resize_weights_are_pil_coefficients(start, stop, out_size):
    weights = np.asarray(dt.resize_weights(start, stop, 64, out_size))
    # float32 pixel coordinates near 64 are good to ~4e-6 (PIL computes in double).
    np.testing.assert_allclose(weights, _pil_coefficients(start, stop, 64, out_size), atol=1e-5)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-6)
    if (start, stop, out_size) == (0, 64, 64):
        np.testing.assert_allclose(weights, np.eye(64), atol=1e-6)


# Upscaling crops (the train case: crop <= stored side), a downscale (stored frames larger than the model
# input, antialiased) and boxes touching the image borders.
@pytest.mark.parametrize("stored,size", [(48, 48), (48, 32), (40, 64)])
def test_matches_pil_bilinear_resize_with_box(stored, size):
    rng = np.random.default_rng(stored + size)
    # Smooth images plus noise: flat images would hide a misplaced sample.
    base = rng.uniform(0, 255, (3, 2, 8, 8, 3))
    frames = np.stack([np.kron(b, np.ones((stored // 8, stored // 8, 1))) for b in base.reshape(6, 8, 8, 3)])
    frames = (frames + rng.normal(0, 20, frames.shape)).clip(0, 255).astype(np.uint8).reshape(3, 2, stored, stored, 3)
    boxes = np.array([[0, 0, stored, stored], [5, 2, 5 + stored // 3, 2 + stored // 2], [stored - 20, 10, stored, 40]],
                     np.float32)
    flips = np.array([False, True, True])
    out = np.asarray(dt.crop_resize_flip(frames, boxes, flips, size=size))
    assert out.shape == (3, 2, size, size, 3) and out.dtype == np.float32
    expected = np.stack([[_pil(f, tuple(int(v) for v in box), size, flip) for f in clip]
                         for clip, box, flip in zip(frames, boxes, flips)])
    # PIL rounds (half up) to uint8 after its horizontal and after its vertical pass: at most 0.5 + 0.5
    # levels apart. A misplaced sample would miss by tens of levels on these noisy frames.
    np.testing.assert_allclose(out, expected, atol=1.0 + 1e-3)
