"""DFER metrics: confusion matrix, per-class recall, UAR and WAR.

UAR (unweighted average recall) is the mean of per-class recalls and does not reward predicting the
majority class; WAR (weighted average recall) is plain accuracy. The confusion matrix is the one thing
accumulated over an evaluation, on device, so padded eval rows (mask False) are dropped exactly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def confusion_matrix(
    *, predictions: jax.Array, labels: jax.Array, mask: jax.Array | None = None, num_classes: int
) -> jax.Array:
    """Counts (true class, predicted class) pairs.

    Args:
      predictions: [B] int predicted classes.
      labels: [B] int true classes.
      mask: [B] bool, False for padding rows that must not count; None counts every row.
      num_classes: C.

    Returns:
      [C, C] int32, rows true class, columns predicted class.
    """
    weights = jnp.ones_like(labels, jnp.int32) if mask is None else mask.astype(jnp.int32)
    flat = labels.astype(jnp.int32) * num_classes + predictions.astype(jnp.int32)
    counts = jnp.zeros((num_classes * num_classes,), jnp.int32).at[flat].add(weights)
    return counts.reshape(num_classes, num_classes)


def summarize(*, confusion: np.ndarray, class_names: list[str] | None = None) -> dict:
    """UAR, WAR and per-class recall from a [C, C] confusion matrix (rows true, columns predicted).

    Classes with no examples are left out of UAR (their recall is undefined) and reported as None.
    """
    confusion = np.asarray(confusion, np.int64)
    support = confusion.sum(axis=1)
    hits = np.diag(confusion)
    present = support > 0
    recall = np.where(present, hits / np.maximum(support, 1), np.nan)
    total = support.sum()
    names = class_names or [str(c) for c in range(len(support))]
    return {
        "uar": float(recall[present].mean()) if present.any() else float("nan"),
        "war": float(hits.sum() / total) if total else float("nan"),
        "num_examples": int(total),
        "per_class_recall": {n: (float(r) if p else None) for n, r, p in zip(names, recall, present)},
    }
