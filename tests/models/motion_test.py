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
    region = [r * grid + c for r in range(rows[0], rows[1] + 1) for c in range(cols[0], cols[1] + 1)]
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
    tokens = jnp.asarray(rng.normal(size=(2, 2, 5, 4)), jnp.float32)  # [B,T,P,D]
    weights = jnp.asarray(rng.dirichlet(np.ones(10), size=2).reshape(2, 2, 5), jnp.float32)
    top, tw, idx = motion.select_top_k(tokens, weights, 6)  # 3 per frame
    assert top.shape == (2, 6, 4) and tw.shape == idx.shape == (2, 6)
    np.testing.assert_allclose(tw.sum(-1), 1.0, rtol=1e-6)
    flat_t, flat_w = tokens.reshape(2, 10, 4), np.asarray(weights).reshape(2, 10)
    for b in range(2):
        want = set(np.argsort(-flat_w[b, :5])[:3]) | {5 + i for i in np.argsort(-flat_w[b, 5:])[:3]}
        assert set(np.asarray(idx[b]).tolist()) == want
        np.testing.assert_array_equal(top[b], flat_t[b][idx[b]])
    same, sw, _ = motion.select_top_k(tokens, weights, 0)
    np.testing.assert_array_equal(same, flat_t)
    np.testing.assert_array_equal(sw, flat_w)
    patches = jnp.asarray(rng.normal(size=(2, 3, 5, 4)), jnp.float32)
    w = jnp.zeros((2, 3, 5)).at[:, :, 2].set(1.0)
    np.testing.assert_allclose(motion.pool_patches(patches, w), patches[:, :, 2], rtol=1e-6)


def test_top_k_of_uniform_weights_keeps_every_frame():
    """A static clip (or motion off) has tied weights: the kept tokens still cover every frame
    (over the whole clip, top_k's ties would keep frames 0 and 1 only)."""
    tokens = jnp.zeros((1, 8, 36, 4))
    weights = jnp.full((1, 8, 36), 1 / 288)
    _, _, idx = motion.select_top_k(tokens, weights, 64)
    frames = np.asarray(idx[0]) // 36
    assert sorted(set(frames.tolist())) == list(range(8))
    assert np.bincount(frames).tolist() == [8] * 8


def test_robust_normalisation_resists_one_outlier_frame():
    """One frame pair moving 20x more (a crop jump) takes most of the mass under clip-max
    normalisation; under the robust one the other frames keep theirs."""
    rng = np.random.default_rng(5)
    m = rng.uniform(0.0, 0.1, (1, 8, 36))
    m[0, 1:, 7] = 1.0  # a steady moving region in every frame
    jumped = m.copy()
    jumped[0, 4] += 20.0 * rng.uniform(0.5, 1.0, 36)  # everything moves in frame 4
    share = {}
    for norm in ("clip_max", "robust"):
        before = motion.motion_weights(jnp.asarray(m), tau=0.1, alpha=0.1, normalize=norm)
        after = motion.motion_weights(jnp.asarray(jumped), tau=0.1, alpha=0.1, normalize=norm)
        share[norm] = (float(before[0, 4].sum()), float(after[0, 4].sum()))
        region_after = float(after[0, :, 7].sum())
        if norm == "robust":
            assert region_after > 0.1, region_after
    assert share["clip_max"][1] > 0.9  # the jump frame takes almost everything
    assert share["robust"][1] < 0.7
    assert share["robust"][1] - share["robust"][0] < share["clip_max"][1] - share["clip_max"][0]


@pytest.mark.slow
def test_learned_head_starts_as_the_fixed_weighting_and_learns_to_ignore_a_motion():
    """At initialisation the head's weights equal the fixed weighting's; a few gradient steps on
    'put mass on the region whose features change along direction u' make it prefer that region over
    a region that moves more in pixels (the distractor)."""
    import jax
    import optax
    from flax import nnx

    rng = np.random.default_rng(6)
    b, t, p, d = 8, 4, 9, 16
    u = rng.normal(size=d)
    feats = np.repeat(rng.normal(size=(b, 1, p, d)), t, axis=1)
    pixel = np.full((b, t, p), 0.01)
    for i in range(b):
        feats[i, :, 2] += np.arange(t)[:, None] * 0.3 * u  # expression: a change along u, small in pixels
        feats[i, :, 6] += rng.normal(size=(t, d)) * 0.3  # distractor: random changes, big in pixels
        pixel[i, 1:, 2], pixel[i, 1:, 6] = 0.3, 1.0
    feats, pixel = jnp.asarray(feats, jnp.float32), jnp.asarray(pixel, jnp.float32)
    head = motion.MotionHead(d, hidden=16, rngs=nnx.Rngs(0))
    prior_logit = motion.normalize_motion(pixel, "robust") / 0.1
    w0 = motion.mix_uniform(head(feats, pixel, prior_logit), 0.1)
    np.testing.assert_allclose(w0, motion.motion_weights(pixel, tau=0.1, alpha=0.1, normalize="robust"), rtol=1e-5)
    assert float(w0[:, :, 6].sum()) > float(w0[:, :, 2].sum())  # the prior follows the big motion

    graphdef, params = nnx.split(head)
    tx = optax.adam(3e-2)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt):
        def loss(params):
            w = motion.mix_uniform(nnx.merge(graphdef, params)(feats, pixel, prior_logit), 0.1)
            return -jnp.log(w[:, 1:, 2].sum(-1)).mean()

        g = jax.grad(loss)(params)
        updates, opt = tx.update(g, opt)
        return optax.apply_updates(params, updates), opt

    for _ in range(60):
        params, opt = step(params, opt)
    w = motion.mix_uniform(nnx.merge(graphdef, params)(feats, pixel, prior_logit), 0.1)
    assert float(w[:, :, 2].sum()) / b > 0.5
    assert float(w[:, :, 2].sum()) > 3 * float(w[:, :, 6].sum())


def test_bad_arguments():
    with pytest.raises(ValueError, match="multiple of the patch size"):
        motion.pixel_motion(jnp.zeros((1, 2, 30, 30, 3)), 8)
    with pytest.raises(ValueError, match="tau"):
        motion.motion_weights(jnp.zeros((1, 2, 4)), tau=0.0, alpha=0.1)
