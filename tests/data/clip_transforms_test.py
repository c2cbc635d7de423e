"""Per-clip transforms: CLIP normalization, crop boxes, decoding only the sampled frames."""

import numpy as np

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
