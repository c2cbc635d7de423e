"""DevicePrefetcher over the trainer's grain loader: the same batches in the same order, on the
devices with the step's sharding; checkpoint state of the consumed batches, not of the prefetched
ones (directly and through orbax); errors from the host side reach the consumer."""

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from grace_jax import sharding
from grace_jax.data import input_pipeline as ip
from grace_jax.data import prefetch


def _loader(data_dir, seed=0):
    from grace_jax.configs import base

    data = base.get_config().data
    data.num_frames, data.image_size, data.num_workers, data.augment_on_device = 4, 16, 0, False
    return ip.make_train_loader(
        data_dir, data, global_batch_size=8, seed=seed, shard_index=0, shard_count=1, normalize_on_host=False
    )


@pytest.fixture(scope="module")
def mesh():
    return sharding.make_mesh({"data": -1})


def _put(mesh):
    return lambda batch: sharding.global_batch(batch, mesh)


def _take(it, n):
    return [jax.device_get(next(it)) for _ in range(n)]


def _assert_same(a_batches, b_batches):
    assert len(a_batches) == len(b_batches) > 0
    for a, b in zip(a_batches, b_batches):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)


@pytest.mark.parametrize("depth", [1, 3])
def test_prefetching_keeps_batch_order_and_content(synthfer_dir, mesh, depth):
    plain = iter(_loader(synthfer_dir))
    expected = [next(plain) for _ in range(9)]  # 48 clips / 8: crosses the epoch boundary at 6
    fetched = prefetch.DevicePrefetcher(iter(_loader(synthfer_dir)), _put(mesh), depth=depth)
    got = [next(fetched) for _ in range(9)]
    assert got[0]["video"].sharding == sharding.batch_sharding(mesh)  # on the devices, split
    assert len(got[0]["video"].sharding.device_set) == 8
    _assert_same([jax.device_get(b) for b in got], expected)
    # Different batches really were compared (a reader stuck on one batch would pass above).
    assert not np.array_equal(expected[0]["video"], expected[1]["video"])
    fetched.close()


def test_state_is_that_of_the_consumed_batches(synthfer_dir, mesh):
    plain = iter(_loader(synthfer_dir, seed=5))
    states = [plain.get_state()]
    for _ in range(4):
        next(plain)
        states.append(plain.get_state())
    fetched = prefetch.DevicePrefetcher(iter(_loader(synthfer_dir, seed=5)), _put(mesh), depth=2)
    assert fetched.get_state() == states[0]
    for k in range(1, 4):
        next(fetched)
        # The thread has taken batches k+1, k+2 by now (or soon); the state stays at batch k.
        assert fetched.get_state() == states[k]
    fetched.close()


def test_restore_continues_after_the_consumed_batches(synthfer_dir, mesh):
    plain = iter(_loader(synthfer_dir, seed=2))
    expected = [next(plain) for _ in range(7)]
    first = prefetch.DevicePrefetcher(iter(_loader(synthfer_dir, seed=2)), _put(mesh), depth=2)
    _take(first, 3)
    state = first.get_state()
    _assert_same(_take(first, 2), expected[3:5])  # going on directly
    first.close()
    second = prefetch.DevicePrefetcher(iter(_loader(synthfer_dir, seed=2)), _put(mesh))
    _take(second, 1)  # some prefetching already happened before the restore
    second.set_state(state)
    _assert_same(_take(second, 4), expected[3:7])
    second.close()


def test_close_then_next_continues_without_a_gap(synthfer_dir, mesh):
    plain = iter(_loader(synthfer_dir, seed=1))
    expected = [next(plain) for _ in range(4)]
    fetched = prefetch.DevicePrefetcher(iter(_loader(synthfer_dir, seed=1)), _put(mesh), depth=2)
    got = _take(fetched, 2)
    fetched.close()  # drops the prefetched batches 3 and 4
    got += _take(fetched, 2)
    _assert_same(got, expected)
    fetched.close()


def test_orbax_saves_the_consumed_state(synthfer_dir, mesh, tmp_path):
    plain = iter(_loader(synthfer_dir, seed=4))
    expected = [next(plain) for _ in range(5)]
    fetched = prefetch.DevicePrefetcher(iter(_loader(synthfer_dir, seed=4)), _put(mesh), depth=2)
    _take(fetched, 3)
    with ocp.CheckpointManager(str(tmp_path / "ckpt")) as manager:
        manager.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(fetched)))
        manager.wait_until_finished()
    fetched.close()
    fresh = prefetch.DevicePrefetcher(iter(_loader(synthfer_dir, seed=4)), _put(mesh))
    with ocp.CheckpointManager(str(tmp_path / "ckpt")) as manager:
        manager.restore(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
    _assert_same(_take(fresh, 2), expected[3:5])
    fresh.close()


class _Host:
    """A host iterator with grain's state methods that fails at a given batch."""

    def __init__(self, fail_at=None, length=None):
        self.i, self.fail_at, self.length = 0, fail_at, length

    def __next__(self):
        if self.i == self.fail_at:
            raise ValueError(f"record {self.i} is unreadable")
        if self.i == self.length:
            raise StopIteration
        self.i += 1
        return {"x": np.full((8,), self.i, np.float32)}

    def get_state(self):
        return self.i

    def set_state(self, state):
        self.i = state


def test_host_errors_and_the_end_reach_the_consumer(mesh):
    fetched = prefetch.DevicePrefetcher(_Host(fail_at=2), _put(mesh))
    assert [float(next(fetched)["x"][0]) for _ in range(2)] == [1.0, 2.0]
    with pytest.raises(ValueError, match="record 2 is unreadable"):
        next(fetched)
    ended = prefetch.DevicePrefetcher(_Host(length=3), _put(mesh), depth=2)
    assert [float(b["x"][0]) for b in ended] == [1.0, 2.0, 3.0]
    assert ended.get_state() == 3


def test_depth_must_be_positive(mesh):
    with pytest.raises(ValueError, match="depth must be >= 1"):
        prefetch.DevicePrefetcher(_Host(), _put(mesh), depth=0)
