"""grace_jax.evaluate: its numbers against a confusion matrix counted by hand, its files, its table,
and the k-fold summary over its outputs."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from grace_jax import evaluate, folds, input_pipeline, predict, runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _by_hand(workdir, data_dir, which):
    """Every test clip through the model, 5 at a time on one device; counted with Python loops."""
    run = runs.load_run(workdir, which)
    config = run.config
    step = jax.jit(
        functools.partial(
            predict.predict_step, graphdef=run.graphdef, normalize=config.data.get("normalize", "clip")
        )
    )
    loader = input_pipeline.make_eval_loader(
        data_dir, "test", global_batch_size=5, num_frames=config.data.num_frames,
        image_size=config.data.image_size, shard_index=0, shard_count=1, normalize_on_host=False,
        augment=config.data.get("augment", "grace"),
    )  # fmt: skip
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


def test_numbers_equal_a_confusion_matrix_counted_by_hand(tiny_run, synthfer_dir, tmp_path):
    workdir, _ = tiny_run
    out = tmp_path / "eval"
    # Batches of 8 over 8 devices: 20 clips make 3 batches, the last one padded with 4 masked rows.
    result = evaluate.evaluate_run(
        workdir, synthfer_dir, which="last", out_dir=str(out), batch_size=8, num_workers=0
    )
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
    assert written["localization"]["pixel_prior"]["chance"] == pytest.approx(result["localization"]["pixel_prior"]["chance"])


def _localization_by_hand(workdir, data_dir, which):
    """{class: [share of the predicted class's map on expression tokens, per clip with any]}."""
    run = runs.load_run(workdir, which)
    config = run.config
    step = jax.jit(functools.partial(predict.predict_step, graphdef=run.graphdef, normalize="clip"))
    loader = input_pipeline.make_eval_loader(
        data_dir, "test", global_batch_size=5, num_frames=4, image_size=32, shard_index=0, shard_count=1,
        normalize_on_host=False, ground_truth=True,
    )  # fmt: skip
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
                            diff[kind][t + 1, r * 4 + c] = d[t, r * 8:(r + 1) * 8, c * 8:(c + 1) * 8].mean()
            mask = (diff["gt_expression"] > diff["gt_distractor"]) & (diff["gt_expression"] >= 1 / 255)
            if not mask.any():
                continue
            m = np.asarray(maps["class_maps"][i, int(np.asarray(probs[i]).argmax())], np.float64)
            name = run.class_names[int(batch["label"][i])]
            out.setdefault(name, []).append(m[mask].sum() / m.sum())
    assert config.model.num_frames == 4
    return out


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
        (run_dir / "evaluation" / "test-best.json").write_text(
            json.dumps(dict(result, uar=uar))
        )
    summary = folds.summarize_folds([str(fold1), str(fold2)], "best", split="test")
    assert summary["uar_mean"] == pytest.approx((result["uar"] + 0.25) / 2)
    assert summary["war_std"] == 0
    with pytest.raises(FileNotFoundError, match="grace_jax.evaluate"):
        folds.summarize_folds([str(fold1)], "last", split="test")


def test_unknown_split_and_class_count_mismatch_are_clear(tiny_run, synthfer_dir):
    workdir, _ = tiny_run
    with pytest.raises(ValueError, match="no split 'val'"):
        evaluate.evaluate_run(workdir, synthfer_dir, split="val")
