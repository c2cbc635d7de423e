"""Following the clip's face over sampled frames, filling misses, squares, crops, face_fraction."""

import dataclasses

import numpy as np
import pytest
from face_scenes import paste_face, scene

from grace_jax.faces import crop_frames, faces_fill_frame, track_face
from grace_jax.faces.track import link_tracks, square_crops


@dataclasses.dataclass
class Dets:
    boxes: np.ndarray
    scores: np.ndarray


def _frame(*boxes):
    boxes = np.array(boxes, np.float32).reshape(-1, 4)
    return Dets(boxes, np.full(len(boxes), 0.9, np.float32))


def _box(cx, cy, side):
    return [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]


def test_faceless_clip_has_face_fraction_zero():
    track = track_face([_frame() for _ in range(8)], (240, 320))
    assert track.face_fraction == 0.0
    assert not track.detected.any() and np.isnan(track.squares).all()
    assert not faces_fill_frame(track)
    with pytest.raises(ValueError, match="no face"):
        crop_frames(np.zeros((8, 240, 320, 3), np.uint8), track.squares, 64)
    assert track_face([], (240, 320)).face_fraction == 0.0


def test_missed_frames_take_their_neighbours_box():
    dets = [_frame(_box(100 + 20 * t, 120, 60)) if t not in (3, 4) else _frame() for t in range(8)]
    dets[0] = _frame()  # also missed at the start: takes the first found box
    track = track_face(dets, (240, 640), smooth=1)
    np.testing.assert_array_equal(track.detected, [0, 1, 1, 0, 0, 1, 1, 1])
    assert track.face_fraction == 5 / 8
    centres = (track.boxes[:, 0] + track.boxes[:, 2]) / 2
    # Frames 3 and 4 lie between frame 2 (x=140) and frame 5 (x=200): interpolated, 160 and 180.
    np.testing.assert_allclose(centres, [120, 120, 140, 160, 180, 200, 220, 240], atol=1e-4)
    np.testing.assert_allclose(track.boxes[:, 2] - track.boxes[:, 0], 60, atol=1e-4)


def test_smoothing_evens_out_jitter_and_keeps_steady_motion():
    centre = lambda tr: (tr.boxes[:, 0] + tr.boxes[:, 2]) / 2  # noqa: E731
    steady = [_frame(_box(100 + 10 * t, 100, 50)) for t in range(10)]
    for window in (3, 5):  # a line fit near the ends: no lag behind a steady motion anywhere
        track = track_face(steady, (300, 400), smooth=window)
        np.testing.assert_allclose(centre(track), 100 + 10 * np.arange(10), atol=1e-4)
    rng = np.random.default_rng(0)
    raw_err, smooth_err = [], []
    for _ in range(100):  # jitter around a still face: std 4 px per frame
        noisy = [_frame(_box(200 + rng.normal(0, 4), 150, 50)) for t in range(10)]
        raw_err.append(centre(track_face(noisy, (300, 400), smooth=1)) - 200)
        smooth_err.append(centre(track_face(noisy, (300, 400), smooth=5)) - 200)
    raw_var, smooth_var = np.var(raw_err, axis=0), np.var(smooth_err, axis=0)
    # Whole windows (frames 2..7) average 5 frames: variance / 5; at the cut ends less is gained.
    assert (smooth_var[2:-2] < 0.35 * raw_var[2:-2]).all(), smooth_var / raw_var
    assert smooth_var[[0, 1, -2, -1]].mean() < 0.75 * raw_var[[0, 1, -2, -1]].mean(), smooth_var / raw_var


def test_largest_most_persistent_face_wins():
    # A: large, in every frame. B: larger but in 2 of 8 frames. C: small, in every frame.
    frames = []
    for t in range(8):
        boxes = [_box(300, 200, 80), _box(60, 60, 20)]
        if t in (2, 3):
            boxes.append(_box(500, 250, 120))
        frames.append(_frame(*boxes[::-1]))  # order within a frame does not matter
    track = track_face(frames, (400, 640), smooth=1)
    np.testing.assert_allclose(track.boxes, np.tile(_box(300, 200, 80), (8, 1)), atol=1e-4)
    assert track.face_fraction == 1.0
    assert len(link_tracks(frames)) == 3


def test_tracks_follow_a_person_through_misses_not_a_passer_by():
    # The clip's face is missed in frame 2; someone far away appears there: not a continuation.
    frames = [_frame(_box(100, 100, 50)), _frame(_box(110, 100, 50)), _frame(_box(500, 100, 50)),
              _frame(_box(130, 100, 50)), _frame(_box(140, 100, 50))]  # fmt: skip
    tracks = link_tracks(frames)
    assert sorted(map(sorted, tracks)) == [[0, 1, 3, 4], [2]]
    track = track_face(frames, (300, 640), smooth=1)
    np.testing.assert_array_equal(track.detected, [1, 1, 0, 1, 1])
    np.testing.assert_allclose((track.boxes[2, 0] + track.boxes[2, 2]) / 2, 120, atol=1e-4)


def test_squares_have_the_margin_and_stay_in_the_frame():
    frame_size = (200, 300)
    cs = np.array([[150, 100, 50], [20, 100, 50], [290, 190, 50], [150, 100, 250]], np.float64)
    squares, wanted = square_crops(cs, frame_size, margin=0.25)
    side = squares[:, 2] - squares[:, 0]
    np.testing.assert_allclose(side, squares[:, 3] - squares[:, 1])  # square
    np.testing.assert_allclose(wanted, [75, 75, 75, 375])
    np.testing.assert_allclose(side, [75, 75, 75, 200])  # capped at the shorter side
    np.testing.assert_allclose(squares[0], [112.5, 62.5, 187.5, 137.5])  # centred on the face
    np.testing.assert_allclose(squares[1], [0, 62.5, 75, 137.5])  # moved in from the left edge
    np.testing.assert_allclose(squares[2], [225, 125, 300, 200])  # and from the bottom-right
    np.testing.assert_allclose(squares[3], [50, 0, 250, 200])
    # From a track: a non-square box gets a square of its longer side.
    track = track_face([_frame([100, 50, 140, 110])], frame_size, margin=0.5)
    np.testing.assert_allclose(track.squares[0], [60, 20, 180, 140])


def test_faces_fill_frame():
    face_crop = track_face([_frame(_box(112, 112, 170)) for _ in range(4)], (224, 224), margin=0.2)
    assert faces_fill_frame(face_crop)  # 170 * 1.4 = 238 >= 0.9 * 224
    wide = track_face([_frame(_box(320, 180, 300)) for _ in range(4)], (360, 640), margin=0.2)
    assert not faces_fill_frame(wide)  # fills the height of a 16:9 frame, not its width
    small = track_face([_frame(_box(112, 112, 60)) for _ in range(4)], (224, 224), margin=0.2)
    assert not faces_fill_frame(small)


def test_crop_frames_takes_the_square_and_resizes():
    frames = np.zeros((2, 100, 200, 3), np.uint8)
    frames[:, 20:60, 50:90] = 255  # a white square at x 50..90, y 20..60
    squares = np.array([[50, 20, 90, 60], [30, 0, 110, 80]], np.float32)
    out = crop_frames(frames, squares, 32)
    assert out.shape == (2, 32, 32, 3) and out.dtype == np.uint8
    # Pillow's filter reaches just past the square when it shrinks: the rim blends in.
    assert (out[0, 1:-1, 1:-1] == 255).all() and (out[0] > 200).all()
    assert (out[1, 10:20, 10:20] == 255).all() and (out[1, :5] == 0).all() and (out[1, -5:] == 0).all()


def test_the_track_follows_a_face_moving_across_the_frame(detector):
    # 12 sampled frames; the face crosses a 640x360 frame left to right and is hidden in two.
    rng = np.random.default_rng(5)
    background = scene(rng, 360, 640)
    frames, truth = [], []
    for t in range(12):
        frame, box = paste_face(background, 20 + 40 * t, 60 + 5 * t, 150)
        frames.append(background if t in (5, 6) else frame)
        truth.append(box)
    frames, truth = np.stack(frames), np.stack(truth)
    track = track_face(detector.detect(frames), (360, 640), margin=0.2, smooth=3)
    np.testing.assert_array_equal(track.detected, [t not in (5, 6) for t in range(12)])
    assert track.face_fraction == 10 / 12
    centre = (track.boxes[:, :2] + track.boxes[:, 2:]) / 2
    true_centre = (truth[:, :2] + truth[:, 2:]) / 2
    side = truth[0, 2] - truth[0, 0]
    assert np.abs(centre - true_centre).max() <= 640 / 192 + 0.04 * side, np.abs(centre - true_centre).max()
    # The crops hold the face: their centres follow it, and the face fills 1/1.4 of them.
    sq_centre = (track.squares[:, :2] + track.squares[:, 2:]) / 2
    assert np.abs(sq_centre - centre).max() <= 1e-3
    assert np.allclose(track.squares[:, 2] - track.squares[:, 0], 1.4 * (track.boxes[:, 2] - track.boxes[:, 0]))
    crops = crop_frames(frames, track.squares, 96)
    assert crops.shape == (12, 96, 96, 3)
    assert not faces_fill_frame(track)
