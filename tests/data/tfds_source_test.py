"""The trainer's side of TFDS (grace_jax/data/tfds_source.py): a dataset prepared by
data_prep.tfds_builders gives the same record bytes as data_prep's shards, loads through the same grain
pipeline with a restorable iterator, covers every test clip once in evaluation, and trains the tiny
config; TensorFlow is checked absent throughout."""

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tfds_fixtures import assert_no_tensorflow, block_tensorflow, dfew_layout  # noqa: E402
from video_fixtures import read_split  # noqa: E402

block_tensorflow()  # checked before tensorflow_datasets is imported

from data_prep import job  # noqa: E402
from data_prep.tfds_builders import prepare  # noqa: E402
from grace_jax import config_checks  # noqa: E402
from grace_jax.data import input_pipeline as ip  # noqa: E402
from grace_jax.data import schema, tfds_source  # noqa: E402
from grace_jax.infra import errors  # noqa: E402

# conftest's SynthFER sizes: the tiny run below then has tiny_run's steps per epoch, so its learning-rate
# schedule, and with it the compiled train step, is the same program (the session's XLA cache has it).
NUM_TRAIN, NUM_TEST = 48, 20
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """(TfdsDataset dfew/fold_1_32px, the same clips as data_prep shards)."""
    tmp = tmp_path_factory.mktemp("tfds_source")
    root = dfew_layout(tmp / "DFEW", NUM_TRAIN, NUM_TEST)
    done = prepare.build("dfew", root, str(tmp / "tfds"), fold=1, frame_size=32, progress=False)
    job.build(
        job.BuildConfig(
            dataset="dfew",
            root=root,
            fold=1,
            out=str(tmp / "shards"),
            frame_size=32,
            workers=1,
            progress=False,
            command=("test",),
        )
    )
    return tfds_source.TfdsDataset(done.name, str(tmp / "tfds")), str(tmp / "shards")


def test_records_are_the_shards_records_and_the_manifest_their_counts(prepared):
    dataset, shards = prepared
    for split, n in (("train", NUM_TRAIN), ("test", NUM_TEST)):
        records = ip.record_source(dataset, split)
        ours = {schema.parse(records[i]).clip_id: records[i] for i in range(len(records))}
        theirs = {r.clip_id: r.data for r in read_split(shards, split)}
        assert len(ours) == n and ours == theirs  # byte for byte: header, frames, caption
    manifest = ip.read_manifest(dataset)
    assert manifest["class_names"] == list(schema.BASIC_CLASSES) and manifest["frame_size"] == 32
    assert {s: v["num_clips"] for s, v in manifest["splits"].items()} == {"train": NUM_TRAIN, "test": NUM_TEST}
    assert_no_tensorflow()


def test_records_pickle_for_grain_worker_processes(prepared):
    dataset, _ = prepared
    records = ip.record_source(dataset, "test")
    copy = pickle.loads(pickle.dumps(records))
    assert len(copy) == NUM_TEST and [copy[i] for i in range(NUM_TEST)] == [records[i] for i in range(NUM_TEST)]


def _data():
    """configs/base.py's data section at these clips' sizes, crops and flips on the host."""
    from grace_jax.configs import base

    data = base.get_config().data
    data.num_frames, data.image_size, data.num_workers, data.augment_on_device = 4, 24, 0, False
    return data


def _train(dataset, seed=0):
    return ip.make_train_loader(dataset, _data(), global_batch_size=4, seed=seed, shard_index=0, shard_count=1)


def test_train_batches_repeat_with_the_seed_and_resume_from_the_iterator_state(prepared):
    dataset, _ = prepared
    it = iter(_train(dataset, seed=3))
    first = [next(it) for _ in range(2)]
    assert first[0]["video"].shape == (4, 4, 24, 24, 3) and first[0]["video"].dtype == np.float32
    state = it.get_state()
    expected = [next(it) for _ in range(12)]  # crosses the epoch boundary (48 clips, batches of 4)
    seen = np.concatenate([b["clip_index"] for b in first + expected[:10]])
    assert sorted(seen) == list(range(NUM_TRAIN))  # one epoch: every clip once
    again = iter(_train(dataset, seed=3))
    for a, b in zip([next(again) for _ in range(2)], first):
        np.testing.assert_array_equal(a["video"], b["video"])
    fresh = iter(_train(dataset, seed=3))
    fresh.set_state(state)
    for a, b in zip([next(fresh) for _ in range(12)], expected):
        np.testing.assert_array_equal(a["clip_index"], b["clip_index"])
        np.testing.assert_array_equal(a["video"], b["video"])


def test_eval_covers_every_clip_once_with_its_label(prepared):
    dataset, _ = prepared
    records = ip.record_source(dataset, "test")
    labels = {i: schema.parse(records[i]).label for i in range(len(records))}
    loader = ip.make_eval_loader(dataset, _data(), split="test", global_batch_size=4, shard_index=0, shard_count=1)
    rows = [(int(i), int(y)) for b in loader for i, y, m in zip(b["clip_index"], b["label"], b["mask"]) if m]
    assert sorted(rows) == sorted(labels.items())


def test_read_without_the_builders_in_a_fresh_process(prepared):
    """A prepared dataset is read from its files: the trainer never needs data_prep's builder code."""
    dataset, _ = prepared
    code = (
        "import sys; from grace_jax.data import tfds_source as t; "
        f"d = t.TfdsDataset({dataset.name!r}, {dataset.data_dir!r}); "
        "r = t.TfdsRecords(d, 'test'); print(len(r), t.manifest(d)['num_classes'], "
        "any(m.startswith('data_prep') for m in sys.modules), 'tensorflow' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [str(NUM_TEST), "7", "False", "False"]


def test_a_missing_dataset_and_a_wrong_split_are_config_errors(prepared, tiny_config, tmp_path):
    dataset, _ = prepared
    with pytest.raises(
        errors.NotFoundError, match=r"data.tfds=dfew/fold_4: not prepared .*data_prep.tfds_builders.build"
    ):
        tfds_source.manifest(tfds_source.TfdsDataset("dfew/fold_4", dataset.data_dir))
    with pytest.raises(errors.ConfigError, match=r"data.tfds=dfew: name its config too, e.g. dfew/fold_1"):
        tfds_source.manifest(tfds_source.TfdsDataset("dfew", dataset.data_dir))
    config = tiny_config("", 1)
    config.data.tfds, config.data.tfds_dir = dataset.name, dataset.data_dir
    config.data.eval_split = "val"
    with pytest.raises(
        errors.ConfigError, match=r"data.eval_split='val': .* has no such split; it holds \['test', 'train'\]"
    ):
        config_checks.check_data(config)
    config.data.eval_split, config.model.num_classes = "test", 11
    with pytest.raises(
        errors.ConfigError, match="data.tfds=dfew/fold_1_32px lists 7 classes but model.num_classes is 11"
    ):
        config_checks.check_data(config)


@pytest.mark.slow
def test_the_tiny_config_trains_from_the_tfds_dataset(prepared, tiny_config, tmp_path):
    from grace_jax import train

    dataset, _ = prepared
    config = tiny_config("", 3)
    config.data.synth_train_clips = 0  # no SynthFER: the data is the TFDS dataset
    config.data.tfds, config.data.tfds_dir = dataset.name, dataset.data_dir
    summary = train.train_and_evaluate(config, str(tmp_path / "run"))
    assert summary["step"] == 3 and summary["num_examples"] == NUM_TEST
    assert 0.0 <= summary["uar"] <= 1.0 and len(summary["per_class_recall"]) == 7
    assert not os.path.exists(tmp_path / "run" / "synthfer")
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["data"]["tfds"] == dataset.name
    assert_no_tensorflow()


def test_a_damaged_tfds_file_is_named_with_the_record(prepared, tmp_path):
    import shutil

    from grace_jax.data.errors import DamagedShardError

    dataset, _ = prepared
    copy = tmp_path / "tfds"
    shutil.copytree(dataset.data_dir, copy)
    files = sorted(p for p in copy.rglob("*train.array_record*"))
    assert files, list(copy.rglob("*"))
    target = files[0]
    size = target.stat().st_size
    with open(target, "r+b") as f:  # 4 KB of flipped bytes in the middle, as a bad copy leaves
        f.seek(size // 2)
        chunk = f.read(4096)
        f.seek(size // 2)
        f.write(bytes(b ^ 0xFF for b in chunk))
    records = ip.record_source(tfds_source.TfdsDataset(dataset.name, str(copy)), "train")
    failures = []
    for i in range(len(records)):
        try:
            records[i]
        except DamagedShardError as e:
            failures.append(str(e))
    assert failures, "flipping 4 KB in the middle of the file damaged no record"
    assert failures[0].startswith(f"{target}: record "), failures[0]
    assert "of split train of tfds:dfew/fold_1_32px" in failures[0] and "Corrupted Riegeli" in failures[0]
    assert "\n" not in failures[0]
