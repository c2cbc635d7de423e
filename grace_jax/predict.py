r"""Classifies videos or frame folders with a trained run; writes probabilities and pictures.

  python -m grace_jax.predict --workdir=runs/dfew3 clip.mp4 /data/faces/clip_0042/
  python -m grace_jax.predict --workdir=runs/demo --out=preds --checkpoint=last *.mp4
  python -m grace_jax.predict --model=your-name/grace-dfew3 clip.mp4     # grace_jax.export's folder

For every input: per-class probabilities (in <out>/predictions.json and predictions.csv) and a picture
<out>/<name>.png with the sampled frames, the motion weights and, when the model uses optimal
transport, the class maps of the predicted class and the runner-up overlaid as heat maps. With
--maps (the default) the maps themselves go to <out>/maps/<name>.npz, for laying them over one's own
ground truth:

  class_maps     float32 [C,T,P]  per class, the transport mass each visual token receives (each class's
                                  map sums to 1; its text tokens' mass, sent where they match best
                                  around the motion prior); zero on tokens motion.top_k left out
  motion_weights float32 [T,P]    the motion weighting (the transport's visual prior)
  predicted      int              index of the predicted class; class_names str [C]
  grid           int [2]          patch rows and columns (P = rows * cols, raster order)
  image_size     int              the model's input side; patch_size int: its ViT patch side
  frame_indices  int64 [T]        the source video's (or sorted frame folder's) frame of each of the T
  crop_boxes     float32 [T,4]    (x0, y0, x1, y1) in source-frame pixels: the square each model frame
                                  shows (the face crop, or the centre square); face_cropped bool
  source_size    int [2]          the source frame's height and width

Inputs that cannot be read are reported by name with the reason and skipped; the exit status is 1 if any input failed.
--workdir and --out may be gs:// URIs (outputs default into the workdir, so a gs:// run gets them in
its bucket); the inputs are local files or folders.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
import sys

import numpy as np
from absl import app, flags

from grace_jax.data.errors import ClipError
from grace_jax.inference import pictures as pictures_lib
from grace_jax.inference.predictor import Predictor
from grace_jax.inference.results import VideoResult, WindowResult
from grace_jax.infra import cli, paths
from grace_jax.infra.errors import UsageError
from grace_jax.run import plots

_WORKDIR = flags.DEFINE_string("workdir", None, "Training run directory (config.json, checkpoints).")
_MODEL = flags.DEFINE_string(
    "model",
    None,
    "Instead of --workdir: a folder written by grace_jax.export, or its hub name "
    "(owner/name; fetched once into the Hugging Face cache, HF_HUB_OFFLINE=1 reads only the cache).",
)
_OUT = flags.DEFINE_string("out", None, "Output directory; default <workdir>/predictions (./predictions with --model).")
_CHECKPOINT = flags.DEFINE_enum("checkpoint", "best", ["best", "last"], "Which checkpoint to use.")
_PICTURES = flags.DEFINE_bool("pictures", True, "Write the heat-map picture of every input.")
_MAPS = flags.DEFINE_bool(
    "maps", True, "Write every input's class maps, motion weights and frame geometry to <out>/maps/<name>.npz."
)
_FACE_CROP = flags.DEFINE_enum(
    "face_crop",
    "auto",
    ["auto", "none"],
    "auto: find the face in the sampled frames (BlazeFace, grace_jax.faces) and crop them to it, unless "
    "it already fills the frames; a clip with a face in fewer than --min_face_fraction of them is "
    "reported as 'no face' and not classified. none: the frames as given, never 'no face' (face "
    "crops you trust, or faces BlazeFace does not know, such as SynthFER's).",
)
_FACES = flags.DEFINE_enum(
    "faces",
    "largest",
    ["largest", "all"],
    "largest: the main face of each clip or window (one result each). all: every face in the video, "
    "each followed over time with its own id (interviews, films, group scenes), one result per face "
    "and window, and a timeline picture per input; a face seen too briefly is reported, not predicted.",
)
_MIN_FACE_FRACTION = flags.DEFINE_float(
    "min_face_fraction",
    0.25,
    "With --face_crop=auto: below this fraction of sampled frames with a face, a clip is 'no face'.",
)
_WINDOW_SECONDS = flags.DEFINE_float(
    "window_seconds",
    0.0,
    "One prediction per window of this many seconds (long videos); 0: one prediction for the whole input.",
)
_STRIDE_SECONDS = flags.DEFINE_float(
    "stride_seconds",
    0.0,
    "With --window_seconds: seconds from one window's start to the next's; "
    "0: the window's length (windows side by side).",
)
_FOLDER_FPS = flags.DEFINE_float(
    "folder_fps", 25.0, "With --window_seconds: the frame rate of frame folders (videos carry theirs)."
)


def _write_maps(path: str, video: VideoResult, window: WindowResult, predictor: Predictor) -> None:
    grid = int(round(np.sqrt(window.motion_weights.shape[-1])))
    fields = {
        "motion_weights": np.asarray(window.motion_weights, np.float32),
        "predicted": np.int64(window.top()),
        "class_names": np.asarray(video.class_names),
        "grid": np.asarray([grid, grid], np.int64),
        "image_size": np.int64(predictor.image_size),
        "patch_size": np.int64(predictor.run.model.patch_size),
        "frame_indices": np.asarray(window.frame_indices, np.int64),
        "crop_boxes": np.asarray(window.crop_boxes, np.float32),
        "face_cropped": np.bool_(window.face_cropped),
        "source_size": np.asarray(video.source_size, np.int64),
    }
    if window.class_maps is not None:
        fields["class_maps"] = np.asarray(window.class_maps, np.float32)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **fields)
    paths.write_bytes(path, buffer.getvalue())


def _write_atomic(path: str, write) -> None:
    # Rendered in memory, then written in one go (local: temporary file renamed; gs://: one object).
    buffer = io.StringIO(newline="")
    write(buffer)
    paths.write_text(path, buffer.getvalue())


def _safe_name(path: str, taken: set) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.basename(os.path.normpath(path))) or "clip"
    name, i = base, 1
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    taken.add(name)
    return name


def _write_tables(
    out_dir: str, results: list[dict], errors: list[str], names: list[str], windowed: bool, every_face: bool = False
) -> None:
    """predictions.json (results and errors) and predictions.csv (one row per clip or window)."""
    _write_atomic(
        paths.join(out_dir, "predictions.json"),
        lambda f: json.dump({"results": results, "errors": errors}, f, indent=2),
    )
    span_columns = (["track"] if every_face else []) + (["start_seconds", "end_seconds"] if windowed else [])

    def write_csv(f):
        writer = csv.writer(f)
        writer.writerow(["input", *span_columns, "prediction", *names, "face_fraction"])
        for r in results:
            probs = r["probabilities"] or {}
            writer.writerow(
                [
                    r["input"],
                    *(r[c] for c in span_columns),
                    r["prediction"] or "no face",
                    *(probs.get(n, "") for n in names),
                    r.get("face_fraction", ""),
                ]
            )

    _write_atomic(paths.join(out_dir, "predictions.csv"), write_csv)


def _check_out_dir(out_dir: str) -> None:
    """UsageError when `out_dir`, or the first of its parents that exists, is a file: the outputs are a
    folder (predictions.json, predictions.csv, pictures, maps/)."""
    folder = out_dir
    while not paths.exists(folder):
        parent = paths.dirname(folder)
        if parent == folder:
            return
        folder = parent
    if not paths.isdir(folder):
        what = "is a file" if folder == out_dir else f"is inside {folder}, which is a file"
        raise UsageError(
            f"--out={out_dir} {what}; predict writes a folder (predictions.json, predictions.csv, "
            "pictures): give a folder path, e.g. --out=predictions. Nothing was read or written."
        )


def run(
    workdir: str | None,
    inputs: list[str],
    out_dir: str,
    *,
    which: str = "best",
    pictures: bool = True,
    model: str | None = None,
    face_crop: str = "auto",
    faces: str = "largest",
    min_face_fraction: float = 0.25,
    window_seconds: float = 0.0,
    stride_seconds: float = 0.0,
    folder_fps: float = 25.0,
    write_maps: bool = True,
) -> tuple[list[dict], list[str]]:
    """Predicts every input with the run `workdir`, or with the exported `model` (a folder or hub
    name, see grace_jax.export); returns (results, errors): one result per input, window and (with
    faces="all") face track.

    write_maps: each result gets `maps`, the path of its .npz (module docstring).

    face_crop="auto" (see the flag): every result gets `face_fraction` and `face` (what was done); a
    clip without a face gets prediction and probabilities None. window_seconds > 0: one result per
    window (see grace_jax.data.windows), with its `start_seconds` and `end_seconds`. faces="all":
    every result gets `track`, the face track's id.
    """
    out_dir = paths.resolve(out_dir)
    _check_out_dir(out_dir)  # before the model loads: a file in the way is one line at once
    # An export holds one checkpoint: `which` chooses among a run's only.
    predictor = Predictor(
        workdir,
        model=model,
        checkpoint=which,
        faces=faces,
        face_crop=face_crop,
        min_face_fraction=min_face_fraction,
        window_seconds=window_seconds,
        stride_seconds=stride_seconds,
        folder_fps=folder_fps,
    )
    windowed = window_seconds > 0
    paths.makedirs(out_dir)
    if write_maps:
        paths.makedirs(paths.join(out_dir, "maps"))
    job = _Job(
        predictor=predictor,
        picture_dir=out_dir if pictures else None,
        maps_dir=paths.join(out_dir, "maps") if write_maps else None,
        windowed=windowed,
        every_face=faces == "all",
    )
    results, errors = [], []
    for path in inputs:
        try:
            video = predictor(path)
        except ClipError as e:
            errors.append(str(e))
            print(f"skipped: {e}", file=sys.stderr)
            continue
        for note in video.notes:
            print(f"{path}: {note}")
        for t, track in enumerate(video.tracks):
            for w in range(len(track.windows)):
                results.append(_write_one(job, video, t, w))
        if job.picture_dir is not None and (job.every_face or windowed):
            # Every track's probabilities over time, beside the windows' heat-map pictures.
            picture = paths.join(job.picture_dir, _safe_name(f"{path}_timeline", job.taken) + ".png")
            paths.write_bytes(picture, pictures_lib.timeline_png(video))
            for r in results:
                if r["input"] == path:
                    r["timeline"] = picture

    _write_tables(out_dir, results, errors, predictor.class_names, windowed, job.every_face)
    return results, errors


@dataclasses.dataclass
class _Job:
    """What every input of one predict run shares."""

    predictor: Predictor
    picture_dir: str | None
    maps_dir: str | None
    windowed: bool
    every_face: bool
    taken: set = dataclasses.field(default_factory=set)


def _write_one(job: _Job, video: VideoResult, t: int, w: int) -> dict:
    """One track's window: its result row, picture and maps (printed as one line)."""
    path, track = video.input, video.tracks[t]
    window = track.windows[w]
    names = video.class_names
    span = {"start_seconds": window.start_seconds, "end_seconds": window.end_seconds} if job.windowed else {}
    where = f"{path} [{window.start_seconds:g}-{window.end_seconds:g} s]" if span else path
    if job.every_face:
        where += f" face {track.track_id}"
    face = {}
    if window.face_fraction is not None:
        face = {"face_fraction": round(float(window.face_fraction), 4), "face": window.note}
    ids = {"track": track.track_id} if job.every_face else {}
    if window.probabilities is None:
        print(f"{where}: {window.note}")
        return {"input": path, **ids, **span, "prediction": None, "probabilities": None, **face}
    probs = window.probabilities
    top = window.top()
    result = {
        "input": path,
        **ids,
        **span,
        "prediction": names[top],
        "probabilities": {n: round(float(p), 6) for n, p in zip(names, probs)},
        **face,
    }
    name = None
    if job.picture_dir is not None or job.maps_dir is not None:
        label = path
        if span:
            label += f"_{window.start_seconds:g}s"
        if job.every_face:
            label += f"_face{track.track_id}"
        name = _safe_name(label, job.taken) if label != path else _safe_name(path, job.taken)
    if job.picture_dir is not None:
        picture = paths.join(job.picture_dir, name + ".png")
        title = f"{os.path.basename(os.path.normpath(where))}: {names[top]} ({probs[top]:.2f})"
        plots.save_figure(pictures_lib.window_figure(video, t, w, title), picture)
        result["picture"] = picture
    if job.maps_dir is not None:
        result["maps"] = paths.join(job.maps_dir, name + ".npz")
        _write_maps(result["maps"], video, window, job.predictor)
    seen = f", face in {window.face_fraction:.0%} of the frames" if window.face_fraction is not None else ""
    print(f"{where}: {names[top]} ({probs[top]:.3f}){seen}")
    return result


def main(argv):
    inputs = argv[1:]
    if not inputs:
        raise app.UsageError("Give one or more videos or frame folders after the flags.")
    if bool(_WORKDIR.value) == bool(_MODEL.value):
        raise app.UsageError("Give exactly one of --workdir (a run) and --model (an exported model).")
    if _WINDOW_SECONDS.value < 0 or _STRIDE_SECONDS.value < 0 or _FOLDER_FPS.value <= 0:
        raise app.UsageError("--window_seconds and --stride_seconds must be >= 0 and --folder_fps > 0.")
    if not 0 <= _MIN_FACE_FRACTION.value <= 1:
        raise app.UsageError(f"--min_face_fraction={_MIN_FACE_FRACTION.value:g} must be between 0 and 1.")
    if _FACES.value == "all" and _FACE_CROP.value == "none":
        raise app.UsageError("--faces=all crops every face: it cannot go with --face_crop=none.")
    default_out = paths.join(_WORKDIR.value, "predictions") if _WORKDIR.value else "predictions"
    out = paths.resolve(_OUT.value or default_out)
    _, errors = run(
        _WORKDIR.value,
        inputs,
        out,
        which=_CHECKPOINT.value,
        pictures=_PICTURES.value,
        model=_MODEL.value,
        face_crop=_FACE_CROP.value,
        faces=_FACES.value,
        min_face_fraction=_MIN_FACE_FRACTION.value,
        window_seconds=_WINDOW_SECONDS.value,
        stride_seconds=_STRIDE_SECONDS.value,
        folder_fps=_FOLDER_FPS.value,
        write_maps=_MAPS.value,
    )
    print(f"Wrote {out}/predictions.json and predictions.csv.")
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    cli.run(main)
