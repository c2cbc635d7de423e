"""Segment sampling (DESIGN 2.7) against explicitly written index lists."""

import numpy as np
import pytest

from grace_jax.data.segments import segment_bounds, segment_indices

# 25 frames in 16 segments: edges floor(k * 25 / 16).
EDGES_25 = [0, 1, 3, 4, 6, 7, 9, 10, 12, 14, 15, 17, 18, 20, 21, 23, 25]
CENTRES_25 = [0, 2, 3, 5, 7, 8, 10, 11, 13, 14, 16, 17, 19, 21, 22, 24]
SHORT_10 = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 9, 9, 9, 9]


def test_25_frames_eval_takes_segment_centres():
    np.testing.assert_array_equal(segment_indices(25, 16, train=False), CENTRES_25)
    assert segment_indices(25, 16, train=False).dtype == np.int32


def test_25_frames_train_draws_every_frame_of_each_segment_and_nothing_else():
    np.testing.assert_array_equal(segment_bounds(25, 16), EDGES_25)
    rng = np.random.default_rng(0)
    draws = np.stack([segment_indices(25, 16, train=True, rng=rng) for _ in range(400)])
    for k in range(16):
        assert set(draws[:, k].tolist()) == set(range(EDGES_25[k], EDGES_25[k + 1])), k


@pytest.mark.parametrize("train", [True, False])
def test_10_frames_repeat_the_last_frame(train):
    rng = np.random.default_rng(1)
    np.testing.assert_array_equal(segment_indices(10, 16, train=train, rng=rng), SHORT_10)


def test_exact_length_and_single_frame():
    np.testing.assert_array_equal(segment_indices(16, 16, train=True, rng=np.random.default_rng(2)), np.arange(16))
    np.testing.assert_array_equal(segment_indices(16, 16, train=False), np.arange(16))
    np.testing.assert_array_equal(segment_indices(1, 4, train=False), [0, 0, 0, 0])


def test_same_rng_state_same_indices_and_errors():
    a = segment_indices(96, 16, train=True, rng=np.random.default_rng(7))
    b = segment_indices(96, 16, train=True, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert np.all(np.diff(a) > 0)  # 6-frame segments: strictly increasing
    with pytest.raises(ValueError, match="at least one frame"):
        segment_indices(0, 16, train=False)
    with pytest.raises(ValueError, match="needs an rng"):
        segment_indices(40, 16, train=True)


def _dferclip_train_reference(n: int, t: int, rng: np.random.Generator) -> np.ndarray:
    # DFER-CLIP's _get_train_indices (duration 1) written out: segments of n // t frames from 0.
    average = n // t
    if average > 0:
        return np.arange(t) * average + rng.integers(0, average, size=t)
    return np.pad(np.arange(n), (0, t - n), "edge")


@pytest.mark.parametrize("n", [10, 16, 25, 31, 47, 96])
def test_dferclip_train_sampling_is_dferclip_loaders(n):
    rng_a, rng_b = np.random.default_rng(n), np.random.default_rng(n)
    for _ in range(50):
        ours = segment_indices(n, 16, train=True, rng=rng_a, scheme="dferclip")
        np.testing.assert_array_equal(ours, _dferclip_train_reference(n, 16, rng_b))


def test_dferclip_train_sampling_never_reaches_the_tail():
    # 31 frames: segments of one frame, frames 16..30 are never drawn (ours spreads over all 31).
    rng = np.random.default_rng(0)
    draws = {int(i) for _ in range(200) for i in segment_indices(31, 16, train=True, rng=rng, scheme="dferclip")}
    assert draws == set(range(16))
    ours = {int(i) for _ in range(200) for i in segment_indices(31, 16, train=True, rng=rng)}
    assert max(ours) == 30
    with pytest.raises(ValueError, match="sampling scheme"):
        segment_indices(31, 16, train=True, rng=rng, scheme="tsn")


@pytest.mark.parametrize("n", [16, 17, 25, 47, 96, 200])
def test_eval_centres_equal_dferclip_test_indices(n):
    tick = n / 16.0
    expected = [int(tick / 2.0 + tick * k) for k in range(16)]
    np.testing.assert_array_equal(segment_indices(n, 16, train=False), expected)
