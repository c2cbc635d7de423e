"""Localization metric against hand-built masks, and the ground truth it is computed from."""

import jax.numpy as jnp
import numpy as np
import pytest

from grace_jax import localization


def _frames(b=1, t=3, size=16):
    return np.zeros((b, t, size, size, 3), np.uint8)


def test_expression_mask_by_hand():
    """4x4 patches of 4 px. The expression changes patch 5 between frames 0-1 and patch 6 between
    frames 1-2; the distractor changes patch 6 more in frames 1-2, and patch 0 always."""
    e, d = _frames(), _frames()
    e[0, 1:, 4:8, 4:8] = 60  # patch (1,1) = 5 changes at frame 1, then stays
    e[0, 2, 4:8, 8:12] = 30  # patch (1,2) = 6 changes at frame 2 by 30 levels
    d[0, 2, 4:8, 8:12] = 90  # ... where the distractor moves it by 90
    d[0, 1, 0:4, 0:4] = 200  # patch 0 flickers
    d[0, 2, 0:4, 0:4] = 0
    mask = np.asarray(localization.expression_mask(expression=jnp.asarray(e), distractor=jnp.asarray(d), patch_size=4))
    assert mask.shape == (1, 3, 16)
    want = np.zeros((1, 3, 16), bool)
    want[0, 1, 5] = True  # frame 0 never has expression tokens; patch 6 is the distractor's
    np.testing.assert_array_equal(mask, want)
    # A change below one grey level on average is not visible motion.
    e2 = _frames()
    e2[0, 1, 4:5, 4:8] = 3  # 4 of 16 pixels by 3 levels: 0.75 levels on average
    mask = localization.expression_mask(expression=jnp.asarray(e2), distractor=jnp.asarray(_frames()), patch_size=4)
    assert not bool(mask.any())


def test_share_chance_and_pointing_by_hand():
    mask = np.zeros((2, 2, 4), bool)
    mask[0, 1, [1, 2]] = True  # clip 0: 2 of 8 tokens
    maps = np.zeros((2, 2, 4), np.float32)
    maps[0, 0] = [0.1, 0.0, 0.0, 0.1]  # frame 0 has no expression: not a pointing frame
    maps[0, 1] = [0.0, 0.5, 0.1, 0.2]  # top patch 1 is an expression token
    maps[1] = 1.0  # clip 1: no expression tokens at all
    r = {k: np.asarray(v) for k, v in localization.localization(maps=jnp.asarray(maps), mask=jnp.asarray(mask)).items()}
    np.testing.assert_allclose(r["share"][0], 0.6 / 1.0, rtol=1e-6)
    np.testing.assert_allclose(r["chance"], [2 / 8, 0.0])
    np.testing.assert_array_equal(r["hits"], [1, 0])
    np.testing.assert_array_equal(r["frames"], [1, 0])
    np.testing.assert_array_equal(r["valid"], [True, False])
    # The top patch off the expression: a miss.
    maps[0, 1] = [0.0, 0.1, 0.1, 0.5]
    r = localization.localization(maps=jnp.asarray(maps), mask=jnp.asarray(mask))
    assert float(r["hits"][0]) == 0.0


def test_accumulator_averages_per_class_then_over_classes():
    acc = localization.Accumulator(["a", "b", "c"])
    result = {
        "m": {
            "share": np.array([0.2, 0.4, 0.9, 0.5]),
            "chance": np.array([0.1, 0.1, 0.2, 0.3]),
            "hits": np.array([1.0, 0.0, 2.0, 1.0]),
            "frames": np.array([2.0, 2.0, 2.0, 1.0]),
            "valid": np.array([True, True, True, False]),
        }
    }
    acc.add(result, labels=np.array([0, 0, 1, 2]), mask=np.array([True, True, True, True]))
    s = acc.summary()["m"]
    assert set(s["per_class"]) == {"a", "b"}  # class c's only clip has no expression tokens
    np.testing.assert_allclose(s["per_class"]["a"]["share"], 0.3)
    np.testing.assert_allclose(s["per_class"]["a"]["pointing"], 0.25)
    np.testing.assert_allclose(s["share"], (0.3 + 0.9) / 2)
    np.testing.assert_allclose(s["chance"], (0.1 + 0.2) / 2)
    assert s["per_class"]["b"]["clips"] == 1
    # Padding rows do not count.
    acc2 = localization.Accumulator(["a", "b", "c"])
    acc2.add(result, labels=np.array([0, 0, 1, 2]), mask=np.array([True, False, True, True]))
    np.testing.assert_allclose(acc2.summary()["m"]["per_class"]["a"]["share"], 0.2)
    flat = localization.flat_metrics(acc.summary())
    assert flat["loc/m/share"] == s["share"] and flat["loc/m/share/b"] == 0.9
    assert "expression share" in localization.one_line({"motion_weights": s})


def test_shift_frame_moves_one_frame_only():
    video = jnp.asarray(np.random.default_rng(0).integers(0, 255, (1, 3, 8, 8, 3)), jnp.float32)
    out = np.asarray(localization.shift_frame(video, 1, 2))
    np.testing.assert_array_equal(out[:, [0, 2]], np.asarray(video)[:, [0, 2]])
    np.testing.assert_array_equal(out[0, 1, 2:, 2:], np.asarray(video)[0, 1, :-2, :-2])


@pytest.mark.parametrize("variant", ["standard", "hard"])
def test_synthfer_ground_truth_marks_the_expression_not_the_distractors(variant):
    """On SynthFER's own renders: the mask lies on the face's expressive parts (mouth, eyes, brows),
    covers a small part of the clip, and is empty for neutral clips."""
    from data_prep import synth
    from grace_jax.data.segments import segment_indices

    config = synth.SynthConfig(variant=variant)
    shares, neutral = [], []
    for i in range(14):
        label = synth.clip_label(i)
        expression, distractor = synth.sample_ground_truth(synth.clip_seed(0, "test", i), label, config)
        idx = segment_indices(len(expression), 8, train=False)
        mask = np.asarray(
            localization.expression_mask(
                expression=jnp.asarray(expression[idx][None]),
                distractor=jnp.asarray(distractor[idx][None]),
                patch_size=8,
            )
        )
        (neutral if label == 2 else shares).append(mask.mean())
        if label != 2 and mask.any():
            rows = np.nonzero(mask[0].reshape(8, 6, 6).any(0))[0]
            assert rows.min() >= 1 and rows.max() <= 5  # below the top row: brows to chin
    assert max(neutral) == 0.0
    assert 0.01 < np.mean(shares) < 0.2
    assert sum(s > 0 for s in shares) >= 10  # nearly every expressive clip has expression tokens
