r"""Classifies videos or frame folders with a trained run; writes probabilities and pictures.

  python -m grace_jax.predict --workdir=runs/dfew3 clip.mp4 /data/faces/clip_0042/
  python -m grace_jax.predict --workdir=runs/demo --out=preds --checkpoint=last *.mp4

For every input: per-class probabilities (in <out>/predictions.json and predictions.csv) and a picture
<out>/<name>.png with the sampled frames, the motion weights and, when the model uses optimal
transport, the transport mass of the predicted class overlaid as heat maps. Inputs that cannot be read
are reported by name with the reason and skipped; the exit status is 1 if any input failed.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import re
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags
from flax import nnx

from data_prep.sources.errors import ClipError
from data_prep.sources.frames import read_frame_folder
from data_prep.sources.video import read_video
from grace_jax import checkpointing, heatmaps, input_pipeline, paths, train
from grace_jax.data.segments import segment_indices

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Training run directory (config.json, checkpoints)."
)
_OUT = flags.DEFINE_string("out", None, "Output directory; default <workdir>/predictions.")
_CHECKPOINT = flags.DEFINE_enum("checkpoint", "best", ["best", "last"], "Which checkpoint to use.")
_PICTURES = flags.DEFINE_bool("pictures", True, "Write the heat-map picture of every input.")

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")


def load_run(workdir: str, which: str = "best"):
    """(config, class names, graphdef, state) of a training run; falls back to `last` if no best."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: not found; --workdir must be a grace_jax training run.")
    with open(path) as f:
        config = ml_collections.ConfigDict(json.load(f))
    tokenizer = train.load_tokenizer(config.model)
    graphdef, state, _ = train.create_state(config, tokenizer, steps_per_epoch=1)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    ckpt = checkpointing.Checkpoints(os.path.join(workdir, "checkpoints"))
    use_best = which == "best" and ckpt.best.latest_step() is not None
    _, state = ckpt.restore(abstract, best=use_best)
    ckpt.close()
    names_path = os.path.join(workdir, "classes.json")
    if os.path.exists(names_path):
        with open(names_path) as f:
            names = json.load(f)
    else:
        names = [str(i) for i in range(config.model.num_classes)]
    return config, names, graphdef, state


def read_clip(path: str, num_frames: int, image_size: int) -> np.ndarray:
    """A video file or frame folder -> uint8 [T, S, S, 3], the evaluation protocol's frames."""
    if os.path.isdir(path):
        frames = read_frame_folder(path, image_size)
    elif not os.path.exists(path):
        raise ClipError(f"{path}: no such file or folder")
    elif path.lower().endswith(VIDEO_EXTENSIONS):
        frames = read_video(path, image_size)
    else:
        raise ClipError(f"{path}: not a video ({', '.join(VIDEO_EXTENSIONS)}) or frame folder")
    return frames[segment_indices(len(frames), num_frames, train=False)]


def predict_step(state, video, *, graphdef):
    """uint8 video [B,T,H,W,3] -> probabilities [B,C] and the maps the pictures show."""
    model = nnx.merge(graphdef, state["params"], state["frozen"], state["rest"])
    logits, aux = model(input_pipeline.normalize_on_device(video))
    maps = {"motion": aux["motion_weights"]}  # [B,T,P]
    if "ot_visual_mass" in aux:
        maps["ot"] = aux["ot_visual_mass"]  # [B,T,P]
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1), maps


def _write_atomic(path: str, write) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        write(f)
    os.replace(tmp, path)


def _safe_name(path: str, taken: set) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.basename(os.path.normpath(path))) or "clip"
    name, i = base, 1
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    taken.add(name)
    return name


def run(
    workdir: str, inputs: list[str], out_dir: str, *, which: str = "best", pictures: bool = True
) -> tuple[list[dict], list[str]]:
    """Predicts every input; returns (results, errors)."""
    workdir, out_dir = paths.resolve(workdir), paths.resolve(out_dir)
    config, names, graphdef, state = load_run(workdir, which)
    step = jax.jit(functools.partial(predict_step, graphdef=graphdef))
    os.makedirs(out_dir, exist_ok=True)
    results, errors, taken = [], [], set()
    for path in inputs:
        try:
            frames = read_clip(path, config.data.num_frames, config.data.image_size)
        except ClipError as e:
            errors.append(str(e))
            print(f"skipped: {e}", file=sys.stderr)
            continue
        probs, maps = jax.device_get(step(state, frames[None]))
        probs = np.asarray(probs[0], np.float64)
        top = int(probs.argmax())
        result = {
            "input": path,
            "prediction": names[top],
            "probabilities": {n: round(float(p), 6) for n, p in zip(names, probs)},
        }
        if pictures:
            rows = [("motion weight", np.asarray(maps["motion"][0]))]
            if "ot" in maps:
                rows.append((f"OT mass: {names[top]}", np.asarray(maps["ot"][0])))
            picture = os.path.join(out_dir, _safe_name(path, taken) + ".png")
            heatmaps.clip_figure(
                picture,
                frames,
                rows,
                f"{os.path.basename(os.path.normpath(path))}: {names[top]} ({probs[top]:.2f})",
            )
            result["picture"] = picture
        results.append(result)
        print(f"{path}: {names[top]} ({probs[top]:.3f})")

    _write_atomic(
        os.path.join(out_dir, "predictions.json"),
        lambda f: json.dump({"results": results, "errors": errors}, f, indent=2),
    )

    def write_csv(f):
        writer = csv.writer(f)
        writer.writerow(["input", "prediction", *names])
        for r in results:
            writer.writerow([r["input"], r["prediction"], *(r["probabilities"][n] for n in names)])

    _write_atomic(os.path.join(out_dir, "predictions.csv"), write_csv)
    return results, errors


def main(argv):
    inputs = argv[1:]
    if not inputs:
        raise app.UsageError("Give one or more videos or frame folders after the flags.")
    out = _OUT.value or os.path.join(_WORKDIR.value, "predictions")
    _, errors = run(_WORKDIR.value, inputs, out, which=_CHECKPOINT.value, pictures=_PICTURES.value)
    print(f"Wrote {out}/predictions.json and predictions.csv.")
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    flags.mark_flags_as_required(["workdir"])
    app.run(main)
