"""Opening a finished (or converted) run: its config, class names and checkpointed model state.

Shared by `grace_jax.predict`, `grace_jax.evaluate` and `grace_jax.export`. A run directory holds
`config.json` (the resolved config, written by training or by `grace_jax.convert`), `classes.json`
and orbax checkpoints under `checkpoints/{best,last}`. No command-line flags are defined here, so every
command can import it.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import jax
import ml_collections

from grace_jax import sharding
from grace_jax import state as state_lib
from grace_jax.infra import errors, paths
from grace_jax.run import checkpointing
from grace_jax.models import grace


class Run(NamedTuple):
    config: ml_collections.ConfigDict
    class_names: list[str]
    graphdef: Any
    state: dict  # {"params", "frozen", "rest", "opt_state", "step"}
    step: int
    checkpoint: str  # "best" or "last": the one restored


def read_config(workdir: str) -> ml_collections.ConfigDict:
    path = paths.join(workdir, "config.json")
    if not paths.exists(path):
        raise errors.NotFoundError(
            f"{path}: not found; --workdir must be a grace_jax run (a folder written by grace_jax.main "
            "or grace_jax.convert)."
        )
    return ml_collections.ConfigDict(json.loads(paths.read_text(path)))


def read_class_names(directory: str, num_classes: int) -> list[str]:
    path = paths.join(directory, "classes.json")
    if not paths.exists(path):
        return [str(i) for i in range(num_classes)]
    names = json.loads(paths.read_text(path))
    if len(names) != num_classes:
        raise ValueError(f"{path}: {len(names)} class names but the config has {num_classes} classes.")
    return [str(n) for n in names]


def load_run(workdir: str, which: str = "best", *, mesh: jax.sharding.Mesh | None = None) -> Run:
    """Restores a run's model; `best` falls back to `last` when the run has no best checkpoint (a
    converted run, or one stopped before its first evaluation). With `mesh`, the state is restored
    sharded as training shards it."""
    if which not in ("best", "last"):
        raise ValueError(f"checkpoint must be 'best' or 'last', got {which!r}")
    workdir = paths.resolve(workdir)
    config = read_config(workdir)
    # Inference reads no captions: a tokenizer is needed only to build the class texts.
    tokenizer = state_lib.load_tokenizer(config.model) if grace.needs_tokenizer(config.model) else None
    graphdef, state, _ = state_lib.create_state(config, tokenizer, steps_per_epoch=1)
    if mesh is None:
        # One device, whatever mesh the run was saved from: what predicting one clip needs, and the
        # same placement (so the same numbers) as a model loaded by grace_jax.export.
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        shardings = jax.tree.map(lambda _: device, state)
    else:
        shardings = sharding.state_shardings(mesh, state)
    abstract = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings
    )
    del state
    ckpt = checkpointing.Checkpoints(paths.join(workdir, "checkpoints"))
    try:
        use_best = which == "best" and ckpt.best.latest_step() is not None
        step, state = ckpt.restore(abstract, best=use_best)
    finally:
        ckpt.close()
    names = read_class_names(workdir, config.model.num_classes)
    return Run(config, names, graphdef, state, int(step), "best" if use_best else "last")
