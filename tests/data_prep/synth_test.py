"""SynthFER: seeded, neutral start, class-free appearance, and the label learnable only from dynamics."""

import numpy as np

from data_prep import synth

CONFIG = synth.SynthConfig(frame_size=32, min_frames=6, max_frames=10)


def _clips(split: str, n: int, config=CONFIG, seed=0):
    labels = np.array([synth.clip_label(i) for i in range(n)])
    clips = [synth.sample_clip(synth.clip_seed(seed, split, i), int(y), config).astype(np.float32) / 255 for i, y in enumerate(labels)]
    return clips, labels


def _pool(image: np.ndarray, cells: int = 16) -> np.ndarray:
    """[S,S,3] -> [cells*cells*3] block means."""
    s = image.shape[0]
    return image.reshape(cells, s // cells, cells, s // cells, 3).mean(axis=(1, 3)).ravel()


def _logistic_regression(x_train, y_train, x_test, steps=500, lr=0.5, l2=1e-3):
    """Multinomial logistic regression by full-batch gradient descent; returns test predictions."""
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mu) / sd, (x_test - mu) / sd
    w, b = np.zeros((x_train.shape[1], synth.NUM_CLASSES)), np.zeros(synth.NUM_CLASSES)
    onehot = np.eye(synth.NUM_CLASSES)[y_train]
    for _ in range(steps):
        z = x_train @ w + b
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        g = (p - onehot) / len(x_train)
        w -= lr * (x_train.T @ g + l2 * w)
        b -= lr * g.sum(0)
    return (x_test @ w + b).argmax(1)


def _nearest_centroid(x_train, y_train, x_test):
    centroids = np.stack([x_train[y_train == c].mean(0) for c in range(synth.NUM_CLASSES)])
    return ((x_test[:, None] - centroids) ** 2).sum(-1).argmin(1)


def test_same_seed_same_clip_and_shape():
    a = synth.sample_clip(synth.clip_seed(3, "train", 5), 4, CONFIG)
    b = synth.sample_clip(synth.clip_seed(3, "train", 5), 4, CONFIG)
    c = synth.sample_clip(synth.clip_seed(3, "train", 6), 4, CONFIG)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.uint8 and a.shape[1:] == (32, 32, 3) and 6 <= a.shape[0] <= 10
    assert not np.array_equal(a[0], c[0])


def test_every_clip_starts_from_the_same_neutral_face_whatever_the_class():
    for i in range(5):
        seed = synth.clip_seed(1, "x", i)
        clips = [synth.sample_clip(seed, label, CONFIG) for label in range(synth.NUM_CLASSES)]
        # Same seed: identical first frame and length for all 7 labels, different apex for expressive ones.
        for clip in clips[1:]:
            np.testing.assert_array_equal(clip[0], clips[0][0])
            assert clip.shape == clips[0].shape
        assert not np.array_equal(clips[0][-1], clips[4][-1])


def test_class_irrelevant_motion_is_as_large_as_the_expression():
    expression_only = synth.SynthConfig(frame_size=32, distractors=False)
    distractors_only = synth.SynthConfig(frame_size=32, expression=False)
    expr, distr = [], []
    for i in range(42):
        label = synth.clip_label(i)
        if label == synth.BASIC_CLASSES.index("neutral"):
            continue
        seed = synth.clip_seed(2, "m", i)
        e = synth.sample_clip(seed, label, expression_only).astype(float)
        d = synth.sample_clip(seed, label, distractors_only).astype(float)
        expr.append(np.abs(e[-1] - e[0]).mean())
        distr.append(np.abs(d[-1] - d[0]).mean())
    ratio = np.mean(distr) / np.mean(expr)
    assert 0.67 <= ratio <= 2.0, ratio


def test_label_is_learnable_from_dynamics_and_absent_from_the_first_frame():
    train, y_train = _clips("train", 350)
    test, y_test = _clips("test", 210)
    dyn_train = np.stack([_pool(c[-1] - c[0]) for c in train])
    dyn_test = np.stack([_pool(c[-1] - c[0]) for c in test])
    first_train = np.stack([_pool(c[0]) for c in train])
    first_test = np.stack([_pool(c[0]) for c in test])

    dynamics_acc = np.mean(_logistic_regression(dyn_train, y_train, dyn_test) == y_test)
    centroid_acc = np.mean(_nearest_centroid(dyn_train, y_train, dyn_test) == y_test)
    first_acc = np.mean(_logistic_regression(first_train, y_train, first_test) == y_test)
    first_centroid_acc = np.mean(_nearest_centroid(first_train, y_train, first_test) == y_test)
    # Chance is 1/7 = 0.14; 210 test clips put its 3-sigma band below 0.22.
    assert dynamics_acc >= 0.7, dynamics_acc
    assert centroid_acc >= 0.5, centroid_acc
    assert first_acc <= 0.25, first_acc
    assert first_centroid_acc <= 0.25, first_centroid_acc
