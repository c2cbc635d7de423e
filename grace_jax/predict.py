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
import functools
import io
import json
import os
import re
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx
from PIL import Image

from grace_jax import faces as faces_lib
from grace_jax.data import frames as frames_lib
from grace_jax.data import input_pipeline
from grace_jax.data import video as video_lib
from grace_jax.data.errors import ClipError
from grace_jax.data.windows import read_windows
from grace_jax.infra import cli, paths
from grace_jax.infra.errors import UsageError
from grace_jax.run import heatmaps, runs

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

# --face_crop=auto reads whole frames at most this long a side: the detector sees 192 px, and a face a
# third of such a frame is still ~210 px for the model's 224.
FACE_READ_SIDE = 640


def _face_frames(frames: np.ndarray, detector, image_size: int, min_face_fraction: float):
    """Whole sampled frames [T,h,w,3] -> (model frames [T,S,S,3] or None for no face, result fields,
    the picture's row of whole frames with the crops drawn, or None when not cropped, the crop
    squares [T,4] in the whole frames' pixels or None)."""
    faces = faces_lib.crop_clip(
        frames, detector, size=image_size, face_crop="auto", min_face_fraction=min_face_fraction
    )
    fields = {"face_fraction": round(float(faces.face_fraction), 4), "face": faces.reason}
    if faces.no_face:
        return None, fields, None, None
    context, squares = None, None
    if faces.cropped:
        context = ("whole frame", heatmaps.draw_squares(frames, faces.track.squares, faces.track.detected))
        squares = np.asarray(faces.track.squares, np.float32)
    return faces_lib.frames_for_model(faces, image_size), fields, context, squares


def _source_size(path: str) -> tuple[int, int]:
    """(height, width) of the source's frames, upright, as predict decodes them."""
    if os.path.isdir(path):
        with Image.open(os.path.join(path, frames_lib.list_frames(path)[0])) as image:
            return image.height, image.width
    # Whole and never downscaled (fit_within only shrinks), upright as every other read of it.
    _, frame = next(video_lib.iter_video(path, 1 << 20, [0], whole_frame=True))
    return frame.shape[0], frame.shape[1]


def _crop_boxes(squares, read_shape, source_size, t: int) -> np.ndarray:
    """[T,4] boxes in source pixels: the face squares (given in the read frames' pixels) scaled, or
    the centre square every uncropped model frame shows."""
    height, width = source_size
    if squares is not None:
        return (np.asarray(squares, np.float32) * (width / read_shape[1])).astype(np.float32)
    side = min(height, width)
    box = [(width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2]
    return np.tile(np.asarray(box, np.float32), (t, 1))


def _write_maps(path, maps, names, top, frame_indices, boxes, cropped, source_size, config, patch):
    grid = int(round(np.sqrt(maps["motion"].shape[-1])))
    fields = {
        "motion_weights": np.asarray(maps["motion"][0], np.float32),
        "predicted": np.int64(top),
        "class_names": np.asarray(names),
        "grid": np.asarray([grid, grid], np.int64),
        "image_size": np.int64(config.data.image_size),
        "patch_size": np.int64(patch),
        "frame_indices": np.asarray(frame_indices, np.int64),
        "crop_boxes": np.asarray(boxes, np.float32),
        "face_cropped": np.bool_(cropped),
        "source_size": np.asarray(source_size, np.int64),
    }
    if "class_maps" in maps:
        fields["class_maps"] = np.asarray(maps["class_maps"][0], np.float32)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **fields)
    paths.write_bytes(path, buffer.getvalue())


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


def _write_tables(out_dir: str, results: list[dict], errors: list[str], names: list[str], windowed: bool) -> None:
    """predictions.json (results and errors) and predictions.csv (one row per clip or window)."""
    _write_atomic(
        paths.join(out_dir, "predictions.json"),
        lambda f: json.dump({"results": results, "errors": errors}, f, indent=2),
    )
    span_columns = ["start_seconds", "end_seconds"] if windowed else []

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
    min_face_fraction: float = 0.25,
    window_seconds: float = 0.0,
    stride_seconds: float = 0.0,
    folder_fps: float = 25.0,
    write_maps: bool = True,
) -> tuple[list[dict], list[str]]:
    """Predicts every input with the run `workdir`, or with the exported `model` (a folder or hub
    name, see grace_jax.export); returns (results, errors).

    write_maps: each result gets `maps`, the path of its .npz (module docstring).

    face_crop="auto" (see the flag): every result gets `face_fraction` and `face` (what was done); a
    clip without a face gets prediction and probabilities None. window_seconds > 0: one result per
    window (see grace_jax.data.windows), with its `start_seconds` and `end_seconds`.
    """
    if face_crop not in ("auto", "none"):
        raise ValueError(f"face_crop must be 'auto' or 'none', got {face_crop!r}")
    out_dir = paths.resolve(out_dir)
    _check_out_dir(out_dir)  # before the model loads: a file in the way is one line at once
    # An export holds one checkpoint: `which` chooses among a run's only.
    loaded = runs.load(model, kind="export") if model else runs.load(workdir, which, kind="run")
    config, names, graphdef, state = loaded.config, loaded.class_names, loaded.graphdef, loaded.state
    step = jax.jit(functools.partial(predict_step, graphdef=graphdef, normalize=config.data.normalize))
    detector = None
    if face_crop == "auto":
        detector = faces_lib.FaceDetector()
    windowed = window_seconds > 0
    paths.makedirs(out_dir)
    if write_maps:
        paths.makedirs(paths.join(out_dir, "maps"))
    job = _Job(
        step=step,
        state=state,
        names=names,
        detector=detector,
        config=config,
        min_face_fraction=min_face_fraction,
        picture_dir=out_dir if pictures else None,
        maps_dir=paths.join(out_dir, "maps") if write_maps else None,
        patch_size=loaded.model.patch_size,
    )
    results, errors = [], []
    for path in inputs:
        try:
            if paths.is_uri(path):
                raise ClipError(
                    f"{path}: inputs must be local files or folders (copy it first, e.g. gcloud storage cp)"
                )
            side = config.data.image_size if detector is None else faces_lib.WHOLE_FRAME_SIDE
            for window, frames in read_windows(
                path,
                config.data.num_frames,
                side,
                whole_frame=detector is not None,
                window_seconds=window_seconds,
                stride_seconds=stride_seconds,
                folder_fps=folder_fps,
            ):
                span = {"start_seconds": window.start_seconds, "end_seconds": window.end_seconds} if windowed else {}
                results.append(_predict_one(job, path, window.frames, frames, span))
        except ClipError as e:
            errors.append(str(e))
            print(f"skipped: {e}", file=sys.stderr)

    _write_tables(out_dir, results, errors, names, windowed)
    return results, errors


@dataclasses.dataclass
class _Job:
    """What every input of one predict run shares."""

    step: Any
    state: Any
    names: list[str]
    detector: Any
    config: Any
    min_face_fraction: float
    picture_dir: str | None
    maps_dir: str | None
    patch_size: int
    taken: set = dataclasses.field(default_factory=set)
    # Source frame size per input: decoded once, not once per window of a long video.
    source_sizes: dict = dataclasses.field(default_factory=dict)


def _predict_one(job: _Job, path: str, frame_indices: np.ndarray, frames: np.ndarray, span: dict) -> dict:
    """One clip or window: frames [T,h,w,3] (source frames `frame_indices`) -> its result (printed as
    one line)."""
    where = f"{path} [{span['start_seconds']:g}-{span['end_seconds']:g} s]" if span else path
    face, context, squares, read_shape = {}, None, None, frames.shape[1:3]
    if job.detector is not None:
        frames, face, context, squares = _face_frames(
            frames, job.detector, job.config.data.image_size, job.min_face_fraction
        )
        if frames is None:
            print(f"{where}: {face['face']}")
            return {"input": path, **span, "prediction": None, "probabilities": None, **face}
    probs, maps = jax.device_get(job.step(job.state, frames[None]))
    probs = np.asarray(probs[0], np.float64)
    top = int(probs.argmax())
    names = job.names
    result = {
        "input": path,
        **span,
        "prediction": names[top],
        "probabilities": {n: round(float(p), 6) for n, p in zip(names, probs)},
        **face,
    }
    name = None
    if job.picture_dir is not None or job.maps_dir is not None:
        name = _safe_name(path, job.taken) if not span else _safe_name(f"{path}_{span['start_seconds']:g}s", job.taken)
    if job.picture_dir is not None:
        rows = [("motion weight", np.asarray(maps["motion"][0]))]
        if "class_maps" in maps:
            second = int(np.argsort(-probs)[1]) if len(probs) > 1 else top
            for c, role in ((top, "predicted"), (second, "runner-up")):
                if c != top or role == "predicted":
                    rows.append((f"{names[c]} map\n({role})", np.asarray(maps["class_maps"][0, c])))
        picture = paths.join(job.picture_dir, name + ".png")
        title = f"{os.path.basename(os.path.normpath(where))}: {names[top]} ({probs[top]:.2f})"
        heatmaps.clip_figure(picture, frames, rows, title, context=context)
        result["picture"] = picture
    if job.maps_dir is not None:
        if path not in job.source_sizes:
            job.source_sizes[path] = _source_size(path)
        source = job.source_sizes[path]
        boxes = _crop_boxes(squares, read_shape, source, len(frame_indices))
        result["maps"] = paths.join(job.maps_dir, name + ".npz")
        _write_maps(
            result["maps"],
            maps,
            names,
            top,
            frame_indices,
            boxes,
            squares is not None,
            source,
            job.config,
            job.patch_size,
        )
    seen = f", face in {face['face_fraction']:.0%} of the frames" if face else ""
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
