"""Motion-difference weighting of spatio-temporal visual tokens (DESIGN.md section 2.2).

GRACE "highlights expression-relevant facial motion and filters out facial dynamics irrelevant to the
emotion". Here motion is measured per frame and per ViT patch as the mean absolute difference to the
previous frame, turned into a distribution over the clip's T*P tokens by a temperature softmax, and
mixed with the uniform distribution so that static but informative regions keep some mass. The result
is both the visual marginal of the token-level OT and the weights of a motion-weighted patch pooling.

Motion is a fixed prior, not a learned attention: in the feature variant the features are taken under
stop_gradient so that the encoder cannot learn to fabricate feature differences to attract mass.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["pixel_motion", "feature_motion", "motion_weights", "select_top_k", "pool_patches"]


def pixel_motion(images: jax.Array, patch_size: int) -> jax.Array:
    """Per-patch motion in pixel space.

    Args:
      images: [B,T,H,W,C] frames (any normalisation; differences are per channel).
      patch_size: the ViT patch size; H and W must be multiples of it.

    Returns:
      [B,T,P] mean |x_t - x_{t-1}| inside each patch, P = (H/ps)*(W/ps) in ViT raster order. Frame 0
      has no predecessor and takes frame 1's value (a clip of one frame has zero motion).
    """
    b, t, h, w, c = images.shape
    if h % patch_size or w % patch_size:
        raise ValueError(f"frame size {h}x{w} is not a multiple of the patch size {patch_size}")
    if t < 2:
        return jnp.zeros((b, t, (h // patch_size) * (w // patch_size)), images.dtype)
    diff = jnp.abs(images[:, 1:] - images[:, :-1]).astype(jnp.float32)  # [B,T-1,H,W,C]
    gh, gw = h // patch_size, w // patch_size
    diff = diff.reshape(b, t - 1, gh, patch_size, gw, patch_size, c)
    m = diff.mean(axis=(3, 5, 6)).reshape(b, t - 1, gh * gw)  # [B,T-1,P]
    return jnp.concatenate([m[:, :1], m], axis=1)  # [B,T,P]


def feature_motion(patches: jax.Array) -> jax.Array:
    """Per-patch motion in feature space.

    Args:
      patches: [B,T,P,D] patch features.

    Returns:
      [B,T,P] mean |f_t - f_{t-1}| over features (frame 0 takes frame 1's value).
    """
    f = jax.lax.stop_gradient(patches).astype(jnp.float32)
    if f.shape[1] < 2:
        return jnp.zeros(f.shape[:3], jnp.float32)
    m = jnp.abs(f[:, 1:] - f[:, :-1]).mean(-1)  # [B,T-1,P]
    return jnp.concatenate([m[:, :1], m], axis=1)  # [B,T,P]


def motion_weights(motion: jax.Array, *, tau: float, alpha: float) -> jax.Array:
    """Motion -> a distribution over each clip's T*P tokens.

    ``w = (1 - alpha) * softmax(m / tau) + alpha / (T*P)`` with m divided by its per-clip maximum, so
    tau is in units of "fraction of the clip's strongest motion" whatever the input scale.

    Args:
      motion: [B,T,P] non-negative motion.
      tau: softmax temperature (> 0); small tau concentrates mass on the most moving tokens.
      alpha: uniform mixing in [0, 1]; 1 ignores motion.

    Returns:
      [B,T,P], each clip summing to 1.
    """
    if not tau > 0:
        raise ValueError(f"motion temperature tau must be > 0, got {tau}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"motion uniform mixing alpha must be in [0, 1], got {alpha}")
    b, t, p = motion.shape
    m = motion.reshape(b, t * p).astype(jnp.float32)
    # A static clip has max 0: dividing by max(.,tiny) keeps it at all-zeros -> uniform weights.
    m = m / jnp.maximum(m.max(axis=-1, keepdims=True), 1e-12)
    w = (1.0 - alpha) * jax.nn.softmax(m / tau, axis=-1) + alpha / (t * p)
    return w.reshape(b, t, p)


def select_top_k(
    tokens: jax.Array, weights: jax.Array, k: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Keeps the k tokens with the largest weight per clip, to bound the OT problem size.

    Args:
      tokens: [B,M,D] visual tokens (M = T*P).
      weights: [B,M] their weights.
      k: tokens kept (0 or >= M keeps all, in order).

    Returns:
      (tokens [B,k,D], weights [B,k] renormalised to sum 1, indices [B,k] into M).
    """
    b, m, _ = tokens.shape
    if k <= 0 or k >= m:
        return tokens, weights, jnp.broadcast_to(jnp.arange(m), (b, m))
    top_w, idx = jax.lax.top_k(weights, k)  # [B,k]
    top_t = jnp.take_along_axis(tokens, idx[..., None], axis=1)  # [B,k,D]
    return top_t, top_w / top_w.sum(-1, keepdims=True), idx


def pool_patches(patches: jax.Array, weights: jax.Array) -> jax.Array:
    """Motion-weighted mean of each frame's patches.

    Args:
      patches: [B,T,P,D]; weights: [B,T,P] (any positive scale, renormalised per frame).

    Returns:
      [B,T,D].
    """
    w = weights / jnp.maximum(weights.sum(-1, keepdims=True), 1e-12)  # [B,T,P], per-frame sum 1
    return jnp.einsum("btp,btpd->btd", w.astype(patches.dtype), patches)
