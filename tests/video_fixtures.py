"""Test helpers: tiny frame folders and encoded videos, and reading built shards."""

from __future__ import annotations

import glob
import os

import av
import numpy as np
from array_record.python import array_record_data_source
from PIL import Image

from grace_jax.data import schema


def frame_value(index: int) -> int:
    """Grey level written into frame `index` (0-based) so tests can tell frames apart after JPEG."""
    return 5 + 10 * index


def make_frame_folder(folder: str, num_frames: int, size: tuple[int, int] = (40, 36)) -> str:
    """Writes frames 00001.jpg.. whose grey level encodes their index; returns the folder."""
    os.makedirs(folder, exist_ok=True)
    for i in range(num_frames):
        image = np.full((size[1], size[0], 3), frame_value(i), np.uint8)
        Image.fromarray(image).save(os.path.join(folder, f"{i + 1:05d}.jpg"), quality=95)
    return folder


def write_video(path: str, frames: np.ndarray, codec: str, *, rate: int = 10, pts: list[int] | None = None) -> str:
    """Encodes uint8 frames [T,H,W,3] with PyAV; `pts` (in 1/1000 s) makes a variable-frame-rate file."""
    pix = "yuvj420p" if codec == "mjpeg" else "yuv420p"
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix
        if pts is not None:
            from fractions import Fraction

            stream.codec_context.time_base = Fraction(1, 1000)
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            if pts is not None:
                frame.pts = pts[i]
                frame.time_base = stream.codec_context.time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def grey_clip(num_frames: int, height: int = 32, width: int = 32) -> np.ndarray:
    """Frames [T,H,W,3] of uniform grey levels frame_value(t)."""
    return np.stack([np.full((height, width, 3), frame_value(t), np.uint8) for t in range(num_frames)])


def read_split(out_dir: str, split: str) -> list[schema.RecordView]:
    """All records of one split of a built dataset, in shard order."""
    paths = sorted(glob.glob(os.path.join(out_dir, f"{split}-*-of-*.array_record")))
    assert paths, f"no shards of {split} in {out_dir}"
    source = array_record_data_source.ArrayRecordDataSource(paths)
    return [schema.parse(source[i]) for i in range(len(source))]
