"""DFER-CLIP's temporal model: a small pre-LN transformer over per-frame features.

Mirrors ``Temporal_Transformer_Cls`` of DFER-CLIP (Zhao & Liu, BMVC 2023): a learnable class token and
learnable positions (both drawn from N(0, 1), as ``torch.randn`` there), ``depth`` pre-LN blocks of
multi-head attention (qkv without bias) and a GELU MLP, no final norm; the class token's output is the
video embedding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["TemporalTransformer"]


class _Block(nnx.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, mlp_dim: int, *, dtype, rngs: nnx.Rngs):
        inner = heads * dim_head
        self.heads, self.dim_head = heads, dim_head
        self.norm1 = nnx.LayerNorm(dim, epsilon=1e-5, dtype=dtype, rngs=rngs)
        self.to_qkv = nnx.Linear(dim, 3 * inner, use_bias=False, dtype=dtype, rngs=rngs)
        self.to_out = nnx.Linear(inner, dim, dtype=dtype, rngs=rngs)
        self.norm2 = nnx.LayerNorm(dim, epsilon=1e-5, dtype=dtype, rngs=rngs)
        self.fc1 = nnx.Linear(dim, mlp_dim, dtype=dtype, rngs=rngs)
        self.fc2 = nnx.Linear(mlp_dim, dim, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, n, _ = x.shape
        qkv = self.to_qkv(self.norm1(x)).reshape(b, n, 3, self.heads, self.dim_head)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B,N,H,Dh]
        att = jnp.einsum("bqhd,bkhd->bhqk", q, k) * self.dim_head**-0.5
        att = jax.nn.softmax(att.astype(jnp.float32), axis=-1).astype(v.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", att, v).reshape(b, n, -1)  # [B,N,H*Dh]
        x = x + self.to_out(out)
        # torch.nn.GELU() is the exact erf form.
        return x + self.fc2(jax.nn.gelu(self.fc1(self.norm2(x)), approximate=False))


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
        self.blocks = nnx.List(
            [_Block(dim, heads, dim_head, mlp_dim, dtype=dtype, rngs=rngs) for _ in range(depth)]
        )

    def __call__(self, frames: jax.Array) -> jax.Array:
        b, t, d = frames.shape
        if t > self.num_frames:
            raise ValueError(
                f"{t} frames but the temporal model has positions for {self.num_frames}"
            )
        cls = jnp.broadcast_to(self.cls_token[...].astype(frames.dtype), (b, 1, d))
        x = jnp.concatenate([cls, frames], axis=1)  # [B,T+1,D]
        x = x + self.pos_embedding[...][:, : t + 1].astype(frames.dtype)
        for block in self.blocks:
            x = block(x)
        return x[:, 0]  # [B,D]
