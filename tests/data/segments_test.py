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
