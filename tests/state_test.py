"""The train state: lr-0 groups are split off as frozen (no gradient, no optimizer slots), and the
abstract state a checkpoint restores into keeps every leaf's shape, dtype and sharding."""

import jax
import jax.numpy as jnp
import numpy as np

from grace_jax import sharding
from grace_jax import state as state_lib
from grace_jax.configs import base


def _paths(tree) -> set[str]:
    return {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)}


def test_frozen_groups_are_split_off_the_trained_parameters(tiny_config):
    config = tiny_config("unused", 1)
    config.optim.groups = base.get_config().optim.groups  # the text tower frozen (lr 0)
    graphdef, state, tx = state_lib.create_state(config, state_lib.load_tokenizer(config.model), 10)
    assert set(state) == {"params", "frozen", "rest", "opt_state", "step"}
    trained, frozen = _paths(state["params"]), _paths(state["frozen"])
    assert frozen and all("text_model" in p or "text_projection" in p or "logit_scale" in p for p in frozen)
    assert not any("text_model" in p for p in trained) and any("vision_model" in p for p in trained)
    # Optimizer slots only for what is trained: the slot trees mirror "params", never "frozen".
    slots = _paths(state["opt_state"])
    assert any("vision_model" in p for p in slots) and not any("text_model" in p for p in slots)
    assert state["step"].dtype == jnp.int32 and int(state["step"]) == 0
    # The same split, read again from the groups, as grace_jax.export splits an exported model.
    groups = state_lib.groups(config.optim)
    assert [g.lr for g in groups] == [lr for _, lr in config.optim.groups]
    from flax import nnx

    model = nnx.merge(graphdef, state["params"], state["frozen"], state["rest"])
    _, params_again, frozen_again, _ = nnx.split(model, state_lib.trainable(groups), nnx.Param, ...)
    assert _paths(params_again) == trained and _paths(frozen_again) == frozen


def test_abstract_state_keeps_shapes_dtypes_and_shardings(tiny_config):
    config = tiny_config("unused", 1)
    _, state, _ = state_lib.create_state(config, state_lib.load_tokenizer(config.model), 10)
    mesh = sharding.make_mesh(dict(zip(config.mesh.axes, config.mesh.shape)))
    shardings = sharding.state_shardings(mesh, state)
    abstract = state_lib.abstract_state(state, shardings)
    for x, a, s in zip(jax.tree.leaves(state), jax.tree.leaves(abstract), jax.tree.leaves(shardings)):
        assert isinstance(a, jax.ShapeDtypeStruct)
        assert a.shape == np.shape(x) and a.dtype == x.dtype and a.sharding == s
