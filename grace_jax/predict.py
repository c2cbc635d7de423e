r"""Classifies videos or frame folders with a trained run; writes probabilities and pictures.

  python -m grace_jax.predict --workdir=runs/dfew3 clip.mp4 /data/faces/clip_0042/
  python -m grace_jax.predict --workdir=runs/demo --out=preds --checkpoint=last *.mp4
  python -m grace_jax.predict --model=your-name/grace-dfew3 clip.mp4     # grace_jax.export's folder

For every input: per-class probabilities (in <out>/predictions.json and predictions.csv) and a picture
<out>/<name>.png with the sampled frames, the motion weights and, when the model uses optimal
transport, the transport mass of the predicted class overlaid as heat maps. Inputs that cannot be read
are reported by name with the reason and skipped; the exit status is 1 if any input failed.
--workdir and --out may be gs:// URIs (outputs default into the workdir, so a gs:// run gets them in
its bucket); the inputs are local files or folders.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx
from PIL import Image

from grace_jax.data.errors import ClipError
from grace_jax.data.frames import read_frame_folder
from grace_jax.data.resize import to_square
from grace_jax.data.video import read_video
from grace_jax import cli, heatmaps, input_pipeline, paths, runs
from grace_jax.data.segments import segment_indices

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Training run directory (config.json, checkpoints)."
)
_MODEL = flags.DEFINE_string(
    "model", None, "Instead of --workdir: a folder written by grace_jax.export, or its hub name "
    "(owner/name; fetched once into the Hugging Face cache, HF_HUB_OFFLINE=1 reads only the cache).",
)
_OUT = flags.DEFINE_string(
    "out", None, "Output directory; default <workdir>/predictions (./predictions with --model)."
)
_CHECKPOINT = flags.DEFINE_enum("checkpoint", "best", ["best", "last"], "Which checkpoint to use.")
_PICTURES = flags.DEFINE_bool("pictures", True, "Write the heat-map picture of every input.")
_FACE_CROP = flags.DEFINE_enum(
    "face_crop", "none", ["auto", "none"],
    "auto: find the face in the sampled frames (BlazeFace, grace_jax.faces) and crop them to it, unless "
    "it already fills the frames; a clip with a face in fewer than --min_face_fraction of them is "
    "reported as 'no face' and not classified. none: the frames as given (face-cropped datasets).",
)
_MIN_FACE_FRACTION = flags.DEFINE_float(
    "min_face_fraction", 0.25, "With --face_crop=auto: below this fraction of sampled frames with a "
    "face, a clip is 'no face'.",
)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
# --face_crop=auto reads whole frames at most this long a side: the detector sees 192 px, and a face a
# third of such a frame is still ~210 px for the model's 224.
FACE_READ_SIDE = 640


def load_run(workdir: str, which: str = "best"):
    """(config, class names, graphdef, state) of a training run; falls back to `last` if no best."""
    run = runs.load_run(workdir, which)
    return run.config, run.class_names, run.graphdef, run.state


def read_clip(path: str, num_frames: int, image_size: int, *, whole_frame: bool = False) -> np.ndarray:
    """A video file or frame folder -> uint8 [T, S, S, 3], the evaluation protocol's frames
    (whole_frame: [T, h, w, 3], the whole frames, longer side at most `image_size`)."""
    if paths.is_uri(path):
        raise ClipError(f"{path}: inputs must be local files or folders (copy it first, e.g. gcloud storage cp)")
    if os.path.isdir(path):
        frames = read_frame_folder(path, image_size, whole_frame=whole_frame)
    elif not os.path.exists(path):
        raise ClipError(f"{path}: no such file or folder")
    elif path.lower().endswith(VIDEO_EXTENSIONS):
        frames = read_video(path, image_size, whole_frame=whole_frame)
    else:
        raise ClipError(f"{path}: not a video ({', '.join(VIDEO_EXTENSIONS)}) or frame folder")
    return frames[segment_indices(len(frames), num_frames, train=False)]


def _face_frames(frames: np.ndarray, detector, image_size: int, min_face_fraction: float):
    """Whole sampled frames [T,h,w,3] -> (model frames [T,S,S,3] or None for no face, result fields)."""
    from grace_jax.faces import crop_clip

    faces = crop_clip(frames, detector, size=image_size, face_crop="auto",
                      min_face_fraction=min_face_fraction)
    fields = {"face_fraction": round(float(faces.face_fraction), 4), "face": faces.reason}
    if faces.no_face:
        return None, fields
    if faces.cropped:
        return faces.frames, fields
    # Faces that fill the frame: the centre square, as without face cropping.
    return np.stack([to_square(Image.fromarray(f), image_size) for f in faces.frames]), fields


def predict_step(state, video, *, graphdef, normalize: str = "clip"):
    """uint8 video [B,T,H,W,3] -> probabilities [B,C] and the maps the pictures show.

    `normalize` is the run's config.data.normalize: the model gets the input scale it was trained on.
    """
    model = nnx.merge(graphdef, state["params"], state["frozen"], state["rest"])
    logits, aux = model(input_pipeline.normalize_on_device(video, normalize))
    maps = {"motion": aux["motion_weights"]}  # [B,T,P]
    if "ot_visual_mass" in aux:
        maps["ot"] = aux["ot_visual_mass"]  # [B,T,P]
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


def run(
    workdir: str | None,
    inputs: list[str],
    out_dir: str,
    *,
    which: str = "best",
    pictures: bool = True,
    model: str | None = None,
    face_crop: str = "none",
    min_face_fraction: float = 0.25,
) -> tuple[list[dict], list[str]]:
    """Predicts every input with the run `workdir`, or with the exported `model` (a folder or hub
    name, see grace_jax.export); returns (results, errors).

    face_crop="auto" (see the flag): every result gets `face_fraction` and `face` (what was done); a
    clip without a face gets prediction and probabilities None.
    """
    out_dir = paths.resolve(out_dir)
    if model:
        from grace_jax import export

        config, names, graphdef, state = export.load_exported(model)
    else:
        config, names, graphdef, state = load_run(paths.resolve(workdir), which)
    # Runs saved before data.normalize existed were trained on CLIP-normalized frames.
    normalize = config.data.get("normalize", "clip")
    step = jax.jit(functools.partial(predict_step, graphdef=graphdef, normalize=normalize))
    detector = None
    if face_crop == "auto":
        from grace_jax.faces import FaceDetector

        detector = FaceDetector()
    elif face_crop != "none":
        raise ValueError(f"face_crop must be 'auto' or 'none', got {face_crop!r}")
    paths.makedirs(out_dir)
    results, errors, taken = [], [], set()
    for path in inputs:
        try:
            if detector is None:
                frames = read_clip(path, config.data.num_frames, config.data.image_size)
            else:
                frames = read_clip(path, config.data.num_frames, FACE_READ_SIDE, whole_frame=True)
        except ClipError as e:
            errors.append(str(e))
            print(f"skipped: {e}", file=sys.stderr)
            continue
        face = {}
        if detector is not None:
            frames, face = _face_frames(frames, detector, config.data.image_size, min_face_fraction)
            if frames is None:
                results.append({"input": path, "prediction": None, "probabilities": None, **face})
                print(f"{path}: {face['face']}")
                continue
        probs, maps = jax.device_get(step(state, frames[None]))
        probs = np.asarray(probs[0], np.float64)
        top = int(probs.argmax())
        result = {
            "input": path,
            "prediction": names[top],
            "probabilities": {n: round(float(p), 6) for n, p in zip(names, probs)},
            **face,
        }
        if pictures:
            rows = [("motion weight", np.asarray(maps["motion"][0]))]
            if "ot" in maps:
                rows.append((f"OT mass: {names[top]}", np.asarray(maps["ot"][0])))
            picture = paths.join(out_dir, _safe_name(path, taken) + ".png")
            heatmaps.clip_figure(
                picture,
                frames,
                rows,
                f"{os.path.basename(os.path.normpath(path))}: {names[top]} ({probs[top]:.2f})",
            )
            result["picture"] = picture
        results.append(result)
        seen = f", face in {face['face_fraction']:.0%} of the frames" if face else ""
        print(f"{path}: {names[top]} ({probs[top]:.3f}){seen}")

    _write_atomic(
        paths.join(out_dir, "predictions.json"),
        lambda f: json.dump({"results": results, "errors": errors}, f, indent=2),
    )

    def write_csv(f):
        writer = csv.writer(f)
        writer.writerow(["input", "prediction", *names, "face_fraction"])
        for r in results:
            probs = r["probabilities"] or {}
            writer.writerow([r["input"], r["prediction"] or "no face", *(probs.get(n, "") for n in names),
                             r.get("face_fraction", "")])

    _write_atomic(paths.join(out_dir, "predictions.csv"), write_csv)
    return results, errors


def main(argv):
    inputs = argv[1:]
    if not inputs:
        raise app.UsageError("Give one or more videos or frame folders after the flags.")
    if bool(_WORKDIR.value) == bool(_MODEL.value):
        raise app.UsageError("Give exactly one of --workdir (a run) and --model (an exported model).")
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
    )
    print(f"Wrote {out}/predictions.json and predictions.csv.")
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    cli.run(main)
