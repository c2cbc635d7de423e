"""The train state: the model and optimizer a config describes, its parameters split into the
differentiated ones and the frozen ones.

`create_state` builds it. The trainer, `grace_jax.run.runs` (restoring a run) and `grace_jax.convert`
call it, and `grace_jax.export` splits an exported model with the same `groups` and `trainable` filter,
so training and every way of loading a trained model share one split. Kept apart from the loop
(grace_jax/train.py) so that loading a model does not import the trainer.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from grace_jax import config_checks, optim
from grace_jax.infra import errors
from grace_jax.models import grace
from grace_jax.text import tokenizer as tokenizer_lib

TrainState = dict[str, Any]  # {"params", "frozen", "rest", "opt_state", "step"}


def load_tokenizer(model_cfg: ml_collections.ConfigDict) -> tokenizer_lib.Tokenizer | None:
    """The CLIP tokenizer of the config; None when nothing needs one (the config stores its class
    texts' token ids, as converted and exported runs do, and reads no captions)."""
    if not grace.needs_tokenizer(model_cfg) and not model_cfg.cate.captions:
        return None
    source = config_checks.tokenizer_source(model_cfg.clip)
    if not source:
        raise errors.ConfigError(
            "config.model.clip.tokenizer (or model.clip.init) must name a CLIP "
            "tokenizer; use 'builtin:tiny' for the tiny random CLIP."
        )
    return tokenizer_lib.Tokenizer.from_pretrained(source)


def groups(optim_cfg: ml_collections.ConfigDict) -> list[optim.Group]:
    """The optimizer's parameter groups of `optim.groups` ((regex, lr) pairs), named group0, group1..."""
    return [optim.Group(f"group{i}", pattern, lr) for i, (pattern, lr) in enumerate(optim_cfg.groups)]


def trainable(param_groups: list[optim.Group]):
    """NNX filter: parameters whose deciding group has lr > 0 (lr-0 groups get no gradient at all)."""

    def is_trainable(path, value) -> bool:
        if not isinstance(value, nnx.Param):
            return False
        group = optim.first_match(optim.path_str(path), param_groups)
        return group is None or group.lr != 0

    return is_trainable


def abstract_state(tree: Any, shardings: Any) -> Any:
    """`tree` as `jax.ShapeDtypeStruct`s placed by `shardings`: what a checkpoint restores into."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def create_state(
    config: ml_collections.ConfigDict,
    tokenizer: tokenizer_lib.Tokenizer | None,
    steps_per_epoch: int,
) -> tuple[nnx.GraphDef, TrainState, optax.GradientTransformation]:
    """Builds the model and optimizer; returns (graphdef, state, tx).

    `state` is {"params": trained parameters, "frozen": parameters of lr-0 groups (never
    differentiated), "rest": other model variables, "opt_state", "step"}. `steps_per_epoch` turns
    `optim.lr_decay_epochs` into the schedule's steps.
    """
    model = grace.build_model(config.model, rngs=nnx.Rngs(config.seed), tokenizer=tokenizer)
    param_groups = groups(config.optim)
    graphdef, params, frozen_params, rest = nnx.split(model, trainable(param_groups), nnx.Param, ...)
    tx = optim.make_optimizer(
        params,
        groups=[g for g in param_groups if g.lr > 0] or param_groups,
        momentum=config.optim.momentum,
        weight_decay=config.optim.weight_decay,
        decay_steps=[e * steps_per_epoch for e in config.optim.lr_decay_epochs],
        decay_factor=config.optim.lr_decay,
        warmup_steps=config.optim.warmup_steps,
        name=config.optim.optimizer,
    )
    state = {
        "params": params,
        "frozen": frozen_params,
        "rest": rest,
        "opt_state": tx.init(params),
        "step": jnp.zeros((), jnp.int32),
    }
    return graphdef, state, tx
