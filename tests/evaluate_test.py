"""grace_jax.evaluate: its numbers against a confusion matrix counted by hand, its files, its table,
and the k-fold summary over its outputs; a TFDS dataset gives the numbers of the same clips as shards,
an exported model those of its run; usage errors and bad inputs are one line naming the flag or file."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from grace_jax import evaluate, folds
from grace_jax.data import input_pipeline, tfds_source
from grace_jax.inference import predictor
from grace_jax.infra import errors
from grace_jax.interop import hf_export
from grace_jax.run import runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_DFEW_TEST = 12


def _by_hand(workdir, data_dir, which):
    """Every test clip through the model, 5 at a time on one device; counted with Python loops."""
    run = runs.load(workdir, which)
    config = run.config
    step = jax.jit(
        functools.partial(predictor.predict_step, graphdef=run.graphdef, normalize=config.data.get("normalize", "clip"))
    )
    loader = input_pipeline.make_eval_loader(
        data_dir,
        config.data,
        split="test",
        global_batch_size=5,
        shard_index=0,
        shard_count=1,
        worker_count=0,
        normalize_on_host=False,
    )
    pairs = []
    for batch in loader:
        probs, _ = step(run.state, batch["video"])
        for label, pred, real in zip(batch["label"], np.asarray(probs).argmax(-1), batch["mask"]):
            if real:
                pairs.append((int(label), int(pred)))
    c = config.model.num_classes
    confusion = [[0] * c for _ in range(c)]
    for label, pred in pairs:
        confusion[label][pred] += 1
    recalls = {}
    for k, name in enumerate(run.class_names):
        support = sum(confusion[k])
        recalls[name] = confusion[k][k] / support if support else None
    present = [r for r in recalls.values() if r is not None]
    war = sum(confusion[k][k] for k in range(c)) / len(pairs)
    return confusion, recalls, sum(present) / len(present), war, len(pairs)


@pytest.mark.slow
def test_numbers_equal_a_confusion_matrix_counted_by_hand(tiny_run, synthfer_dir, tmp_path):
    workdir, _ = tiny_run
    out = tmp_path / "eval"
    # Batches of 8 over 8 devices: 20 clips make 3 batches, the last one padded with 4 masked rows.
    result = evaluate.evaluate_run(workdir, synthfer_dir, which="last", out_dir=str(out), batch_size=8, num_workers=0)
    confusion, recalls, uar, war, n = _by_hand(workdir, synthfer_dir, "last")
    assert result["confusion"] == confusion and result["num_examples"] == n == 20
    assert result["per_class_recall"] == pytest.approx(recalls)
    assert result["uar"] == pytest.approx(uar) and result["war"] == pytest.approx(war)
    assert (result["split"], result["checkpoint"]) == ("test", "last")
    assert result["protocol"] == {"num_frames": 4, "image_size": 32, "augment": "grace", "normalize": "clip"}
    written = json.loads((out / "test-last.json").read_text())
    assert written["confusion"] == confusion and written["uar"] == result["uar"]
    assert (out / "test-last.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = evaluate.format_table(result)
    assert f"UAR {uar:.4f}  WAR {war:.4f}  (20 clips)" in table
    assert "happiness" in table.splitlines()[1]
    # SynthFER's test split carries ground truth: the predicted class's map against a mask and a
    # share computed here with numpy loops.
    shares = _localization_by_hand(workdir, synthfer_dir, "last")
    located = result["localization"]["predicted_class_map"]["per_class"]
    assert set(located) == set(shares) and "neutral" not in located
    for name, values in shares.items():
        assert located[name]["share"] == pytest.approx(np.mean(values), rel=1e-4)
        assert located[name]["clips"] == len(values)
    assert written["localization"]["pixel_prior"]["chance"] == pytest.approx(
        result["localization"]["pixel_prior"]["chance"]
    )
    # The trained model's class maps depend on the class, and are not the motion weights again.
    assert result["ot"]["class_map_l1"] > 1e-3 and result["ot"]["class_map_prior_l1"] > 1e-3
    assert 0.0 <= result["ot"]["ot_mutual_information"] and result["ot"]["ot_converged"] > 0


def _localization_by_hand(workdir, data_dir, which):
    """{class: [share of the predicted class's map on expression tokens, per clip with any]}."""
    run = runs.load(workdir, which)
    config = run.config
    step = jax.jit(functools.partial(predictor.predict_step, graphdef=run.graphdef, normalize="clip"))
    loader = input_pipeline.make_eval_loader(
        data_dir,
        config.data,
        split="test",
        global_batch_size=5,
        shard_index=0,
        shard_count=1,
        worker_count=0,
        normalize_on_host=False,
        ground_truth=True,
    )
    out = {}
    for batch in loader:
        probs, maps = step(run.state, batch["video"])
        for i in range(len(batch["label"])):
            if not batch["mask"][i]:
                continue
            diff = {}
            for kind in ("gt_expression", "gt_distractor"):
                x = batch[kind][i].astype(np.float64) / 255.0
                d = np.abs(x[1:] - x[:-1])  # [3,32,32,3]
                diff[kind] = np.zeros((4, 16))
                for t in range(3):
                    for r in range(4):
                        for c in range(4):
                            diff[kind][t + 1, r * 4 + c] = d[t, r * 8 : (r + 1) * 8, c * 8 : (c + 1) * 8].mean()
            mask = (diff["gt_expression"] > diff["gt_distractor"]) & (diff["gt_expression"] >= 1 / 255)
            if not mask.any():
                continue
            m = np.asarray(maps["class_maps"][i, int(np.asarray(probs[i]).argmax())], np.float64)
            name = run.class_names[int(batch["label"][i])]
            out.setdefault(name, []).append(m[mask].sum() / m.sum())
    assert config.model.num_frames == 4
    return out


@pytest.mark.slow
def test_command_line_prints_the_table_and_folds_reads_the_results(tiny_run, synthfer_dir, tmp_path):
    workdir, _ = tiny_run
    out = tmp_path / "fold1"
    cmd = [sys.executable, "-m", "grace_jax.evaluate", f"--workdir={workdir}",
           f"--data_dir={synthfer_dir}", f"--out={out}", "--batch_size=8", "--num_workers=0"]  # fmt: skip
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "test-best.json").read_text())  # the run has a best checkpoint
    assert f"UAR {result['uar']:.4f}  WAR {result['war']:.4f}" in done.stdout
    assert "recall  clips" in done.stdout and "checkpoint best" in done.stdout
    # Two "folds": the k-fold summary reads grace_jax.evaluate's files.
    fold1, fold2 = tmp_path / "run1", tmp_path / "run2"
    for run_dir, uar in ((fold1, result["uar"]), (fold2, 0.25)):
        (run_dir / "evaluation").mkdir(parents=True)
        (run_dir / "evaluation" / "test-best.json").write_text(json.dumps(dict(result, uar=uar)))
    summary = folds.summarize_folds([str(fold1), str(fold2)], "best", split="test")
    assert summary["uar_mean"] == pytest.approx((result["uar"] + 0.25) / 2)
    assert summary["war_std"] == 0
    with pytest.raises(FileNotFoundError, match="grace_jax.evaluate"):
        folds.summarize_folds([str(fold1)], "last", split="test")


def test_unknown_split_and_class_count_mismatch_are_clear(tiny_run, synthfer_dir):
    workdir, _ = tiny_run
    with pytest.raises(ValueError, match="no split 'val'"):
        evaluate.evaluate_run(workdir, synthfer_dir, split="val")


# ------------------------------------------------------------------------------------ TFDS and exports
@pytest.fixture(scope="module")
def dfew(tmp_path_factory):
    """(TfdsDataset, shard folder) of the same DFEW-layout clips (8 train, 12 test, 32 px), prepared
    by data_prep.tfds_builders and by data_prep's shard writer."""
    from tfds_fixtures import dfew_layout

    from data_prep import job
    from data_prep.tfds_builders import prepare

    tmp = tmp_path_factory.mktemp("dfew")
    root = dfew_layout(tmp / "DFEW", 8, NUM_DFEW_TEST)
    done = prepare.build("dfew", root, str(tmp / "tfds"), fold=1, frame_size=32, progress=False)
    job.build(job.BuildConfig(dataset="dfew", root=root, fold=1, out=str(tmp / "shards"), frame_size=32,
                              workers=1, progress=False, command=("test",)))  # fmt: skip
    return tfds_source.TfdsDataset(done.name, str(tmp / "tfds")), str(tmp / "shards")


@pytest.fixture(scope="module")
def on_dfew_shards(tiny_run, dfew, tmp_path_factory):
    """The tiny run's best checkpoint evaluated on the DFEW shards."""
    out = tmp_path_factory.mktemp("eval_shards")
    return evaluate.evaluate_run(tiny_run[0], dfew[1], out_dir=str(out), batch_size=8, num_workers=0)


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    """(model folder, export_run's info) of the tiny run's best checkpoint, as tests/export_test.py."""
    out = str(tmp_path_factory.mktemp("exports") / "grace-tiny")
    return out, hf_export.export_run(runs.load(tiny_run[0]), out)


_SAME = ("confusion", "per_class_recall", "uar", "war", "num_examples", "class_names", "protocol")


@pytest.mark.slow
def test_a_tfds_dataset_gives_the_numbers_of_the_same_clips_as_shards(tiny_run, dfew, on_dfew_shards, tmp_path):
    from tfds_fixtures import assert_no_tensorflow

    dataset, shards = dfew
    result = evaluate.evaluate_run(tiny_run[0], dataset, out_dir=str(tmp_path), batch_size=8, num_workers=0)
    assert {k: result[k] for k in _SAME} == {k: on_dfew_shards[k] for k in _SAME}
    # The loss depends on every clip's frames; the confusion only on the predicted class, which for this
    # 6-step model on grey frames is the same for every clip (giving each clip its neighbour's frames
    # keeps the confusion and changes the loss by 4e-4, relative).
    assert result["loss"] == pytest.approx(on_dfew_shards["loss"], rel=1e-6)
    # Test clips 9..20 of dfew_layout: labels i % 7 for i = 8..19.
    assert np.asarray(result["confusion"]).sum(axis=1).tolist() == [1, 2, 2, 2, 2, 2, 1]
    assert result["num_examples"] == NUM_DFEW_TEST
    assert (result["tfds"], result["tfds_dir"], result["data_dir"]) == (dataset.name, dataset.data_dir, None)
    assert (on_dfew_shards["data_dir"], on_dfew_shards["tfds"]) == (shards, None)
    assert result["dataset"] == on_dfew_shards["dataset"] == "dfew"
    assert json.loads((tmp_path / "test-best.json").read_text())["tfds"] == dataset.name
    assert_no_tensorflow()


@pytest.mark.slow
def test_an_exported_model_gives_the_numbers_of_its_run(tiny_run, exported, synthfer_dir, tmp_path):
    workdir, _ = tiny_run
    folder, info = exported
    kw = dict(batch_size=8, num_workers=0)
    from_run = evaluate.evaluate_run(workdir, synthfer_dir, out_dir=str(tmp_path / "run"), **kw)
    from_model = evaluate.evaluate_run(None, synthfer_dir, model=folder, out_dir=str(tmp_path / "model"), **kw)
    assert {k: from_model[k] for k in _SAME} == {k: from_run[k] for k in _SAME}
    assert from_model["loss"] == from_run["loss"]  # the same weights, placement and program
    assert (from_model["checkpoint"], from_model["step"]) == (from_run["checkpoint"], from_run["step"])
    assert (info["checkpoint"], info["step"]) == (from_run["checkpoint"], from_run["step"])
    assert (from_model["model"], from_model["model_dir"], from_model["workdir"]) == (folder, folder, None)
    assert (from_run["model"], from_run["workdir"]) == (None, workdir)
    written = json.loads((tmp_path / "model" / "test-best.json").read_text())
    assert written["model"] == folder and written["uar"] == from_run["uar"]
    assert (tmp_path / "model" / "test-best.png").is_file()
    with pytest.raises(errors.ConfigError, match="--checkpoint=last: .* holds the run's best checkpoint only"):
        evaluate.evaluate_run(None, synthfer_dir, model=folder, which="last")
    # Trained with per-clip captions: an export has no tokenizer for them, and captions enter only the
    # loss's caption term, so without them the numbers are the run's (trained without) and the JSON says so.
    captioned = tmp_path / "captioned"
    shutil.copytree(folder, captioned)
    config = json.loads((captioned / "config.json").read_text())
    config["model"]["cate"]["captions"], config["model"]["clip"]["tokenizer"] = True, ""
    (captioned / "config.json").write_text(json.dumps(config))
    from_captioned = evaluate.evaluate_run(None, synthfer_dir, model=str(captioned), out_dir=str(tmp_path / "c"), **kw)
    assert from_captioned["loss_with_captions"] is False and "loss_with_captions" not in from_run
    assert {k: from_captioned[k] for k in _SAME} == {k: from_run[k] for k in _SAME}
    assert from_captioned["loss"] == from_run["loss"]


@pytest.mark.slow
def test_command_line_with_model_and_tfds_writes_into_evaluation_here(exported, dfew, on_dfew_shards, tmp_path):
    """--model and --tfds end to end: the exported run on the TFDS clips gives the run's numbers on
    their shards, into ./evaluation."""
    dataset, _ = dfew
    cmd = [sys.executable, "-m", "grace_jax.evaluate", f"--model={exported[0]}", f"--tfds={dataset.name}",
           f"--tfds_dir={dataset.data_dir}", "--batch_size=8", "--num_workers=0"]  # fmt: skip
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "evaluation" / "test-best.json").read_text())
    assert {k: result[k] for k in _SAME} == {k: on_dfew_shards[k] for k in _SAME}
    assert result["loss"] == pytest.approx(on_dfew_shards["loss"], rel=1e-6)
    assert (result["model"], result["workdir"], result["tfds"]) == (exported[0], None, dataset.name)
    assert f"{exported[0]} on tfds {dataset.name} (test), checkpoint best" in done.stdout
    assert f"UAR {result['uar']:.4f}  WAR {result['war']:.4f}" in done.stdout


@pytest.mark.parametrize(
    "flags, message",
    [
        (dict(data_dir="d"), "exactly one of --workdir .* and --model"),
        (dict(workdir="w", model="m", data_dir="d"), "exactly one of --workdir .* and --model"),
        (dict(workdir="w"), "exactly one of --data_dir .* and --tfds"),
        (dict(workdir="w", data_dir="d", tfds="dfew/fold_1"), "exactly one of --data_dir .* and --tfds"),
        (dict(workdir="w", data_dir="d", tfds_dir="t"), "--tfds_dir is tfds's data folder for --tfds"),
        (dict(model="m", tfds="dfew/fold_1/x"), "--tfds=dfew/fold_1/x: give a dataset name with its config"),
        (dict(model="m", tfds="/dfew"), "--tfds=/dfew: give a dataset name"),
    ],
)
def test_usage_errors_name_the_flags(flags, message):
    given = {**dict(workdir=None, model=None, data_dir=None, tfds=None, tfds_dir=None), **flags}
    with pytest.raises(errors.UsageError, match=message):
        evaluate.parse_sources(**given)


def test_parse_sources_gives_the_shards_or_the_tfds_dataset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert evaluate.parse_sources(workdir="w", model=None, data_dir="d", tfds=None, tfds_dir=None) == "d"
    got = evaluate.parse_sources(workdir=None, model="m", data_dir=None, tfds="dfew/fold_2", tfds_dir="tf")
    assert got == tfds_source.TfdsDataset("dfew/fold_2", str(tmp_path / "tf"))
    got = evaluate.parse_sources(workdir="w", model=None, data_dir=None, tfds="ferv39k", tfds_dir=None)
    assert got == tfds_source.TfdsDataset("ferv39k", "")


@pytest.mark.slow
def test_bad_inputs_are_one_line_naming_the_thing(tiny_run, exported, dfew, synthfer_dir, tmp_path):
    workdir, _ = tiny_run
    dataset, _ = dfew
    missing = tfds_source.TfdsDataset("dfew/fold_4", dataset.data_dir)
    with pytest.raises(
        errors.NotFoundError,
        match=r"--tfds=dfew/fold_4: not prepared in --tfds_dir=.*; prepare it "
        r"with python -m data_prep.tfds_builders.build --dataset=dfew .*--data_dir=<tfds_dir>",
    ):
        evaluate.evaluate_run(workdir, missing)
    from data_prep import tfds_builders

    assert tfds_source.BUILDERS == tuple(tfds_builders.BUILDERS)  # the hint's list, kept in step
    unknown = tfds_source.TfdsDataset("nosuch/fold_1", dataset.data_dir)
    with pytest.raises(
        errors.NotFoundError,
        match=r"--tfds=nosuch/fold_1: not prepared .*DatasetNotFoundError.*; "
        r"data_prep.tfds_builders prepares dfew, ferv39k, mafw\.$",
    ):
        evaluate.evaluate_run(workdir, unknown)
    with pytest.raises(errors.ConfigError, match=r"--tfds=dfew: name its config too, e.g. dfew/fold_1"):
        evaluate.evaluate_run(workdir, tfds_source.TfdsDataset("dfew", dataset.data_dir))
    with pytest.raises(errors.ConfigError, match=r"--split=val: tfds:dfew/fold_1_32px in .* has no split 'val'"):
        evaluate.evaluate_run(workdir, dataset, split="val")
    empty = tmp_path / "empty"
    empty.mkdir()
    not_a_model = r"empty/model.safetensors: not found; not a grace_jax model folder\.$"
    with pytest.raises(hf_export.ExportError, match=not_a_model):
        evaluate.evaluate_run(None, synthfer_dir, model=str(empty))
    with pytest.raises(hf_export.ExportError, match="it is a training run: give it as --workdir"):
        evaluate.evaluate_run(None, synthfer_dir, model=workdir)
    # The same through the command line: one line on stderr, exit 1 (bad input) or 2 (usage).
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
    for args, code, text in (
        ([f"--model={empty}", f"--data_dir={synthfer_dir}"], 1, f"{empty}/model.safetensors: not found"),
        ([f"--workdir={workdir}", f"--model={exported[0]}", f"--data_dir={synthfer_dir}"], 2,
         "Give exactly one of --workdir"),
    ):  # fmt: skip
        done = subprocess.run([sys.executable, "-m", "grace_jax.evaluate", *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
        assert done.returncode == code, done.stderr[-3000:]
        assert done.stderr.startswith("grace_jax.evaluate: error: ") and text in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert not (tmp_path / "evaluation").exists()


@pytest.mark.slow
def test_a_batch_the_devices_cannot_split_is_one_line_before_any_work(tiny_run, synthfer_dir, tmp_path, monkeypatch):
    workdir, _ = tiny_run
    assert jax.device_count() == 8  # tests/conftest.py
    loads = []
    monkeypatch.setattr(runs, "load", lambda *a, **k: loads.append(a))
    with pytest.raises(errors.ConfigError, match=r"^--batch_size=12 is not divisible by the 8 devices of mesh axis"):
        evaluate.evaluate_run(workdir, synthfer_dir, batch_size=12, out_dir=str(tmp_path / "evaluation"))
    assert not loads  # refused before the model was loaded
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
    out = tmp_path / "evaluation"
    done = subprocess.run(
        [sys.executable, "-m", "grace_jax.evaluate", f"--workdir={workdir}", f"--data_dir={synthfer_dir}",
         "--batch_size=12", f"--out={out}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]
    assert done.stderr.strip().splitlines() == [
        "grace_jax.evaluate: error: --batch_size=12 is not divisible by the 8 devices of mesh axis 'data': use a "
        "multiple of 8 (e.g. 8 or 16), or a mesh.shape with fewer batch-parallel devices."
    ]
    assert not out.exists()
