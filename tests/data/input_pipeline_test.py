"""grain pipelines over built shards: batches, determinism, state restore (also via orbax), eval padding,
per-process sharding, segment sampling end to end, and caption tokens."""

import json

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from data_prep import job
from grace_jax.configs import base
from grace_jax.data import device_transforms
from grace_jax.data import input_pipeline as ip
from grace_jax.data.clip_transforms import CLIP_MEAN, CLIP_STD

NUM_TRAIN, NUM_TEST = 28, 10


def _build(out, **kw):
    config = dict(frame_size=24, workers=1, progress=False, command=("test",), synth_min_frames=6, synth_max_frames=20)
    config.update(kw)
    job.build(job.BuildConfig(out=str(out), **config))
    return str(out)


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    captions = {f"synth/train/{i:06d}": f"caption number {i}" for i in range(0, NUM_TRAIN, 3)}
    (root / "captions.json").write_text(json.dumps(captions))
    return _build(
        root / "synth",
        dataset="synth",
        synth_train=NUM_TRAIN,
        synth_test=NUM_TEST,
        num_shards=3,
        captions=str(root / "captions.json"),
    )


def fake_tokenizer(texts):
    """Stands in for the CLIP tokenizer: [N,77] ids from character codes, eot after the last one."""
    ids = np.zeros((len(texts), 77), np.int32)
    eot = np.zeros(len(texts), np.int32)
    for n, text in enumerate(texts):
        codes = [49406] + [ord(c) for c in text[:75]] + [49407]
        ids[n, : len(codes)] = codes
        eot[n] = len(codes) - 1
    return ids, eot


def _data(**fields):
    """configs/base.py's data section at the tests' sizes, with the crop and flip on the host."""
    data = base.get_config().data
    data.update(dict(num_frames=8, image_size=16, num_workers=0, augment_on_device=False) | fields)
    return data


def _loader_args(kw, **defaults):
    """(data config, loader keywords): the keywords named like a data config field go into the config."""
    fields = base.get_config().data
    args = defaults | kw
    data = _data(**{k: args.pop(k) for k in list(args) if k in fields})
    return data, args


def _train(data_dir, **kw):
    data, args = _loader_args(kw, global_batch_size=4, seed=0, shard_index=0, shard_count=1)
    return ip.make_train_loader(data_dir, data, **args)


def _eval(data_dir, split="test", **kw):
    data, args = _loader_args(kw, global_batch_size=4, shard_index=0, shard_count=1)
    return ip.make_eval_loader(data_dir, data, split=split, **args)


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


def _assert_same(batches_a, batches_b):
    assert len(batches_a) == len(batches_b)
    for a, b in zip(batches_a, batches_b):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_train_batch_structure_and_normalization(synth_dir):
    batch = next(iter(_train(synth_dir, tokenizer=fake_tokenizer)))
    assert batch["video"].shape == (4, 8, 16, 16, 3) and batch["video"].dtype == np.float32
    assert batch["label"].dtype == np.int32 and batch["clip_index"].dtype == np.int32
    assert batch["mask"].dtype == np.bool_ and batch["mask"].all()
    lo = (0 - np.array(CLIP_MEAN)) / np.array(CLIP_STD)
    hi = (1 - np.array(CLIP_MEAN)) / np.array(CLIP_STD)
    assert np.all(batch["video"] >= lo - 1e-5) and np.all(batch["video"] <= hi + 1e-5)
    table = ip.read_clip_table(synth_dir, "train")
    rows = [table[i] for i in batch["clip_index"]]
    np.testing.assert_array_equal(batch["label"], [r["label"] for r in rows])
    # SynthFER labels cycle through the classes by clip number.
    assert [r["label"] for r in rows] == [int(r["clip_id"].rsplit("/", 1)[1]) % 7 for r in rows]
    assert batch["caption_ids"].shape == (4, 77) and batch["caption_ids"].dtype == np.int32
    synth_numbers = [int(r["clip_id"].rsplit("/", 1)[1]) for r in rows]
    np.testing.assert_array_equal(batch["has_caption"], [n % 3 == 0 for n in synth_numbers])
    for row in range(4):
        if batch["has_caption"][row]:
            text = f"caption number {synth_numbers[row]}"
            ids, eot = fake_tokenizer([text])
            np.testing.assert_array_equal(batch["caption_ids"][row], ids[0])
            assert batch["caption_eot"][row] == eot[0]


def test_loaders_read_their_settings_from_the_data_config(synth_dir):
    # The splits, sizes and augmentation come from config.data; `split` overrides the config's.
    data = _data(train_split="test", eval_split="train", num_frames=4, image_size=8, flip_probability=0.0)
    train = next(iter(ip.make_train_loader(synth_dir, data, global_batch_size=4, seed=0, shard_index=0, shard_count=1)))
    assert train["video"].shape == (4, 4, 8, 8, 3) and train["clip_index"].max() < NUM_TEST
    evaluated = list(ip.make_eval_loader(synth_dir, data, global_batch_size=4, shard_index=0, shard_count=1))
    assert sorted(np.concatenate([b["clip_index"] for b in evaluated]).tolist()) == list(range(NUM_TRAIN))
    named = list(ip.make_eval_loader(synth_dir, data, split="test", global_batch_size=4, shard_index=0, shard_count=1))
    assert len(named) == ip.eval_batches(NUM_TEST, 4)


def test_uint8_batches_normalized_on_device_equal_host_normalization(synth_dir):
    host = next(iter(_train(synth_dir, seed=9)))
    raw = next(iter(_train(synth_dir, seed=9, normalize_on_host=False)))
    assert raw["video"].dtype == np.uint8
    np.testing.assert_array_equal(raw["clip_index"], host["clip_index"])
    np.testing.assert_allclose(np.asarray(ip.normalize_on_device(raw["video"])), host["video"], atol=1e-5)


def test_same_seed_same_batches_other_seed_other_batches(synth_dir):
    a = _take(iter(_train(synth_dir, seed=5)), 3)
    b = _take(iter(_train(synth_dir, seed=5)), 3)
    c = _take(iter(_train(synth_dir, seed=6)), 3)
    _assert_same(a, b)
    assert not np.array_equal(a[0]["clip_index"], c[0]["clip_index"])


def test_shuffle_visits_each_clip_once_per_epoch_and_reshuffles(synth_dir):
    batches = _take(iter(_train(synth_dir)), 2 * NUM_TRAIN // 4)
    seen = np.concatenate([b["clip_index"] for b in batches])
    first, second = seen[:NUM_TRAIN], seen[NUM_TRAIN:]
    assert sorted(first) == list(range(NUM_TRAIN)) and sorted(second) == list(range(NUM_TRAIN))
    assert not np.array_equal(first, second)


def test_restoring_iterator_state_reproduces_the_following_batches(synth_dir):
    it = iter(_train(synth_dir, seed=3))
    _take(it, 2)
    state = it.get_state()
    expected = _take(it, 4)  # crosses the epoch boundary at batch 7
    fresh = iter(_train(synth_dir, seed=3))
    fresh.set_state(state)
    _assert_same(_take(fresh, 4), expected)


def test_orbax_checkpoints_the_iterator(synth_dir, tmp_path):
    it = iter(_train(synth_dir, seed=4))
    _take(it, 3)
    with ocp.CheckpointManager(str(tmp_path / "ckpt")) as manager:
        manager.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
        manager.wait_until_finished()
    expected = _take(it, 2)
    fresh = iter(_train(synth_dir, seed=4))
    with ocp.CheckpointManager(str(tmp_path / "ckpt")) as manager:
        manager.restore(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
    _assert_same(_take(fresh, 2), expected)


def test_one_worker_process_gives_the_same_batches(synth_dir):
    _assert_same(_take(iter(_train(synth_dir, worker_count=1)), 2), _take(iter(_train(synth_dir)), 2))


def test_train_processes_read_disjoint_clips(synth_dir):
    parts = [
        np.concatenate([b["clip_index"] for b in _take(iter(_train(synth_dir, shard_index=i, shard_count=2)), 7)])
        for i in range(2)
    ]
    assert all(len(p) == 14 for p in parts)  # per-process batch 2, one epoch of a 14-clip half
    assert set(parts[0]).isdisjoint(parts[1]) and set(parts[0]) | set(parts[1]) == set(range(NUM_TRAIN))


def test_process_batches_put_together_are_the_one_process_batches(synth_dir):
    # Process p reads rows [p * B/n, (p + 1) * B/n) of every global batch, random draws included, so
    # n processes train on exactly the batches of one (here across the epoch boundary at batch 7).
    # The per-process iterator state restores too.
    kw = dict(seed=1, normalize_on_host=False, augment_on_device=True)
    one = _take(iter(_train(synth_dir, **kw)), 9)
    its = [iter(_train(synth_dir, shard_index=i, shard_count=2, **kw)) for i in range(2)]
    parts = [_take(it, 6) for it in its]
    states = [it.get_state() for it in its]
    parts = [p + _take(it, 3) for p, it in zip(parts, its)]
    _assert_same(one, [{k: np.concatenate([a[k], b[k]]) for k in a} for a, b in zip(*parts)])
    fresh = iter(_train(synth_dir, shard_index=1, shard_count=2, **kw))
    fresh.set_state(states[1])
    _assert_same(_take(fresh, 3), parts[1][6:])
    evals = [
        list(
            _eval(
                synth_dir,
                "test",
                global_batch_size=4,
                num_frames=8,
                image_size=16,
                shard_index=i,
                shard_count=2,
                normalize_on_host=False,
            )
        )
        for i in range(2)
    ]
    one_eval = list(
        _eval(
            synth_dir,
            "test",
            global_batch_size=4,
            num_frames=8,
            image_size=16,
            shard_index=0,
            shard_count=1,
            normalize_on_host=False,
        )
    )
    _assert_same(one_eval, [{k: np.concatenate([a[k], b[k]]) for k in a} for a, b in zip(*evals)])
    with pytest.raises(ValueError, match="shard_index 2 is not in"):
        _train(synth_dir, shard_index=2, shard_count=2)


@pytest.mark.parametrize("shard_count", [1, 2])
def test_eval_sees_every_clip_once_with_masked_padding(synth_dir, shard_count):
    seen, counts = [], []
    labels = [r["label"] for r in ip.read_clip_table(synth_dir, "test")]
    for i in range(shard_count):
        loader = _eval(
            synth_dir, "test", global_batch_size=4, num_frames=8, image_size=16, shard_index=i, shard_count=shard_count
        )
        batches = list(loader)
        counts.append(len(batches))
        for b in batches:
            assert b["video"].shape == (4 // shard_count, 8, 16, 16, 3)
            assert np.all(b["clip_index"][~b["mask"]] == -1)
            seen += b["clip_index"][b["mask"]].tolist()
            np.testing.assert_array_equal(b["label"][b["mask"]], [labels[i] for i in b["clip_index"][b["mask"]]])
    assert counts == [ip.eval_batches(NUM_TEST, 4)] * shard_count == [3] * shard_count
    assert sorted(seen) == list(range(NUM_TEST))


def _grey_dataset(tmp_path):
    """A folder dataset of one 25-frame and one 10-frame clip whose frame t has grey level 8 * t."""
    for name, n in (("clip25", 25), ("clip10", 10)):
        folder = tmp_path / "clips" / name
        folder.mkdir(parents=True)
        for t in range(n):
            Image.fromarray(np.full((16, 16, 3), 8 * t, np.uint8)).save(folder / f"{t + 1:03d}.png")
    (tmp_path / "test.csv").write_text("clip25,0\nclip10,1\n")
    return _build(
        tmp_path / "grey",
        dataset="folder",
        videos=str(tmp_path / "clips"),
        labels=(f"test={tmp_path / 'test.csv'}",),
        frame_size=16,
    )


def _frame_numbers(video):
    pixels = video * np.array(CLIP_STD, np.float32) + np.array(CLIP_MEAN, np.float32)
    return np.round(pixels.mean(axis=(1, 2, 3)) * 255 / 8).astype(int)


def test_pipeline_samples_the_protocol_frames(tmp_path):
    data_dir = _grey_dataset(tmp_path)
    batch = next(
        iter(_eval(data_dir, "test", global_batch_size=2, num_frames=16, image_size=16, shard_index=0, shard_count=1))
    )
    np.testing.assert_array_equal(
        _frame_numbers(batch["video"][0]), [0, 2, 3, 5, 7, 8, 10, 11, 13, 14, 16, 17, 19, 21, 22, 24]
    )
    np.testing.assert_array_equal(_frame_numbers(batch["video"][1]), list(range(10)) + [9] * 6)
    edges = [0, 1, 3, 4, 6, 7, 9, 10, 12, 14, 15, 17, 18, 20, 21, 23, 25]
    train = _train(
        data_dir, split="test", global_batch_size=2, num_frames=16, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0)
    )
    for batch in _take(iter(train), 3):
        long_clip = batch["video"][batch["clip_index"] == 0][0]
        frames = _frame_numbers(long_clip)
        assert all(edges[k] <= frames[k] < edges[k + 1] for k in range(16)), frames


def test_eval_padding_rows_have_no_caption_and_missing_data_is_named(synth_dir, tmp_path):
    batches = list(
        _eval(
            synth_dir,
            "test",
            global_batch_size=4,
            num_frames=4,
            image_size=16,
            shard_index=0,
            shard_count=1,
            tokenizer=fake_tokenizer,
        )
    )
    last = batches[-1]
    assert not last["has_caption"][~last["mask"]].any()
    assert np.all(last["caption_ids"][~last["mask"]][:, 0] == 49406)
    with pytest.raises(FileNotFoundError, match="not a dataset built by data_prep.build_dataset"):
        _eval(str(tmp_path), "test")
    with pytest.raises(ValueError, match="split 'val' not in"):
        _eval(synth_dir, "val", global_batch_size=4, shard_index=0, shard_count=1)
    with pytest.raises(ValueError, match="not divisible by 3 processes"):
        _train(synth_dir, shard_count=3)


def test_augment_on_device_gives_the_host_crops_and_flips(synth_dir):
    # 24-px stored frames cropped to 16: the host path and the accelerator path draw the same boxes and flips.
    host = _take(iter(_train(synth_dir, seed=2)), 2)
    device = _take(iter(_train(synth_dir, seed=2, normalize_on_host=False, augment_on_device=True)), 2)
    flips = 0
    for h, d in zip(host, device):
        assert d["video"].shape == (4, 8, 24, 24, 3) and d["video"].dtype == np.uint8
        assert d["crop_box"].shape == (4, 4) and d["crop_box"].dtype == np.float32 and d["flip"].dtype == np.bool_
        for key in ("clip_index", "label", "mask"):
            np.testing.assert_array_equal(d[key], h[key])
        video = ip.normalize_on_device(
            device_transforms.crop_resize_flip(d["video"], d["crop_box"], d["flip"], size=16)
        )
        # One grey level (PIL's two uint8 roundings), in normalized units.
        np.testing.assert_allclose(np.asarray(video), h["video"], atol=1.0 / (255 * min(CLIP_STD)) + 1e-4)
        flips += d["flip"].sum()
    assert 0 < flips < 8
    with pytest.raises(ValueError, match="needs normalize_on_host=False"):
        _train(synth_dir, augment_on_device=True)


# ----------------------------------------------------------------------------- DFER-CLIP's recipe
def test_unit_normalization_on_host_and_on_device(synth_dir):
    raw = next(iter(_train(synth_dir, seed=9, normalize_on_host=False)))
    unit = next(iter(_train(synth_dir, seed=9, normalize="unit")))
    assert unit["video"].dtype == np.float32 and 0.0 <= unit["video"].min() and unit["video"].max() <= 1.0
    # DFER-CLIP's ToTorchFormatTensor: float32(x) / 255, no mean/std. Same values on the accelerator.
    np.testing.assert_array_equal(unit["video"], raw["video"].astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(np.asarray(ip.normalize_on_device(raw["video"], "unit")), unit["video"])
    evaluated = next(
        iter(
            _eval(
                synth_dir,
                "test",
                global_batch_size=4,
                num_frames=8,
                image_size=16,
                shard_index=0,
                shard_count=1,
                normalize="unit",
            )
        )
    )
    assert 0.0 <= evaluated["video"].min() and evaluated["video"].max() <= 1.0
    with pytest.raises(ValueError, match="normalize='imagenet'"):
        ip.normalize_on_device(raw["video"], "imagenet")


def test_dferclip_augment_on_device_gives_the_host_clips(synth_dir):
    # DFEW's and FERV39k's recipes at once (brightness 0.5 and rotation 4): 24-px stored frames cropped
    # and resized to 16 by PIL on the host, or by device_transforms.augment from the same draws.
    kw = dict(seed=2, augment="dferclip", brightness=0.5, rotation_degrees=4.0)
    host = _take(iter(_train(synth_dir, normalize="unit", **kw)), 2)
    device = _take(iter(_train(synth_dir, normalize_on_host=False, augment_on_device=True, **kw)), 2)
    for h, d in zip(host, device):
        assert d["video"].shape == (4, 8, 24, 24, 3) and d["video"].dtype == np.uint8
        assert d["crop_inside"].all() and d["rotation"].shape == (4, 6) and d["brightness"].shape == (4,)
        for key in ("clip_index", "label", "mask"):
            np.testing.assert_array_equal(d[key], h[key])
        video = np.asarray(ip.normalize_on_device(device_transforms.augment(d, size=16), "unit"))
        # Rotation and brightness agree exactly; PIL rounds to uint8 after each resize pass: one level.
        np.testing.assert_allclose(video, h["video"], atol=(1.0 + 2e-3) / 255)
    grace = next(iter(_train(synth_dir, seed=2, normalize_on_host=False, augment_on_device=True)))
    assert "crop_inside" not in grace and "rotation" not in grace and "brightness" not in grace


def test_dferclip_eval_resize_equals_the_centre_crop_on_square_shards(synth_dir):
    # Shards hold square frames (data_prep resizes the shorter side and centre-crops), where resizing
    # the whole frame (DFER-CLIP's GroupResize) and the centre square crop are the same image.
    kw = dict(global_batch_size=4, num_frames=8, image_size=16, shard_index=0, shard_count=1, normalize_on_host=False)
    _assert_same(list(_eval(synth_dir, "test", augment="dferclip", **kw)), list(_eval(synth_dir, "test", **kw)))
    with pytest.raises(ValueError, match="augment='dfer'"):
        _eval(synth_dir, "test", augment="dfer", **kw)


@pytest.mark.parametrize("augment", ["grace", "dferclip"])
def test_eval_ground_truth_is_aligned_with_video(synth_dir, augment):
    from data_prep import synth
    from grace_jax.data import clip_transforms as ct
    from grace_jax.data.segments import segment_indices

    kw = dict(global_batch_size=4, num_frames=8, image_size=16, shard_index=0, shard_count=1, augment=augment)
    batches = list(_eval(synth_dir, "test", ground_truth=True, normalize_on_host=False, **kw))
    plain = list(_eval(synth_dir, "test", normalize_on_host=False, **kw))
    table = ip.read_clip_table(synth_dir, "test")
    config = synth.SynthConfig(frame_size=24, min_frames=6, max_frames=20)
    box = ct.full_box(24, 24) if augment == "dferclip" else ct.centre_box(24, 24)
    rows = 0
    for batch, without in zip(batches, plain):
        assert "gt_expression" not in without
        np.testing.assert_array_equal(batch["video"], without["video"])  # ground truth changes nothing else
        for key in ("gt_expression", "gt_distractor"):
            assert batch[key].shape == (4, 8, 16, 16, 3) and batch[key].dtype == np.uint8
            assert not batch[key][~batch["mask"]].any()
        np.testing.assert_array_equal(batch["has_ground_truth"], batch["mask"])
        for row in np.flatnonzero(batch["mask"]):
            clip = table[batch["clip_index"][row]]
            seed = synth.clip_seed(0, "test", int(clip["clip_id"].rsplit("/", 1)[1]))
            indices = segment_indices(clip["num_frames"], 8, train=False)
            expected = synth.sample_ground_truth(seed, clip["label"], config)
            for key, frames in zip(("gt_expression", "gt_distractor"), expected):
                np.testing.assert_array_equal(batch[key][row], ct.resize_box(frames[indices], indices, box, 16))
            # The clip itself at the same frames, crop and resize: equal up to noise and JPEG.
            full = ct.resize_box(synth.sample_clip(seed, clip["label"], config)[indices], indices, box, 16)
            assert np.abs(batch["video"][row].astype(float) - full).mean() < 4
            rows += 1
    assert rows == NUM_TEST
    # The train split's records carry none (as records written before ground truth existed).
    train = next(iter(_eval(synth_dir, "train", ground_truth=True, **kw)))
    assert not train["has_ground_truth"].any() and not train["gt_expression"].any()
