"""Metrics against hand-computed values."""

import math

import jax.numpy as jnp
import numpy as np

from grace_jax import metrics


def test_confusion_matrix_drops_masked_rows():
    labels = jnp.array([0, 0, 1, 2, 2, 2, 1])
    preds = jnp.array([0, 1, 1, 2, 0, 2, 2])
    mask = jnp.array([True, True, True, True, True, True, False])
    cm = metrics.confusion_matrix(predictions=preds, labels=labels, mask=mask, num_classes=3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])


def test_uar_and_war_by_hand():
    cm = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    out = metrics.summarize(confusion=cm, class_names=["a", "b", "c"])
    # Recalls 1/2, 1/1, 2/3; WAR = 4/6.
    assert math.isclose(out["uar"], (0.5 + 1.0 + 2 / 3) / 3)
    assert math.isclose(out["war"], 4 / 6)
    assert out["per_class_recall"] == {"a": 0.5, "b": 1.0, "c": 2 / 3}
    assert out["num_examples"] == 6


def test_majority_class_predictor_has_low_uar_high_war():
    labels = np.array([0] * 90 + [1] * 10)
    cm = metrics.confusion_matrix(predictions=jnp.zeros(100, jnp.int32), labels=jnp.asarray(labels), num_classes=2)
    out = metrics.summarize(confusion=np.asarray(cm))
    assert math.isclose(out["war"], 0.9) and math.isclose(out["uar"], 0.5)


def test_absent_class_is_left_out_of_uar():
    out = metrics.summarize(confusion=np.array([[2, 0, 0], [0, 0, 0], [1, 0, 1]]))
    assert out["per_class_recall"]["1"] is None
    assert math.isclose(out["uar"], (1.0 + 0.5) / 2)
