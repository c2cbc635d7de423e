"""One job's analysis on the model thread: the Predictor's result, made safe to hand back.

The result names the upload by its display name, never by the server's temporary path; the pictures are
rendered here, while the result's frames are in memory, so the job keeps only bytes afterwards.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os

import numpy as np

from grace_jax.serve.uploads import UploadError

# A frame strip (for browsers that cannot play the upload's codec) shows this many frames, this high.
STRIP_FRAMES = 8
STRIP_HEIGHT = 120


@dataclasses.dataclass
class Outputs:
    result: dict
    csv: str
    timeline_png: bytes | None
    heatmap_pngs: dict[int, bytes]  # track index -> the picture of its chosen window
    heatmap_windows: dict[int, int]  # track index -> that window's index
    strip_png: bytes | None = None
    strip: dict | None = None  # {"frame_indices": [...], "width": w, "height": h} per frame


class Analyzer:
    """Runs the predictor on one upload with the server's settings."""

    def __init__(self, predictor, *, faces: str, window_seconds: float, stride_seconds: float):
        self.predictor = predictor
        self.options = {"faces": faces, "window_seconds": window_seconds}
        if stride_seconds:
            self.options["stride_seconds"] = stride_seconds

    def __call__(self, job, progress) -> Outputs:
        from grace_jax.data.errors import ClipError
        from grace_jax.inference import pictures

        try:
            result = self.predictor(job.video, name=job.name, progress=progress, **self.options)
        except ClipError as e:
            raise UploadError(422, f"{job.name}: cannot be read: {_hide(str(e), job)}") from None
        progress("pictures", 1.0)
        data = result.to_dict()
        data["input"] = job.name  # never the temporary path, whatever the predictor was told
        timeline = pictures.timeline_png(result) if data["tracks"] else None
        heatmaps, chosen = {}, {}
        for t, track in enumerate(data["tracks"]):
            w = _shown_window(track)
            if w is not None:
                heatmaps[t], chosen[t] = pictures.window_png(result, t, w), w
        outputs = Outputs(
            result=data,
            csv=_rename_csv(result.to_csv(), job),
            timeline_png=timeline,
            heatmap_pngs=heatmaps,
            heatmap_windows=chosen,
        )
        if job.view:
            outputs.strip_png, outputs.strip = frame_strip(job.video, data)
        return outputs


def _hide(text: str, job) -> str:
    return text.replace(job.video, job.name).replace(os.path.dirname(job.video), "")


def _rename_csv(text: str, job) -> str:
    """The predictor's CSV with the temporary path replaced by the display name, re-quoted."""
    rows = list(csv.reader(io.StringIO(text)))
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    for row in rows:
        writer.writerow([job.name if cell == job.video else cell for cell in row])
    return out.getvalue()


def _shown_window(track: dict) -> int | None:
    """The window whose heat map stands for the face: the most confident one for the face's prediction."""
    best, best_p = None, -1.0
    for w, window in enumerate(track.get("windows") or []):
        probs = window.get("probabilities")
        if not probs:
            continue
        p = probs.get(track.get("prediction"), 0.0) if track.get("prediction") else max(probs.values())
        if p > best_p:
            best, best_p = w, p
    return best


def frame_strip(video: str, data: dict) -> tuple[bytes | None, dict | None]:
    """A PNG of up to STRIP_FRAMES evenly spaced source frames side by side, and which frames they are
    (the page draws the face boxes over it when the browser cannot play the video)."""
    from PIL import Image

    from grace_jax.data import video as video_lib

    frames = sorted({int(b[0]) for track in data["tracks"] for b in track.get("boxes") or []})
    if not frames:
        fps, duration = data.get("fps") or 0, data.get("duration_seconds") or 0
        frames = list(range(max(int(fps * duration), 1)))
    picked = [frames[round(i * (len(frames) - 1) / max(STRIP_FRAMES - 1, 1))] for i in range(STRIP_FRAMES)]
    picked = sorted(set(picked))
    try:
        images = dict(video_lib.iter_video(video, 1 << 20, picked, whole_frame=True))
    except Exception:  # the strip is a courtesy: a video the model read but this cannot still has its result
        return None, None
    picked = [p for p in picked if p in images]
    if not picked:
        return None, None
    h, w = images[picked[0]].shape[:2]
    width = max(int(round(w * STRIP_HEIGHT / h)), 1)
    strip = Image.new("RGB", (width * len(picked), STRIP_HEIGHT))
    for k, p in enumerate(picked):
        frame = Image.fromarray(np.asarray(images[p], np.uint8)).resize((width, STRIP_HEIGHT))
        strip.paste(frame, (k * width, 0))
    buffer = io.BytesIO()
    strip.save(buffer, format="PNG")
    return buffer.getvalue(), {"frame_indices": picked, "width": width, "height": STRIP_HEIGHT}
