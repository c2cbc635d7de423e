"""Prediction from a trained run: videos and frame folders in, probabilities and pictures out."""

import csv
import json
import os

import av
import numpy as np
from PIL import Image

from grace_jax import heatmaps, predict


def _write_mp4(path, frames):
    with av.open(path, "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def test_predict_videos_and_folders(tiny_run, tmp_path):
    workdir, _ = tiny_run
    rng = np.random.RandomState(0)
    frames = rng.randint(0, 255, size=(12, 64, 64, 3), dtype=np.uint8)
    video = str(tmp_path / "clip one.mp4")
    _write_mp4(video, frames)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):  # Shorter than the model's 4 frames: the last one repeats.
        Image.fromarray(frames[i]).save(folder / f"{i + 1:05d}.jpg")
    text = tmp_path / "notes.txt"
    text.write_text("not a video")
    out = str(tmp_path / "out")

    results, errors = predict.run(
        workdir, [video, str(folder), str(tmp_path / "missing.mp4"), str(text)], out
    )
    assert [r["input"] for r in results] == [video, str(folder)]
    assert len(errors) == 2 and "missing.mp4" in errors[0] and "notes.txt" in errors[1]
    for r in results:
        probs = list(r["probabilities"].values())
        assert len(probs) == 7 and abs(sum(probs) - 1) < 1e-4
        assert r["prediction"] == max(r["probabilities"], key=r["probabilities"].get)
        with open(r["picture"], "rb") as f:
            assert f.read(4) == b"\x89PNG"
    with open(os.path.join(out, "predictions.json")) as f:
        assert json.load(f)["errors"] == errors
    with open(os.path.join(out, "predictions.csv")) as f:
        rows = list(csv.reader(f))
    assert rows[0][:3] == ["input", "prediction", "happiness"] and len(rows) == 3
    assert not [n for n in os.listdir(out) if n.endswith(".tmp") or ".tmp." in n]


def test_colormap_and_overlay():
    colours = heatmaps.colormap(np.array([0.0, 1.0]))
    assert tuple(colours[0]) == (0, 0, 128) and tuple(colours[1]) == (220, 0, 0)
    frame = np.zeros((8, 8, 3), np.uint8)
    hot = heatmaps.overlay(frame, np.array([[0.0, 1.0], [0.0, 0.0]]), scale=1.0)
    assert hot[0, 7, 0] > hot[0, 0, 0]  # The top-right patch is the hot one.
