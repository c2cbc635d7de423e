"""A real encoded video with two people in it, for the whole-video face tracking tests.

Person 1 (the stored Grace Hopper crop, see face_scenes.py) is on the left from the first frame;
person 2 (the same crop mirrored, larger and tinted) enters on the right at `enter_at` seconds.
Both sway a little. Options: a hard cut to another scene (other colours) where one face sits at
another place, and a third face shown for only a few frames (a passer-by). The faces are pasted as
square crops; `Truth` holds where each face box is in every frame, as face_scenes.paste_face
defines it.
"""

from __future__ import annotations

import dataclasses

import av
import numpy as np
from face_scenes import reference, scene
from PIL import Image

WIDTH, HEIGHT, FPS = 640, 360, 25


@dataclasses.dataclass(frozen=True)
class Truth:
    """What the video shows: per frame, each person's face box (NaN where absent)."""

    times: np.ndarray  # float64 [F]: frame i at i / FPS seconds
    boxes: dict[str, np.ndarray]  # name -> float32 [F,4] (x0, y0, x1, y1)
    enter_at: float
    cut_at: float | None


def _face(side: int, mirror: bool, tint: tuple[float, float, float]) -> np.ndarray:
    face = Image.fromarray(reference()["face"]).resize((side, side), Image.BILINEAR)
    if mirror:
        face = face.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    pixels = np.asarray(face, np.float32) * np.asarray(tint, np.float32)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _paste(frame: np.ndarray, face: np.ndarray, x: int, y: int, mirror: bool) -> np.ndarray:
    side = face.shape[0]
    frame[y : y + side, x : x + side] = face
    x0, y0, x1, y1 = reference()["face_box"] * side / reference()["face"].shape[0]
    if mirror:  # the box mirrors with the crop
        x0, x1 = side - x1, side - x0
    return np.array([x0 + x, y0 + y, x1 + x, y1 + y], np.float32)


def make_frames(
    seconds: float = 5.0,
    *,
    enter_at: float = 2.0,
    cut_at: float | None = None,
    flash: tuple[float, float] | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, Truth]:
    """uint8 frames [F,360,640,3] at 25 fps and their `Truth`.

    Before `cut_at` (None: no cut): person 1 (face box ~110 px) left, person 2 (~130 px) right from
    `enter_at`. After it: another scene, person 1 alone, smaller, at the centre-right. `flash`:
    (start, end) seconds during which a third face (~90 px, tinted blue) shows at the top centre.
    """
    rng = np.random.default_rng(seed)
    first = scene(rng, HEIGHT, WIDTH)
    # The second scene: other objects, and its colours turned around, as a cut to another room.
    second = 255 - scene(rng, HEIGHT, WIDTH)[:, :, ::-1]
    p1, p2 = _face(200, False, (1.0, 1.0, 1.0)), _face(240, True, (1.1, 0.9, 0.8))
    p1_after, passer = _face(170, False, (1.0, 1.0, 1.0)), _face(160, False, (0.8, 0.9, 1.15))
    num = int(round(seconds * FPS))
    times = np.arange(num) / FPS
    nan = np.full(4, np.nan, np.float32)
    boxes = {"p1": [], "p2": [], "p1_after": [], "passer": []}
    frames = []
    for t in times:
        after_cut = cut_at is not None and t >= cut_at
        frame = (second if after_cut else first).copy()
        sway = np.sin(2 * np.pi * t / 2.5)
        row = {k: nan for k in boxes}
        if after_cut:
            row["p1_after"] = _paste(frame, p1_after, int(380 + 15 * sway), int(150 - 8 * sway), False)
        else:
            row["p1"] = _paste(frame, p1, int(50 + 20 * sway), int(90 + 10 * sway), False)
            if t >= enter_at:
                row["p2"] = _paste(frame, p2, int(370 - 15 * sway), int(70 + 10 * sway), True)
        if flash is not None and flash[0] <= t < flash[1]:
            row["passer"] = _paste(frame, passer, 220, 0, False)
        for k in boxes:
            boxes[k].append(row[k])
        frames.append(frame)
    truth = Truth(times, {k: np.stack(v) for k, v in boxes.items()}, enter_at, cut_at)
    return np.stack(frames), truth


def write_mp4(path: str, frames: np.ndarray) -> str:
    """Encodes frames [F,H,W,3] as H.264 (MPEG-4 part 2 where this FFmpeg lacks libx264) at 25 fps."""
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        if codec == "mpeg4":
            stream.bit_rate = 4_000_000  # its default rate blurs the faces
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def two_people_video(path: str, **options) -> tuple[str, Truth]:
    """Writes `make_frames(**options)` to `path` (an .mp4); returns (path, truth)."""
    frames, truth = make_frames(**options)
    return write_mp4(path, frames), truth
