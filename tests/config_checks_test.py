"""The trainer's config checks, through the shared wrapper as `grace_jax.main` runs them: each bad
config ends in one line naming the field, exit status 1, before anything is written."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from grace_jax import config_checks, train
from grace_jax.infra import cli


def _fails(config, workdir, capsys) -> str:
    """Runs the trainer through cli.guarded; returns the error line, after checking the exit and that
    the (fresh) workdir was not created."""
    fresh = not os.path.exists(workdir)
    with pytest.raises(SystemExit) as e:
        cli.guarded(lambda: train.train_and_evaluate(config, str(workdir)), "grace_jax.main")()
    err = capsys.readouterr().err
    assert e.value.code == 1, err
    assert err.startswith("grace_jax.main: error: ") and err.count("\n") == 1, err
    if fresh:
        assert not os.path.exists(workdir), "a refused run created its workdir"
    return err


@pytest.fixture
def config(tiny_config, synthfer_dir):
    return tiny_config(synthfer_dir, 1)


def test_batch_not_divisible_by_the_data_axis_is_named_in_config_terms(config, tmp_path, capsys):
    config.optim.batch_size = 12  # 8 fake devices, mesh.shape (-1, 1, 1): 8 on 'data'
    err = _fails(config, tmp_path / "w", capsys)
    assert "optim.batch_size=12 is not divisible by the 8 devices of mesh axis 'data'" in err
    assert "IndivisibleError" not in err and "NamedSharding" not in err


def test_eval_batch_and_fsdp_axes_and_mesh_shape(config, tmp_path, capsys):
    config.data.eval_batch_size = 6
    config.mesh.shape = (-1, 2, 1)
    err = _fails(config, tmp_path / "w", capsys)
    assert "data.eval_batch_size=6 is not divisible by the 8 devices of mesh axes 'data' x 'fsdp' (4 x 2)" in err
    config.data.eval_batch_size = 0
    config.mesh.shape = (3, 1, 1)
    assert "mesh.shape=(3, 1, 1) does not fit the 8 devices" in _fails(config, tmp_path / "w", capsys)


def test_unknown_clip_variant(config, tmp_path, capsys):
    config.model.clip.variant = "ViT-B/99"
    err = _fails(config, tmp_path / "w", capsys)
    assert "model.clip.variant='ViT-B/99' is not a CLIP variant" in err and "'ViT-B/16'" in err


def test_clip_init_pointing_at_a_missing_folder(config, tmp_path, capsys):
    config.model.clip.init = str(tmp_path / "clip-vit-b16")
    err = _fails(config, tmp_path / "w", capsys)
    assert f"model.clip.init={tmp_path / 'clip-vit-b16'}" in err and "no such directory" in err


def test_data_dir_missing_empty_or_without_shards(config, synthfer_dir, tmp_path, capsys):
    config.data.dir = str(tmp_path / "nowhere")
    assert f"data.dir={tmp_path / 'nowhere'}: no such folder" in _fails(config, tmp_path / "w", capsys)
    (tmp_path / "empty").mkdir()
    config.data.dir = str(tmp_path / "empty")
    assert "no manifest.json in it" in _fails(config, tmp_path / "w", capsys)
    # A manifest whose shards are gone (a copy that stopped half-way):
    partial = tmp_path / "partial"
    shutil.copytree(synthfer_dir, partial)
    for name in os.listdir(partial):
        if name.startswith("train-") and name.endswith(".array_record"):
            os.remove(partial / name)
    config.data.dir = str(partial)
    err = _fails(config, tmp_path / "w", capsys)
    assert f"data.dir={partial}: shard {partial}/train-00000-of-" in err and "is missing" in err


def test_split_and_class_count_against_the_manifest(config, tmp_path, capsys):
    config.data.eval_split = "val"
    assert "data.eval_split='val'" in _fails(config, tmp_path / "w", capsys)
    config.data.eval_split = "test"
    config.model.num_classes = 11
    err = _fails(config, tmp_path / "w", capsys)
    assert "manifest.json lists 7 classes but model.num_classes is 11" in err
    assert "--config.model.num_classes=7" in err


def test_empty_data_dir_without_synthfer(config, tmp_path, capsys):
    config.data.dir = ""
    config.data.synth_train_clips = 0
    assert "data.dir is empty: set --config.data.dir" in _fails(config, tmp_path / "w", capsys)


def test_unwritable_workdir(config, tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    err = _fails(config, tmp_path / "a_file" / "run", capsys)
    assert f"--workdir={tmp_path / 'a_file' / 'run'} cannot be created: {tmp_path / 'a_file'} is a file" in err


def test_choices_and_intervals(config, tmp_path, capsys):
    config.optim.optimizer = "adam"
    assert "optim.optimizer='adam': choose one of 'sgd', 'adamw'" in _fails(config, tmp_path / "w", capsys)
    config.optim.optimizer = "adamw"
    config.train.ckpt_every_steps = 0
    assert "train.ckpt_every_steps=0 must be > 0" in _fails(config, tmp_path / "w", capsys)


def test_class_texts_against_the_class_count(config, tmp_path, capsys):
    config.model.class_names = ("a", "b")
    assert "model.class_names has 2 entries but model.num_classes is 7" in _fails(config, tmp_path / "w", capsys)


def test_a_good_config_passes_and_returns_the_manifest(config, synthfer_dir, tmp_path):
    manifest = config_checks.check_train_config(config, str(tmp_path / "w"))
    with open(os.path.join(synthfer_dir, "manifest.json")) as f:
        assert manifest == json.load(f)
    assert not (tmp_path / "w").exists()  # checking writes nothing


def test_motion_and_transport_fields(config, tmp_path, capsys):
    """top_k without motion (tied weights: nothing to choose by), and the new alignment fields."""
    config.model.motion.enabled = False
    config.model.motion.top_k = 32
    err = _fails(config, tmp_path / "a", capsys)
    assert "model.motion.top_k=32 needs model.motion.enabled=True" in err
    config.model.motion.enabled, config.model.ot.tau_visual = True, 1.5
    assert "model.ot.tau_visual=1.5 must be in (0, 1]" in _fails(config, tmp_path / "b", capsys)
    config.model.ot.tau_visual, config.model.motion.weighting = 0.5, "magic"
    assert "model.motion.weighting='magic': choose one of 'learned', 'fixed'" in _fails(config, tmp_path / "c", capsys)
