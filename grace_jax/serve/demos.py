"""Demo clips for the page: a few SynthFER test clips when the run was trained on SynthFER.

A visitor of a freshly trained demo run has no face video at hand; the run's own SynthFER test clips,
named by their true class, show what the page does. Other runs offer none: their data may not be the
server owner's to show.
"""

from __future__ import annotations

import glob
import json
import os

import numpy as np

from grace_jax.data import video
from grace_jax.data.schema import BASIC_CLASSES

# SynthFER clips are 12-24 frames: at 8 frames per second the expression unfolds slowly enough to watch
# (data_prep's examples use the same rate).
FPS = 8


def synthfer_folder(workdir: str) -> str | None:
    """The SynthFER build the run at `workdir` trained on, or None when it used other data."""
    from grace_jax.run import runs

    config = runs.read_config(workdir)
    folder = config.data.get("dir") or os.path.join(workdir, "synthfer")
    manifest = os.path.join(folder, "manifest.json")
    if config.data.get("tfds") or not os.path.isfile(manifest):
        return None
    with open(manifest, encoding="utf-8") as f:
        return folder if "synth" in json.load(f) else None


def find(workdir: str | None, scratch: str, per_class: int = 1, limit: int = 7) -> dict[str, str]:
    """{display name: mp4 path} of up to `limit` demo clips: the build's examples/ when it has them,
    else test clips encoded from its shards into `scratch` (a private folder the server owns)."""
    folder = synthfer_folder(workdir) if workdir else None
    if folder is None:
        return {}
    examples = sorted(glob.glob(os.path.join(folder, "examples", "*.mp4")))
    if examples:
        return {os.path.basename(p): p for p in examples[:limit]}
    return _encode_test_clips(folder, scratch, limit)


def _encode_test_clips(folder: str, scratch: str, limit: int) -> dict[str, str]:
    from array_record.python import array_record_data_source

    from grace_jax.data import schema

    shards = sorted(glob.glob(os.path.join(folder, "test-*-of-*.array_record")))
    if not shards:
        return {}
    with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as f:
        class_names = json.load(f).get("class_names") or BASIC_CLASSES
    source = array_record_data_source.ArrayRecordDataSource(shards)
    clips, seen = {}, set()
    for index in range(len(source)):
        record = schema.parse(source[index])
        if record.label in seen:
            continue
        seen.add(record.label)
        frames = record.decode_frames(range(record.num_frames))
        if frames.shape[1] % 2 or frames.shape[2] % 2:  # H.264 4:2:0 needs even sides
            continue
        label = class_names[record.label] if record.label < len(class_names) else str(record.label)
        name = f"{index:06d}_{label}.mp4"  # the true class in the name, to check the answer by eye
        write_mp4(os.path.join(scratch, name), frames)
        clips[name] = os.path.join(scratch, name)
        if len(clips) >= limit:
            break
    return clips


def write_mp4(path: str, frames: np.ndarray, fps: int = FPS) -> None:
    """uint8 RGB frames [T,H,W,3] (H, W even) as H.264 / yuv420p, at the examples' rate."""
    video.write_mp4(path, frames, fps)
