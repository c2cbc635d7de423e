"""Per-clip transforms: CLIP normalization, crop boxes, decoding only the sampled frames."""

import dataclasses
import io

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from grace_jax.data import clip_transforms as ct
from grace_jax.data import crops, schema


def test_normalize_matches_clip_mean_and_std():
    pixels = np.array([[0, 0, 0], [255, 255, 255], [128, 64, 32]], np.uint8)
    expected = (pixels / 255.0 - np.array(ct.CLIP_MEAN)) / np.array(ct.CLIP_STD)
    out = ct.normalize(pixels)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_random_resized_box_respects_bounds_area_and_ratio():
    rng = np.random.default_rng(0)
    for _ in range(200):
        left, top, right, bottom = crops.random_resized_box(224, 224, rng, (0.3, 1.0), (3 / 4, 4 / 3))
        w, h = right - left, bottom - top
        assert 0 <= left < right <= 224 and 0 <= top < bottom <= 224
        assert 0.3 * 224 * 224 * 0.9 <= w * h <= 224 * 224
        assert 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1
    assert crops.centre_box(40, 30) == (5, 0, 35, 30)


def test_decode_resized_reads_requested_frames_once_each():
    frames = tuple(schema.encode_jpeg(np.full((32, 32, 3), 10 * i, np.uint8), 95) for i in range(20))
    view = schema.parse(schema.serialize(schema.ClipRecord(1, "c", frames, 32)))
    out = ct.decode_resized(view, np.array([0, 5, 5, 19]), crops.centre_box, 16)
    assert out.shape == (4, 16, 16, 3) and out.dtype == np.uint8
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), [0, 50, 50, 190], atol=2)


def test_decode_frames_gives_pillows_pixels_and_refuses_mixed_sizes():
    rng = np.random.default_rng(0)
    frames = [
        (rng.normal(120, 50, (40, 40, 3)) + 60 * np.sin(np.arange(40) / 5)[:, None, None]).clip(0, 255).astype(np.uint8)
        for _ in range(3)
    ]
    encoded = tuple(schema.encode_jpeg(f, q) for f, q in zip(frames, (95, 75, 50)))
    view = schema.parse(schema.serialize(schema.ClipRecord(0, "c", encoded, 40)))
    out = ct.decode_frames(view, np.array([0, 1, 2, 2]))
    pillow = [np.asarray(Image.open(io.BytesIO(e)).convert("RGB")) for e in encoded]
    np.testing.assert_array_equal(out, np.stack(pillow + pillow[2:]))
    mixed = encoded + (schema.encode_jpeg(frames[0][:32, :32], 95),)
    view = schema.parse(schema.serialize(schema.ClipRecord(0, "c", mixed, 40)))
    with pytest.raises(ValueError, match="a stored frame is 32x32, the clip's first frame 40x40"):
        ct.decode_frames(view, np.array([0, 3]))


# ----------------------------------------------------------------------------- DFER-CLIP's recipe
# Read from DFER-CLIP's dataloader/video_transform.py and video_dataloader.py (zengqunzhao/DFER-CLIP).


def test_unit_normalize_is_dferclips_to_tensor():
    torch = pytest.importorskip("torch")
    levels = np.arange(256, dtype=np.uint8)
    pixels = np.stack([levels, levels[::-1], levels], axis=-1)  # [256, 3]
    # ToTorchFormatTensor: img.to(torch.float32).div(255), and no GroupNormalize after it.
    expected = torch.from_numpy(pixels).to(torch.float32).div(255).numpy()
    out = ct.normalize(pixels, "unit")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(ct.normalize(pixels), ct.normalize(pixels, "clip"))
    with pytest.raises(ValueError, match="normalize='imagenet'"):
        ct.normalize(pixels, "imagenet")


class _ScriptedRng:
    """Stands in for np.random.Generator: hands out scripted values and records every call."""

    def __init__(self, uniform, random, integers):
        self._uniform, self._random, self._integers = list(uniform), list(random), list(integers)
        self.calls = []

    def uniform(self, lo, hi):
        self.calls.append(("uniform", lo, hi))
        return self._uniform.pop(0)

    def random(self):
        self.calls.append(("random",))
        return self._random.pop(0)

    def integers(self, lo, hi):
        self.calls.append(("integers", lo, hi))
        return self._integers.pop(0)


def test_dferclip_crop_draws_area_aspect_swap_then_position_like_dferclip():
    # Frame 100x80. Attempt 1: area 100%, aspect 1.3 -> w = round(sqrt(8000 * 1.3)) = 102 > 100: rejected
    # (its swap draw 0.9 is still made). Attempt 2: area 50%, aspect 0.8 -> (57, 71), swap draw 0.2 < 0.5
    # -> w, h = 71, 57; left ~ randint(0, 29) inclusive (the test scripts its top end), top ~ randint(0, 23).
    rng = _ScriptedRng(uniform=[1.0, 1.3, 0.5, 0.8], random=[0.9, 0.2], integers=[29, 0])
    crop = crops.dferclip_crop(100, 80, 50, rng)
    assert crop == crops.SizedCrop((29, 0, 100, 57))
    assert rng.calls == [
        ("uniform", 0.08, 1.0),
        ("uniform", 3 / 4, 4 / 3),
        ("random",),
        ("uniform", 0.08, 1.0),
        ("uniform", 3 / 4, 4 / 3),
        ("random",),
        ("integers", 0, 30),
        ("integers", 0, 24),
    ]
    assert crop.device_box(100, 80) == ((29.0, 0.0, 100.0, 57.0), True)


def test_dferclip_crop_falls_back_to_shorter_side_resize_and_random_square():
    # Ten rejected attempts, then GroupScale(50) (torchvision Resize: shorter side 80 -> 50, longer
    # int(50 * 100 / 80) = 62) and GroupRandomCrop(50): left ~ randint(0, 12), top ~ randint(0, 0).
    rng = _ScriptedRng(uniform=[1.0, 1.3] * 10, random=[0.9] * 10, integers=[12, 0])
    crop = crops.dferclip_crop(100, 80, 50, rng)
    assert crop == crops.SizedCrop((12, 0, 62, 50), resized=(62, 50))
    assert rng.calls[-2:] == [("integers", 0, 13), ("integers", 0, 1)] and len(rng.calls) == 32
    box, inside = crop.device_box(100, 80)
    np.testing.assert_allclose(box, (12 * 100 / 62, 0, 62 * 100 / 62, 50 * 80 / 50))
    assert not inside
    # Shorter side already the model side: no resize, the square is cut straight out.
    rng = _ScriptedRng(uniform=[1.0, 1.3] * 10, random=[0.9] * 10, integers=[3, 0])
    assert crops.dferclip_crop(60, 50, 50, rng) == crops.SizedCrop((3, 0, 53, 50))
    # A frame too thin for any attempt falls back whatever the draws.
    crop = crops.dferclip_crop(1000, 5, 4, np.random.default_rng(0))
    assert crop.resized == (800, 4) and crop.box[3] == 4 and crop.box[2] - crop.box[0] == 4


def _ks_statistic(samples, cdf):
    samples = np.sort(samples)
    n = len(samples)
    theory = cdf(samples)
    return max(np.max(np.arange(1, n + 1) / n - theory), np.max(theory - np.arange(n) / n))


def test_dferclip_crop_box_distribution():
    # 20000 crops of a 1000 px square frame (large, so that rounding w and h barely moves area and ratio).
    side, n = 1000, 20000
    rng = np.random.default_rng(0)
    drawn = [crops.dferclip_crop(side, side, 224, rng) for _ in range(n)]
    assert all(c.resized is None for c in drawn)  # a square frame always fits within ten attempts
    boxes = np.array([c.box for c in drawn])
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert boxes.min() >= 0 and boxes[:, 2:].max() <= side
    area, ratio = w * h / side**2, w / h
    assert area.min() >= 0.08 * 0.99 and area.max() <= 1.0
    assert ratio.min() >= 3 / 4 * 0.99 and ratio.max() <= 4 / 3 * 1.01
    # Below 70% of the frame no draw is ever rejected (the longer side is at most sqrt(0.7 * 4/3) < 1 of
    # the frame's), so there the accepted boxes follow the draws themselves.
    small = area <= 0.7
    assert small.sum() > 0.6 * n
    # Area fraction uniform in [0.08, 0.7].
    assert _ks_statistic(area[small], lambda a: (a - 0.08) / 0.62) < 0.02
    # Width/height swapped with probability 1/2: wider than tall half of the time (4/7 without the swap,
    # since the aspect draw is uniform in [3/4, 4/3]); the ratio follows the swapped mixture
    # P(ratio <= t) = (F(t) + 1 - F(1/t)) / 2, F the uniform CDF on [3/4, 4/3].
    wider = (w[small] > h[small]).mean()
    assert abs(wider - 0.5) < 0.02, wider

    def uniform_cdf(t):
        return np.clip((t - 3 / 4) / (4 / 3 - 3 / 4), 0, 1)

    assert _ks_statistic(ratio[small], lambda t: (uniform_cdf(t) + 1 - uniform_cdf(1 / t)) / 2) < 0.02
    # Without the swap the ratio would be the uniform draw itself: far from what is seen.
    assert _ks_statistic(ratio[small], uniform_cdf) > 0.05
    # Positions uniform over the free range, both ends included.
    free = side - w
    offset = boxes[:, 0][free > 0] / free[free > 0]
    assert abs(offset.mean() - 0.5) < 0.01 and offset.min() == 0.0 and offset.max() == 1.0


def _record(frames, label=3):
    encoded = tuple(schema.encode_jpeg(f, 95) for f in frames)
    return schema.serialize(schema.ClipRecord(label, "c", encoded, frames[0].shape[0]))


def test_brightness_and_rotation_draws_one_per_clip_in_range():
    view = schema.parse(_record([np.full((8, 8, 3), 100, np.uint8)] * 4))
    transform = ct.TrainClipTransform(
        num_frames=2, image_size=8, augment="dferclip", brightness=0.5, rotation_degrees=4.0
    )
    draws = [transform.draw(view, np.random.default_rng(seed)) for seed in range(2000)]
    factors = np.array([d.factor for d in draws])
    angles = np.array([d.degrees for d in draws])
    # DFER-CLIP's ColorJitter(brightness=0.5): factor uniform in [max(0, 1 - 0.5), 1 + 0.5].
    assert factors.min() >= 0.5 and factors.max() <= 1.5
    assert _ks_statistic(factors, lambda f: np.clip(f - 0.5, 0, 1)) < 0.04
    # RandomRotation(4): angle uniform in [-4, 4] degrees.
    assert angles.min() >= -4 and angles.max() <= 4
    assert _ks_statistic(angles, lambda a: np.clip((a + 4) / 8, 0, 1)) < 0.04
    # max(0, 1 - b): a jitter above 1 can black a clip out but never goes negative.
    wide = ct.TrainClipTransform(num_frames=2, image_size=8, brightness=1.5)
    wide_factors = [wide.draw(view, np.random.default_rng(s)).factor for s in range(300)]
    assert 0.0 <= min(wide_factors) < 0.1 and 2.4 < max(wide_factors) <= 2.5
    # Switched off, they draw nothing: frames, crop and flip are those of a transform without them.
    plain = ct.TrainClipTransform(num_frames=2, image_size=8, augment="dferclip")
    for seed in range(20):
        a, b = plain.draw(view, np.random.default_rng(seed)), draws[seed]
        assert a.degrees is None and a.factor is None
        assert a.crop == b.crop and a.flip == b.flip and np.array_equal(a.indices, b.indices)
    with pytest.raises(ValueError, match="augment='inception'"):
        ct.TrainClipTransform(num_frames=2, image_size=8, augment="inception")
    with pytest.raises(ValueError, match="must be >= 0"):
        ct.TrainClipTransform(num_frames=2, image_size=8, rotation_degrees=-4)


def test_host_dferclip_train_is_pil_rotate_brightness_crop_resize_flip():
    rng = np.random.default_rng(1)
    data = _record([rng.integers(0, 256, (30, 30, 3), np.uint8) for _ in range(3)])
    view = schema.parse(data)
    transform = ct.TrainClipTransform(
        num_frames=3, image_size=16, normalize_on_host=False, augment="dferclip", brightness=0.5, rotation_degrees=4.0
    )
    flips = 0
    for seed in range(6):
        out = transform.random_map({"key": 0, "data": data}, np.random.default_rng(seed))["video"]
        d = transform.draw(view, np.random.default_rng(seed))
        assert d.crop.resized is None
        expected = []
        for frame in ct.decode_frames(view, d.indices):
            # DFER-CLIP's order: RandomRotation / ColorJitter, GroupRandomSizedCrop, GroupRandomHorizontalFlip.
            image = Image.fromarray(frame).rotate(d.degrees)
            image = ImageEnhance.Brightness(image).enhance(d.factor)
            image = image.crop(d.crop.box).resize((16, 16), Image.Resampling.BILINEAR)
            if d.flip:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            expected.append(np.asarray(image))
        np.testing.assert_array_equal(out, np.stack(expected))
        flips += d.flip
    assert 0 < flips < 6


def test_dferclip_eval_resizes_the_whole_frame_grace_crops_the_centre():
    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 256, (30, 40, 3), np.uint8) for _ in range(2)]
    data = _record(frames)
    decoded = ct.decode_frames(schema.parse(data), np.array([0, 1]))
    whole = np.stack([np.asarray(Image.fromarray(f).resize((16, 16), Image.Resampling.BILINEAR)) for f in decoded])
    centre = np.stack(
        [
            np.asarray(Image.fromarray(f).resize((16, 16), Image.Resampling.BILINEAR, box=(5, 0, 35, 30)))
            for f in decoded
        ]
    )
    for augment, expected in (("dferclip", whole), ("grace", centre)):
        out = ct.EvalClipTransform(num_frames=2, image_size=16, normalize_on_host=False, augment=augment).map(
            {"key": 0, "data": data}
        )
        np.testing.assert_array_equal(out["video"], expected)
    unit = ct.EvalClipTransform(num_frames=2, image_size=16, normalize="unit", augment="dferclip").map(
        {"key": 0, "data": data}
    )
    np.testing.assert_array_equal(unit["video"], whole.astype(np.float32) / np.float32(255))


def test_eval_transform_ground_truth_fields():
    frames = np.stack([np.full((20, 20, 3), 10 * i, np.uint8) for i in range(6)])
    gt = np.stack([np.full((20, 20, 3), 100 + i, np.uint8) for i in range(6)])
    record = schema.ClipRecord(
        2,
        "c",
        tuple(schema.encode_jpeg(f, 95) for f in frames),
        20,
        expression_frames=tuple(schema.encode_png(f) for f in gt),
        distractor_frames=tuple(schema.encode_png(255 - f) for f in gt),
    )
    transform = ct.EvalClipTransform(num_frames=4, image_size=10, ground_truth=True, normalize_on_host=False)
    out = transform.map({"key": 0, "data": schema.serialize(record)})
    levels = out["gt_expression"][:, 0, 0, 0].astype(int) - 100  # which frames: those of `video`
    np.testing.assert_allclose(out["video"][:, 0, 0, 0], 10 * levels, atol=2)
    assert out["has_ground_truth"] and out["gt_distractor"].shape == (4, 10, 10, 3)
    np.testing.assert_array_equal(out["gt_distractor"], 255 - out["gt_expression"])
    old = schema.ClipRecord(2, "c", record.frames, 20)  # a record without ground truth (version 1)
    for element in ({"key": 0, "data": schema.serialize(old)}, {"key": -1, "data": b""}):
        out = transform.map(element)
        assert not out["has_ground_truth"] and out["gt_expression"].shape == (4, 10, 10, 3)
        assert not out["gt_expression"].any() and not out["gt_distractor"].any()
    plain = ct.EvalClipTransform(num_frames=4, image_size=10).map({"key": 0, "data": schema.serialize(record)})
    assert "gt_expression" not in plain and "has_ground_truth" not in plain
    small = dataclasses.replace(record, expression_frames=tuple(schema.encode_png(f[:10, :10]) for f in gt))
    with pytest.raises(ValueError, match="expression ground truth is 10x10, its frames 20x20"):
        transform.map({"key": 0, "data": schema.serialize(small)})
