"""GRACE's training losses (docs/model.md), as pure keyword-only functions.

Loss = ce_weight * CE(fused logits) + ot_weight * CE(OT logits) + motion_weight * CE(motion logits) +
align_weight * contrastive(clip, caption). Every term is switched off by a zero weight or by the
model not producing its input (no ``ot_logits`` when OT is off, no ``motion_logits`` without the
learned motion weighting, no ``caption_scores`` without captions).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import optax

__all__ = ["cross_entropy", "contrastive_alignment", "grace_loss"]


def _masked_mean(values: jax.Array, mask: jax.Array | None) -> jax.Array:
    if mask is None:
        return values.mean()
    mask = mask.astype(values.dtype)
    return (values * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def cross_entropy(
    *,
    logits: jax.Array,
    labels: jax.Array,
    label_smoothing: float = 0.0,
    mask: jax.Array | None = None,
) -> jax.Array:
    """Mean softmax cross-entropy.

    Args:
      logits: [B,C] float.
      labels: [B] int class indices.
      label_smoothing: in [0, 1); 0 is plain CE (DFER-CLIP's choice).
      mask: [B] bool, False for padding examples (excluded from the mean); None counts all.

    Returns:
      Scalar float32.
    """
    logits = logits.astype(jnp.float32)
    targets = jax.nn.one_hot(labels, logits.shape[-1])
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    return _masked_mean(optax.softmax_cross_entropy(logits, targets), mask)


def contrastive_alignment(
    *,
    scores: jax.Array,
    scale: float,
    mask: jax.Array | None = None,
) -> jax.Array:
    """Symmetric InfoNCE between clips and their captions (CLIP's loss on OT similarities).

    Args:
      scores: [B,B] similarity of clip i (rows) to caption j (columns); the diagonal is the true pair.
      scale: multiplies scores before the softmax (a temperature of 1/scale).
      mask: [B] bool, True where clip i has a real caption. Masked clips are neither anchors nor
        negatives. None: all clips have captions.

    Returns:
      Scalar float32 (0 when fewer than two captioned clips are present).
    """
    s = scale * scores.astype(jnp.float32)
    b = s.shape[0]
    valid = jnp.ones((b,), bool) if mask is None else mask.astype(bool)
    pair = valid[:, None] & valid[None, :]  # [B,B]
    s = jnp.where(pair, s, -1e9)
    labels = jnp.arange(b)
    clip_to_cap = optax.softmax_cross_entropy_with_integer_labels(s, labels)  # [B]
    cap_to_clip = optax.softmax_cross_entropy_with_integer_labels(s.T, labels)  # [B]
    loss = 0.5 * (_masked_mean(clip_to_cap, valid) + _masked_mean(cap_to_clip, valid))
    return jnp.where(valid.sum() >= 2, loss, 0.0)


def grace_loss(
    *,
    logits: jax.Array,
    labels: jax.Array,
    aux: Mapping[str, jax.Array],
    ce_weight: float = 1.0,
    ot_weight: float = 0.5,
    motion_weight: float = 0.0,
    align_weight: float = 0.1,
    align_scale: float = 100.0,
    label_smoothing: float = 0.0,
    mask: jax.Array | None = None,
    caption_mask: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The total GRACE loss and its terms.

    Args:
      logits: [B,C] fused prediction logits (the model's first output).
      labels: [B] int.
      aux: the model's aux dict; uses ``ot_logits`` [B,C], ``motion_logits`` [B,C] and
        ``caption_scores`` [B,B] when present.
      ce_weight, ot_weight, motion_weight, align_weight: term weights; 0 switches a term off.
      align_scale: logit scale of the caption contrastive loss.
      label_smoothing: for both CE terms.
      mask: [B] bool, False for padding examples.
      caption_mask: [B] bool, True where a clip has a caption (combined with ``mask``).

    Returns:
      (loss scalar, {"loss", "ce", "ot_ce", "motion_ce", "align"} scalars; absent terms are 0).
    """
    zero = jnp.zeros((), jnp.float32)
    ce = cross_entropy(logits=logits, labels=labels, label_smoothing=label_smoothing, mask=mask)
    ot_ce, motion_ce, align = zero, zero, zero
    if ot_weight and "ot_logits" in aux:
        ot_ce = cross_entropy(logits=aux["ot_logits"], labels=labels, label_smoothing=label_smoothing, mask=mask)
    if motion_weight and "motion_logits" in aux:
        motion_ce = cross_entropy(
            logits=aux["motion_logits"], labels=labels, label_smoothing=label_smoothing, mask=mask
        )
    if align_weight and "caption_scores" in aux:
        cmask = caption_mask
        if mask is not None:
            cmask = mask if cmask is None else cmask & mask
        align = contrastive_alignment(scores=aux["caption_scores"], scale=align_scale, mask=cmask)
    loss = ce_weight * ce + ot_weight * ot_ce + motion_weight * motion_ce + align_weight * align
    return loss, {"loss": loss, "ce": ce, "ot_ce": ot_ce, "motion_ce": motion_ce, "align": align}
