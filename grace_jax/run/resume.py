"""Before a workdir's checkpoint is restored: does the new command's config fit what is stored?

A checkpoint holds the model, the optimizer state and the data iterator's position, all shaped by
the config of the run that wrote it (`<workdir>/config.json`). Fields that decide what is stored, or
how training goes on from it (the model, the optimizer, the batch, the data and its order, the seed),
must be the same; otherwise restoring fails deep inside orbax, or worse, goes on into a different run
under the old one's name. (data.num_workers too: grain's saved iterator state holds the worker count
and refuses another.) `check` refuses with one message listing each such field with both values.

The fields below may change: they decide how long, how often, where from and on what hardware the
same run goes on. The list is an allow-list on purpose: a field added to the configs later is held
fixed until someone decides it is safe to change.
"""

from __future__ import annotations

import fnmatch
import json
from typing import Any

import ml_collections

from grace_jax.infra import config_upgrade, errors, paths

FREE_FIELDS = (
    "train.*",  # logging, evaluation and checkpoint intervals, checkpoints kept
    "optim.num_train_steps",  # how long; the learning-rate schedule (optim.lr_decay_epochs, ...) stays
    "optim.num_epochs",
    "optim.grad_accum_steps",  # the same step, over micro-batches (steps.accumulated_grads)
    "data.dir",  # the same shards, moved
    "data.tfds_dir",  # the same TFDS dataset, moved
    "data.eval_batch_size",
    "data.eval_split",
    "data.augment_on_device",  # where the crop runs; the draws are the same
    "model.clip.init",  # initial weights only: the checkpoint replaces them
    "model.clip.remat",  # recomputes the same values in the backward pass
    "distributed.*",  # addresses and timeouts of this launch
)
# With one process, orbax reshards the checkpoint onto any mesh; with several, each process's data
# iterator follows the rows its devices hold, so the mesh must stay.
SINGLE_PROCESS_FREE_FIELDS = ("mesh.*",)
# A checkpoint of step 0 without a data iterator (grace_jax.convert's) holds weights and a fresh
# optimizer state, no training yet: the data, the batch, the schedule and the seed are still open.
NOT_STARTED_FREE_FIELDS = (
    "data.*",
    "optim.batch_size",
    "optim.lr_decay_epochs",
    "optim.lr_decay",
    "optim.warmup_steps",
    "seed",
)

ABSENT = object()


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"model.prompt.n_ctx": 4, ...}: the leaves of nested dicts (a config's JSON) by dotted path."""
    if isinstance(tree, dict) and tree:
        out = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def _free(field: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(field, p) for p in patterns)


def compare(stored: dict, new: dict, *, process_count: int = 1, started: bool = True) -> tuple[list, list]:
    """(refused, taken): lists of (field, stored value, new value) for the fields that differ;
    refused ones must not change on resume, taken ones may (a missing side is `resume.ABSENT`).
    `started`: False for a checkpoint of step 0 without a data iterator (NOT_STARTED_FREE_FIELDS)."""
    patterns = FREE_FIELDS + (SINGLE_PROCESS_FREE_FIELDS if process_count == 1 else ())
    if not started:
        patterns += NOT_STARTED_FREE_FIELDS
    old, now = flatten(stored), flatten(new)
    refused, taken = [], []
    for field in sorted(set(old) | set(now)):
        a, b = old.get(field, ABSENT), now.get(field, ABSENT)
        if a == b:
            continue
        # A field newer than the stored config: the code's default for it is what that run used.
        if a is ABSENT or _free(field, patterns):
            taken.append((field, a, b))
        else:
            refused.append((field, a, b))
    return refused, taken


def _show(value) -> str:
    return "(absent)" if value is ABSENT else json.dumps(value)


def latest_step(checkpoint_dir: str) -> int | None:
    """The newest finished-looking step folder of `<workdir>/checkpoints/last`, without orbax."""
    if not paths.isdir(checkpoint_dir):
        return None
    steps = [int(name) for name in paths.listdir(checkpoint_dir) if name.isdigit()]
    return max(steps) if steps else None


def _saved_process_count(step_dir: str) -> int | None:
    data = paths.join(step_dir, "data")
    if not paths.isdir(data):
        return None  # a converted run's step 0 holds no data iterator
    counts = {name.rsplit("-of-", 1)[1].split(".")[0] for name in paths.listdir(data) if "-of-" in name}
    return int(counts.pop()) if len(counts) == 1 else None


def check(config: ml_collections.ConfigDict, workdir: str, process_count: int = 1) -> list[str]:
    """Raises errors.ConfigError if the workdir's checkpoint cannot be resumed under `config`; returns
    lines describing the fields taken from the new config (empty when nothing changed or there is no
    checkpoint to resume)."""
    step = latest_step(paths.join(workdir, "checkpoints", "last"))
    if step is None:
        return []
    step_dir = paths.join(workdir, "checkpoints", "last", str(step))
    saved_by = _saved_process_count(step_dir)
    if saved_by is not None and saved_by != process_count:
        raise errors.ConfigError(
            f"--workdir={workdir}: its checkpoint of step {step} was written by {saved_by} processes, this job "
            f"has {process_count}; resume it with {saved_by} (the data iterator's position is saved per "
            "process), or train into another --workdir."
        )
    stored_path = paths.join(workdir, "config.json")
    if not paths.exists(stored_path):
        return [f"{stored_path} is missing: the config could not be compared with the checkpoint's run."]
    # Fields added since the run was made: the values it used (a different one is a change like any other).
    try:
        stored = config_upgrade.upgrade(json.loads(paths.read_text(stored_path)))
    except ValueError as e:  # cut short by a copy or a full disk: the checkpoint's shapes still guard
        return [f"{stored_path} is damaged ({e}): the config could not be compared with the checkpoint's run."]
    new = json.loads(config.to_json_best_effort())
    started = step > 0 or paths.isdir(paths.join(step_dir, "data"))
    refused, taken = compare(stored, new, process_count=process_count, started=started)
    if refused:
        lines = "\n".join(f"  {f}: {_show(a)} in config.json, {_show(b)} now" for f, a, b in refused)
        raise errors.ConfigError(
            f"--workdir={workdir} holds a run (checkpoint of step {step}) whose {stored_path} differs from this "
            f"config in fields a resumed run cannot change:\n{lines}\n"
            "To go on with that run, drop these overrides; to train with them, use another --workdir "
            "(a fresh run)."
        )
    return [f"{f}: {_show(a)} -> {_show(b)}" for f, a, b in taken]
