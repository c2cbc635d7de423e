"""The Python API on a real two-person video: a track per person with stable ids and a prediction
each; faces="largest" gives the single answer of the main face's own pipeline; arrays and frame
folders; bad input named."""

from __future__ import annotations

import csv
import io
import json
import os

import numpy as np
import pytest
from PIL import Image
from two_people import two_people_video

from grace_jax import faces as faces_lib
from grace_jax.data import video as video_lib
from grace_jax.data import windows as windows_lib
from grace_jax.data.errors import ClipError
from grace_jax.inference import Predictor, pictures
from grace_jax.infra.errors import UsageError

pytestmark = pytest.mark.slow  # a trained run, a real video through the face detector


@pytest.fixture(scope="module")
def predictor(tiny_run):
    return Predictor(tiny_run[0])


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """Person 1 from the start, person 2 entering at 2.0 s of 5 s (25 fps, 640x360, H.264)."""
    return two_people_video(str(tmp_path_factory.mktemp("video") / "two people.mp4"), enter_at=2.0)


def test_every_face_gets_a_track_with_a_stable_id_and_its_own_timeline(predictor, video):
    path, truth = video
    result = predictor(path, faces="all", window_seconds=1.0)
    assert [t.track_id for t in result.tracks] == [1, 2] and result.notes == []
    first, second = result.tracks
    assert first.first_seconds < 0.25 and first.last_seconds > 4.5
    assert 2.0 <= second.first_seconds < 2.25  # the detection step after the entry
    # Each track's detected boxes follow its own person (no swap): within a fifth of a face side.
    for track, person in zip(result.tracks, ("p1", "p2")):
        true = truth.boxes[person][track.boxes[:, 0].astype(int)]
        side = true[:, 2] - true[:, 0]
        centre_error = np.abs((track.boxes[:, 1:3] + track.boxes[:, 3:5]) / 2 - (true[:, :2] + true[:, 2:]) / 2)
        assert (centre_error.max(axis=1) < side / 5).all(), (track.track_id, person)
    # The timelines: person 1 in every 1 s window, person 2 only from the window where it enters.
    assert [w.start_seconds for w in first.windows] == [0, 1, 2, 3, 4]
    assert [w.start_seconds for w in second.windows] == [2, 3, 4]
    for track in result.tracks:
        for w in track.windows:
            assert w.probabilities is not None and abs(w.probabilities.sum() - 1) < 1e-5
            assert w.face_fraction >= 0.75 and w.face_cropped
            assert (w.frame_indices / 25.0 >= w.start_seconds).all() and (w.frame_indices / 25.0 < w.end_seconds).all()
            # The crop square is around this track's face in source pixels.
            box = w.crop_boxes[0]
            near = np.argmin(np.abs(track.boxes[:, 0] - w.frame_indices[0]))
            face = track.boxes[near, 1:]
            assert box[0] <= face[0] + 5 and box[2] >= face[2] - 5
    # The two people are cropped apart: their model inputs differ.
    assert np.abs(first.windows[3].frames.astype(int) - second.windows[1].frames.astype(int)).mean() > 10
    data = json.loads(json.dumps(result.to_dict()))
    assert [t["id"] for t in data["tracks"]] == [1, 2] and data["source_size"] == [360, 640]
    assert data["tracks"][1]["prediction"] in predictor.class_names
    rows = list(csv.reader(io.StringIO(result.to_csv())))
    assert rows[0][:5] == ["input", "track", "start_seconds", "end_seconds", "prediction"] and len(rows) == 1 + 5 + 3
    assert Image.open(io.BytesIO(pictures.timeline_png(result))).size[1] > 400  # two panels
    assert pictures.window_png(result, 1, 0)[:4] == b"\x89PNG"


def test_largest_face_is_the_main_face_pipeline_of_one_clip(predictor, video):
    path, _ = video
    result = predictor(path)  # faces="largest", the whole video as one clip
    assert len(result.tracks) == 1 and len(result.tracks[0].windows) == 1
    window = result.tracks[0].windows[0]
    # The same answer computed step by step: the protocol's frames, the main face's crop, the model.
    (protocol,) = windows_lib.windows(video_lib.frame_times(path), predictor.num_frames)
    frames = np.stack([f for _, f in video_lib.iter_video(path, faces_lib.WHOLE_FRAME_SIDE, protocol.frames.tolist(),
                                                          whole_frame=True)])  # fmt: skip
    found = faces_lib.crop_clip(frames, predictor.detector, size=predictor.image_size)
    expected, _ = predictor.classify(faces_lib.frames_for_model(found, predictor.image_size))
    np.testing.assert_array_equal(window.frame_indices, protocol.frames)
    np.testing.assert_allclose(window.probabilities, expected, rtol=1e-6)
    assert result.prediction == predictor.class_names[int(np.argmax(expected))]


def test_arrays_and_frame_folders_give_the_same_answer(predictor, tmp_path):
    rng = np.random.RandomState(0)
    frames = rng.randint(0, 255, size=(10, 48, 64, 3), dtype=np.uint8)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{i:03d}.png")
    from_array = Predictor.__call__(predictor, frames, name="clip")  # face_crop="auto": no face in noise
    assert from_array.input == "clip" and from_array.prediction is None and "no face" in from_array.tracks[0].note
    plain = Predictor(predictor.run.directory, face_crop="none")
    a, b = plain(frames), plain(str(folder))
    np.testing.assert_allclose(a.tracks[0].windows[0].probabilities, b.tracks[0].windows[0].probabilities, rtol=1e-6)
    assert a.tracks[0].windows[0].face_fraction is None  # not looked for


def test_bad_input_is_named(predictor, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a video")
    for bad, says in ((str(tmp_path / "missing.mp4"), "no such file"), (str(text), "not a video")):
        with pytest.raises(ClipError, match=f"{os.path.basename(bad)}.*{says}"):
            predictor(bad)
    with pytest.raises(ClipError, match="uint8 array"):
        predictor(np.zeros((4, 8, 8), np.float32))
    with pytest.raises(UsageError, match="faces must be one of"):
        predictor(str(text), faces="everyone")
    with pytest.raises(UsageError, match="exactly one"):
        Predictor()
