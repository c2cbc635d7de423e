"""Per-clip transforms: CLIP normalization, crop boxes, decoding only the sampled frames."""

import io

import numpy as np
import pytest
from PIL import Image

from data_prep import schema
from grace_jax.data import clip_transforms as ct


def test_normalize_matches_clip_mean_and_std():
    pixels = np.array([[0, 0, 0], [255, 255, 255], [128, 64, 32]], np.uint8)
    expected = (pixels / 255.0 - np.array(ct.CLIP_MEAN)) / np.array(ct.CLIP_STD)
    out = ct.normalize(pixels)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_random_resized_box_respects_bounds_area_and_ratio():
    rng = np.random.default_rng(0)
    for _ in range(200):
        left, top, right, bottom = ct.random_resized_box(224, 224, rng, (0.3, 1.0), (3 / 4, 4 / 3))
        w, h = right - left, bottom - top
        assert 0 <= left < right <= 224 and 0 <= top < bottom <= 224
        assert 0.3 * 224 * 224 * 0.9 <= w * h <= 224 * 224
        assert 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1
    assert ct.centre_box(40, 30) == (5, 0, 35, 30)


def test_decode_resized_reads_requested_frames_once_each():
    frames = tuple(schema.encode_jpeg(np.full((32, 32, 3), 10 * i, np.uint8), 95) for i in range(20))
    view = schema.parse(schema.serialize(schema.ClipRecord(1, "c", frames, 32)))
    out = ct.decode_resized(view, np.array([0, 5, 5, 19]), ct.centre_box, 16)
    assert out.shape == (4, 16, 16, 3) and out.dtype == np.uint8
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), [0, 50, 50, 190], atol=2)


def test_decode_frames_gives_pillows_pixels_and_refuses_mixed_sizes():
    rng = np.random.default_rng(0)
    frames = [(rng.normal(120, 50, (40, 40, 3)) + 60 * np.sin(np.arange(40) / 5)[:, None, None]).clip(0, 255)
              .astype(np.uint8) for _ in range(3)]
    encoded = tuple(schema.encode_jpeg(f, q) for f, q in zip(frames, (95, 75, 50)))
    view = schema.parse(schema.serialize(schema.ClipRecord(0, "c", encoded, 40)))
    out = ct.decode_frames(view, np.array([0, 1, 2, 2]))
    pillow = [np.asarray(Image.open(io.BytesIO(e)).convert("RGB")) for e in encoded]
    np.testing.assert_array_equal(out, np.stack(pillow + pillow[2:]))
    mixed = encoded + (schema.encode_jpeg(frames[0][:32, :32], 95),)
    view = schema.parse(schema.serialize(schema.ClipRecord(0, "c", mixed, 40)))
    with pytest.raises(ValueError, match="a stored frame is 32x32, the clip's first frame 40x40"):
        ct.decode_frames(view, np.array([0, 3]))
