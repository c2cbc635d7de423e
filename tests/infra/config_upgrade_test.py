"""Stored configs of older runs: grace_jax.infra.config_upgrade fills the fields added since with the
values those runs used, wherever a stored config is read (runs.read_config, configs/run.py, resume)."""

import copy
import json
import os
import shutil

import ml_collections
import pytest

from grace_jax.configs import base
from grace_jax.infra import config_upgrade, errors
from grace_jax.run import resume


def _base_json() -> dict:
    return json.loads(base.get_config().to_json_best_effort())


def _without(stored: dict, fields) -> dict:
    """`stored` as a run made before `fields` existed wrote it."""
    old = copy.deepcopy(stored)
    for field in fields:
        *parents, leaf = field.split(".")
        section = old
        for key in parents:
            section = section[key]
        del section[leaf]
    return old


def _get(tree, field):
    for key in field.split("."):
        tree = tree[key]
    return tree


ADDED = [field for field, _ in config_upgrade.ADDED_FIELDS]


def test_every_added_field_is_a_field_of_the_base_config():
    stored = _base_json()
    assert config_upgrade.missing_fields(stored) == []
    assert config_upgrade.upgrade(copy.deepcopy(stored)) == stored  # a current config is left as it is
    assert len(set(ADDED)) == len(ADDED)


def test_an_old_config_gets_the_values_its_run_used():
    old = _without(_base_json(), ADDED)
    assert config_upgrade.missing_fields(old) == ADDED
    upgraded = config_upgrade.upgrade(old)
    assert config_upgrade.missing_fields(upgraded) == []
    # The behaviour before each field: fixed clip-max motion weights, balanced OT with an absolute
    # epsilon, the class name in the prompt, CLIP mean/std, no jitter.
    assert _get(upgraded, "model.motion.weighting") == "fixed"
    assert _get(upgraded, "model.motion.normalize") == "clip_max"
    assert _get(upgraded, "model.ot.tau_visual") == 1.0 and _get(upgraded, "model.ot.relative_epsilon") is False
    assert _get(upgraded, "model.prompt.text") == "name" and _get(upgraded, "model.prompt.token_ids") is None
    assert _get(upgraded, "data.normalize") == "clip" and _get(upgraded, "data.brightness") == 0.0
    assert _get(upgraded, "optim.grad_accum_steps") == 1 and _get(upgraded, "train.memory_check") is True
    # Fields the old config has keep their values, even where they differ from the current defaults.
    partial = _without(_base_json(), ["model.motion.weighting"])
    partial["model"]["motion"]["normalize"] = "clip_max"
    partial["data"]["brightness"] = 0.5
    upgraded = config_upgrade.upgrade(partial)
    assert _get(upgraded, "model.motion.weighting") == "fixed"
    assert _get(upgraded, "data.brightness") == 0.5 and _get(upgraded, "model.ot.tau_visual") == 0.5


def test_a_locked_config_dict_is_upgraded_too():
    config = ml_collections.ConfigDict(_without(_base_json(), ["data.augment", "model.clip.architecture"]))
    config.lock()
    assert config_upgrade.upgrade(config) is config
    assert config.data.augment == "grace" and config.model.clip.architecture is None
    config.model.clip.architecture = {"projection_dim": 8}  # None-valued fields still take a section later
    assert config.model.clip.architecture.projection_dim == 8


def _old_run(tmp_path, step: int | None = 5) -> str:
    workdir = tmp_path / "old_run"
    workdir.mkdir()
    (workdir / "config.json").write_text(json.dumps(_without(_base_json(), ADDED)))
    if step is not None:  # what resume.check looks at: the newest step folder of checkpoints/last
        (workdir / "checkpoints" / "last" / str(step)).mkdir(parents=True)
    return str(workdir)


def test_stored_configs_are_read_upgraded(tmp_path):
    from grace_jax.run import runs

    workdir = _old_run(tmp_path, step=None)
    from_runs = runs.read_config(workdir)
    from grace_jax.configs import run as run_config

    from_run_py = run_config.get_config(workdir)
    for config in (from_runs, from_run_py):
        assert config.model.motion.weighting == "fixed" and config.model.motion.top_k == 0
        assert config.data.augment == "grace" and config.train.compilation_cache == "auto"
    assert isinstance(from_run_py.optim.lr_decay_epochs, tuple)  # configs/run.py's tuples stay


def test_resuming_an_old_run_compares_the_values_it_used(tmp_path):
    workdir = _old_run(tmp_path)
    # The current defaults differ from what the old run did: each such field is named, as any change is.
    with pytest.raises(errors.ConfigError, match='model.motion.weighting: "fixed" in config.json, "learned" now'):
        resume.check(base.get_config(), workdir)
    # The run's own config (configs/run.py:<workdir>) resumes it with nothing changed.
    from grace_jax.configs import run as run_config

    assert resume.check(run_config.get_config(workdir), workdir) == []


def test_an_old_run_dir_still_loads(tiny_run, tmp_path):
    """The tiny run's config.json without every added field whose value is the one older code used:
    read back, it is the run's config again, and the model restores from its checkpoint."""
    from grace_jax.run import runs

    old_dir = str(tmp_path / "old_tiny")
    shutil.copytree(tiny_run[0], old_dir, ignore=shutil.ignore_patterns("*.lock", "jax_cache"))
    with open(os.path.join(old_dir, "config.json")) as f:
        stored = json.load(f)
    old_values = dict(config_upgrade.ADDED_FIELDS)
    same = [field for field in ADDED if _get(stored, field) == old_values[field]]
    assert len(same) >= 10, same  # most added fields kept their old behaviour as the default
    with open(os.path.join(old_dir, "config.json"), "w") as f:
        json.dump(_without(stored, same), f)
    run = runs.load(old_dir, "last", kind="run")
    assert json.loads(run.config.to_json_best_effort()) == stored
    assert run.step == 6
