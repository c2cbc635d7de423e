"""Mesh resolution, FSDP specs and global batches on 8 fake CPU devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from grace_jax import sharding


def test_eight_fake_devices():
    assert jax.device_count() == 8  # tests/conftest.py sets them before jax starts.


@pytest.mark.parametrize(
    "sizes,expected",
    [
        ({"data": -1}, (8, 1, 1)),
        ({"data": -1, "fsdp": 4}, (2, 4, 1)),
        ({"data": 2, "fsdp": -1, "model": 2}, (2, 2, 2)),
    ],
)
def test_mesh_shape(sizes, expected):
    assert sharding.mesh_shape(sizes, 8) == expected


@pytest.mark.parametrize("sizes", [{"data": -1, "fsdp": -1}, {"data": 3}, {"data": 2, "fsdp": 2}])
def test_bad_mesh_is_a_clear_error(sizes):
    with pytest.raises(ValueError, match="mesh"):
        sharding.mesh_shape(sizes, 8)


def test_param_spec():
    assert sharding.param_spec((768, 3072), 4) == P(None, "fsdp")
    assert sharding.param_spec((3072, 768), 4) == P("fsdp", None)
    assert sharding.param_spec((768,), 4) == P()  # small: replicated
    assert sharding.param_spec((1001, 999), 4) == P()  # nothing divisible
    assert sharding.param_spec((768, 3072), 1) == P()


def test_global_batch_and_sharded_params_compute_the_same():
    mesh = sharding.make_mesh({"data": 2, "fsdp": 4})
    batch = sharding.global_batch({"x": np.arange(32 * 16, dtype=np.float32).reshape(32, 16)}, mesh)
    assert batch["x"].shape == (32, 16)
    assert len(batch["x"].addressable_shards) == 8
    assert batch["x"].addressable_shards[0].data.shape == (4, 16)
    w = np.random.RandomState(0).randn(16, 2048).astype(np.float32)
    w_sharded = jax.device_put(w, sharding.state_shardings(mesh, w))
    assert w_sharded.sharding.spec == P(None, "fsdp")
    out = jax.jit(lambda x, w: x @ w)(batch["x"], w_sharded)
    # Against float64, within float32's error bound for a 16-term dot product (|x| @ |w| scales it):
    # elements that nearly cancel have large relative but tiny absolute rounding error.
    x64, w64 = np.asarray(batch["x"], np.float64), w.astype(np.float64)
    error = np.abs(np.asarray(out, np.float64) - x64 @ w64)
    bound = 16 * np.finfo(np.float32).eps * (np.abs(x64) @ np.abs(w64))
    assert np.all(error <= bound), float(np.max(error / bound))
    assert float(jnp.abs(out).max()) > 0
