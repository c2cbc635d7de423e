"""A few SynthFER test clips as ordinary mp4 files, for trying `grace_jax.predict` after the demo.

The shards hold frames as JPEG records that only the trainer reads; a newcomer who has just trained the
demo needs videos to point predict at. These are the same clips as the test split's first ones of each
class (same seeds), encoded as H.264 at `FPS` frames per second.
"""

from __future__ import annotations

import os

import numpy as np

from data_prep import synth
from grace_jax.data import video
from grace_jax.data.schema import BASIC_CLASSES

FOLDER = "examples"
# SynthFER clips have 12-24 frames: 1.5-3 s at 8 fps, slow enough to watch the expression unfold.
FPS = 8


def example_indices(per_class: int, num_test: int) -> list[int]:
    """Test-split indices of the first `per_class` clips of each class (labels cycle, see synth.clip_label)."""
    indices = [k * synth.NUM_CLASSES + label for k in range(per_class) for label in range(synth.NUM_CLASSES)]
    return sorted(i for i in indices if i < num_test)


def file_name(index: int) -> str:
    """`<index>_<class>.mp4`: the class in the name, so a reader can check predict's answer by eye."""
    return f"{index:06d}_{BASIC_CLASSES[synth.clip_label(index)]}.mp4"


def write_mp4(path: str, frames: np.ndarray, fps: int = FPS) -> None:
    """uint8 RGB frames [T,H,W,3] (H, W even) as H.264 / yuv420p, at the examples' rate."""
    video.write_mp4(path, frames, fps)


def write_examples(out_dir: str, *, per_class: int, num_test: int, seed: int, config: synth.SynthConfig) -> list[str]:
    """Writes the example clips into `out_dir/examples/`; returns their names relative to `out_dir`."""
    folder = os.path.join(out_dir, FOLDER)
    os.makedirs(folder, exist_ok=True)
    names = []
    for index in example_indices(per_class, num_test):
        frames = synth.sample_clip(synth.clip_seed(seed, "test", index), synth.clip_label(index), config)
        write_mp4(os.path.join(folder, file_name(index)), frames)
        names.append(f"{FOLDER}/{file_name(index)}")
    return names
