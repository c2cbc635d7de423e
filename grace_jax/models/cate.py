"""CATE: Coarse-to-fine Affective Text Enhancement (docs/model.md).

Fine text (per-class FACS cue sentences, and per-clip captions when a dataset has them) is encoded by
the frozen CLIP text tower into token features. CATE then

1. refines each class's fine tokens by cross-attending to that class's coarse prompt tokens (the learned
   contexts, the class name and the EOT summary), added through a tanh gate initialised at zero, so at
   initialisation the fine tokens are CLIP's own and the refinement is learned from there;
2. scores every token with a small MLP; a softmax over the real word tokens (0 < p < EOT) is the
   token importance: the text marginal of the OT problem. Padding, SOT and EOT get exactly zero mass.
   The scorer's output layer starts at zero, so importance starts uniform over words.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["masked_softmax", "CATE"]


def masked_softmax(scores: jax.Array, mask: jax.Array) -> jax.Array:
    """Softmax over the last axis restricted to ``mask``; masked entries are exactly 0.

    Rows with no valid entry come out all-zero rather than NaN.
    """
    scores = scores.astype(jnp.float32)
    # A finite fill keeps every intermediate (and its gradient) finite; where() then zeroes exactly.
    neg = jnp.where(mask, scores, -1e30)
    top = jax.lax.stop_gradient(jnp.max(neg, axis=-1, keepdims=True))
    e = jnp.where(mask, jnp.exp(neg - top), 0.0)
    return e / jnp.maximum(e.sum(-1, keepdims=True), 1e-30)


class CATE(nnx.Module):
    """Gated cross-attention refinement of fine tokens and token-importance scoring."""

    def __init__(self, dim: int, *, heads: int = 8, dtype=jnp.float32, rngs: nnx.Rngs):
        if dim % heads:
            raise ValueError(f"CATE width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.norm_q = nnx.LayerNorm(dim, epsilon=1e-5, dtype=dtype, rngs=rngs)
        self.norm_kv = nnx.LayerNorm(dim, epsilon=1e-5, dtype=dtype, rngs=rngs)
        self.q = nnx.Linear(dim, dim, dtype=dtype, rngs=rngs)
        self.k = nnx.Linear(dim, dim, dtype=dtype, rngs=rngs)
        self.v = nnx.Linear(dim, dim, dtype=dtype, rngs=rngs)
        self.out = nnx.Linear(dim, dim, dtype=dtype, rngs=rngs)
        self.gate = nnx.Param(jnp.zeros(()))
        hidden = max(dim // 4, 8)
        self.score_norm = nnx.LayerNorm(dim, epsilon=1e-5, dtype=dtype, rngs=rngs)
        self.score_hidden = nnx.Linear(dim, hidden, dtype=dtype, rngs=rngs)
        self.score_out = nnx.Linear(hidden, 1, kernel_init=nnx.initializers.zeros, dtype=dtype, rngs=rngs)

    def refine(self, fine: jax.Array, coarse: jax.Array, coarse_mask: jax.Array) -> jax.Array:
        """Fine tokens attend to their class's coarse tokens.

        Args:
          fine: [C,Lf,D] fine token features.
          coarse: [C,Lc,D] coarse prompt token features.
          coarse_mask: [C,Lc] bool, keys that may be attended (contexts, name, EOT).

        Returns:
          [C,Lf,D] refined tokens (== fine at initialisation).
        """
        c, lf, d = fine.shape
        lc = coarse.shape[1]
        h = self.heads
        q = self.q(self.norm_q(fine)).reshape(c, lf, h, d // h)
        kv = self.norm_kv(coarse)
        k = self.k(kv).reshape(c, lc, h, d // h)
        v = self.v(kv).reshape(c, lc, h, d // h)
        att = jnp.einsum("cqhd,ckhd->chqk", q, k).astype(jnp.float32) * (d // h) ** -0.5
        att = jnp.where(coarse_mask[:, None, None, :], att, -1e30)
        att = jax.nn.softmax(att, axis=-1).astype(v.dtype)  # [C,H,Lf,Lc]
        mixed = jnp.einsum("chqk,ckhd->cqhd", att, v).reshape(c, lf, d)  # [C,Lf,D]
        return fine + jnp.tanh(self.gate[...]).astype(fine.dtype) * self.out(mixed)

    def importance(self, tokens: jax.Array, valid: jax.Array) -> jax.Array:
        """[...,L,D] tokens, [...,L] valid -> [...,L] text marginal (0 outside ``valid``)."""
        s = self.score_out(jax.nn.gelu(self.score_hidden(self.score_norm(tokens))))[..., 0]
        return masked_softmax(s, valid)

    def __call__(
        self,
        fine: jax.Array,
        fine_valid: jax.Array,
        coarse: jax.Array,
        coarse_mask: jax.Array,
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Refines the class cue tokens.

        Args:
          fine: [C,Lf,D]; fine_valid: [C,Lf] word tokens (0 < p < EOT).
          coarse: [C,Lc,D]; coarse_mask: [C,Lc] attendable coarse tokens.

        Returns:
          (refined [C,Lf,D], mass [C,Lf] summing to 1 over valid tokens, pooled [C,D] the
          mass-weighted mean of the refined tokens: the fine class embedding).
        """
        refined = self.refine(fine, coarse, coarse_mask)
        mass = self.importance(refined, fine_valid)
        pooled = jnp.einsum("cl,cld->cd", mass.astype(refined.dtype), refined)  # [C,D]
        return refined, mass, pooled
