"""DFER-CLIP temporal transformer."""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
import dferclip_torch  # noqa: E402

from grace_jax.models import temporal  # noqa: E402


@pytest.mark.slow
def test_shapes_order_sensitivity_and_fewer_frames():
    model = temporal.TemporalTransformer(32, 16, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 16, 32)), jnp.float32)
    forward = nnx.jit(lambda m, v: m(v))  # as in the model; op by op, every primitive compiled alone
    y = forward(model, x)
    assert y.shape == (3, 32)
    # Learned positions make the output depend on frame order.
    assert not np.allclose(y, forward(model, x[:, ::-1]), atol=1e-4)
    assert forward(model, x[:, :8]).shape == (3, 32)
    with pytest.raises(ValueError, match="positions for 16"):
        model(jnp.zeros((1, 17, 32)))
    # DFER-CLIP: 8 heads of 64, MLP 1024, qkv without bias.
    blk = model.blocks[0]
    assert blk.to_qkv.kernel.shape == (32, 3 * 512) and blk.to_qkv.bias is None
    assert blk.fc1.kernel.shape == (32, 1024)
    assert np.isfinite(np.asarray(jax.jit(lambda m, v: m(v).sum())(model, x)))


def test_gelu_is_the_tanh_approximation():
    x = np.linspace(-4, 4, 81, dtype=np.float32)
    formula = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    # float32 against a float64 formula: 1 + tanh cancels near x = -4, hence the 1e-6 floor.
    np.testing.assert_allclose(temporal.gelu_tanh(jnp.asarray(x)), formula, rtol=1e-6, atol=1e-6)
    # ... and not the exact erf form torch.nn.GELU() computes: they differ by up to ~5e-4 here.
    erf = np.asarray(jax.nn.gelu(jnp.asarray(x), approximate=False))
    assert np.abs(formula - erf).max() > 1e-4


def _copy_from_torch(ours: temporal.TemporalTransformer, ref) -> None:
    """Temporal_Transformer_Cls weights -> ours (torch linears are [out, in])."""
    t = lambda p: jnp.asarray(p.detach().numpy())  # noqa: E731
    ours.cls_token[...] = t(ref.cls_token)
    ours.pos_embedding[...] = t(ref.pos_embedding)
    for blk, (attn, ff) in zip(ours.blocks, ref.temporal_transformer.layers):
        blk.norm1.scale[...], blk.norm1.bias[...] = t(attn.fn.norm.weight), t(attn.fn.norm.bias)
        blk.to_qkv.kernel[...] = t(attn.fn.fn.to_qkv.weight).T
        blk.to_out.kernel[...] = t(attn.fn.fn.to_out[0].weight).T
        blk.to_out.bias[...] = t(attn.fn.fn.to_out[0].bias)
        blk.norm2.scale[...], blk.norm2.bias[...] = t(ff.fn.norm.weight), t(ff.fn.norm.bias)
        blk.fc1.kernel[...], blk.fc1.bias[...] = t(ff.fn.fn.net[0].weight).T, t(ff.fn.fn.net[0].bias)
        blk.fc2.kernel[...], blk.fc2.bias[...] = t(ff.fn.fn.net[3].weight).T, t(ff.fn.fn.net[3].bias)


@pytest.mark.slow
def test_matches_dferclip_temporal_transformer_cls():
    """Against the PyTorch Temporal_Transformer_Cls (tests/dferclip_torch.py), DFER-CLIP's sizes
    (512 wide, 8 x 64 heads, MLP 1024, 16 frames), two layers, LayerNorms and biases randomised."""
    torch.manual_seed(0)
    ref = dferclip_torch.TemporalTransformerCls(16, 512, 2, 8, 1024, 64)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ours = temporal.TemporalTransformer(512, 16, depth=2, rngs=nnx.Rngs(0))
    _copy_from_torch(ours, ref)
    x = np.random.default_rng(0).normal(size=(3, 16, 512)).astype(np.float32)
    for frames in (16, 9):  # all positions, and a shorter clip (positions cut to T+1)
        with torch.no_grad():
            want = ref(torch.from_numpy(x[:, :frames])).numpy()
        got = np.asarray(jax.jit(lambda m, v: m(v))(ours, jnp.asarray(x[:, :frames])))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_initialisation_follows_dferclip():
    """Class token and positions N(0, 1); linears as torch.nn.Linear: U(+-1/sqrt(fan_in)),
    biases included; LayerNorms identity."""
    model = temporal.TemporalTransformer(512, 16, rngs=nnx.Rngs(3))
    pos = np.asarray(model.pos_embedding[...])
    assert pos.shape == (1, 17, 512) and abs(pos.std() - 1.0) < 0.03 and abs(pos.mean()) < 0.03
    blk = model.blocks[0]
    for layer, fan_in in ((blk.to_qkv, 512), (blk.to_out, 512), (blk.fc1, 512), (blk.fc2, 1024)):
        bound = fan_in**-0.5
        w = np.asarray(layer.kernel[...])
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
        assert abs(w.std() - bound / np.sqrt(3)) < 0.02 * bound  # uniform, not lecun normal
        if layer.bias is not None:
            b = np.asarray(layer.bias[...])
            assert np.abs(b).max() <= bound and b.std() > 0.4 * bound  # not zeros
    assert np.all(np.asarray(blk.norm1.scale[...]) == 1)
    assert np.all(np.asarray(blk.norm1.bias[...]) == 0)
