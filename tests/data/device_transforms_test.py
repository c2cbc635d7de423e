"""The accelerator's augmentation against PIL, what the host path runs: bilinear resize with a box
(grace), crop then resize and the fallback window (DFER-CLIP), rotation, brightness, and their chain."""

import jax
import numpy as np
import pytest
from PIL import Image, ImageEnhance

from grace_jax.data import clip_transforms as ct
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


# Jitted, as the train step runs them (the box traced, the sizes static). Against PIL, op-by-op execution
# adds nothing but compile time; `_jit_equals_eager` below checks the kernels both ways.
_resize_weights = jax.jit(dt.resize_weights, static_argnums=(2, 3))
_crop_resize_flip = jax.jit(dt.crop_resize_flip, static_argnames="size")


@pytest.mark.parametrize("start,stop,out_size", [(0, 64, 64), (3, 50, 24), (10, 30, 64), (0, 64, 17), (41, 64, 90)])
def test_resize_weights_are_pil_coefficients(start, stop, out_size):
    weights = np.asarray(_resize_weights(start, stop, 64, out_size))
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
    boxes = np.array(
        [[0, 0, stored, stored], [5, 2, 5 + stored // 3, 2 + stored // 2], [stored - 20, 10, stored, 40]], np.float32
    )
    flips = np.array([False, True, True])
    out = np.asarray(_crop_resize_flip(frames, boxes, flips, size=size))
    assert out.shape == (3, 2, size, size, 3) and out.dtype == np.float32
    expected = np.stack(
        [
            [_pil(f, tuple(int(v) for v in box), size, flip) for f in clip]
            for clip, box, flip in zip(frames, boxes, flips)
        ]
    )
    # PIL rounds (half up) to uint8 after its horizontal and after its vertical pass: at most 0.5 + 0.5
    # levels apart. A misplaced sample would miss by tens of levels on these noisy frames.
    np.testing.assert_allclose(out, expected, atol=1.0 + 1e-3)


# ----------------------------------------------------------------------------- DFER-CLIP's recipe
# PIL rounds to uint8 after each of its two passes (at most 0.5 + 0.5 levels from the exact value); its
# 22-bit fixed-point weights and grace_jax's float32 sums add up to ~1e-3 more (measured: 1.0007 at 224 px).
_LEVEL = 1.0 + 2e-3


def _noisy_frames(rng, shape):
    """Smooth blocks plus noise (uint8): flat images would hide a misplaced sample."""
    *lead, height, width, _ = shape
    base = rng.uniform(0, 255, (*lead, 6, 6, 3))
    frames = base.repeat(-(-height // 6), axis=-3).repeat(-(-width // 6), axis=-2)[..., :height, :width, :]
    return (frames + rng.normal(0, 20, frames.shape)).clip(0, 255).astype(np.uint8)


def _jit_equals_eager(fn, *args, atol=0.0, **kw):
    """Runs `fn` jitted and op by op. jaxlib 0.10.2's XLA:CPU "ynn" fusion has miscompiled reductions
    (jax-ml/jax#39103), so every kernel is checked both ways: gathers and per-pixel scaling must agree
    exactly; resampling matmuls only up to float32 summation order (~3e-5 on values up to 255)."""
    eager = np.asarray(fn(*args, **kw))
    jitted = np.asarray(jax.jit(lambda *a: fn(*a, **kw))(*args))
    np.testing.assert_allclose(jitted, eager, rtol=0, atol=atol)
    return jitted


def test_crop_inside_is_pil_crop_then_resize():
    # One batch, one compile: an upscaled interior crop, the whole frame downscaled, a crop touching the
    # right and bottom edges, a tall thin one; flipped and not.
    rng = np.random.default_rng(5)
    frames = _noisy_frames(rng, (4, 2, 40, 56, 3))
    boxes = np.array([(5, 2, 21, 26), (0, 0, 56, 40), (30, 4, 56, 40), (10, 3, 19, 40)], np.float32)
    flips = np.array([False, True, True, False])
    out = _jit_equals_eager(dt.crop_resize_flip, frames, boxes, flips, size=24, inside=np.ones(4, bool), atol=1e-3)
    expected = np.stack(
        [
            [_pil_crop_resize(f, tuple(int(v) for v in box), 24, flip) for f in clip]
            for clip, box, flip in zip(frames, boxes, flips)
        ]
    )
    np.testing.assert_allclose(out, expected, atol=_LEVEL)
    # Letting the filter reach past the crop's edges (what resize(box=) does) gives another image.
    outside = np.asarray(_crop_resize_flip(frames, boxes, flips, size=24))
    assert all(np.abs(outside[b] - expected[b]).max() > 5 for b in (0, 2, 3))


def _pil_crop_resize(frame, box, size, flip):
    image = Image.fromarray(frame).crop(box)
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    if flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(image, np.float32)


def test_fallback_window_is_pil_resize_then_crop():
    # DFER-CLIP's fallback: GroupScale(size) (shorter side to size) then GroupRandomCrop(size).
    rng = np.random.default_rng(3)
    frames = _noisy_frames(rng, (1, 2, 30, 72, 3))
    crop = ct.SizedCrop((7, 0, 23, 16), resized=(38, 16))  # 72x30 -> int(16 * 72 / 30) = 38 x 16
    box, inside = crop.device_box(72, 30)
    out = _jit_equals_eager(
        dt.crop_resize_flip,
        frames,
        np.array([box], np.float32),
        np.array([False]),
        size=16,
        inside=np.array([inside]),
        atol=1e-3,
    )
    expected = ct.sized_crop(frames[0], np.array([0, 1]), crop, 16).astype(np.float32)
    np.testing.assert_allclose(out[0], expected, atol=_LEVEL)


@pytest.mark.parametrize("height,width", [(224, 224), (37, 50), (50, 37)])
def test_rotate_is_pils_rotate_pixel_for_pixel(height, width):
    rng = np.random.default_rng(height * width)
    degrees = [-4.0, -0.3, 0.0, 1e-3, 3.99, 17.0, 90.0, 180.0]
    frames = rng.integers(0, 256, (len(degrees), 2, height, width, 3), np.uint8)
    affine = np.stack([ct.rotation_affine(d, width, height) for d in degrees])
    out = _jit_equals_eager(dt.rotate, frames, affine)
    assert out.dtype == np.uint8
    # PIL's Image.rotate defaults (DFER-CLIP's RandomRotation calls img.rotate(angle)): nearest
    # neighbour, expand=False, black fill.
    expected = np.stack([[np.asarray(Image.fromarray(f).rotate(d)) for f in clip] for clip, d in zip(frames, degrees)])
    np.testing.assert_array_equal(out, expected)
    assert (out[0, :, 0, 0] == 0).all()  # a rotated corner is black


def test_brightness_is_pils_enhance_exactly():
    levels = np.arange(256, dtype=np.uint8)
    frames = np.stack([levels, levels[::-1], np.roll(levels, 7)], axis=-1).reshape(1, 1, 16, 16, 3)
    factors = np.array([0.0, 0.5, 0.5123457, 0.99, 1.0, 1.2345, 1.5, 2.5], np.float32)
    frames = np.repeat(frames, len(factors), axis=0)
    out = _jit_equals_eager(dt.adjust_brightness, frames, factors)
    # torchvision's adjust_brightness on PIL images is ImageEnhance.Brightness(img).enhance(factor).
    expected = np.stack(
        [np.asarray(ImageEnhance.Brightness(Image.fromarray(f[0])).enhance(float(k))) for f, k in zip(frames, factors)]
    )[:, None]
    np.testing.assert_array_equal(out, expected.astype(np.float32))


def test_augment_chains_rotation_brightness_crop_flip_like_pil():
    rng = np.random.default_rng(4)
    frames = _noisy_frames(rng, (2, 2, 40, 40, 3))
    batch = {
        "video": frames,
        "crop_box": np.array([[3, 5, 30, 37], [0, 0, 40, 40]], np.float32),
        "crop_inside": np.array([True, True]),
        "flip": np.array([True, False]),
        "rotation": np.stack([ct.rotation_affine(d, 40, 40) for d in (3.2, -1.7)]),
        "brightness": np.array([0.62, 1.41], np.float32),
    }
    out = _jit_equals_eager(lambda b: dt.augment(b, size=24), batch, atol=1e-3)
    expected = []
    for clip, box, flip, degrees, factor in zip(
        frames, batch["crop_box"], batch["flip"], (3.2, -1.7), batch["brightness"]
    ):
        rows = []
        for f in clip:
            image = ImageEnhance.Brightness(Image.fromarray(f).rotate(degrees)).enhance(float(factor))
            rows.append(_pil_crop_resize(np.asarray(image), tuple(int(v) for v in box), 24, flip))
        expected.append(rows)
    np.testing.assert_allclose(out, np.array(expected), atol=_LEVEL)
