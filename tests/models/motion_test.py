"""Motion-difference weighting: localisation, normalisation, top-k, pooling."""

import jax.numpy as jnp
import numpy as np
import pytest

from grace_jax.models import motion


def _clip_with_moving_region(rng, t=6, size=32, patch=8, rows=(1, 2), cols=(2, 3)):
    """A static textured frame, repeated, except a patch-aligned region whose content changes."""
    base = rng.normal(size=(size, size, 3)).astype(np.float32)
    frames = np.repeat(base[None], t, axis=0)
    r0, r1 = rows[0] * patch, (rows[1] + 1) * patch
    c0, c1 = cols[0] * patch, (cols[1] + 1) * patch
    for i in range(t):
        frames[i, r0:r1, c0:c1] += np.sin(i) * rng.normal(size=(r1 - r0, c1 - c0, 3))
    grid = size // patch
    region = [
        r * grid + c for r in range(rows[0], rows[1] + 1) for c in range(cols[0], cols[1] + 1)
    ]
    return jnp.asarray(frames[None]), region


def test_one_moving_region_gets_most_weight():
    rng = np.random.default_rng(0)
    images, region = _clip_with_moving_region(rng)
    m = motion.pixel_motion(images, 8)
    assert m.shape == (1, 6, 16)
    w = motion.motion_weights(m, tau=0.1, alpha=0.1)
    np.testing.assert_allclose(w.sum(axis=(1, 2)), 1.0, rtol=1e-5)
    on_region = float(w[0][:, region].sum())
    assert on_region > 0.8, on_region  # 4 of 16 patches hold > 80% of the mass
    # Every frame, not only the clip as a whole, puts most of its own weight on the region (frames
    # with weaker motion keep relatively more of the uniform share, hence the lower bar).
    per_frame = w[0][:, region].sum(-1) / w[0].sum(-1)
    assert bool(jnp.all(per_frame > 0.5))


def test_distractor_free_static_clip_is_uniform_and_alpha_one_ignores_motion():
    images = jnp.ones((2, 4, 16, 16, 3))
    w = motion.motion_weights(motion.pixel_motion(images, 8), tau=0.1, alpha=0.1)
    np.testing.assert_allclose(w, 1 / 16, rtol=1e-6)
    rng = np.random.default_rng(1)
    images, _ = _clip_with_moving_region(rng)
    w = motion.motion_weights(motion.pixel_motion(images, 8), tau=0.1, alpha=1.0)
    np.testing.assert_allclose(w, 1 / 96, rtol=1e-6)


def test_frame_zero_takes_frame_one_and_feature_variant_localises():
    rng = np.random.default_rng(2)
    images, _ = _clip_with_moving_region(rng)
    m = motion.pixel_motion(images, 8)
    np.testing.assert_array_equal(m[:, 0], m[:, 1])
    feats = np.repeat(rng.normal(size=(1, 1, 9, 5)), 4, axis=1).astype(np.float32)
    feats[0, :, 4] += rng.normal(size=(4, 5))  # only token 4 changes over time
    w = motion.motion_weights(motion.feature_motion(jnp.asarray(feats)), tau=0.1, alpha=0.1)
    assert float(w[0, :, 4].sum()) > 0.8


def test_top_k_and_pooling():
    rng = np.random.default_rng(3)
    tokens = jnp.asarray(rng.normal(size=(2, 10, 4)), jnp.float32)
    weights = jnp.asarray(rng.dirichlet(np.ones(10), size=2), jnp.float32)
    top, tw, idx = motion.select_top_k(tokens, weights, 3)
    assert top.shape == (2, 3, 4) and tw.shape == idx.shape == (2, 3)
    np.testing.assert_allclose(tw.sum(-1), 1.0, rtol=1e-6)
    for b in range(2):
        assert set(np.asarray(idx[b]).tolist()) == set(np.argsort(-np.asarray(weights[b]))[:3])
        np.testing.assert_array_equal(top[b], tokens[b][idx[b]])
    same, sw, _ = motion.select_top_k(tokens, weights, 0)
    assert same is tokens and sw is weights
    patches = jnp.asarray(rng.normal(size=(2, 3, 5, 4)), jnp.float32)
    w = jnp.zeros((2, 3, 5)).at[:, :, 2].set(1.0)
    np.testing.assert_allclose(motion.pool_patches(patches, w), patches[:, :, 2], rtol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="multiple of the patch size"):
        motion.pixel_motion(jnp.zeros((1, 2, 30, 30, 3)), 8)
    with pytest.raises(ValueError, match="tau"):
        motion.motion_weights(jnp.zeros((1, 2, 4)), tau=0.0, alpha=0.1)
