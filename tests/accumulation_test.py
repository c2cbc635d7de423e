"""Gradient accumulation is the one big step; the memory check refuses a step that cannot fit and
names an accumulation that can (and that one then trains)."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grace_jax import memory, sharding, steps, train
from grace_jax import state as state_lib
from grace_jax.infra import errors

# Each test compiles and runs full-size accumulated training steps.
pytestmark = pytest.mark.slow


def _setup(tiny_config, batch_size: int):
    config = tiny_config("unused", 1)
    config.optim.batch_size = batch_size
    # SGD with a large learning rate: the parameter change is the gradient itself, scaled up, so a
    # wrong gradient cannot hide (Adam's first step would turn every gradient into +-lr).
    config.optim.optimizer = "sgd"
    config.optim.warmup_steps = 0
    config.optim.groups = ((".*", 0.5),)
    graphdef, state, tx = state_lib.create_state(config, state_lib.load_tokenizer(config.model), steps_per_epoch=1)
    mesh = sharding.make_mesh(dict(zip(config.mesh.axes, config.mesh.shape)))  # all 8 fake devices
    state_sh = sharding.state_shardings(mesh, state)
    batch_sh = sharding.batch_sharding(mesh)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    def jitted(accum):
        return jax.jit(
            functools.partial(
                steps.train_step,
                graphdef=graphdef,
                tx=tx,
                loss_cfg=dict(config.model.loss),
                image_size=config.data.image_size,
                accum_steps=accum,
            ),
            in_shardings=(state_sh, batch_sh),
            out_shardings=(state_sh, replicated),
        )

    rng = np.random.default_rng(0)
    n, t, s = batch_size, config.data.num_frames, config.data.image_size
    mask = np.ones(n, bool)
    mask[-3:] = False  # padding rows in the last micro-batches: they must not count, nor tilt the weights
    batch = {
        "video": rng.integers(0, 256, (n, t, s, s, 3), dtype=np.uint8),
        "label": rng.integers(0, 7, n).astype(np.int32),
        "mask": mask,
    }
    batch = jax.device_put(batch, batch_sh)
    state = jax.device_put(state, state_sh)
    return config, state, batch, jitted


def test_an_accumulated_step_equals_the_big_step(tiny_config):
    _, state, batch, jitted = _setup(tiny_config, 32)
    big_state, big = jitted(1)(state, batch)
    for accum in (2, 4):  # micro-batches of 16 and 8 clips over 8 devices
        acc_state, acc = jitted(accum)(state, batch)
        moved = 0.0
        for a, b, before in zip(
            jax.tree.leaves(big_state["params"]), jax.tree.leaves(acc_state["params"]), jax.tree.leaves(state["params"])
        ):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=0)
            moved = max(moved, float(jnp.abs(a - before).max()))
        assert moved > 1e-3  # the step did move the parameters: the comparison means something
        for key in ("loss", "ce", "accuracy", "grad_norm"):
            if key in big:
                np.testing.assert_allclose(float(acc[key]), float(big[key]), rtol=1e-5, err_msg=key)
        assert int(acc_state["step"]) == int(big_state["step"]) == 1


def test_check_fits_names_the_accumulation_that_fits(tiny_config):
    config, state, batch, jitted = _setup(tiny_config, 32)
    compiled = {k: memory.step_bytes(jitted(k).lower(state, batch).compile()) for k in (1, 2, 4)}
    assert compiled[1] > compiled[2] > compiled[4]  # activations shrink with the micro-batch
    limit = (compiled[1] + compiled[2]) // 2
    common = dict(
        batch_size=32,
        parallel=8,
        accum_steps=1,
        bytes_with=lambda k: memory.step_bytes(jitted(k).lower(state, batch).compile()),
    )
    with pytest.raises(errors.ConfigError) as e:
        memory.check_fits(compiled[1], limit, "a small card", **common)
    said = str(e.value)
    assert "--config.optim.grad_accum_steps=2 (2 clips per device at once" in said and "fits" in said, said
    assert "optim.batch_size=32 over 8 devices" in said and "a small card" in said, said
    memory.check_fits(compiled[2], limit, "a small card", **dict(common, accum_steps=2))  # fits: no error
    # Nothing fits: the message names what shrinks the rest.
    with pytest.raises(errors.ConfigError, match=r"remat=True.*dtype=bfloat16"):
        memory.check_fits(compiled[1], compiled[4] // 2, "a tiny card", **common)


def _sizes(text: str) -> dict[int, float]:
    """{grad_accum_steps: MiB} from a memory-check message."""
    out = {}
    first = re.search(r"needs ([\d.]+) MiB per device .*grad_accum_steps=(\d+):", text)
    out[int(first.group(2))] = float(first.group(1))
    for k, mib in re.findall(r"--config\.optim\.grad_accum_steps=(\d+) \([^)]*\) needs ([\d.]+) MiB", text):
        out[int(k)] = float(mib)
    return out


def test_the_trainer_refuses_a_step_that_cannot_fit_and_trains_the_named_one(tiny_config, synthfer_dir, tmp_path):
    """Before step 1 (nothing trained, no checkpoint): one error naming optim.grad_accum_steps; that
    setting then trains."""
    config = tiny_config(synthfer_dir, 1)
    config.optim.batch_size = 32
    config.train.device_memory_gib = 1e-6  # 1 KiB: nothing fits, every candidate is listed
    with pytest.raises(errors.ConfigError) as e:
        train.train_and_evaluate(config, str(tmp_path / "none"))
    sizes = _sizes(str(e.value))
    assert sorted(sizes) == [1, 2, 4] and sizes[1] > sizes[2] > sizes[4], str(e.value)
    last = tmp_path / "none" / "checkpoints" / "last"
    assert not [p.name for p in last.iterdir() if p.name.isdigit()] if last.exists() else True  # no step saved

    config.train.device_memory_gib = (sizes[1] + sizes[2]) / 2 / 1024
    with pytest.raises(errors.ConfigError, match=r"--config\.optim\.grad_accum_steps=2 \(2 clips per device at once"):
        train.train_and_evaluate(config, str(tmp_path / "some"))

    config.optim.grad_accum_steps = 2
    summary = train.train_and_evaluate(config, str(tmp_path / "fits"))
    assert summary["step"] == 1 and summary["num_examples"] == 20
