"""DFER-CLIP's temporal model: a small pre-LN transformer over per-frame features.

Follows ``Temporal_Transformer_Cls`` of DFER-CLIP's official code (Zhao & Liu, BMVC 2023,
models/Temporal_Model.py), detail for detail:

- a learnable class token is put in front of the T frame features and learnable positions are added
  to all T+1 tokens; both are drawn from N(0, 1) (``torch.randn`` there);
- ``depth`` pre-LN residual blocks: ``x + attn(LN(x))``, then ``x + mlp(LN(x))``, LayerNorm eps 1e-5;
- attention: one bias-free linear map to q, k, v (in that order, each ``heads x dim_head``, head-major),
  scores scaled by ``dim_head ** -0.5``, softmax, then a linear output map with bias;
- MLP: linear, GELU in its **tanh approximation** (DFER-CLIP defines its own ``GELU`` module with the
  tanh formula instead of using ``torch.nn.GELU``'s exact erf form), linear;
- dropout 0 everywhere, no final LayerNorm; the class token's output is the video embedding;
- linear layers initialised as PyTorch's ``nn.Linear`` defaults (weights and biases uniform in
  +-1/sqrt(fan_in)), which is what DFER-CLIP trains from.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["TemporalTransformer", "gelu_tanh"]


def gelu_tanh(x: jax.Array) -> jax.Array:
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))): the GELU DFER-CLIP's temporal MLP uses."""
    return jax.nn.gelu(x, approximate=True)


def _torch_linear(fan_in: int, fan_out: int, *, use_bias: bool = True, dtype, rngs: nnx.Rngs):
    """``nnx.Linear`` initialised like ``torch.nn.Linear``: U(-b, b) with b = 1/sqrt(fan_in)."""
    bound = fan_in**-0.5

    def bias_init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return nnx.Linear(
        fan_in,
        fan_out,
        use_bias=use_bias,
        # kaiming_uniform(a=sqrt(5)) as torch writes it is variance_scaling(1/3, fan_in, uniform).
        kernel_init=nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
        bias_init=bias_init,
        dtype=dtype,
        rngs=rngs,
    )


class _Block(nnx.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, mlp_dim: int, *, dtype, rngs: nnx.Rngs):
        inner = heads * dim_head
        self.heads, self.dim_head = heads, dim_head
        self.norm1 = nnx.LayerNorm(dim, epsilon=1e-5, dtype=dtype, rngs=rngs)
        self.to_qkv = _torch_linear(dim, 3 * inner, use_bias=False, dtype=dtype, rngs=rngs)
        self.to_out = _torch_linear(inner, dim, dtype=dtype, rngs=rngs)
        self.norm2 = nnx.LayerNorm(dim, epsilon=1e-5, dtype=dtype, rngs=rngs)
        self.fc1 = _torch_linear(dim, mlp_dim, dtype=dtype, rngs=rngs)
        self.fc2 = _torch_linear(mlp_dim, dim, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, n, _ = x.shape
        qkv = self.to_qkv(self.norm1(x)).reshape(b, n, 3, self.heads, self.dim_head)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B,N,H,Dh]
        att = jnp.einsum("bqhd,bkhd->bhqk", q, k) * self.dim_head**-0.5
        att = jax.nn.softmax(att.astype(jnp.float32), axis=-1).astype(v.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", att, v).reshape(b, n, -1)  # [B,N,H*Dh]
        x = x + self.to_out(out)
        return x + self.fc2(gelu_tanh(self.fc1(self.norm2(x))))


class TemporalTransformer(nnx.Module):
    """[B,T,D] frame features -> [B,D] video embedding."""

    def __init__(
        self,
        dim: int,
        num_frames: int,
        *,
        depth: int = 1,
        heads: int = 8,
        dim_head: int = 64,
        mlp_dim: int = 1024,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.num_frames = num_frames
        self.cls_token = nnx.Param(jax.random.normal(rngs.params(), (1, 1, dim)))
        self.pos_embedding = nnx.Param(jax.random.normal(rngs.params(), (1, num_frames + 1, dim)))
        self.blocks = nnx.List([_Block(dim, heads, dim_head, mlp_dim, dtype=dtype, rngs=rngs) for _ in range(depth)])

    def __call__(self, frames: jax.Array) -> jax.Array:
        b, t, d = frames.shape
        if t > self.num_frames:
            raise ValueError(f"{t} frames but the temporal model has positions for {self.num_frames}")
        cls = jnp.broadcast_to(self.cls_token[...].astype(frames.dtype), (b, 1, d))
        x = jnp.concatenate([cls, frames], axis=1)  # [B,T+1,D]
        x = x + self.pos_embedding[...][:, : t + 1].astype(frames.dtype)
        for block in self.blocks:
            x = block(x)
        return x[:, 0]  # [B,D]
