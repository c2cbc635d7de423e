"""Stored configs brought up to the current fields, in one place.

A run's `config.json` (written by training, grace_jax.convert or grace_jax.export) records the config
as it was when the run was made. A field added to configs/base.py since is missing there, and the code
reads every field directly, so `upgrade` fills each missing one with the value that run used: how the
code behaved before the field existed, which is often not the current default (motion weighting was fixed
before `model.motion.weighting` made it learnable, for instance).

Every reader of a stored config calls it: `grace_jax.run.runs.read_config` (evaluate, predict, export,
the model loader), `grace_jax.run.resume.check` (a resumed run's config against the new one) and
configs/run.py (training with a run's own config). Configs built from configs/*.py hold every field
already. A field added to configs/base.py later gets its line in ADDED_FIELDS with the behaviour of
the code before it, so old runs keep loading with the same model and the same input.
"""

from __future__ import annotations

import contextlib
from typing import Any

import ml_collections

# A stored config: its JSON as read (nested dicts), or that JSON as a ConfigDict.
Config = dict | ml_collections.ConfigDict

# (dotted field, the value a run made before the field existed used), in configs/base.py's order.
ADDED_FIELDS: tuple[tuple[str, Any], ...] = (
    ("model.clip.architecture", None),  # the named `variant`
    ("model.prompt.text", "name"),  # the class name after the contexts
    ("model.prompt.token_ids", None),  # tokenise the class texts
    ("model.motion.weighting", "fixed"),  # softmax of the motion itself, no learned head
    ("model.motion.hidden", 64),
    ("model.motion.normalize", "clip_max"),  # motion divided by the clip's maximum
    ("model.motion.top_k", 0),  # every token goes into the transport
    ("model.cate.caption_tokens", 0),  # 0: the whole caption
    ("model.cate.caption_top_k", 0),  # 0: every visual token
    ("model.cate.token_ids", None),
    ("model.ot.relative_epsilon", False),  # epsilon absolute, on the 1 - cos cost
    ("model.ot.tau_visual", 1.0),  # balanced transport
    ("data.tfds", ""),
    ("data.tfds_dir", ""),
    ("data.eval_batch_size", 0),  # the training micro-batch
    ("data.normalize", "clip"),  # CLIP's mean/std
    ("data.augment", "grace"),
    ("data.brightness", 0.0),
    ("data.rotation_degrees", 0.0),
    ("data.synth_variant", "standard"),
    ("optim.grad_accum_steps", 1),
    ("optim.num_train_steps", -1),  # optim.num_epochs decides
    ("train.eval_every_steps", 0),  # train.eval_every_epochs decides
    ("train.max_nonfinite_steps", 0),  # the first non-finite step stopped the run
    ("train.memory_check", True),
    ("train.device_memory_gib", 0.0),
    ("train.compilation_cache", "auto"),
)


def missing_fields(config: Config) -> list[str]:
    """The ADDED_FIELDS that `config` lacks (whose section it has)."""
    out = []
    for field, _ in ADDED_FIELDS:
        section = _section(config, field)
        if section is not None and field.rsplit(".", 1)[1] not in section:
            out.append(field)
    return out


def upgrade(config: Config) -> Config:
    """Fills the ADDED_FIELDS that `config` (a stored config: its JSON dict, or a ConfigDict) lacks
    with the values its run used, in place; returns `config`. Fields present are left as they are,
    and so is a section the config does not have at all (not a grace_jax config section)."""
    fields = missing_fields(config)
    if not fields:
        return config
    defaults = dict(ADDED_FIELDS)
    locked = isinstance(config, ml_collections.ConfigDict)
    with config.unlocked() if locked else contextlib.nullcontext():
        for field in fields:
            _section(config, field)[field.rsplit(".", 1)[1]] = defaults[field]
    return config


def _section(config: Config, field: str) -> Config | None:
    """The mapping that holds `field`'s last part, or None when a section on the way is absent."""
    node = config
    for key in field.split(".")[:-1]:
        if not isinstance(node, (dict, ml_collections.ConfigDict)) or key not in node:
            return None
        node = node[key]
    return node if isinstance(node, (dict, ml_collections.ConfigDict)) else None
