"""One call for a clip's sampled frames: detect, track, decide, crop (`--face_crop=auto|none`).

    result = crop_clip(frames, detector, size=224, face_crop="auto", min_face_fraction=0.25)
    if result.no_face: report(result.reason)            # do not classify
    else: model_input = result.frames                   # crops, or the frames as they were

`face_crop="auto"` crops unless the faces already fill the frames (`track.faces_fill_frame`);
"none" never crops, and only reports `face_fraction` (the clip still counts as "no face" below
`min_face_fraction`; 0 turns that off). Frames that are not cropped are returned unchanged, at
their own size, for the caller's usual resize.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from grace_jax.data.resize import to_square
from grace_jax.faces import track as track_lib
from grace_jax.faces.detector import FaceDetector

FACE_CROP_MODES = ("auto", "none")
# Whole frames are read at most this long a side for face cropping: the detector sees 192 px, and a
# face a third of such a frame is still ~210 px for the model's 224.
WHOLE_FRAME_SIDE = 640


@dataclasses.dataclass(frozen=True)
class ClipFaces:
    """What `crop_clip` found and did for one clip."""

    frames: np.ndarray  # uint8 [T,size,size,3] crops if `cropped`, else the input frames
    cropped: bool
    face_fraction: float  # fraction of the sampled frames where the clip's face was found
    no_face: bool  # face_fraction < min_face_fraction: the clip should not be classified
    reason: str  # why it was (not) cropped, one line for reports
    track: track_lib.FaceTrack


def crop_clip(
    frames: np.ndarray,
    detector: FaceDetector,
    *,
    size: int,
    face_crop: str = "auto",
    margin: float = 0.2,
    min_face_fraction: float = 0.25,
    fill_threshold: float = 0.9,
) -> ClipFaces:
    """uint8 frames [T,H,W,3] (a clip's sampled frames) -> `ClipFaces`.

    `size`: side of the crops (the model's input). `margin`, the crop's margin around the face box
    as a fraction of its side, and `fill_threshold` are `track.track_face`'s and
    `track.faces_fill_frame`'s.
    """
    if face_crop not in FACE_CROP_MODES:
        raise ValueError(f"face_crop must be one of {FACE_CROP_MODES}, got {face_crop!r}")
    frames = np.asarray(frames)
    face_track = track_lib.track_face(detector.detect(frames), frames.shape[1:3], margin=margin)
    fraction = face_track.face_fraction
    found = f"a face in {round(fraction * len(frames))}/{len(frames)} frames"
    if fraction < min_face_fraction:
        reason = f"no face: {found}, under min_face_fraction {min_face_fraction:g}"
        return ClipFaces(frames, False, fraction, True, reason, face_track)
    if fraction == 0:  # min_face_fraction 0: classify anyway, but there is nothing to crop to
        return ClipFaces(frames, False, 0.0, False, f"not cropped: {found}", face_track)
    if face_crop == "none":
        return ClipFaces(frames, False, fraction, False, f"not cropped (face_crop=none); {found}", face_track)
    if track_lib.faces_fill_frame(face_track, fill_threshold):
        reason = f"not cropped: the face already fills the frame; {found}"
        return ClipFaces(frames, False, fraction, False, reason, face_track)
    crops = track_lib.crop_frames(frames, face_track.squares, size)
    return ClipFaces(crops, True, fraction, False, f"cropped to the face; {found}", face_track)


def frames_for_model(faces: ClipFaces, size: int) -> np.ndarray:
    """uint8 [T,size,size,3]: the crops, or for a clip left uncropped its frames' centre squares
    (what the model gets without face cropping)."""
    if faces.cropped:
        return faces.frames
    return np.stack([to_square(Image.fromarray(f), size) for f in faces.frames])
