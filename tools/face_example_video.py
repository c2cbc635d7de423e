r"""Writes the example video of the README's prediction picture: a face entering a room, off-centre.

  python tools/face_example_video.py --out=examples/hopper_enters.mp4
  python -m grace_jax.predict --workdir=runs/demo --window_seconds=3 examples/hopper_enters.mp4

6 s at 25 fps, 640x360 h264: an empty room for 1.5 s, then matplotlib's public-domain portrait of
Grace Hopper (its sample data) slides in from the right and stops in the left third of the frame.
Nobody here filmed anyone: this is footage a test can make, not a benchmark of real videos.
"""

from __future__ import annotations

import argparse
import os

import av
import matplotlib
import numpy as np
from PIL import Image, ImageDraw

WIDTH, HEIGHT, FPS, SECONDS = 640, 360, 25, 6


def _room() -> Image.Image:
    """A plain backdrop: wall gradient, floor, a window and a door; no face-like shapes."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    wall = np.stack([200 - 40 * yy / HEIGHT, 190 - 30 * yy / HEIGHT, 170 - 20 * xx / WIDTH], -1)
    room = Image.fromarray(wall.astype(np.uint8))
    draw = ImageDraw.Draw(room)
    draw.rectangle([0, 290, WIDTH, HEIGHT], fill=(120, 90, 60))
    draw.rectangle([420, 60, 580, 190], fill=(170, 210, 240), outline=(90, 70, 50), width=6)
    draw.rectangle([60, 90, 150, 290], fill=(110, 80, 55))
    return room


def frames() -> list[np.ndarray]:
    portrait = Image.open(os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg"))
    portrait = portrait.convert("RGB").resize((200, 234), Image.BILINEAR)
    room, out = _room(), []
    enter, stop = 1.5, 3.5  # seconds: enters at the right edge, stops at x = 140
    for i in range(FPS * SECONDS):
        t = i / FPS
        frame = room.copy()
        if t >= enter:
            progress = min(1.0, (t - enter) / (stop - enter))
            x = round(WIDTH - progress * (WIDTH - 140))
            frame.paste(portrait, (x, HEIGHT - portrait.height))
        out.append(np.asarray(frame))
    return out


def write(path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for frame in frames():
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="Video file to write (.mp4).")
    write(parser.parse_args().out)


if __name__ == "__main__":
    main()
