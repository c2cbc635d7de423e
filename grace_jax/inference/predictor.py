"""A trained model on videos, from Python: one class, loaded once, called per video.

    from grace_jax.inference import Predictor

    predictor = Predictor("runs/demo")                 # a run, an exported folder, a hub name, a converted run
    result = predictor("clip.mp4")                     # or a frame folder, or a uint8 array [T,H,W,3]
    print(result.prediction, result.tracks[0].probabilities)
    result = predictor("interview.mp4", faces="all", window_seconds=1.0)   # every face, a timeline each

faces="largest" (the default) follows the clip's main face in each window, as `grace_jax.predict` has
always done: one track. faces="all" detects faces over the whole video (`detect_fps` frames a second),
follows each person across frames (`grace_jax.faces.tracks`: stable ids, tracks end at shot cuts) and
predicts every track in every window it is seen in; a face seen too briefly is reported in
`result.notes`, not predicted. See grace_jax/inference/results.py for what comes back.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from grace_jax import faces as faces_lib
from grace_jax.data import input_pipeline
from grace_jax.data import windows as windows_lib
from grace_jax.inference import frames as frames_lib
from grace_jax.inference import sources
from grace_jax.inference.results import TrackResult, VideoResult, WindowResult
from grace_jax.infra.errors import UsageError
from grace_jax.run import heatmaps, runs

FACES = ("largest", "all")
Progress = Callable[[str, float], None]


def predict_step(state, video, *, graphdef, normalize: str = "clip"):
    """uint8 video [B,T,H,W,3] -> probabilities [B,C] and the maps the pictures show.

    `normalize` is the run's config.data.normalize: the model gets the input scale it was trained on.
    """
    model = nnx.merge(graphdef, state["params"], state["frozen"], state["rest"])
    logits, aux = model(input_pipeline.normalize_on_device(video, normalize))
    maps = {"motion": aux["motion_weights"]}  # [B,T,P]
    if "class_maps" in aux:
        maps["class_maps"] = aux["class_maps"]  # [B,C,T,P]
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1), maps


class Predictor:
    """A model loaded once; `predictor(video)` -> `VideoResult`. Compiled shapes are reused."""

    def __init__(
        self,
        source: str | os.PathLike | None = None,
        *,
        model: str | None = None,
        checkpoint: str = "best",
        faces: str = "largest",
        face_crop: str = "auto",
        min_face_fraction: float = 0.25,
        window_seconds: float = 0.0,
        stride_seconds: float = 0.0,
        folder_fps: float = 25.0,
        detect_fps: float = 5.0,
    ):
        """`source`: a run folder (grace_jax.main's or grace_jax.convert's), an exported model folder or
        its hub name; `model` instead: an export only (a folder or hub name). The other arguments are
        the defaults of every call (see `__call__`)."""
        if (source is None) == (model is None):
            raise UsageError("give exactly one of a run (source) and an exported model (model=)")
        if face_crop not in ("auto", "none"):
            raise UsageError(f"face_crop must be 'auto' or 'none', got {face_crop!r}")
        if not 0 <= min_face_fraction <= 1 or detect_fps <= 0 or folder_fps <= 0:
            raise UsageError("min_face_fraction must be in [0, 1], detect_fps and folder_fps > 0")
        self.run = runs.load(model, checkpoint, kind="export") if model else runs.load(os.fspath(source), checkpoint)
        self.config = self.run.config
        self.class_names = list(self.run.class_names)
        self.face_crop, self.min_face_fraction = face_crop, min_face_fraction
        self.folder_fps, self.detect_fps = folder_fps, detect_fps
        self.defaults = {"faces": faces, "window_seconds": window_seconds, "stride_seconds": stride_seconds}
        _check_call(**self.defaults, face_crop=face_crop)
        self._step = jax.jit(
            functools.partial(predict_step, graphdef=self.run.graphdef, normalize=self.config.data.normalize)
        )
        self._detector = None

    @property
    def image_size(self) -> int:
        return int(self.config.data.image_size)

    @property
    def num_frames(self) -> int:
        return int(self.config.data.num_frames)

    @property
    def detector(self) -> faces_lib.FaceDetector:
        if self._detector is None:
            self._detector = faces_lib.FaceDetector()
        return self._detector

    def __call__(
        self,
        video: str | os.PathLike | np.ndarray,
        *,
        fps: float | None = None,
        name: str | None = None,
        faces: str | None = None,
        window_seconds: float | None = None,
        stride_seconds: float | None = None,
        progress: Progress | None = None,
    ) -> VideoResult:
        """Predicts one video file, frame folder or uint8 array [T,H,W,3] (`fps` its rate, default
        `folder_fps`; `name` what results call it).

        window_seconds > 0: one prediction per window of that length, every `stride_seconds` (0: side
        by side), see grace_jax.data.windows; 0: one for the whole video. `progress(stage, fraction)`
        is called as the work goes on. Raises ClipError naming the input when it cannot be read.
        """
        options = dict(self.defaults)
        options.update({k: v for k, v in (("faces", faces), ("window_seconds", window_seconds),
                                          ("stride_seconds", stride_seconds)) if v is not None})  # fmt: skip
        _check_call(**options, face_crop=self.face_crop)
        report = progress or (lambda stage, fraction: None)
        source = sources.open_source(video, fps=fps, folder_fps=self.folder_fps, name=name)
        chosen = windows_lib.windows(
            source.times,
            self.num_frames,
            window_seconds=options["window_seconds"],
            stride_seconds=options["stride_seconds"],
        )
        if options["faces"] == "all":
            from grace_jax.inference import every_face  # the multi-face path, in its own module

            tracks, notes = every_face.predict_tracks(self, source, chosen, report)
        else:
            tracks, notes = [self._largest_face(source, chosen, report)], []
        report("done", 1.0)
        return VideoResult(
            input=source.name,
            class_names=self.class_names,
            tracks=tracks,
            fps=source.fps,
            duration_seconds=source.duration_seconds,
            source_size=source.source_size,
            notes=notes,
        )

    # --------------------------------------------------------------------------------- one clip
    def classify(self, frames: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """uint8 model frames [T,S,S,3] -> (probabilities float64 [C], {"motion": [T,P], "class_maps": [C,T,P]})."""
        probabilities, maps = jax.device_get(self._step(self.run.state, frames[None]))
        return np.asarray(probabilities[0], np.float64), {k: np.asarray(v[0], np.float32) for k, v in maps.items()}

    def window_result(
        self, window: windows_lib.Window, frame_indices, frames, face_fraction, boxes, cropped, note, context=None
    ) -> WindowResult:
        probabilities, maps = self.classify(frames)
        return WindowResult(
            start_seconds=window.start_seconds,
            end_seconds=window.end_seconds,
            probabilities=probabilities,
            face_fraction=face_fraction,
            frame_indices=np.asarray(frame_indices, np.int64),
            crop_boxes=np.asarray(boxes, np.float32),
            face_cropped=cropped,
            frames=frames,
            motion_weights=maps["motion"],
            class_maps=maps.get("class_maps"),
            note=note,
            context=context,
        )

    # ------------------------------------------------------------------ faces="largest": per window
    def _largest_face(self, source: sources.Source, chosen: list[windows_lib.Window], report: Progress) -> TrackResult:
        """Each window's sampled frames, cropped to their main face (`faces.crop_clip`) or, with
        face_crop="none", their centre squares."""
        detect = self.face_crop == "auto"
        side = faces_lib.WHOLE_FRAME_SIDE if detect else self.image_size
        results, boxes = [], []
        frames_of = windows_lib.frame_sets(
            lambda needed: source.read(needed, side, detect), [w.frames for w in chosen], source.name
        )
        for k, (window, frames) in enumerate(zip(chosen, frames_of)):
            results.append(self._largest_window(source, window, frames, boxes))
            report("predicting", (k + 1) / len(chosen))
        seen = [w for w in results if w.probabilities is not None]
        return TrackResult(
            track_id=1,
            windows=results,
            boxes=np.asarray(boxes, np.float32).reshape(-1, 5),
            first_seconds=seen[0].start_seconds if seen else 0.0,
            last_seconds=seen[-1].end_seconds if seen else 0.0,
            note=None if seen else results[0].note,
        )

    def _largest_window(self, source, window, frames, boxes: list) -> WindowResult:
        height, width = source.source_size
        if self.face_crop == "none":
            crop = frames_lib.centre_squares((height, width), len(frames))
            return self.window_result(window, window.frames, frames, None, crop, False, None)
        found = faces_lib.crop_clip(
            frames, self.detector, size=self.image_size, face_crop="auto", min_face_fraction=self.min_face_fraction
        )
        scale = width / frames.shape[2]  # read pixels -> source pixels
        track = found.track
        for t in np.flatnonzero(track.detected):
            boxes.append([window.frames[t], *(track.boxes[t] * scale)])
        if found.no_face:
            return WindowResult(
                window.start_seconds,
                window.end_seconds,
                None,
                float(found.face_fraction),
                window.frames,
                np.full((len(frames), 4), np.nan, np.float32),
                False,
                note=found.reason,
            )
        context = None
        if found.cropped:
            squares = np.asarray(track.squares, np.float32)
            crop = squares * scale
            context = frames_lib.context_frames(heatmaps.draw_squares(frames, squares, track.detected))
        else:
            crop = frames_lib.centre_squares((height, width), len(frames))
        model_frames = faces_lib.frames_for_model(found, self.image_size)
        return self.window_result(
            window, window.frames, model_frames, float(found.face_fraction), crop, found.cropped, found.reason, context
        )


def _check_call(*, faces: str, window_seconds: float, stride_seconds: float, face_crop: str) -> None:
    if faces not in FACES:
        raise UsageError(f"faces must be one of {', '.join(FACES)}, got {faces!r}")
    if faces == "all" and face_crop == "none":
        raise UsageError("faces='all' crops every face: it cannot go with face_crop='none'")
    if window_seconds < 0 or stride_seconds < 0:
        raise UsageError("window_seconds and stride_seconds must be >= 0")
