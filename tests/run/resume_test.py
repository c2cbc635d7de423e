"""Resuming a workdir with another config: fields that shape what is stored are refused with both
values named; intervals and paths may change, and the run says which it took. (The same refusal
through `python -m grace_jax.main` is in cli_test.py.)"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from grace_jax import train
from grace_jax.infra import errors
from grace_jax.run import resume


def _stored(workdir) -> dict:
    with open(os.path.join(workdir, "config.json")) as f:
        return json.load(f)


def test_compare_refuses_shape_fields_and_takes_free_ones(tiny_run, tiny_config, synthfer_dir):
    stored = _stored(tiny_run[0])
    config = tiny_config(synthfer_dir, 6)
    config.model.prompt.n_ctx = 6
    config.optim.batch_size = 16
    config.seed = 3
    config.train.log_every_steps = 5
    config.optim.num_train_steps = 20
    config.data.dir = "/elsewhere/synthfer"
    config.mesh.shape = (-1, 2, 1)
    new = json.loads(config.to_json_best_effort())
    refused, taken = resume.compare(stored, new)
    assert [f for f, _, _ in refused] == ["model.prompt.n_ctx", "optim.batch_size", "seed"]
    assert ("model.prompt.n_ctx", 4, 6) in refused
    assert [f for f, _, _ in taken] == ["data.dir", "mesh.shape", "optim.num_train_steps", "train.log_every_steps"]
    # Several processes: each one's data iterator follows its devices' rows, so the mesh must stay.
    refused, _ = resume.compare(stored, new, process_count=2)
    assert "mesh.shape" in [f for f, _, _ in refused]


def test_fields_added_or_removed_since_the_run(tiny_run):
    stored = _stored(tiny_run[0])
    new = json.loads(json.dumps(stored))
    new["data"]["a_new_field"] = 1  # newer code: its default is what the old run did
    del new["model"]["logit_scale"]  # a field the run had and this config lacks
    refused, taken = resume.compare(stored, new)
    assert refused == [("model.logit_scale", 10.0, resume.ABSENT)]
    assert taken == [("data.a_new_field", resume.ABSENT, 1)]


def test_a_changed_shape_is_refused_before_anything_is_read_or_written(tiny_run, tiny_config, synthfer_dir, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(tiny_run[0], workdir)
    before = _stored(workdir)
    config = tiny_config(synthfer_dir, 6)
    config.model.prompt.n_ctx = 6
    with pytest.raises(errors.ConfigError) as e:
        train.train_and_evaluate(config, workdir)
    message = str(e.value)
    assert "model.prompt.n_ctx: 4 in config.json, 6 now" in message and "another --workdir" in message
    assert _stored(workdir) == before and not os.path.exists(os.path.join(workdir, "lock.json"))


def test_an_interval_change_is_taken_and_said(tiny_run, tiny_config, synthfer_dir, tmp_path, capsys):
    workdir = str(tmp_path / "run")
    shutil.copytree(tiny_run[0], workdir)
    config = tiny_config(synthfer_dir, 6)  # the run is finished at step 6: nothing left to train
    config.train.log_every_steps = 3
    config.train.ckpt_every_steps = 2
    train.train_and_evaluate(config, workdir)
    out = capsys.readouterr().out
    assert "Resuming with these fields from this command" in out
    assert "train.ckpt_every_steps: 1000 -> 2; train.log_every_steps: 2 -> 3" in out
    assert "Resumed from" in out and "at step 6." in out
    assert _stored(workdir)["train"]["log_every_steps"] == 3  # config.json now says what this run used


def test_a_checkpoint_that_does_not_fit_is_named_even_without_config_json(
    tiny_run, tiny_config, synthfer_dir, tmp_path
):
    # config.json lost (or edited): the comparison cannot help, the checkpoint's own shapes still do.
    workdir = str(tmp_path / "run")
    shutil.copytree(tiny_run[0], workdir)
    os.remove(os.path.join(workdir, "config.json"))
    config = tiny_config(synthfer_dir, 6)
    config.model.prompt.n_ctx = 6
    with pytest.raises(
        errors.ConfigError,
        match=r"params/prompts/ctx/value: stored \(7, 4, 64\), the config makes "
        r"\(7, 6, 64\)",
    ):
        train.train_and_evaluate(config, workdir)


def test_a_checkpoint_of_another_process_count_is_refused(tiny_run, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(tiny_run[0], workdir)
    data = workdir / "checkpoints" / "last" / "6" / "data"
    assert [p.name for p in data.glob("process_*")] == ["process_0-of-1.json"]
    (data / "process_0-of-1.json").rename(data / "process_0-of-2.json")
    with pytest.raises(errors.ConfigError, match="written by 2 processes, this job has 1"):
        resume.check(train.ml_collections.ConfigDict(_stored(workdir)), str(workdir))


def test_a_converted_run_not_yet_trained_may_change_its_data_and_batch(tiny_run):
    stored = _stored(tiny_run[0])
    new = json.loads(json.dumps(stored))
    new["optim"]["batch_size"], new["data"]["num_workers"], new["seed"] = 48, 4, 1
    new["model"]["prompt"]["n_ctx"] = 6
    refused, taken = resume.compare(stored, new, started=False)
    assert [f for f, _, _ in refused] == ["model.prompt.n_ctx"]  # the weights' shapes still decide
    assert [f for f, _, _ in taken] == ["data.num_workers", "optim.batch_size", "seed"]
    refused, _ = resume.compare(stored, new)  # once trained, they are part of the run
    assert [f for f, _, _ in refused] == ["data.num_workers", "model.prompt.n_ctx", "optim.batch_size", "seed"]
