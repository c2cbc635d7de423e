"""CATE: zero text mass on padding/special tokens, gated refinement, importance scoring."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from grace_jax.models import cate, prompts


def _inputs(rng, c=3, lf=12, lc=10, d=32):
    fine = jnp.asarray(rng.normal(size=(c, lf, d)), jnp.float32)
    coarse = jnp.asarray(rng.normal(size=(c, lc, d)), jnp.float32)
    fine_eot = jnp.array([11, 4, 7])
    coarse_eot = jnp.array([9, 9, 6])
    return (
        fine,
        prompts.valid_token_mask(lf, fine_eot),
        coarse,
        prompts.valid_token_mask(lc, coarse_eot, include_eot=True),
    )


# CATE's forward, jitted as in the model; one compiled program for every call below (the same sizes,
# only parameter values differ). Called op by op instead, each primitive compiled on its own.
_forward = nnx.jit(lambda model, *inputs: model(*inputs))


def test_padding_and_special_tokens_get_exactly_zero_mass():
    rng = np.random.default_rng(0)
    fine, fine_valid, coarse, keys = _inputs(rng)
    model = cate.CATE(32, heads=4, rngs=nnx.Rngs(0))
    # Train the scorer off its zero init so the check is not only about a uniform start.
    model.score_out.kernel[...] = jnp.asarray(rng.normal(size=model.score_out.kernel.shape))
    model.gate[...] = jnp.asarray(0.7)
    refined, mass, pooled = _forward(model, fine, fine_valid, coarse, keys)
    mass = np.asarray(mass)
    valid = np.asarray(fine_valid)
    assert np.all(mass[~valid] == 0.0)  # SOT, EOT, padding: exactly zero, not just small
    assert np.all(mass[valid] > 0.0)
    np.testing.assert_allclose(mass.sum(-1), 1.0, rtol=1e-6)
    assert refined.shape == fine.shape and pooled.shape == (3, 32)
    # Padding in the coarse prompt must not be attended: changing it changes nothing.
    noisy = coarse.at[2, 7:].set(100.0)
    np.testing.assert_allclose(_forward(model, fine, fine_valid, noisy, keys)[0], refined, atol=1e-5)


def test_starts_as_identity_with_uniform_importance_and_learns():
    rng = np.random.default_rng(1)
    fine, fine_valid, coarse, keys = _inputs(rng)
    model = cate.CATE(32, heads=4, rngs=nnx.Rngs(0))
    refined, mass, _ = _forward(model, fine, fine_valid, coarse, keys)
    np.testing.assert_array_equal(refined, fine)
    np.testing.assert_allclose(mass[1, 1:4], 1 / 3, rtol=1e-6)  # clip 1's words: positions 1..3

    def loss(m):
        r, w, p = m(fine, fine_valid, coarse, keys)
        return jnp.sum(p**2) + jnp.sum(w * jnp.arange(12.0))

    g = nnx.jit(nnx.grad(loss))(model)
    assert float(jnp.abs(g.gate[...])) > 0  # the zero gate opens from its first step
    assert float(jnp.abs(g.score_out.kernel[...]).max()) > 0
    leaves = jax.tree_util.tree_leaves(nnx.state(g))
    assert all(np.all(np.isfinite(np.asarray(x))) for x in leaves)


def test_masked_softmax_empty_row_is_zero_not_nan():
    out = cate.masked_softmax(jnp.ones((2, 3)), jnp.array([[False] * 3, [True, False, True]]))
    np.testing.assert_array_equal(out[0], 0.0)
    np.testing.assert_allclose(out[1], [0.5, 0.0, 0.5])
