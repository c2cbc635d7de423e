"""Prediction from a trained run: videos and frame folders in, probabilities and pictures out."""

import csv
import json
import os

import av
import numpy as np
import pytest
from PIL import Image

from grace_jax import predict


def _write_mp4(path, frames):
    with av.open(path, "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


@pytest.mark.slow
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
        workdir, [video, str(folder), str(tmp_path / "missing.mp4"), str(text)], out, face_crop="none"
    )
    assert [r["input"] for r in results] == [video, str(folder)]
    # The names README's Prediction section documents: the input's name, unsafe characters as "_".
    assert [os.path.basename(r["picture"]) for r in results] == ["clip_one.mp4.png", "frames.png"]
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

    # The maps file of every input (module docstring's fields), for one's own ground truth.
    maps = np.load(results[0]["maps"])
    t, p = 4, 16  # the tiny run: 4 frames of 32 px, 8-px patches
    class_maps = maps["class_maps"]
    assert class_maps.shape == (7, t, p)
    np.testing.assert_allclose(class_maps.sum((1, 2)), 1.0, rtol=1e-4)
    # Class-dependent: the classes' maps differ from each other and from the motion weights.
    assert np.abs(class_maps[:, None] - class_maps[None]).sum((2, 3))[~np.eye(7, dtype=bool)].min() > 1e-3
    assert np.abs(class_maps - maps["motion_weights"][None]).sum((1, 2)).min() > 1e-3
    assert int(maps["predicted"]) == list(results[0]["probabilities"]).index(results[0]["prediction"])
    assert list(maps["class_names"]) == list(results[0]["probabilities"])
    assert maps["grid"].tolist() == [4, 4] and int(maps["patch_size"]) == 8 and int(maps["image_size"]) == 32
    # The sampled frames of a 12-frame video: the centre of each of 4 segments.
    assert maps["frame_indices"].tolist() == [1, 4, 7, 10]
    assert maps["source_size"].tolist() == [64, 64] and not bool(maps["face_cropped"])
    np.testing.assert_array_equal(maps["crop_boxes"], np.tile([0, 0, 64, 64], (4, 1)))
    assert np.load(results[1]["maps"])["frame_indices"].tolist() == [0, 1, 2, 2]  # 3 frames, last repeated


def _face(side):
    # The stored crop of matplotlib's portrait of Grace Hopper (tests/faces/data).
    reference = os.path.join(os.path.dirname(__file__), "faces", "data", "blazeface_reference.npz")
    with np.load(reference) as f:
        return np.asarray(Image.fromarray(f["face"]).resize((side, side), Image.BILINEAR))


def test_face_crop_auto_crops_to_the_face_and_reports_a_clip_without_one(tiny_run, tmp_path):
    # The face moves right across a 16:9 noise scene; the other video is the scene alone.
    workdir, _ = tiny_run
    face = _face(90)
    rng = np.random.RandomState(1)
    scene = rng.randint(60, 200, size=(180, 320, 3)).astype(np.uint8)
    moving = []
    for t in range(12):
        frame = scene.copy()
        frame[50:140, 20 + 15 * t : 110 + 15 * t] = face
        moving.append(frame)
    face_video, faceless_video = str(tmp_path / "face.mp4"), str(tmp_path / "nobody.mp4")
    _write_mp4(face_video, np.stack(moving))
    _write_mp4(faceless_video, np.stack([scene] * 12))
    out = str(tmp_path / "out")

    results, errors = predict.run(workdir, [face_video, faceless_video], out, face_crop="auto")
    assert errors == []
    found, nobody = results
    assert found["face_fraction"] > 0.5 and found["face"].startswith("cropped to the face")
    assert abs(sum(found["probabilities"].values()) - 1) < 1e-4
    assert found["prediction"] == max(found["probabilities"], key=found["probabilities"].get)
    assert os.path.exists(found["picture"])
    assert nobody["face_fraction"] == 0 and nobody["face"].startswith("no face")
    assert nobody["prediction"] is None and nobody["probabilities"] is None and "picture" not in nobody
    with open(os.path.join(out, "predictions.json")) as f:
        assert json.load(f)["results"][1]["probabilities"] is None
    with open(os.path.join(out, "predictions.csv")) as f:
        header, face_row, nobody_row = list(csv.reader(f))
    assert header[-1] == "face_fraction" and float(face_row[-1]) == found["face_fraction"]
    assert nobody_row[1] == "no face" and nobody_row[2:-1] == [""] * 7 and float(nobody_row[-1]) == 0


@pytest.mark.slow
def test_windows_of_a_video_where_the_face_enters_late(tiny_run, tmp_path):
    # 6 s at 10 fps: nobody for 3 s, then a face; 2 s windows every 1.5 s.
    workdir, _ = tiny_run
    rng = np.random.RandomState(2)
    scene = rng.randint(60, 200, size=(180, 320, 3)).astype(np.uint8)
    with_face = scene.copy()
    with_face[40:140, 180:280] = _face(100)
    video = str(tmp_path / "late.mp4")
    _write_mp4(video, np.stack([scene] * 30 + [with_face] * 30))
    out = str(tmp_path / "out")

    results, errors = predict.run(workdir, [video], out, window_seconds=2, stride_seconds=1.5)
    assert errors == []
    spans = [(r["start_seconds"], r["end_seconds"]) for r in results]
    assert spans == [(0, 2), (1.5, 3.5), (3, 5), (4, 6)]  # the last window ends with the video
    first, straddling, *later = results
    assert first["prediction"] is None and first["face_fraction"] == 0
    # The face is in 1 of the 4 frames this window samples: just at --min_face_fraction 0.25.
    assert straddling["face_fraction"] == 0.25 and straddling["face"].startswith("cropped to the face")
    for r in [straddling, *later]:
        assert r["face"].startswith("cropped to the face")
        assert abs(sum(r["probabilities"].values()) - 1) < 1e-4
    assert later[0]["face_fraction"] == later[1]["face_fraction"] == 1
    # One picture per classified window, named by its start.
    assert [os.path.basename(r["picture"]) for r in [straddling, *later]] == [
        "late.mp4_1.5s.png",
        "late.mp4_3s.png",
        "late.mp4_4s.png",
    ]
    with open(os.path.join(out, "predictions.csv")) as f:
        rows = list(csv.reader(f))
    assert rows[0][:4] == ["input", "start_seconds", "end_seconds", "prediction"]
    assert [r[1:4] for r in rows[1:3]] == [["0.0", "2.0", "no face"], ["1.5", "3.5", straddling["prediction"]]]


@pytest.mark.slow
def test_out_naming_an_existing_file_is_refused_before_the_model_loads(tiny_run, tmp_path, monkeypatch):
    import subprocess
    import sys

    from grace_jax.infra import errors
    from grace_jax.run import runs

    workdir, _ = tiny_run
    results = tmp_path / "results.json"
    results.write_text('{"kept": true}\n')
    clip = str(tmp_path / "clip.mp4")
    _write_mp4(clip, np.zeros((8, 32, 32, 3), np.uint8))

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(runs, "load", no_load)
    for out, what in ((results, "is a file"), (results / "inner", f"is inside {results}, which is a file")):
        with pytest.raises(errors.UsageError, match=rf"^--out={out} {what}; predict writes a folder"):
            predict.run(workdir, [clip], str(out))
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=repo)
    done = subprocess.run(
        [sys.executable, "-m", "grace_jax.predict", f"--workdir={workdir}", "--out=results.json", clip],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines() == [
        f"grace_jax.predict: error: --out={results} is a file; predict writes a folder (predictions.json, "
        "predictions.csv, pictures): give a folder path, e.g. --out=predictions. Nothing was read or written."
    ]
    assert results.read_text() == '{"kept": true}\n' and sorted(os.listdir(tmp_path)) == ["clip.mp4", "results.json"]


@pytest.mark.slow
def test_faces_all_gives_a_result_per_face_and_window_and_a_timeline(tiny_run, tmp_path):
    from two_people import two_people_video

    video, _ = two_people_video(str(tmp_path / "two.mp4"), seconds=3.0, enter_at=1.0)
    out = str(tmp_path / "out")
    results, errors = predict.run(tiny_run[0], [video], out, faces="all", window_seconds=1.0)
    assert errors == []
    assert [(r["track"], r["start_seconds"]) for r in results] == [(1, 0), (1, 1), (1, 2), (2, 1), (2, 2)]
    assert all(r["prediction"] in r["probabilities"] for r in results)
    assert [os.path.basename(r["picture"]) for r in results[3:]] == ["two.mp4_1s_face2.png", "two.mp4_2s_face2.png"]
    timeline = results[0]["timeline"]
    assert os.path.basename(timeline) == "two.mp4_timeline.png" and all(r["timeline"] == timeline for r in results)
    with Image.open(timeline) as picture:
        assert picture.size[1] > 400  # a panel per face
    with open(os.path.join(out, "predictions.csv")) as f:
        rows = list(csv.reader(f))
    assert rows[0][:4] == ["input", "track", "start_seconds", "end_seconds"] and [r[1] for r in rows[1:]] == list(
        "11122"
    )
    # The default follows the main face: one result, as before.
    single, _ = predict.run(tiny_run[0], [video], str(tmp_path / "single"), pictures=False)
    assert len(single) == 1 and "track" not in single[0] and single[0]["prediction"] is not None
