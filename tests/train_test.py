"""End to end on SynthFER with the tiny model: a run writes what it promises, and a run stopped
halfway and resumed ends with exactly the parameters of an uninterrupted run."""

import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from grace_jax import state as state_lib
from grace_jax import steps, train
from grace_jax.configs import base


def _params(workdir: str):
    path = os.path.join(workdir, "checkpoints", "last")
    with ocp.CheckpointManager(path) as manager:
        step = manager.latest_step()
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return step, restored["state"]["params"]


def test_run_writes_config_metrics_plots_checkpoints(tiny_run):
    workdir, summary = tiny_run
    for name in (
        "config.json",
        "classes.json",
        "metrics.jsonl",
        "confusion_matrix.png",
        "learning_curves.png",
        "final_metrics.json",
        "checkpoints/last",
        "checkpoints/best",
    ):
        assert os.path.exists(os.path.join(workdir, name)), name
    assert summary["num_examples"] == 20  # Every test clip exactly once, padding excluded.
    assert 0.0 <= summary["uar"] <= 1.0 and len(summary["per_class_recall"]) == 7
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert [r["step"] for r in records if r["split"] == "train"] == [2, 4, 6]
    assert all(np.isfinite(r["loss"]) for r in records if "loss" in r)
    assert any(r["split"] == "eval" and "uar" in r for r in records)
    with open(os.path.join(workdir, "classes.json")) as f:
        assert json.load(f)[0] == "happiness"


@pytest.mark.slow
def test_train_then_resume_matches_uninterrupted(tiny_run, tiny_config, synthfer_dir, tmp_path):
    straight, _ = tiny_run
    resumed = str(tmp_path / "resumed")
    train.train_and_evaluate(tiny_config(synthfer_dir, 3), resumed)  # "Crashes" after step 3
    train.train_and_evaluate(tiny_config(synthfer_dir, 6), resumed)  # and is restarted.
    step_a, params_a = _params(straight)
    step_b, params_b = _params(resumed)
    assert step_a == step_b == 6
    leaves_a, leaves_b = jax.tree.leaves(params_a), jax.tree.leaves(params_b)
    assert len(leaves_a) == len(leaves_b) > 0
    for a, b in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(a, b)


def test_class_count_mismatch_is_a_clear_error(tiny_config, synthfer_dir, tmp_path):
    config = tiny_config(synthfer_dir, 1)
    config.model.num_classes = 11
    with pytest.raises(ValueError, match="manifest.json lists 7 classes"):
        train.train_and_evaluate(config, str(tmp_path / "bad"))


@pytest.mark.slow
def test_relative_workdir_trains_saves_and_predicts(tiny_config, synthfer_dir, tmp_path, monkeypatch):
    # The README's commands use --workdir=runs/demo: orbax refuses relative checkpoint paths, so the
    # trainer must resolve it before the first (mid-run) save, and predict must find the run again.
    from grace_jax import predict

    monkeypatch.chdir(tmp_path)
    config = tiny_config(synthfer_dir, 4)
    config.train.ckpt_every_steps = 2
    train.train_and_evaluate(config, "runs/rel")
    step, _ = _params(str(tmp_path / "runs" / "rel"))
    assert step == 4
    assert not any("orbax-checkpoint-tmp" in p for p in os.listdir(tmp_path / "runs/rel/checkpoints/last"))
    clip = tmp_path / "frames"
    clip.mkdir()
    from PIL import Image

    for i in range(4):
        Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(clip / f"{i + 1:05d}.jpg")
    results, errors = predict.run("runs/rel", ["frames"], "runs/rel/predictions", face_crop="none")
    assert not errors and len(results) == 1
    assert os.path.isfile(tmp_path / "runs/rel/predictions/predictions.json")


@pytest.mark.slow
def test_trains_on_a_folder_dataset_of_its_own_three_classes(tiny_config, tmp_path):
    """Own videos labelled calm/happy/tense (data_prep --dataset=folder, classes from the labels) train
    with model.num_classes=0: the count, the names and the prompts come from the manifest, and the
    run's config.json records them for predict."""
    import sys

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from video_fixtures import grey_clip, write_video

    from data_prep import job
    from grace_jax import predict

    videos = tmp_path / "own"
    videos.mkdir()
    names = ("calm", "happy", "tense")
    for split, count in (("train", 9), ("test", 3)):
        rows = [f"{split}{i}.mp4,{names[i % 3]}" for i in range(count)]
        for i in range(count):
            write_video(str(videos / f"{split}{i}.mp4"), grey_clip(4 + i % 3, 16, 16) // (1 + i % 3), "mpeg4")
        (tmp_path / f"{split}.csv").write_text("\n".join(rows) + "\n")
    data = str(tmp_path / "shards")
    manifest = job.build(
        job.BuildConfig(
            dataset="folder",
            videos=str(videos),
            out=data,
            frame_size=32,
            workers=1,
            progress=False,
            labels=(f"train={tmp_path / 'train.csv'}", f"test={tmp_path / 'test.csv'}"),
        )
    )
    assert manifest["class_names"] == list(names)
    config = tiny_config(data, 2)
    config.model.num_classes = 0  # the data's
    workdir = str(tmp_path / "run")
    summary = train.train_and_evaluate(config, workdir)
    assert summary["num_examples"] == 3 and len(summary["per_class_recall"]) == 3
    with open(os.path.join(workdir, "config.json")) as f:
        model = json.load(f)["model"]
    assert model["num_classes"] == 3 and model["class_names"] == list(names)
    assert model["class_cues"][1] == "a face with a happy expression."
    with open(os.path.join(workdir, "classes.json")) as f:
        assert json.load(f) == list(names)
    results, errors = predict.run(
        workdir, [str(videos / "test0.mp4")], str(tmp_path / "pred"), pictures=False, face_crop="none"
    )
    assert not errors and set(results[0]["probabilities"]) == set(names)


def _one_step(config, batch):
    import functools

    from grace_jax.text.tokenizer import Tokenizer

    graphdef, state, tx = state_lib.create_state(config, Tokenizer.from_pretrained("builtin:tiny"), 100)
    step = jax.jit(functools.partial(
        steps.train_step, graphdef=graphdef, tx=tx, loss_cfg=dict(config.model.loss)
    ))  # fmt: skip
    return step(state, batch)


@pytest.mark.slow
def test_remat_train_step_equals_the_plain_one(tiny_config, synthfer_dir):
    # The trainer's step differentiates part of the parameters (the text tower is frozen): remat must
    # work there, not only under nnx.grad of the whole model, and change nothing but memory.
    rng = np.random.default_rng(0)
    batch = {
        "video": rng.integers(0, 256, (2, 4, 32, 32, 3), np.uint8),
        "label": np.array([1, 5], np.int32),
        "mask": np.ones(2, bool),
    }
    results = []
    for remat in (False, True):
        config = tiny_config(synthfer_dir, 1)
        config.model.clip.remat = remat
        config.optim.groups = base.get_config().optim.groups  # the text tower frozen (lr 0)
        results.append(_one_step(config, batch))
    (plain, m_plain), (remat, m_remat) = results
    np.testing.assert_allclose(m_plain["loss"], m_remat["loss"], rtol=1e-6)
    leaves = jax.tree.leaves(plain["params"]), jax.tree.leaves(remat["params"])
    assert len(leaves[0]) == len(leaves[1]) > 0
    for a, b in zip(*leaves):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
