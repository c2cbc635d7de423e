"""What `Predictor` returns for one video: its face tracks, each with a prediction per time window.

    result = predictor("interview.mp4", faces="all", window_seconds=1.0)
    result.prediction                      # the first track's class (the largest face with faces="largest")
    for track in result.tracks:            # one per person, ids stable over the video
        track.track_id, track.prediction, track.probabilities
        for window in track.windows:       # the timeline
            window.start_seconds, window.end_seconds, window.probabilities   # [C] or None
    json.dumps(result.to_dict()); result.to_csv()

Boxes are in the source video's pixels (x0, y0, x1, y1). The arrays the pictures are drawn from
(the model's input frames, the motion weights and the class maps) stay on the window objects and are
left out of `to_dict`.
"""

from __future__ import annotations

import csv
import dataclasses
import io

import numpy as np


@dataclasses.dataclass(frozen=True)
class WindowResult:
    """One time window of one face track (the whole video when no window length is given)."""

    start_seconds: float
    end_seconds: float
    probabilities: np.ndarray | None  # float64 [C]; None: the face was seen in too few of its frames
    face_fraction: float | None  # fraction of its sampled frames where the face was found; None: not looked for
    frame_indices: np.ndarray  # int64 [T]: the source frames the model saw
    crop_boxes: np.ndarray  # float32 [T,4]: the square each model frame shows, in source pixels
    face_cropped: bool  # False: the frames' centre squares (face_crop="none", or faces that fill the frame)
    frames: np.ndarray | None = dataclasses.field(default=None, repr=False)  # uint8 [T,S,S,3] model input
    motion_weights: np.ndarray | None = dataclasses.field(default=None, repr=False)  # float32 [T,P]
    class_maps: np.ndarray | None = dataclasses.field(default=None, repr=False)  # float32 [C,T,P]
    note: str | None = None  # what was done about the face, one line
    # uint8 [T,h,w,3]: the whole frames, small, with the crop squares drawn (None when not cropped)
    context: np.ndarray | None = dataclasses.field(default=None, repr=False)

    def top(self) -> int | None:
        return None if self.probabilities is None else int(np.argmax(self.probabilities))


@dataclasses.dataclass(frozen=True)
class TrackResult:
    """One person's face over the video."""

    track_id: int  # 1, 2, ... in order of first appearance
    windows: list[WindowResult]
    boxes: np.ndarray  # float32 [N,5]: (source frame index, x0, y0, x1, y1) where the face was detected
    first_seconds: float
    last_seconds: float
    note: str | None = None

    @property
    def probabilities(self) -> np.ndarray | None:
        """float64 [C]: the mean over the windows that have one (None if none has)."""
        rows = [w.probabilities for w in self.windows if w.probabilities is not None]
        return np.mean(rows, axis=0) if rows else None

    def top(self) -> int | None:
        probabilities = self.probabilities
        return None if probabilities is None else int(np.argmax(probabilities))

    @property
    def face_fraction(self) -> float | None:
        """The mean over the windows; None where faces were not looked for."""
        values = [w.face_fraction for w in self.windows if w.face_fraction is not None]
        return float(np.mean(values)) if values else None


@dataclasses.dataclass(frozen=True)
class VideoResult:
    """Every face track of one input, and what the input was."""

    input: str  # the path, or a name given for an array
    class_names: list[str]
    tracks: list[TrackResult]
    fps: float | None  # None for a frame folder or an array without a clock
    duration_seconds: float
    source_size: tuple[int, int]  # (height, width) of the source frames, upright
    notes: list[str] = dataclasses.field(default_factory=list)  # faces seen too briefly, and the like

    @property
    def prediction(self) -> str | None:
        """The first track's class; None without a face track with a prediction."""
        return self.track_prediction(0)

    def track_prediction(self, index: int) -> str | None:
        top = self.tracks[index].top() if index < len(self.tracks) else None
        return None if top is None else self.class_names[top]

    def _probabilities(self, values: np.ndarray | None) -> dict[str, float] | None:
        if values is None:
            return None
        return {n: round(float(p), 6) for n, p in zip(self.class_names, values)}

    def to_dict(self) -> dict:
        """The numbers, JSON-ready (no pixel arrays)."""
        tracks = []
        for track in self.tracks:
            windows = [
                {
                    "start_seconds": w.start_seconds,
                    "end_seconds": w.end_seconds,
                    "prediction": None if w.top() is None else self.class_names[w.top()],
                    "probabilities": self._probabilities(w.probabilities),
                    "face_fraction": _round(w.face_fraction),
                    "frame_indices": [int(i) for i in w.frame_indices],
                    "crop_boxes": np.round(np.asarray(w.crop_boxes, np.float64), 1).tolist(),
                }
                for w in track.windows
            ]
            tracks.append(
                {
                    "id": track.track_id,
                    "prediction": None if track.top() is None else self.class_names[track.top()],
                    "probabilities": self._probabilities(track.probabilities),
                    "face_fraction": _round(track.face_fraction),
                    "first_seconds": round(track.first_seconds, 3),
                    "last_seconds": round(track.last_seconds, 3),
                    "note": track.note,
                    "boxes": [[int(b[0]), *(round(float(v), 1) for v in b[1:])] for b in track.boxes],
                    "windows": windows,
                }
            )
        return {
            "input": self.input,
            "class_names": list(self.class_names),
            "fps": self.fps,
            "duration_seconds": round(self.duration_seconds, 3),
            "source_size": list(self.source_size),
            "prediction": self.prediction,
            "tracks": tracks,
            "notes": list(self.notes),
        }

    def to_csv(self) -> str:
        """One row per track and window: input, track, start, end, prediction, one column per class,
        face_fraction."""
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer)
        writer.writerow(
            ["input", "track", "start_seconds", "end_seconds", "prediction", *self.class_names, "face_fraction"]
        )
        for track in self.tracks:
            for w in track.windows:
                probabilities = [] if w.probabilities is None else [round(float(p), 6) for p in w.probabilities]
                writer.writerow(
                    [
                        self.input,
                        track.track_id,
                        w.start_seconds,
                        w.end_seconds,
                        "no face" if w.top() is None else self.class_names[w.top()],
                        *(probabilities or [""] * len(self.class_names)),
                        "" if w.face_fraction is None else _round(w.face_fraction),
                    ]
                )
        return buffer.getvalue()


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)
