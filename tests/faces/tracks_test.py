"""Every face of a video: shot cuts, tracks with stable ids, notes on brief faces, squares per window."""

import dataclasses

import numpy as np
import pytest
from face_scenes import paste_face, scene
from two_people import FPS, HEIGHT, WIDTH, two_people_video

from grace_jax.data.video import frame_times, iter_video
from grace_jax.faces import VideoTrack, shot_cuts, track_video_faces
from grace_jax.faces.track import link_tracks, square_crops

STEP = 5  # every 5th frame of the 25 fps videos: detection at 5 fps, 0.2 s apart


@dataclasses.dataclass
class Dets:
    boxes: np.ndarray
    scores: np.ndarray


def _frame(*boxes, score=0.9):
    boxes = np.array(boxes, np.float32).reshape(-1, 4)
    return Dets(boxes, np.full(len(boxes), score, np.float32))


def _box(cx, cy, side):
    return [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]


def _centres(boxes):
    return (np.asarray(boxes)[..., :2] + np.asarray(boxes)[..., 2:]) / 2


def _detect_video(path, detector):
    """Decodes every STEP-th frame with grace_jax's reader; (frames, frame numbers, times, detections)."""
    times = frame_times(path)
    indices = np.arange(0, len(times), STEP)
    frames = np.stack([frame for _, frame in sorted(iter_video(path, WIDTH, indices, whole_frame=True))])
    assert frames.shape == (len(indices), HEIGHT, WIDTH, 3)
    return frames, indices, times[indices], detector.detect(frames)


def _follows(track, truth_boxes, frame_indices):
    """The track's detected boxes lie on that person's true face boxes (centre within 15% of a side)."""
    rows = np.searchsorted(frame_indices, track.frame_indices)
    truth = truth_boxes[track.frame_indices]
    assert np.isfinite(truth).all(), f"track {track.track_id} is where that person is not"
    err = np.linalg.norm(_centres(track.boxes) - _centres(truth), axis=1) / (truth[:, 2] - truth[:, 0])
    assert (err[track.detected] < 0.15).all(), (track.track_id, err)
    return rows


@pytest.fixture(scope="module")
def two_people(tmp_path_factory, detector):
    path, truth = two_people_video(str(tmp_path_factory.mktemp("video") / "two.mp4"), enter_at=2.0)
    return truth, _detect_video(path, detector)


@pytest.fixture(scope="module")
def with_cut(tmp_path_factory, detector):
    path, truth = two_people_video(str(tmp_path_factory.mktemp("video") / "cut.mp4"), cut_at=3.2, flash=(1.0, 1.3))
    return truth, _detect_video(path, detector)


def test_two_people_get_two_stable_tracks(two_people):
    truth, (frames, indices, times, detections) = two_people
    assert [len(d) for d in detections] == [1] * 10 + [2] * 15  # person 2 from 2.0 s (frame 50)
    cuts = shot_cuts(frames)
    assert not cuts.any()  # someone entering is no cut
    tracks, notes = track_video_faces(detections, indices, times, (HEIGHT, WIDTH), cuts=cuts)
    assert notes == []
    assert [t.track_id for t in tracks] == [1, 2]
    first, second = tracks
    # Id 1: the one there from the start, to the end; id 2: the late one, from its entry on.
    assert first.start == 0.0 and first.end == pytest.approx(times[-1])
    assert truth.enter_at <= second.start < truth.enter_at + STEP / FPS
    assert second.end == pytest.approx(times[-1])
    assert first.detected.all() and second.detected.all()
    # No swap: each track stays on its own person in every frame.
    _follows(first, truth.boxes["p1"], indices)
    _follows(second, truth.boxes["p2"], indices)
    assert first.boxes.dtype == np.float32 and first.frame_indices.dtype == np.int64
    np.testing.assert_array_equal(second.frame_indices, indices[10:])


def test_a_cut_ends_tracks_and_a_passer_by_is_only_noted(with_cut):
    truth, (frames, indices, times, detections) = with_cut
    cuts = shot_cuts(frames)
    cut_row = int(np.searchsorted(times, truth.cut_at))
    np.testing.assert_array_equal(np.nonzero(cuts)[0], [cut_row])
    tracks, notes = track_video_faces(detections, indices, times, (HEIGHT, WIDTH), cuts=cuts)
    assert [t.track_id for t in tracks] == [1, 2, 3]
    p1, p2, after = tracks
    assert p1.end < truth.cut_at and p2.end < truth.cut_at  # both end at the cut
    assert after.start == pytest.approx(times[cut_row]) and after.end == pytest.approx(times[-1])
    _follows(p1, truth.boxes["p1"], indices)
    _follows(p2, truth.boxes["p2"], indices)
    _follows(after, truth.boxes["p1_after"], indices)
    # The face shown for 0.3 s (two detection frames) is a note, not a track.
    assert len(notes) == 1
    assert notes[0].startswith("a face seen in only 2 detection frames at 1.0-1.2 s (box ")
    assert notes[0].endswith("): too few to predict")
    # Without the cut, person 2's track runs on into the other shot's face (it is that close).
    uncut, _ = track_video_faces(detections, indices, times, (HEIGHT, WIDTH))
    assert len(uncut) == 2 and uncut[1].end == pytest.approx(times[-1])


def _still_scene_frames(rng, positions, side=200):
    background = scene(rng, 360, 640)
    frames = []
    for pos in positions:
        frame = background
        for x, y in pos:
            frame, _ = paste_face(frame, x, y, side)
        frames.append(frame)
    return np.stack(frames)


def test_shot_cuts_finds_a_cut_not_motion():
    rng = np.random.default_rng(2)
    # One scene: a face moving far between detection frames, a second face entering, both leaving.
    moving = [[(20 + 60 * t, 80)] for t in range(5)] + [[(300, 60), (40, 120)], [(320, 70), (60, 110)], []]
    same = _still_scene_frames(rng, moving)
    assert not shot_cuts(same).any()
    # Another room (other objects and colours), with a face at another place: a cut at frame 8.
    other = 255 - _still_scene_frames(rng, [[(400, 100)]] * 3)[..., ::-1]
    cuts = shot_cuts(np.concatenate([same, other]))
    np.testing.assert_array_equal(np.nonzero(cuts)[0], [len(same)])
    assert shot_cuts(same[:1]).tolist() == [False] and len(shot_cuts(same[:0])) == 0
    # Short clips: the cut itself is not part of the typical change it is compared with.
    assert shot_cuts(np.stack([same[0], other[0]])).tolist() == [False, True]
    assert shot_cuts(np.stack([same[0], same[1], other[0]])).tolist() == [False, False, True]
    with pytest.raises(ValueError, match=r"\[N,H,W,3\]"):
        shot_cuts(same[0])


def test_crowded_frames_keep_four_tracks():
    rng = np.random.default_rng(0)
    lanes = np.array([100.0, 210.0, 320.0, 430.0])  # 110 px apart, faces 90 px wide: side by side
    frames = []
    for t in range(20):
        boxes = [_box(cx + rng.normal(0, 6), 150 + rng.normal(0, 6), 90 + rng.normal(0, 3)) for cx in lanes]
        present = [k for k in range(4) if not (k == 2 and t in (7, 8)) and not (k == 0 and t == 12)]
        frames.append(_frame(*[boxes[k] for k in rng.permutation(present)]))  # order within a frame is random
    tracks, notes = track_video_faces(frames, np.arange(20) * 5, np.arange(20) * 0.2, (360, 640))
    assert notes == [] and len(tracks) == 4
    for k, track in enumerate(tracks):  # ids left to right (all first seen in frame 0), each in its lane
        assert track.track_id == k + 1
        assert np.abs(_centres(track.boxes)[:, 0] - lanes[k]).max() < 25
    assert tracks[2].detected.sum() == 18 and not tracks[2].detected[7:9].any()
    assert tracks[0].detected.sum() == 19


def test_side_by_side_faces_do_not_swap_when_one_moves():
    # Two faces 100 px wide, 110 px apart; the right one leans towards the left one and back.
    frames = []
    for t in range(12):
        lean = 40 * np.sin(np.pi * t / 11)
        frames.append(_frame(_box(310 - lean, 200, 100), _box(200, 200, 100)))
    tracks, _ = track_video_faces(frames, np.arange(12), np.arange(12) * 0.25, (400, 640))
    assert len(tracks) == 2
    assert np.abs(_centres(tracks[0].boxes)[:, 0] - 200).max() < 1e-3
    assert (_centres(tracks[1].boxes)[:, 0] >= 270 - 1e-3).all()


def test_a_long_miss_ends_a_track_and_late_faces_get_later_ids():
    face = _box(300, 200, 80)
    # Seen 0-1.0 s, missed 1.2-2.4 s (more than max_gap), seen again 2.6-3.4 s.
    frames = [_frame(face) if t <= 5 or t >= 13 else _frame() for t in range(18)]
    frames[3] = _frame(face, _box(500, 200, 80), score=0.9)
    frames[3].scores[1] = 0.3  # under min_score: ignored
    times = np.arange(18) * 0.2
    tracks, notes = track_video_faces(frames, np.arange(18) * 5, times, (400, 640), max_gap_seconds=1.0)
    assert notes == [] and [(t.track_id, round(t.start, 6), round(t.end, 6)) for t in tracks] == [
        (1, 0.0, 1.0),
        (2, 2.6, 3.4),
    ]
    # A miss of up to max_gap keeps the track: filled in, not detected there.
    frames = [_frame(face) if t not in (3, 4, 5, 6) else _frame() for t in range(10)]  # 0.4 -> 1.4 s
    (track,), _ = track_video_faces(frames, np.arange(10) * 5, np.arange(10) * 0.2, (400, 640))
    np.testing.assert_array_equal(track.detected, [1, 1, 1, 0, 0, 0, 0, 1, 1, 1])
    np.testing.assert_allclose(track.boxes, np.tile(face, (10, 1)), atol=1e-4)
    # A face first seen in the same frame as another but further left comes first.
    frames = [_frame(_box(500, 200, 80), _box(100, 200, 80)) for _ in range(4)]
    tracks, _ = track_video_faces(frames, np.arange(4), np.arange(4) * 0.2, (400, 640))
    assert [(t.track_id, round(float(_centres(t.boxes)[0, 0]))) for t in tracks] == [(1, 100), (2, 500)]
    with pytest.raises(ValueError, match="cuts"):
        track_video_faces(frames, np.arange(4), np.arange(4) * 0.2, (400, 640), cuts=np.zeros(3, bool))
    with pytest.raises(ValueError, match="frame indices"):
        track_video_faces(frames, np.arange(3), np.arange(4) * 0.2, (400, 640))
    with pytest.raises(ValueError, match="both"):
        link_tracks(frames, max_gap=1.0)


def test_a_single_sighting_is_noted_in_the_singular():
    frames = [_frame(), _frame(_box(100, 100, 40)), _frame()]
    tracks, notes = track_video_faces(frames, [0, 10, 20], [0.0, 0.4, 0.8], (200, 200))
    assert tracks == []
    assert notes == ["a face seen in only 1 detection frame at 0.4 s (box 80, 80, 120, 120): too few to predict"]


def _made_track():
    # Detection frames 10, 20, 30, 40 of the source video; missed at 30.
    boxes = np.array([_box(100, 100, 40), _box(120, 100, 40), _box(140, 100, 60), _box(160, 100, 80)], np.float32)
    return VideoTrack(
        track_id=1,
        frame_indices=np.array([10, 20, 30, 40], np.int64),
        times=np.array([0.4, 0.8, 1.2, 1.6]),
        boxes=boxes,
        detected=np.array([True, True, False, True]),
    )


def test_squares_at_interpolates_between_detection_frames():
    track = _made_track()
    frame_size = (200, 300)
    squares = track.squares_at(np.array([0, 10, 15, 25, 40, 99]), frame_size, margin=0.25)
    assert squares.shape == (6, 4) and squares.dtype == np.float32
    # The same convention as the clip's squares: (cx, cy, side) through square_crops.
    expected_cs = np.array([[100, 100, 40], [100, 100, 40], [110, 100, 40], [130, 100, 50], [160, 100, 80]])
    expected, _ = square_crops(expected_cs, frame_size, 0.25)
    np.testing.assert_allclose(squares[:5], expected, atol=1e-4)
    np.testing.assert_allclose(squares[5], squares[4])  # clamped after the span
    np.testing.assert_allclose(squares[2], [80, 70, 140, 130])  # centre 110, side 40 * 1.5
    # A big face near the edge: capped at the frame's shorter side and moved inside.
    big = dataclasses.replace(track, boxes=track.boxes + np.array([0, 0, 200, 200], np.float32))
    (square,) = big.squares_at(np.array([10]), frame_size)
    np.testing.assert_allclose(square, [100, 0, 300, 200])  # centre (200, 200): side 200, moved up inside


def test_seen_fraction_counts_frames_near_detections_inside_the_span():
    track = _made_track()
    assert track.seen_fraction(np.arange(10, 20)) == 1.0
    # Frames 26..34: nearest detection frame 30, where the face was missed; 25 ties to 20 (seen).
    assert track.seen_fraction(np.arange(26, 35)) == 0.0
    assert track.seen_fraction(np.array([25, 26])) == 0.5
    assert track.seen_fraction(np.arange(0, 10)) == 0.0  # before the span
    assert track.seen_fraction(np.arange(35, 45)) == 0.5  # 35 ties to 30 (missed), 36-40 seen, 41-44 after
    assert track.seen_fraction(np.array([], np.int64)) == 0.0
    single = VideoTrack(2, np.array([5]), np.array([0.2]), np.zeros((1, 4), np.float32), np.array([True]))
    assert single.seen_fraction(np.array([4, 5, 6])) == pytest.approx(1 / 3)
