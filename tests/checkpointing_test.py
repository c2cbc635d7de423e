"""Save/restore of a sharded state, last vs best, and the error when nothing was saved."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grace_jax import checkpointing, sharding


def test_roundtrip_keeps_values_and_shardings(tmp_path):
    mesh = sharding.make_mesh({"data": 2, "fsdp": 4})
    state = {"w": jnp.arange(64 * 512, dtype=jnp.float32).reshape(64, 512), "step": jnp.int32(7)}
    shardings = sharding.state_shardings(mesh, state)
    state = jax.device_put(state, shardings)
    ckpt = checkpointing.Checkpoints(str(tmp_path))
    ckpt.save(7, state)
    ckpt.save(7, jax.tree.map(lambda x: x * 2, state), metrics={"uar": 0.5}, best=True)
    ckpt.wait()
    abstract = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings
    )
    step, restored = ckpt.restore(abstract)
    assert step == 7 and ckpt.latest_step() == 7
    np.testing.assert_array_equal(restored["w"], state["w"])
    assert restored["w"].sharding == shardings["w"]
    _, best = ckpt.restore(abstract, best=True)
    np.testing.assert_array_equal(best["w"], 2 * np.asarray(state["w"]))
    assert ckpt.best_metrics() == {"uar": 0.5}
    ckpt.close()


def test_restore_without_checkpoint_names_directory(tmp_path):
    ckpt = checkpointing.Checkpoints(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="last"):
        ckpt.restore({"w": jax.ShapeDtypeStruct((2,), jnp.float32)})
    assert ckpt.best_metrics() is None
