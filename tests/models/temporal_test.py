"""DFER-CLIP temporal transformer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grace_jax.models import temporal


def test_shapes_order_sensitivity_and_fewer_frames():
    model = temporal.TemporalTransformer(32, 16, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 16, 32)), jnp.float32)
    y = model(x)
    assert y.shape == (3, 32)
    # Learned positions make the output depend on frame order.
    assert not np.allclose(y, model(x[:, ::-1]), atol=1e-4)
    assert model(x[:, :8]).shape == (3, 32)
    with pytest.raises(ValueError, match="positions for 16"):
        model(jnp.zeros((1, 17, 32)))
    # DFER-CLIP: 8 heads of 64, MLP 1024, qkv without bias.
    blk = model.blocks[0]
    assert blk.to_qkv.kernel.shape == (32, 3 * 512) and blk.to_qkv.bias is None
    assert blk.fc1.kernel.shape == (32, 1024)
    assert np.isfinite(np.asarray(jax.jit(lambda m, v: m(v).sum())(model, x)))
