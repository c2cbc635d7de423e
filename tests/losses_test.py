"""Losses: values against hand computations, masking, switches."""

import jax
import jax.numpy as jnp
import numpy as np

from grace_jax import losses


def _ce(logits, labels):
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return -logp[np.arange(len(labels)), labels]


def test_cross_entropy_matches_hand_computation_and_masks():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 7)).astype(np.float32)
    labels = np.array([0, 3, 6, 2, 2])
    ref = _ce(logits, labels)
    got = losses.cross_entropy(logits=jnp.asarray(logits), labels=jnp.asarray(labels))
    np.testing.assert_allclose(got, ref.mean(), rtol=1e-6)
    mask = jnp.array([True, True, False, True, False])
    got = losses.cross_entropy(logits=jnp.asarray(logits), labels=jnp.asarray(labels), mask=mask)
    np.testing.assert_allclose(got, ref[[0, 1, 3]].mean(), rtol=1e-6)


def test_contrastive_alignment():
    rng = np.random.default_rng(1)
    s = rng.uniform(-1, 1, (4, 4)).astype(np.float32)
    got = losses.contrastive_alignment(scores=jnp.asarray(s), scale=10.0)
    ref = 0.5 * (_ce(10 * s, np.arange(4)).mean() + _ce(10 * s.T, np.arange(4)).mean())
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    # Uncaptioned clips drop out entirely: same as the 2x2 problem of the captioned ones.
    mask = jnp.array([True, False, True, False])
    got = losses.contrastive_alignment(scores=jnp.asarray(s), scale=10.0, mask=mask)
    sub = s[np.ix_([0, 2], [0, 2])]
    ref = 0.5 * (_ce(10 * sub, np.arange(2)).mean() + _ce(10 * sub.T, np.arange(2)).mean())
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    one = jnp.array([True, False, False, False])
    assert float(losses.contrastive_alignment(scores=jnp.asarray(s), scale=10.0, mask=one)) == 0.0


def test_grace_loss_terms_switch():
    rng = np.random.default_rng(2)
    logits = jnp.asarray(rng.normal(size=(3, 7)), jnp.float32)
    labels = jnp.array([1, 2, 3])
    aux = {
        "ot_logits": jnp.asarray(rng.normal(size=(3, 7)), jnp.float32),
        "caption_scores": jnp.asarray(rng.normal(size=(3, 3)), jnp.float32),
        "motion_logits": jnp.asarray(rng.normal(size=(3, 7)), jnp.float32),
    }
    loss, terms = losses.grace_loss(logits=logits, labels=labels, aux=aux, ot_weight=0.5,
                                    motion_weight=0.3, align_weight=0.1)  # fmt: skip
    np.testing.assert_allclose(
        loss, terms["ce"] + 0.5 * terms["ot_ce"] + 0.3 * terms["motion_ce"] + 0.1 * terms["align"], rtol=1e-6
    )
    np.testing.assert_allclose(
        terms["motion_ce"], losses.cross_entropy(logits=aux["motion_logits"], labels=labels), rtol=1e-6
    )
    assert float(terms["ot_ce"]) > 0 and float(terms["align"]) > 0
    loss0, terms0 = losses.grace_loss(logits=logits, labels=labels, aux={})
    assert float(terms0["ot_ce"]) == 0.0 and float(terms0["align"]) == 0.0
    assert float(terms0["motion_ce"]) == 0.0
    np.testing.assert_allclose(loss0, terms["ce"])
    g = jax.grad(lambda x: losses.grace_loss(logits=x, labels=labels, aux=aux)[0])(logits)
    assert np.all(np.isfinite(np.asarray(g)))
