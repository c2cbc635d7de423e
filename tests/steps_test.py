"""The steps' building blocks on a toy model, in seconds: gradient accumulation is the one big step
(padding rows included), logits come back in batch order, and the host-side helpers read what the
trainer and grace_jax.evaluate feed them. tests/accumulation_test.py checks the same on GRACE."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grace_jax import sharding, steps


def _toy_forward(params, probe, batch):
    """A linear classifier with a masked-mean cross entropy, the shape `accumulated_grads` takes; the
    probe enters the loss so that its gradient is visible (1 per real clip, summed)."""
    logits = batch["x"] @ params["w"] + params["b"]
    mask = batch["mask"].astype(jnp.float32)
    ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), batch["label"][:, None], axis=1)[:, 0]
    loss = (ce * mask).sum() / jnp.maximum(mask.sum(), 1.0) + probe * mask.sum()
    aux = {"ot_converged": jnp.ones(logits.shape[0], bool), "not_kept": logits}
    return loss, ({"ce": (ce * mask).sum() / jnp.maximum(mask.sum(), 1.0)}, logits, aux)


def _toy(batch_size: int = 12):
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(5, 3)), jnp.float32), "b": jnp.zeros(3, jnp.float32)}
    mask = np.ones(batch_size, bool)
    mask[-3:] = False  # padding rows at the end: all in the last micro-batches' strided rows
    batch = {
        "x": jnp.asarray(rng.normal(size=(batch_size, 5)), jnp.float32),
        "label": jnp.asarray(rng.integers(0, 3, batch_size), jnp.int32),
        "mask": jnp.asarray(mask),
    }
    return params, batch


@pytest.mark.parametrize("accum_steps", [2, 3, 4])
def test_accumulated_grads_equal_the_big_batch(accum_steps):
    params, batch = _toy()
    (terms, logits, aux), (grads, probe) = steps.accumulated_grads(_toy_forward, params, batch)
    (a_terms, a_logits, a_aux), (a_grads, a_probe) = steps.accumulated_grads(
        _toy_forward, params, batch, accum_steps=accum_steps
    )
    assert float(jnp.abs(grads["w"]).max()) > 1e-3  # a gradient worth comparing
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(a_grads)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(a_terms["ce"]), float(terms["ce"]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(a_logits), np.asarray(logits), rtol=1e-6)  # batch order
    # The probe's gradient is weighted like every other one: the big batch's, 9 real clips.
    np.testing.assert_allclose(float(a_probe), float(probe), rtol=1e-6)
    assert float(probe) == 9.0
    # Only the OT summaries' inputs are kept; with micro-batches, stacked one row per micro-batch.
    assert set(aux) == set(a_aux) == {"ot_converged"}
    assert a_aux["ot_converged"].shape == (accum_steps, 12 // accum_steps)


def test_ot_summaries_are_empty_without_ot_and_means_with_it():
    assert steps.ot_summaries({"motion_weights": jnp.ones((2, 4, 9))}) == {}
    keys = steps._KEPT_AUX  # noqa: SLF001 -- the summaries read exactly what accumulation keeps
    aux = {k: jnp.arange(4, dtype=jnp.float32) for k in keys}
    aux["ot_converged"] = jnp.array([True, True, False, True])
    out = steps.ot_summaries(aux)
    assert set(out) == set(keys)
    assert float(out["ot_converged"]) == 0.75 and float(out["ot_iterations"]) == 1.5


def test_process_rows_of_a_single_process_are_the_whole_batch():
    mesh = sharding.make_mesh({"data": -1})  # all 8 fake devices
    assert steps.process_rows(sharding.batch_sharding(mesh), 16) == {"shard_index": 0, "shard_count": 1}
