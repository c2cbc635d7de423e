"""Optimizer with parameter groups: per-group learning rate, frozen groups, step-decay schedule.

DFER-CLIP's recipe trains the CLIP image tower, the new modules and the prompt contexts at different
learning rates and keeps the text tower frozen. Groups are chosen by regular expressions over parameter
paths written `a/b/0/c` (e.g. `clip/vision_model/encoder/layers/3/mlp/fc1/kernel`); the first group
whose pattern matches wins, and a group with learning rate 0 is frozen (no update, no momentum state).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from grace_jax.infra.errors import ConfigError


class Group(NamedTuple):
    name: str
    pattern: str
    lr: float


def path_str(path) -> str:
    """A pytree key path as `a/b/0/c`."""
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def first_match(text: str, groups: Sequence[Group]) -> Group | None:
    """The group deciding for the parameter path `text`: the first whose pattern matches."""
    return next((g for g in groups if re.search(g.pattern, text)), None)


def group_labels(params, groups: Sequence[Group]):
    """A pytree like `params` holding each leaf's group name; raises if a leaf matches no group."""
    unmatched = []

    def label(path, _):
        text = path_str(path)
        group = first_match(text, groups)
        if group is None:
            unmatched.append(text)
            return None
        return group.name

    labels = jax.tree_util.tree_map_with_path(label, params)
    if unmatched:
        raise ConfigError(
            f"optim.groups: {len(unmatched)} parameters match no group pattern, e.g. {unmatched[:3]}; "
            "add a catch-all group such as ('.*', 1e-2) last."
        )
    return labels


def lr_schedule(
    base_lr: float, *, decay_steps: Sequence[int], decay_factor: float, warmup_steps: int = 0
) -> optax.Schedule:
    """Step decay: `base_lr`, multiplied by `decay_factor` at each step in `decay_steps`."""
    schedule = optax.piecewise_constant_schedule(base_lr, {int(s): decay_factor for s in decay_steps})
    if warmup_steps <= 0:
        return schedule

    def with_warmup(step):  # Decay steps stay absolute, unlike optax.join_schedules' shifted count.
        return jnp.where(step < warmup_steps, base_lr * step / warmup_steps, schedule(step))

    return with_warmup


OPTIMIZERS = ("sgd", "adamw")


def make_optimizer(
    params,
    *,
    groups: Sequence[Group],
    momentum: float,
    weight_decay: float,
    decay_steps: Sequence[int],
    decay_factor: float,
    warmup_steps: int = 0,
    name: str = "sgd",
) -> optax.GradientTransformation:
    """Per-group optimizer; every group shares the schedule's shape at its own learning rate.

    `sgd` is SGD with momentum and coupled weight decay (PyTorch `torch.optim.SGD` semantics, the
    DFER-CLIP recipe); `adamw` is AdamW with decoupled weight decay (for models trained from scratch,
    such as the demo's tiny CLIP).

    Args:
      params: the parameter pytree the optimizer will update (e.g. an `nnx.State` of `nnx.Param`s).
      groups: ordered groups; first matching pattern wins; lr 0 freezes a group.
      momentum, weight_decay: settings shared by every trained group (momentum is SGD's only).
      decay_steps, decay_factor, warmup_steps: the learning-rate schedule, in optimizer steps.
      name: "sgd" or "adamw".
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"config.optim.optimizer must be 'sgd' or 'adamw', got {name!r}.")
    transforms = {}
    for g in groups:
        if g.lr == 0:
            transforms[g.name] = optax.set_to_zero()
        else:
            schedule = lr_schedule(g.lr, decay_steps=decay_steps, decay_factor=decay_factor, warmup_steps=warmup_steps)
            if name == "adamw":
                transforms[g.name] = optax.adamw(schedule, weight_decay=weight_decay)
            else:
                transforms[g.name] = optax.chain(
                    optax.add_decayed_weights(weight_decay),
                    optax.sgd(schedule, momentum=momentum or None),
                )
    return optax.multi_transform(transforms, group_labels(params, groups))
