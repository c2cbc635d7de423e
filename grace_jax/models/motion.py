"""Motion-difference weighting of spatio-temporal visual tokens (docs: model, "Motion weighting").

GRACE "highlights expression-relevant facial motion and filters out facial dynamics irrelevant to the
emotion". Motion is measured per frame and per ViT patch as the mean absolute difference to the
previous frame (pixels or patch features) and turned into weights ``w`` [B,T,P], a distribution over
the clip's T*P tokens, mixed with the uniform distribution so that static but informative regions keep
some mass. ``w`` is the prior of the token-level OT's visual side and the weights of a motion-weighted
patch pooling.

Two weightings:

- ``fixed`` (the ablation): a temperature softmax of the motion itself. It follows whatever moves
  most, which is often not the expression (head drift, blinks, lighting).
- ``learned`` (GRACE's default): :class:`MotionHead` scores every token from its feature difference
  (what changed, not only how much) and from motion magnitudes set against the frame's and the clip's
  typical motion, trained end to end; its score starts as the fixed prior's logit (a learned gain on
  it), so training starts from the fixed weighting and learns which motion to keep.

Normalisation (``robust``, the default) subtracts each frame's median motion (motion of the whole
frame is not local motion) and divides by the median over frames of each frame's largest motion,
capped at 1: a single frame pair that moves much more than the rest (a face-crop jump, a flash)
saturates with the clip's strongest ordinary motion instead of pushing every other token towards zero
as the clip maximum (``clip_max``, kept as the old behaviour) does.

The features are taken under stop_gradient so that the encoder cannot learn to fabricate feature
differences to attract mass; the head's own parameters are trained.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = [
    "MotionHead",
    "NORMALIZATIONS",
    "feature_motion",
    "mix_uniform",
    "motion_weights",
    "normalize_motion",
    "pixel_motion",
    "pool_patches",
    "select_top_k",
]

NORMALIZATIONS = ("robust", "clip_max")


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


def normalize_motion(motion: jax.Array, normalize: str = "robust") -> jax.Array:
    """Motion [B,T,P] -> [B,T,P] in [0, 1].

    "robust": each frame's median motion subtracted (what moves the whole frame, a camera shake, a
    crop jump, a flash, is not local motion), then divided by the median over frames of each frame's
    largest motion and capped at 1 (one outlier frame pair cannot take the clip's scale);
    "clip_max": divided by the clip's largest motion. A static clip stays all zeros.
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"model.motion.normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    m = motion.astype(jnp.float32)
    if normalize == "clip_max":
        scale = m.max(axis=(1, 2), keepdims=True)
    else:
        m = jnp.maximum(m - jnp.median(m, axis=2, keepdims=True), 0.0)
        scale = jnp.median(m.max(axis=2), axis=1)[:, None, None]  # [B,1,1]
    return jnp.minimum(m / jnp.maximum(scale, 1e-12), 1.0)


def motion_weights(motion: jax.Array, *, tau: float, alpha: float, normalize: str = "clip_max") -> jax.Array:
    """Motion -> a distribution over each clip's T*P tokens (the fixed weighting).

    ``w = (1 - alpha) * softmax(normalize_motion(m) / tau) + alpha / (T*P)``, so tau is in units of
    "fraction of the clip's strong motion" whatever the input scale.

    Args:
      motion: [B,T,P] non-negative motion.
      tau: softmax temperature (> 0); small tau concentrates mass on the most moving tokens.
      alpha: uniform mixing in [0, 1]; 1 ignores motion.
      normalize: see :func:`normalize_motion`.

    Returns:
      [B,T,P], each clip summing to 1.
    """
    _check(tau, alpha)
    return mix_uniform(normalize_motion(motion, normalize) / tau, alpha)


def _check(tau: float, alpha: float) -> None:
    if not tau > 0:
        raise ValueError(f"motion temperature tau must be > 0, got {tau}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"motion uniform mixing alpha must be in [0, 1], got {alpha}")


def mix_uniform(scores: jax.Array, alpha: float) -> jax.Array:
    """Scores [B,T,P] -> ``(1 - alpha) * softmax over T*P + alpha / (T*P)``, [B,T,P]."""
    b, t, p = scores.shape
    w = jax.nn.softmax(scores.reshape(b, t * p).astype(jnp.float32), axis=-1)
    return ((1.0 - alpha) * w + alpha / (t * p)).reshape(b, t, p)


def _log_contrast(magnitude: jax.Array) -> tuple[jax.Array, jax.Array]:
    """[B,T,P] magnitudes -> (token vs its frame's median, frame median vs the clip's median), in
    log units: large for motion that stands out locally, and for frames that move more than usual."""
    log_m = jnp.log(magnitude + 1e-3)
    frame = jnp.median(log_m, axis=2, keepdims=True)  # [B,T,1]
    clip = jnp.median(frame, axis=1, keepdims=True)  # [B,1,1]
    return log_m - frame, jnp.broadcast_to(frame - clip, log_m.shape)


class MotionHead(nnx.Module):
    """Learned motion weighting: a per-token score from what changed and how much, relative to the clip.

    Inputs per token (t, p): the feature difference ``f[t,p] - f[t-1,p]`` (zero at t = 0) under a layer
    norm, and four scalars: the log pixel and feature motion against its frame's median and the
    frame's median against the clip's. Score = ``MLP(inputs) + gain * prior_logit`` with the MLP's
    output layer and ``gain`` initialised to 0 and 1: the head starts as the fixed weighting.
    """

    def __init__(self, dim: int, *, hidden: int = 64, dtype=jnp.float32, rngs: nnx.Rngs):
        self.norm = nnx.LayerNorm(dim, epsilon=1e-5, dtype=dtype, rngs=rngs)
        self.change = nnx.Linear(dim, hidden, dtype=dtype, rngs=rngs)
        self.scalars = nnx.Linear(4, hidden, dtype=jnp.float32, rngs=rngs)
        self.out = nnx.Linear(hidden, 1, kernel_init=nnx.initializers.zeros, dtype=jnp.float32, rngs=rngs)
        self.gain = nnx.Param(jnp.ones(()))

    def __call__(self, patches: jax.Array, pixel: jax.Array, prior_logit: jax.Array) -> jax.Array:
        """Token scores.

        Args:
          patches: [B,T,P,D] patch features (taken under stop_gradient here).
          pixel: [B,T,P] pixel motion (``pixel_motion``).
          prior_logit: [B,T,P] the fixed weighting's logit (normalised motion / tau).

        Returns:
          [B,T,P] scores; ``mix_uniform`` turns them into weights.
        """
        f = jax.lax.stop_gradient(patches)
        diff = jnp.concatenate([jnp.zeros_like(f[:, :1]), f[:, 1:] - f[:, :-1]], axis=1)  # [B,T,P,D]
        feat = jnp.abs(diff.astype(jnp.float32)).mean(-1)  # [B,T,P]
        scalars = jnp.stack([*_log_contrast(jax.lax.stop_gradient(pixel)), *_log_contrast(feat)], -1)
        h = self.change(self.norm(diff)).astype(jnp.float32) + self.scalars(scalars)  # [B,T,P,H]
        score = self.out(jax.nn.gelu(h))[..., 0]  # [B,T,P]
        return score + self.gain[...] * jax.lax.stop_gradient(prior_logit)


def select_top_k(tokens: jax.Array, weights: jax.Array, k: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Keeps the k most weighted tokens of each clip, k // T from every frame, to bound the OT size.

    Taking them per frame keeps every frame in the problem: over the whole clip, ties (uniform
    weights of a static clip) would keep the first frames only.

    Args:
      tokens: [B,T,P,D] visual tokens.
      weights: [B,T,P] their weights.
      k: tokens kept per clip (0, or >= T*P, keeps all in order; otherwise max(k // T, 1) per frame).

    Returns:
      (tokens [B,K,D], weights [B,K] renormalised to sum 1, indices [B,K] into T*P), K = T * (k // T).
    """
    b, t, p, d = tokens.shape
    if k <= 0 or k >= t * p:
        idx = jnp.broadcast_to(jnp.arange(t * p), (b, t * p))
        return tokens.reshape(b, t * p, d), weights.reshape(b, t * p), idx
    per_frame = max(k // t, 1)
    top_w, idx = jax.lax.top_k(weights, per_frame)  # [B,T,k']
    top_t = jnp.take_along_axis(tokens, idx[..., None], axis=2)  # [B,T,k',D]
    flat = idx + (jnp.arange(t) * p)[None, :, None]  # [B,T,k'] into T*P
    top_w = top_w.reshape(b, t * per_frame)
    return top_t.reshape(b, t * per_frame, d), top_w / top_w.sum(-1, keepdims=True), flat.reshape(b, -1)


def pool_patches(patches: jax.Array, weights: jax.Array) -> jax.Array:
    """Motion-weighted mean of each frame's patches.

    Args:
      patches: [B,T,P,D]; weights: [B,T,P] (any positive scale, renormalised per frame).

    Returns:
      [B,T,D].
    """
    w = weights / jnp.maximum(weights.sum(-1, keepdims=True), 1e-12)  # [B,T,P], per-frame sum 1
    return jnp.einsum("btp,btpd->btd", w.astype(patches.dtype), patches)
